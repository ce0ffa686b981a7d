"""Segment attention alone: fused `model.segment_attention` vs the former hand-written masked
softmax, forward + backward, at the demo's and THUMOS's intra-segment sizes (packed covered
snippets, as the fast path runs them). Checks that both agree first.

    .venv/bin/python bench/bench_attention.py [--device cuda] [--repeats 5]
"""
import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from model import segment_attention  # noqa: E402

# (name, B, heads, N covered snippets, head dim): demo D = 256, THUMOS D = 2048, 8 heads, about
# half of the snippets inside a proposal (T = 256 and 750)
SIZES = [("demo intra", 16, 8, 140, 32), ("THUMOS intra", 16, 8, 400, 256),
         ("THUMOS inter", 16, 8, 20, 256)]


def handwritten_attention(q, k, v, mask, scale):
    """The version the model used before (kept in tests/test_model.py as the oracle)."""
    empty = ~mask.any(dim=-1, keepdim=True)                             # (B, Nq, 1)
    logits = (q * scale) @ k.transpose(-1, -2)                          # (B, h, Nq, Nk)
    logits = logits.masked_fill(~(mask | empty)[:, None], float("-inf"))
    attn = torch.softmax(logits, dim=-1).masked_fill(empty[:, None], 0.0)
    return attn @ v                                                     # (B, h, Nq, dh)


def block_mask(B, N, generator, device):
    """Snippets in runs of 1..30 (a proposal each); the last 10 % are padding (empty rows)."""
    mask = torch.zeros(B, N, N, dtype=torch.bool)
    for b in range(B):
        t = 0
        while t < int(0.9 * N):
            n = int(torch.randint(1, 31, (1,), generator=generator))
            mask[b, t:t + n, t:t + n] = True
            t += n
        mask[b, int(0.9 * N):] = False
        mask[b, :, int(0.9 * N):] = False
    return mask.to(device)


def time_fn(fn, inputs, mask, scale, repeats, device):
    def once():
        out = fn(*inputs, mask, scale)
        out.backward(torch.ones_like(out))
    once()
    times = []
    for _ in range(repeats):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        tic = time.perf_counter()
        once()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - tic)
    return min(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    generator = torch.Generator().manual_seed(0)
    print(f"device {args.device}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"load average {os.getloadavg()[0]:.1f}; forward + backward, ms, min of {args.repeats}")
    print(f"{'size':14s} {'B,h,N,dh':>16s} {'hand-written':>12s} {'fused':>8s} "
          f"{'speed-up':>8s} {'max diff':>9s}")
    for name, B, h, N, dh in SIZES:
        qkv = [torch.randn(B, h, N, dh, generator=generator).to(args.device) for _ in range(3)]
        mask = block_mask(B, N, generator, args.device)
        scale = dh ** -0.5
        diff = (segment_attention(*qkv, mask, scale)
                - handwritten_attention(*qkv, mask, scale)).abs().max().item()
        inputs = [t.requires_grad_() for t in qkv]
        slow = time_fn(handwritten_attention, inputs, mask, scale, args.repeats, args.device)
        fast = time_fn(segment_attention, inputs, mask, scale, args.repeats, args.device)
        shape = f"{B},{h},{N},{dh}"
        print(f"{name:14s} {shape:>16s} {1000 * slow:12.1f} {1000 * fast:8.1f} "
              f"{slow / fast:8.2f} {diff:9.1e}")


if __name__ == "__main__":
    main()
