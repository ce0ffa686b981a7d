"""THUMOS-size full-model training iteration, and the share of it spent in segment attention.

    .venv/bin/python bench/attention_share.py                       # this checkout
    .venv/bin/python bench/attention_share.py --repo ../old_checkout # another version, same inputs
    .venv/bin/python bench/attention_share.py --proposals gt         # GT-like proposals (see below)

One iteration = forward + loss + backward + Adam of ASMLoc at B 16, T 750, D 2048 (bench_model.py's
shapes and its random proposals: 20 per video, about half the snippets covered), min over
--iters after a warm-up. The attention share is measured inside the model: the repo's attention
function (`segment_attention`, or `masked_attention` in versions before the fused kernel) is
wrapped so that its forward and its backward are timed; the rest of the model is untouched.
`--proposals gt` uses proposals shaped like real THUMOS pseudo proposals instead: the action
instances of 16 videos of ../shared/data/THUMOS14/gt.json (validation), each end moved by
N(0, 1 s), at the sampled scale: short, scattered spans, as the attention sees in a real run.
"""
import argparse
import importlib
import json
import os
import sys
import time

import torch

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Timed(torch.autograd.Function):
    """Runs fn(q, k, v, *rest) in forward and its gradient in backward, adding both times up."""

    @staticmethod
    def forward(ctx, fn, seconds, q, k, v, *rest):
        tic = time.perf_counter()
        inputs = [t.detach().requires_grad_(t.requires_grad) for t in (q, k, v)]
        with torch.enable_grad():
            out = fn(*inputs, *rest)
        seconds[0] += time.perf_counter() - tic
        ctx.saved, ctx.rest_count = (inputs, out, seconds), len(rest)
        return out.detach()

    @staticmethod
    def backward(ctx, grad):
        inputs, out, seconds = ctx.saved
        tic = time.perf_counter()
        wanted = [t for t in inputs if t.requires_grad]
        grads = iter(torch.autograd.grad(out, wanted, grad, allow_unused=True))
        result = [next(grads) if t.requires_grad else None for t in inputs]
        seconds[0] += time.perf_counter() - tic
        return (None, None, *result) + (None,) * ctx.rest_count


def gt_proposals(B, T, K, generator):
    """Spans from real THUMOS validation annotations, ends moved by N(0, 1 s), scaled to T snippets."""
    path = os.path.join(HERE, "..", "shared", "data", "THUMOS14", "gt.json")
    with open(path) as handle:
        videos = [v for v in json.load(handle)["database"].values() if v["subset"] == "validation"]
    r = 25 / 16
    bbox = torch.zeros(B, K, 2, dtype=torch.long)
    count = torch.zeros(B, dtype=torch.long)
    order = torch.randperm(len(videos), generator=generator)[:B].tolist()
    for b, index in enumerate(order):
        video = videos[index]
        length = int(video["duration"] * r)
        scale = r * min(1.0, T / max(length, 1))
        spans = []
        for annotation in video["annotations"]:
            start, end = (torch.tensor(annotation["segment"]) + torch.randn(2, generator=generator)).tolist()
            s, e = max(0, int(start * scale)), min(T - 1, int(end * scale))
            if e >= s:
                spans.append((s, e))
        spans = sorted(spans, reverse=True)[:K]
        count[b] = len(spans)
        if spans:
            bbox[b, :len(spans)] = torch.tensor(spans)
    return bbox, count


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repo", default=HERE, help="checkout whose model.py to time (default: this one)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--proposals", choices=["random", "gt"], default="random")
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--snippets", type=int, default=750)
    parser.add_argument("--dim", type=int, default=2048)
    opts = parser.parse_args()
    sys.path.insert(0, os.path.abspath(opts.repo))
    sys.path.insert(1, os.path.join(HERE, "bench"))
    config = importlib.import_module("config")
    model_module = importlib.import_module("model")
    losses = importlib.import_module("losses")
    from bench_model import random_proposals
    B, T, D = opts.batch, opts.snippets, opts.dim
    args = config.build_args("THUMOS", ["--feature_dim", str(D), "--device", opts.device])
    K, C = args.max_segments_num, args.action_cls_num
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    if opts.proposals == "gt":
        bbox, count = gt_proposals(B, T, K, generator)
    else:
        bbox, count = random_proposals(B, T, K, 20, mean_len=max(2, T // 40 * 3 // 2), generator=generator)
    features = torch.randn(B, T, D, generator=generator).to(opts.device)
    label = (torch.rand(B, C, generator=generator) < 0.1).float()
    label[:, 0] = 1.0
    pseudo = torch.rand(B, T, C + 1, generator=generator)
    pseudo = (pseudo / pseudo.sum(dim=2, keepdim=True)).to(opts.device)
    bbox, count, label = bbox.to(opts.device), count.to(opts.device), label.to(opts.device)

    name = "segment_attention" if hasattr(model_module, "segment_attention") else "masked_attention"
    original = getattr(model_module, name)
    seconds = [0.0]
    setattr(model_module, name, lambda q, k, v, *rest: Timed.apply(original, seconds, q, k, v, *rest))
    model = model_module.ASMLoc(args).to(opts.device).train()
    with torch.no_grad():                          # trained-like: the attention blocks are not the identity
        for block in (model.MHSA_Intra, model.MHSA_Inter):
            block.bn.weight.normal_(0.0, 0.5)
            block.bn.bias.normal_(0.0, 0.5)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4, weight_decay=5e-5)
    loss_fn = losses.ASMLocLoss(args)

    def iteration():
        out = model(features, bbox, count)
        loss, _ = loss_fn(label, out, pseudo)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if opts.device.startswith("cuda"):
            torch.cuda.synchronize()
    iteration()
    best = (float("inf"), 0.0)
    for _ in range(opts.iters):
        seconds[0] = 0.0
        tic = time.perf_counter()
        iteration()
        best = min(best, (time.perf_counter() - tic, seconds[0]))
    covered = model_module.proposal_membership(bbox, count, T)[0].any(dim=2).float().mean().item()
    print(f"{os.path.abspath(opts.repo)}: {name}, device {opts.device}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    print(f"B={B} T={T} D={D}, {opts.proposals} proposals ({count.float().mean().item():.1f}/video, "
          f"{covered:.0%} of snippets covered): iteration {best[0]:.2f} s, attention {best[1]:.2f} s "
          f"({100 * best[1] / best[0]:.0f} %), min of {opts.iters}")


if __name__ == "__main__":
    main()
