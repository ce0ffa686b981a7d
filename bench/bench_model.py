"""Benchmark one training iteration (forward + loss + backward + Adam) of the full ASM-Loc
model: the fast segment attention vs the plain dense version (every snippet through every
projection, T x T attention, masks built by Python loops), in one run, plus plain matmul GFLOP/s.

    .venv/bin/python bench/bench_model.py         # B=16, T=750, D=2048, 20 proposals/video
    .venv/bin/python bench/bench_model.py --quick         # small shapes, seconds
    .venv/bin/python bench/bench_model.py --device cuda
Before timing it checks that both versions give the same outputs and gradients.
"""
import argparse
import copy
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import config  # noqa: E402
from losses import ASMLocLoss  # noqa: E402
from model import ASMLoc, intra_packing, proposal_membership  # noqa: E402


def loop_masks(proposal_bbox, proposal_count, T):
    """The plain reference: P (B, T, K), intra (B, T, T), inter (B, K, K) by Python loops."""
    B, K, _ = proposal_bbox.shape
    membership = torch.zeros(B, T, K, dtype=torch.bool)
    intra = torch.zeros(B, T, T, dtype=torch.bool)
    inter = torch.zeros(B, K, K, dtype=torch.bool)
    for b in range(B):
        count = int(proposal_count[b])
        for k in range(count):
            s, e = int(proposal_bbox[b, k, 0]), int(proposal_bbox[b, k, 1])
            membership[b, s:e + 1, k] = True
            intra[b, s:e + 1, s:e + 1] = True
        inter[b, :count, :count] = True
    device = proposal_bbox.device
    return membership.to(device), intra.to(device), inter.to(device)


def random_proposals(B, T, K, per_video, mean_len, generator):
    """Like the dataset's: random [start, end] spans, sorted by start descending, zero padded."""
    start = torch.randint(0, T, (B, per_video), generator=generator)
    length = torch.randint(mean_len // 2, mean_len * 3 // 2 + 1, (B, per_video),
                           generator=generator)
    end = (start + length).clamp(max=T - 1)
    order = start.argsort(dim=1, descending=True)
    bbox = torch.zeros(B, K, 2, dtype=torch.long)
    bbox[:, :per_video] = torch.stack([start.gather(1, order), end.gather(1, order)],
                                      dim=-1)                                   # (B, K, 2)
    return bbox, torch.full((B,), per_video, dtype=torch.long)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def matmul_gflops(device, dim, repeats=3, rounds=3):
    """Plain torch matmul rate on this device, (4096 x dim) @ (dim x dim), best of a few rounds."""
    a = torch.randn(4096, dim, device=device)
    b = torch.randn(dim, dim, device=device)
    best = 0.0
    for _ in range(rounds + 1):  # the first round warms up
        sync(device)
        tic = time.perf_counter()
        for _ in range(repeats):
            a @ b
        sync(device)
        best = max(best, repeats * 2 * 4096 * dim * dim / (time.perf_counter() - tic) / 1e9)
    return best


def iteration_flops(B, T, D, C, K, covered, pair_count, k_max, dense):
    """Multiply-adds x 2 of the big matmuls in forward; backward costs 2x forward, except the
    embedding conv, whose input needs no gradient (1x). pair_count: query-key pairs of the fast
    intra attention, sum over its packing's groups of rows x length^2."""
    embed = 2 * B * T * 3 * D * D
    if dense:
        intra = 8 * B * T * D * D + 4 * B * T * T * D
        inter = 8 * B * K * D * D + 4 * B * K * K * D + 4 * B * K * T * D + 2 * B * T * D * D
    else:
        intra = 8 * covered * D * D + 4 * pair_count * D
        inter = 8 * B * k_max * D * D + 4 * B * k_max * k_max * D + 4 * B * k_max * T * D
    heads = 2 * B * T * D * (C + 4)
    return 2 * embed + 3 * (intra + inter + heads)


def train_step(model, optimizer, loss_fn, batch, dense):
    features, bbox, count, label, pseudo = batch
    if dense:
        membership, intra, inter = loop_masks(bbox.cpu(), count.cpu(), features.shape[1])
        membership, intra, inter = (m.to(features.device) for m in (membership, intra, inter))
        out = model.forward_masks(features, membership, intra, inter)
    else:
        out = model(features, bbox, count)
    loss, _ = loss_fn(label, out, pseudo)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return out


def check_equal(fast, dense, batch, loss_fn):
    """Outputs and gradients of one training forward/backward, same dropout seed."""
    results = []
    for model, is_dense in ((fast, False), (dense, True)):
        model.zero_grad()
        torch.manual_seed(7)
        features, bbox, count, label, pseudo = batch
        if is_dense:
            masks = (m.to(features.device)
                     for m in loop_masks(bbox.cpu(), count.cpu(), features.shape[1]))
            out = model.forward_masks(features, *masks)
        else:
            out = model(features, bbox, count)
        loss_fn(label, out, pseudo)[0].backward()
        results.append((out, [p.grad.clone() for p in model.parameters()]))
    (out_f, grad_f), (out_d, grad_d) = results

    def rel(a, b):
        return ((a - b).abs().max() / b.abs().max().clamp(min=1e-12)).item()
    out_err = max(rel(a, b) for a, b in zip(out_f, out_d) if a is not None)
    names = [name for name, _ in fast.named_parameters()]
    # conv_key.bias (softmax shift) and conv_out.bias (train-mode BN) have mathematically zero
    # gradients; both versions give rounding noise there, so compare those absolutely.
    zero = [n.endswith(("conv_key.bias", "conv_out.bias")) for n in names]
    grad_err = max(rel(a, b) for a, b, z in zip(grad_f, grad_d, zero) if not z)
    noise = max((a - b).abs().max().item() for a, b, z in zip(grad_f, grad_d, zero) if z)
    return out_err, grad_err, noise


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--snippets", type=int, default=750)
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--proposals", type=int, default=20, help="proposals per video")
    parser.add_argument("--iters", type=int, default=2, help="timed iterations per version")
    parser.add_argument("--check_dim", type=int, default=256,
                        help="D of the float64 exactness check")
    parser.add_argument("--quick", action="store_true", help="B=4, T=300, D=512: seconds")
    opts = parser.parse_args()
    if opts.quick:
        opts.batch, opts.snippets, opts.dim, opts.iters = 4, 300, 512, 2
    device = torch.device(opts.device)
    B, T, D, per_video = opts.batch, opts.snippets, opts.dim, opts.proposals
    args = config.build_args("THUMOS", ["--feature_dim", str(D), "--device", opts.device])
    K, C = args.max_segments_num, args.action_cls_num
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    mean_len = max(2, T // (2 * per_video) * 3 // 2)
    bbox, count = random_proposals(B, T, K, per_video, mean_len=mean_len, generator=generator)
    features = torch.randn(B, T, D, generator=generator).to(device)
    label = (torch.rand(B, C, generator=generator) < 0.1).float()
    label[:, 0] = 1.0
    pseudo = torch.rand(B, T, C + 1, generator=generator)
    pseudo = pseudo / pseudo.sum(dim=2, keepdim=True)
    batch = (features, bbox.to(device), count.to(device), label.to(device), pseudo.to(device))

    def build(model_args, dtype):
        model = ASMLoc.from_config(model_args).to(device=device, dtype=dtype)
        with torch.no_grad():  # a trained-like state: the attention blocks are not the identity
            for block in (model.MHSA_Intra, model.MHSA_Inter):
                block.bn.weight.normal_(0.0, 0.5)
                block.bn.bias.normal_(0.0, 0.5)
        dense_model = copy.deepcopy(model)
        dense_model.fast_attention = False
        return model, dense_model

    loss_fn = ASMLocLoss.from_config(args)
    membership, _ = proposal_membership(bbox, count, T)
    covered = membership.any(dim=2)                                     # (B, T)
    _, groups = intra_packing(membership, covered, covered.reshape(-1).nonzero().squeeze(1))
    pair_count = sum(rows * length ** 2 for _, rows, length in groups)
    print(f"device {device}  B={B} T={T} D={D} K={K} proposals/video={per_video}  "
          f"snippets inside proposals: {covered.float().mean().item():.1%}")

    # exactness in float64 (same B, T, proposals; smaller D to keep it quick), then float32 rounding
    check_args = config.build_args("THUMOS", ["--feature_dim", str(opts.check_dim),
                                              "--device", opts.device])
    check_features = torch.randn(B, T, opts.check_dim, generator=generator, dtype=torch.float64)
    check_batch = (check_features.to(device), *batch[1:3], batch[3].double(), batch[4].double())
    out_err, grad_err, noise = check_equal(*build(check_args, torch.float64), check_batch, loss_fn)
    print(f"fast vs dense, float64, D={opts.check_dim} (max |diff| / max |dense| per tensor): "
          f"outputs {out_err:.1e}, gradients {grad_err:.1e}; zero-gradient biases {noise:.1e} "
          f"(absolute)")
    fast, dense = build(args, torch.float32)
    out_err, grad_err, noise = check_equal(fast, dense, batch, loss_fn)
    print(f"fast vs dense, float32, D={D}: outputs {out_err:.1e}, gradients {grad_err:.1e} "
          f"(float32 rounding of different summation orders); zero-gradient biases {noise:.1e}")

    matmul_rate = matmul_gflops(device, D)
    times = {}
    for name, model, is_dense in (("dense", dense, True), ("fast", fast, False)):
        model.train()
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-4, weight_decay=5e-5)
        train_step(model, optimizer, loss_fn, batch, is_dense)         # warm-up
        sync(device)
        tic = time.perf_counter()
        for _ in range(opts.iters):
            train_step(model, optimizer, loss_fn, batch, is_dense)
        sync(device)
        times[name] = (time.perf_counter() - tic) / opts.iters
    flops = {name: iteration_flops(B, T, D, C, K, int(covered.sum()), pair_count, per_video,
                                   name == "dense")
             for name in times}
    print(f"plain matmul: {matmul_rate:.1f} GFLOP/s")
    for name in ("dense", "fast"):
        print(f"{name:5s}: {times[name]:.3f} s/iteration, {flops[name] / 1e9:.0f} GFLOP, "
              f"{flops[name] / times[name] / 1e9:.1f} GFLOP/s achieved")
    print(f"speed-up fast vs dense: {times['dense'] / times['fast']:.2f}x "
          f"(dense-equivalent rate of fast: {flops['dense'] / times['fast'] / 1e9:.1f} GFLOP/s)")


if __name__ == "__main__":
    main()
