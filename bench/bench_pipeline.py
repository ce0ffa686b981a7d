"""Where the time of a THUMOS run goes: (1) one training iteration at full dims, (2) one epoch
through the real VideoDataset + DataLoader on a synthetic set with real THUMOS video lengths,
(3) one evaluation pass and one pseudo-proposal pass, (4) the 800-epoch schedule estimated from
those.

    .venv/bin/python bench/bench_pipeline.py --quick           # CPU, ~3 minutes on 2 cores
    .venv/bin/python bench/bench_pipeline.py --device cuda --num_workers 4
The synthetic set (200 train + 210 test videos, D = 2048) is written once under --work_dir.
Epochs and passes run through engine.passes.train_one_epoch / predict_proposals /
score_results themselves, timed through the engine's seam (engine.timing.set_timer: the loader
wait, forward + loss, zero_grad + backward, optimizer step and proposals are named parts of the
engine; each part syncs the device).
"""
import argparse
import contextlib
import copy
import json
import os
import platform
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "bench")]
import dataset as ds  # noqa: E402
from bench_model import random_proposals, sync  # noqa: E402
from config import build_args  # noqa: E402
from engine import passes, refinement, steps, timing  # noqa: E402
from engine.distributed import GlobalBatchSampler  # noqa: E402
from engine.seeding import make_generator, seed_worker, set_seed  # noqa: E402
from synthetic_data import generate_synthetic_dataset  # noqa: E402
from utils import atomic_torch_save  # noqa: E402

REAL_GT = REPO.parent / "shared" / "data" / "THUMOS14"   # real gt.json and split lists (lengths)
PHASES = (("train", "random"), ("test", "uniform"), ("full", "uniform"))


def table(title, header, rows):
    """Print a small aligned table (floats: 3 decimals below 10, else 1)."""
    fmt = lambda c: c if isinstance(c, str) else f"{c:.3f}" if abs(c) < 10 else f"{c:.1f}"  # noqa: E731
    cells = [header] + [[fmt(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    print(f"\n{title}")
    for k, r in enumerate(cells):
        print("  " + "  ".join(c.rjust(w) for c, w in zip(r, widths)))
        if k == 0:
            print("  " + "  ".join("-" * w for w in widths))


class Laps:
    """Named wall-time accumulators; every reading syncs the device first."""

    def __init__(self, device):
        self.device, self.acc, self.last = device, {}, time.perf_counter()

    def mark(self, *_):
        sync(self.device)
        self.last = time.perf_counter()

    def lap(self, name):
        sync(self.device)
        now = time.perf_counter()
        self.acc[name] = self.acc.get(name, 0.0) + now - self.last
        self.last = now


class PartSeconds:
    """A timer for engine.timing.set_timer: wall seconds per named part of the engine, the device
    synchronised at both edges of each part."""

    def __init__(self, device):
        self.device, self.seconds = device, defaultdict(float)

    @contextlib.contextmanager
    def __call__(self, part, context):
        sync(self.device)
        tic = time.perf_counter()
        try:
            yield
        finally:
            sync(self.device)
            self.seconds[part] += time.perf_counter() - tic


@contextlib.contextmanager
def engine_timer(device):
    """PartSeconds installed in the engine for the duration of the block."""
    timer = PartSeconds(device)
    previous = timing.set_timer(timer)
    try:
        yield timer
    finally:
        timing.set_timer(previous)


class FirstBatches:
    """At most `limit` batches of a DataLoader (all with 0), counting the videos handed out."""

    def __init__(self, loader, limit):
        self.loader, self.limit, self.videos = loader, limit, 0

    def __len__(self):
        return min(self.limit or len(self.loader), len(self.loader))

    def __iter__(self):
        for _, batch in zip(range(len(self)), self.loader):      # no batch loaded past the limit
            self.videos += len(batch["vid_name"])
            yield batch


class TimedItems(Dataset):
    """A dataset whose __getitem__ time is summed (exact with num_workers 0)."""

    def __init__(self, data):
        self.data, self.seconds = data, 0.0

    def __len__(self):
        return len(self.data)

    def __getitem__(self, key):
        tic = time.perf_counter()
        item = self.data[key]
        self.seconds += time.perf_counter() - tic
        return item


# ----------------------------------------------------------------------------- data
def ensure_data(work_dir, dim, seed=0):
    """The synthetic THUMOS-shaped set under work_dir (real lengths / annotations of the
    200 + 210 split)."""
    root = Path(work_dir) / f"THUMOS14_synth_D{dim}"
    params = {"num_train": 200, "num_test": 210, "feature_dim": dim, "seed": seed,
              "real_gt": REAL_GT.is_dir()}
    marker = root / "BENCH.json"
    if marker.is_file() and json.loads(marker.read_text()) == params:
        return root, 0.0
    tic, gt = time.perf_counter(), None
    if params["real_gt"]:
        gt = json.loads((REAL_GT / "gt.json").read_text())
        keep = {vid for split in ("train", "test")
                for vid in (REAL_GT / f"split_{split}.txt").read_text().split()}
        gt["database"] = {vid: entry for vid, entry in gt["database"].items() if vid in keep}
    else:
        print(f"note: {REAL_GT} not found; the generator's own video lengths are used")
    generate_synthetic_dataset(root, "THUMOS14", 200, 210, feature_dim=dim, seed=seed,
                               timeline_gt=gt)
    marker.write_text(json.dumps(params))
    return root, time.perf_counter() - tic


def build_sets(args):
    """Datasets as the training run builds them (timed: start-up), and copies with stand-in
    proposals."""
    ds.clear_feature_cache()
    tic = time.perf_counter()
    base = {phase: ds.VideoDataset(args, phase, sampling) for phase, sampling in PHASES}
    startup = time.perf_counter() - tic
    rng = np.random.default_rng(0)          # pseudo proposals: each GT instance jittered by ~1 s

    def jittered(segment):
        return sorted((np.asarray(segment) + rng.normal(0, 1.0, 2)).clip(0).tolist())
    proposals = {vid: [{"label": a["label"], "score": float(rng.uniform(0.3, 0.9)),
                        "segment": jittered(a["segment"])}
                       for a in base["full"].gt_segments[vid]] for vid in base["full"].video_names}
    weights = base["full"].compute_dynamic_weights(proposals, args)
    full = {phase: ds.VideoDataset(args, phase, sampling) for phase, sampling in PHASES}
    for data in full.values():
        data.set_proposals(proposals, weights)
    inside = []                                         # snippets in an attention proposal
    for i in range(0, len(full["train"]), 10):
        item = full["train"][i]
        t = np.arange(len(item["features"]))[:, None]
        box = item["proposal_bbox"][:item["proposal_count"]].numpy()
        inside.append(((t >= box[:, 0]) & (t <= box[:, 1])).any(1).mean())
    print(f"datasets train/test/full with file checks (cache on): {startup:.1f} s; stand-in "
          f"pseudo proposals (GT jittered by ~1 s) "
          f"{np.mean([len(p) for p in proposals.values()]):.1f}/video, attention "
          f"proposals cover {np.mean(inside):.0%} of the sampled snippets")
    return {"base": base, "full": full}, startup


def set_cache(sets, on):
    """Feature cache on and filled (as after the first epoch), or off (memmap reads every time)."""
    ds.clear_feature_cache()
    for data in [d for group in sets.values() for d in group.values()]:
        data.cache_gb = 4.0 if on else 0.0
    if on:
        for vid in sets["base"]["full"].video_names:
            sets["base"]["full"]._open(vid)


def make_loader(data, args):
    """The training loader of a training run (engine/training.py start_step, one process)."""
    generator = make_generator(args.seed)
    sampler = GlobalBatchSampler(len(data), args.batch_size, generator, 0, 1)
    return DataLoader(data, batch_sampler=sampler, num_workers=args.num_workers,
                      collate_fn=ds.collate_fn, worker_init_fn=seed_worker, generator=generator,
                      pin_memory=args.device.startswith("cuda"))


def new_step(args, step):
    set_seed(args.seed)
    model = steps.build_model(args, step)
    return model, steps.build_loss(args, step), steps.build_optimizer(args, model)


# ----------------------------------------------------------------------------- the four tables
def part_iteration(args, device, iters):
    """(1) forward (+loss) / zero_grad + backward / Adam step of one iteration on random data
    already on the device."""
    B, T, D, C = args.batch_size, args.sample_segments_num, args.feature_dim, args.action_cls_num
    g = torch.Generator().manual_seed(0)
    bbox, count = random_proposals(B, T, args.max_segments_num, 20, max(2, T // 40 * 3 // 2), g)
    t = torch.arange(T)[:, None]                                                       # (T, 1)
    covered = ((t >= bbox[:, None, :20, 0]) & (t <= bbox[:, None, :20, 1])).any(2)     # (B, T)
    pil = torch.rand(B, T, C + 1, generator=g)
    features = torch.randn(B, T, D, generator=g).relu().to(device)                     # (B, T, D)
    label = (torch.rand(B, C, generator=g) < 0.1).float()                              # (B, C)
    pil = pil / pil.sum(2, keepdim=True)
    bbox, count, label, pil = (t.to(device) for t in (bbox, count, label, pil))
    rows, kept = [], {}
    for step, kind in ((0, "base"), (1, "full")):
        model, loss_fn, optimizer = new_step(args, step)
        model.train()
        laps = Laps(device)
        for i in range(iters + 1):                                      # iteration 0 warms up
            laps.acc = {} if i == 1 else laps.acc
            laps.mark()
            out = model(features, bbox, count)                  # the base model ignores them
            loss, _ = loss_fn(label, out, pil)                  # the base loss ignores pil
            laps.lap("fwd")
            optimizer.zero_grad()
            loss.backward()
            laps.lap("bwd")
            optimizer.step()
            laps.lap("opt")
        t = [laps.acc[k] / iters for k in ("fwd", "bwd", "opt")]
        rows.append([kind, *t, sum(t)])
        kept[kind] = (model, loss_fn, optimizer)
    table(f"(1) one training iteration, B={B} T={T} D={D}, random data on {device}; full model: "
          f"20 proposals/video covering {covered.float().mean():.0%} of snippets; s, mean of "
          f"{iters} after 1 warm-up",
          ["model", "fwd+loss", "zero_grad+bwd", "optimizer", "total"], rows)
    return kept


def part_epoch(args, device, max_iters, sets, kept):
    """(2) engine.passes.train_one_epoch: base model (step 0) and full model (step 1), feature
    cache on / off. The models of (1) are reused, so no first-iteration allocations (grads, Adam
    state) are timed."""
    rows, epoch_time = [], {}
    for step, kind in ((0, "base"), (1, "full")):
        data = sets[kind]["train"]
        for cache in ("on", "off"):
            set_cache(sets, cache == "on")
            model, loss_fn, optimizer = kept[kind]
            loader = FirstBatches(make_loader(data, args), max_iters)
            with engine_timer(device) as timer:
                tic = time.perf_counter()
                passes.train_one_epoch(model, loss_fn, optimizer, loader, args, step, 0)
                elapsed = time.perf_counter() - tic
            scale = len(data) / loader.videos                   # a prefix -> the whole epoch
            epoch_time[(kind, cache)] = epoch = elapsed * scale
            s = {key: value * scale for key, value in timer.seconds.items()}
            t = {"data": s["train data"], "fwd": s["train forward"], "bwd": s["train backward"],
                 "opt": s["train optimizer"]}          # forward = forward + loss (one part)
            outside = 100 * (epoch - t["fwd"] - t["bwd"]) / epoch
            rows.append([kind, cache, f"{len(loader)}/{len(loader.loader)}", t["data"], t["fwd"],
                         t["bwd"], t["opt"], epoch - sum(t.values()), epoch, f"{outside:.1f}%"])
    table(f"(2) one epoch: {len(data)} videos at real THUMOS lengths, D={args.feature_dim}, "
          f"B={args.batch_size}, num_workers={args.num_workers}; full = step 1 with stand-in "
          f"proposals and dynamic sampling; s per epoch (iters < all: only that prefix timed, "
          f"then scaled by videos)",
          ["model", "cache", "iters", "data", "fwd+loss", "zero_grad+bwd", "optimizer", "other",
           "epoch", "outside fwd/bwd"],
          rows)
    return epoch_time


def part_loader(args, sets):
    """(2b) the training loader alone over a whole epoch (no model): the data cost, not
    extrapolated."""
    rows = []
    for cache in ("on", "off"):
        set_cache(sets, cache == "on")
        for kind in ("base", "full"):
            items = TimedItems(sets[kind]["train"])
            tic = time.perf_counter()
            n = sum(len(batch["vid_name"]) for batch in make_loader(items, args))
            total = time.perf_counter() - tic
            exact = args.num_workers == 0
            rows.append([kind, cache, str(n), total, items.seconds if exact else "-",
                         total - items.seconds if exact else "-"])
    table(f"(2b) the training loader alone, one whole epoch, num_workers={args.num_workers}; "
          f"s",
          ["targets", "cache", "videos", "epoch", "__getitem__", "collate+rest"], rows)


def part_eval(args, device, n_videos, sets):
    """(3) engine.passes.evaluate split into forward / video_proposals / mAP, and the
    pseudo-proposal pass."""
    rows, cost = [], {}
    set_cache(sets, True)
    for step, kind in ((0, "base"), (1, "full")):
        model = new_step(args, step)[0]
        for which in ("eval", "pseudo"):
            data = sets[kind]["test" if which == "eval" else "full"]
            n = min(n_videos or len(data), len(data))
            prefix = copy.copy(data)                                     # the first n videos
            prefix.video_names = data.video_names[:n]
            with engine_timer(device) as timer:
                tic = time.perf_counter()
                results, _ = passes.predict_proposals(model, prefix, args, step,
                                                      which == "pseudo", which)
                total = (time.perf_counter() - tic) * len(data) / n
            fwd, prop = (timer.seconds[f"{which} {part}"] * len(data) / n
                         for part in ("forward", "proposals"))
            results = {vid: results[prefix.video_names[i % n]]
                       for i, vid in enumerate(data.video_names)}
            tic = time.perf_counter()
            if which == "eval":                       # the rest of passes.evaluate, full size
                passes.score_results(results, {}, args,
                                     os.path.join(args.save_dir, "bench_result.json"))
            else:                                     # the rest of generate_pseudo_proposals
                data.compute_dynamic_weights(results, args)
            last = time.perf_counter() - tic
            cost[(kind, which)] = total + last
            per_video = sum(map(len, results.values())) / len(data)
            rows.append([kind, which, f"{n}/{len(data)}", f"{per_video:.0f}",
                         fwd, prop, total - fwd - prop, last, total + last])
    table("(3) evaluation pass (test set) and pseudo-proposal pass (full set), batch 1, uniform "
          "sampling, untrained weights; s per pass (videos < all: that prefix timed, then "
          "scaled); last = mAP + JSON, or dynamic weights",
          ["model", "pass", "videos", "props/video", "forward", "proposals", "loader+copy", "last",
           "pass"], rows)
    return cost


def part_schedule(args, epoch_time, pass_cost, save_time, startup):
    """(4) the epoch loop of a training run (docs/method.md §10) with the measured costs, cache
    on."""
    cost = {"train": [0, 0.0], "eval": [0, 0.0], "pseudo": [0, 0.0], "checkpoint": [0, 0.0],
            "startup": [1, startup]}
    step = 0
    for epoch in range(args.epochs):
        if refinement.is_switch_epoch(epoch, args):
            parts = [("pseudo", pass_cost[("base" if step == 0 else "full", "pseudo")])]
            step = epoch // args.epochs_per_step
        else:
            parts = []
        kind = "base" if step == 0 else "full"
        parts += [("train", epoch_time[(kind, "on")]), ("checkpoint", save_time[kind])]
        if refinement.is_eval_epoch(epoch, args):
            parts.append(("eval", pass_cost[(kind, "eval")]))
        for part, seconds in parts:
            cost[part][0] += 1
            cost[part][1] += seconds
    total = sum(s for _, s in cost.values())
    table(f"(4) estimated THUMOS schedule: {args.epochs} epochs, a new step every "
          f"{args.epochs_per_step} up to step {args.num_steps}, eval every {args.eval_freq} + "
          f"last 9, cache on: {total / 3600:.1f} h",
          ["part", "count", "hours", "share"],
          [[part, str(n), s / 3600, f"{100 * s / total:.1f}%"] for part, (n, s) in cost.items()])


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--quick", action="store_true",
                        help="1 iteration / 1 batch per epoch / 6 videos per pass")
    parser.add_argument("--iters", type=int, default=3,
                        help="(1) timed iterations after one warm-up")
    parser.add_argument("--max_iters", type=int, default=0,
                        help="(2) batches timed per epoch (0 = all)")
    parser.add_argument("--eval_videos", type=int, default=0,
                        help="(3) videos per pass (0 = all)")
    parser.add_argument("--num_workers", type=int, default=0, help="DataLoader workers")
    parser.add_argument("--dim", type=int, default=2048,
                        help="feature dim (THUMOS 2048; smaller for a smoke test)")
    parser.add_argument("--work_dir", default=os.path.join(tempfile.gettempdir(), "asmloc_bench"),
                        help="the synthetic set and scratch files")
    opts = parser.parse_args()
    if opts.quick:
        opts.iters, opts.max_iters, opts.eval_videos = 1, opts.max_iters or 1, opts.eval_videos or 6
    device = torch.device(opts.device)
    name = (torch.cuda.get_device_name(device) if device.type == "cuda"
            else platform.processor() or platform.machine())
    print(f"device {device} ({name}), torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {os.cpu_count()} cpus, "
          f"load average {os.getloadavg()[0]:.1f}")
    if device.type == "cuda":                                           # left at their defaults
        print(f"backends (defaults, unchanged): float32 matmul precision "
              f"{torch.get_float32_matmul_precision()}, cudnn.allow_tf32 "
              f"{torch.backends.cudnn.allow_tf32}, cudnn.benchmark "
              f"{torch.backends.cudnn.benchmark}")
    root, seconds = ensure_data(opts.work_dir, opts.dim)
    print(f"synthetic set {root}: {f'generated in {seconds:.1f} s' if seconds else 'reused'}")
    args = build_args("THUMOS", ["--data_dir", str(root), "--device", opts.device,
                                 "--feature_dim", str(opts.dim),
                                 "--num_workers", str(opts.num_workers), "--feature_cache_gb", "4",
                                 "--checkpoint_root", str(Path(opts.work_dir) / "checkpoints")])
    os.makedirs(args.save_dir, exist_ok=True)
    save_time, path = {}, os.path.join(args.save_dir, "bench_latest.pth")
    kept = part_iteration(args, device, opts.iters)
    for kind, (model, _, optimizer) in kept.items():
        tic = time.perf_counter()                           # model_latest.pth of every epoch
        atomic_torch_save({"epoch": 1, "model_state_dict": model.state_dict(),
                           "optimizer": optimizer.state_dict()}, path)
        save_time[kind] = time.perf_counter() - tic
        print(f"checkpoint save, {kind} model ({os.path.getsize(path) / 2**20:.0f} MiB, "
              f"atomic + fsync): {save_time[kind]:.2f} s")
    os.remove(path)
    sets, startup = build_sets(args)
    epoch_time = part_epoch(args, device, opts.max_iters, sets, kept)
    del kept
    part_loader(args, sets)
    pass_cost = part_eval(args, device, opts.eval_videos, sets)
    part_schedule(args, epoch_time, pass_cost, save_time, startup)
    print(f"\nload average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
