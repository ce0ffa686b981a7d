"""Where the time of a THUMOS run goes, and which of it stays on the host when the model runs on
a GPU: (1) one training iteration at full dims, (2) one epoch through the engine's training loop
and loader on a synthetic set with real THUMOS video lengths, (2b) the training batches alone:
host plan, the gather where the features are and its copy floor, (3) one evaluation pass and one
pseudo-proposal pass, (4) the 800-epoch schedule estimated from those, (5) the checkpoint wait.

    .venv/bin/python bench/bench_pipeline.py --quick --json parts.json    # CPU, minutes on 2 cores
    .venv/bin/python bench/bench_pipeline.py --device cuda --num_workers 4 --json parts.json
The synthetic set (200 train + 210 test videos, D = 2048, about 1 GB) is written once under
--work_dir and reused. Epochs, passes and checkpoint saves run through the engine's own functions
(engine.passes.train_one_epoch / predict_proposals / score_results, engine.training
.save_checkpoints), timed through its seam (engine.timing.set_timer: each named part syncs the
device at its edges). --json FILE writes the keys of KEYS below, with what each one counts.
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

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "bench")]
import dataset as ds  # noqa: E402
from bench_model import random_proposals, sync  # noqa: E402
from config import build_args  # noqa: E402
from engine import batches, passes, refinement, steps, store, timing  # noqa: E402
from engine.layout import proposal_layout  # noqa: E402
from engine.distributed import GlobalBatchSampler  # noqa: E402
from engine.seeding import make_generator, set_seed  # noqa: E402
from synthetic_data import generate_synthetic_dataset  # noqa: E402

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
        self.device, self.seconds, self.calls = device, defaultdict(float), defaultdict(int)

    @contextlib.contextmanager
    def __call__(self, part, context):
        sync(self.device)
        tic = time.perf_counter()
        try:
            yield
        finally:
            sync(self.device)
            self.seconds[part] += time.perf_counter() - tic
            self.calls[part] += 1


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
        kept[kind + " iteration_s"] = sum(t)
    table(f"(1) one training iteration, B={B} T={T} D={D}, random data on {device}; full model: "
          f"20 proposals/video covering {covered.float().mean():.0%} of snippets; s, mean of "
          f"{iters} after 1 warm-up",
          ["model", "fwd+loss", "zero_grad+bwd", "optimizer", "total"], rows)
    return kept


# ----------------------------------------------------------------------------- datasets
def build_sets(args):
    """Datasets as the training run builds them, with their feature store (timed: start-up),
    and copies with stand-in proposals sharing the store."""
    ds.clear_feature_cache()
    tic = time.perf_counter()
    base = {phase: ds.VideoDataset(args, phase, sampling) for phase, sampling in PHASES}
    resident = store.FeatureStore.build(list(base.values()), args)
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
    store.register(full.values(), resident)
    inside = []                                         # snippets in an attention proposal
    for i in range(0, len(full["train"]), 10):
        item = full["train"][i]
        t = np.arange(len(item["features"]))[:, None]
        box = item["proposal_bbox"][:item["proposal_count"]].numpy()
        inside.append(((t >= box[:, 0]) & (t <= box[:, 1])).any(1).mean())
    print(f"datasets train/test/full with file checks and the feature store: {startup:.1f} s "
          f"({resident.describe()}); stand-in pseudo proposals (GT jittered by ~1 s) "
          f"{np.mean([len(p) for p in proposals.values()]):.1f}/video, attention "
          f"proposals cover {np.mean(inside):.0%} of the sampled snippets")
    return {"base": base, "full": full}, resident, startup


@contextlib.contextmanager
def disk_only(sets):
    """feature_cache_gb 0 for the block: no store, no cache (each item read from disk)."""
    resident = store.store_of(sets["base"]["train"])
    datasets = [d for group in sets.values() for d in group.values()]
    store.register(datasets, None)
    ds.clear_feature_cache()
    for data in datasets:
        data.cache_gb = 0.0
    try:
        yield
    finally:
        for data in datasets:
            data.cache_gb = 4.0
        store.register(datasets, resident)


def sampler_of(data, args):
    return GlobalBatchSampler(len(data), args.batch_size, make_generator(args.seed), 0, 1)


def new_step(args, step):
    set_seed(args.seed)
    model = steps.build_model(args, step)
    return model, steps.build_loss(args, step), steps.build_optimizer(args, model)


# ----------------------------------------------------------------------------- (2) an epoch
def part_epoch(args, device, max_iters, sets, kept):
    """(2) engine.passes.train_one_epoch with the run's loader (engine.batches.training_loader):
    the feature store, or disk reads through the DataLoader; base model (step 0) and full model
    (step 1). The models of (1) are reused (no first-iteration allocations timed)."""
    rows, epoch_time = [], {}
    for step, kind in ((0, "base"), (1, "full")):
        data = sets[kind]["train"]
        for source in ("disk", "store"):        # the default path second: warm kernels
            with contextlib.ExitStack() as stack:
                if source == "disk":
                    stack.enter_context(disk_only(sets))
                model, loss_fn, optimizer = kept[kind]
                loader = FirstBatches(batches.training_loader(data, sampler_of(data, args), args,
                                                              make_generator(0)), max_iters)
                with engine_timer(device) as timer:
                    tic = time.perf_counter()
                    passes.train_one_epoch(model, loss_fn, optimizer, loader, args, step, 0)
                    elapsed = time.perf_counter() - tic
            scale = len(data) / loader.videos                   # a prefix -> the whole epoch
            epoch_time[(kind, source)] = epoch = elapsed * scale
            s = {key: value * scale for key, value in timer.seconds.items()}
            t = {"data": s["train data"], "fwd": s["train forward"], "bwd": s["train backward"],
                 "opt": s["train optimizer"]}          # forward = forward + loss (one part)
            outside = 100 * (epoch - t["fwd"] - t["bwd"]) / epoch
            rows.append([kind, source, f"{len(loader)}/{len(loader.loader)}", t["data"],
                         s.get("train gather", 0.0), t["fwd"], t["bwd"], t["opt"],
                         epoch - sum(t.values()), epoch, f"{outside:.1f}%"])
    table(f"(2) one epoch: {len(data)} videos at real THUMOS lengths, D={args.feature_dim}, "
          f"B={args.batch_size}; full = step 1 with stand-in proposals and dynamic sampling; "
          f"store = the resident features (default), disk = feature_cache_gb 0 (DataLoader, "
          f"num_workers={args.num_workers}); s per epoch (iters < all: that prefix timed, then "
          f"scaled by videos)",
          ["model", "features", "iters", "data", "of it gather", "fwd+loss", "zero_grad+bwd",
           "optimizer", "other", "epoch", "outside fwd/bwd"], rows)
    return epoch_time


# ----------------------------------------------------------------------------- (2b) batches
def part_batches(args, device, sets):
    """(2b) every training batch of one epoch from the store, without a model: the host plan
    (sampling draws, index arithmetic; with the full model also the proposals' layout, host
    work of its forward), the gather (+ interpolation) where the features are, beside one plain
    copy of the same bytes (its floor), and the targets' selection; then the disk DataLoader."""
    rows, keys = [], {}
    for kind in ("base", "full"):
        data = sets[kind]["train"]
        loader = batches.training_loader(data, sampler_of(data, args), args, None)
        source = loader.store.rows
        floor_out = torch.empty_like(source[:args.batch_size * args.sample_segments_num])
        batch_keys, start = list(loader.batch_sampler), 0
        for warm in (True, False):       # an untimed epoch first: buffers paged in, kernels warm
            ms = defaultdict(float)
            for keys_ in batch_keys:
                sync(device)
                tic = time.perf_counter()
                plan, index = loader.plan(keys_)
                ms["plan"] += time.perf_counter() - tic
                tic = time.perf_counter()
                features = batches.gather_batch(loader.store, plan,
                                                (len(index), -1, args.feature_dim))
                sync(device)
                ms["gather"] += time.perf_counter() - tic
                rows_n = features.shape[0] * features.shape[1]
                start = (start + rows_n) % (len(source) - rows_n)   # from memory, not cache
                tic = time.perf_counter()
                floor_out[:rows_n].copy_(source[start:start + rows_n])
                sync(device)
                ms["floor"] += time.perf_counter() - tic
                tic = time.perf_counter()
                targets = loader.targets.select(index)
                sync(device)
                ms["targets"] += time.perf_counter() - tic
                tic = time.perf_counter()
                if kind == "full":                   # the base model's forward needs no layout
                    proposal_layout(targets["proposal_bbox"].numpy(),
                                    targets["proposal_count"].numpy(), features.shape[1])
                ms["layout"] += time.perf_counter() - tic
        n = len(batch_keys)
        per = {key: 1000 * value / n for key, value in ms.items()}
        keys[kind] = {"host_ms": per["plan"] + per["layout"], "plan_ms": per["plan"],
                      "layout_ms": per["layout"], "gather_ms": per["gather"],
                      "copy_floor_ms": per["floor"], "targets_ms": per["targets"]}
        rows.append([kind, str(n), per["plan"], per["layout"], per["plan"] + per["layout"],
                     per["gather"], per["floor"], f"{per['gather'] / per['floor']:.2f}x",
                     per["targets"]])
    table(f"(2b) training batches from the store, one whole epoch after an untimed one, no model; "
          f"ms per batch of "
          f"{args.batch_size} x {args.sample_segments_num} x {args.feature_dim}; host: plan + "
          f"layout; device: gather, targets (here the device is {device})",
          ["targets", "batches", "host plan", "host layout", "host total", "gather",
           "copy floor", "gather/floor", "targets"], rows)
    disk = []
    with disk_only(sets):
        for kind in ("base", "full"):
            data = sets[kind]["train"]
            tic = time.perf_counter()
            n = sum(len(batch["vid_name"]) for batch in batches.training_loader(
                data, sampler_of(data, args), args, make_generator(0)))
            disk.append([kind, str(n), time.perf_counter() - tic])
    table(f"(2b') the same epoch from disk (feature_cache_gb 0: DataLoader, "
          f"num_workers={args.num_workers}); s", ["targets", "videos", "epoch"], disk)
    return keys


# ----------------------------------------------------------------------------- (3) passes
def part_eval(args, device, n_videos, sets):
    """(3) engine.passes.predict_proposals over a prefix of the test set (evaluation) and of the
    full set (pseudo proposals), batched, from the store, then score_results / the dynamic
    weights at full size. Host time per video = the pass minus its forwards and minus the
    gathers of the batches (device work when the features are on the GPU; reported apart):
    the batches' plans and output copies per video, plus what a pass spends once (start, the
    main loop, the wait for the proposals of the last batch, which nothing overlaps) spread
    over all the pass's videos. The proposals of the other batches run in the worker thread
    during the next forward and are reported apart (worker ms/video: on this CPU they share
    the cores with the forward)."""
    rows, cost, host = [], {}, {}
    for step, kind in ((0, "base"), (1, "full")):
        model = new_step(args, step)[0]
        for which in ("eval", "pseudo"):
            data = sets[kind]["test" if which == "eval" else "full"]
            n = min(n_videos or len(data), len(data))
            prefix = copy.copy(data)                                     # the first n videos
            prefix.video_names = data.video_names[:n]
            store.register([prefix], store.store_of(data))
            for vid in prefix.video_names:                  # the step's plans, made once per step
                batches.eval_item(prefix, vid)
            with engine_timer(device) as timer:
                tic = time.perf_counter()
                results, _ = passes.predict_proposals(model, prefix, args, step,
                                                      which == "pseudo", which)
                wall = time.perf_counter() - tic
            part = {key: timer.seconds[f"{which} {key}"] for key in
                    ("forward", "data", "gather", "outputs", "proposals", "proposals (worker)")}
            forwards = timer.calls[f"{which} forward"]
            tail = wall - part["forward"] - part["data"] - part["outputs"]   # once per pass
            per_video = (part["data"] - part["gather"] + part["outputs"]) / n + tail / len(data)
            scale = len(data) / n
            total = (wall - tail) * scale + tail
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
            if which == "eval":
                host[kind] = {"host_ms_per_video": 1000 * per_video,
                              "gather_ms_per_video": 1000 * part["gather"] / n,
                              "plan_ms_per_video": 1000 * (part["data"] - part["gather"]) / n,
                              "outputs_ms_per_video": 1000 * part["outputs"] / n,
                              "once_per_pass_ms": 1000 * tail,
                              "final_wait_ms_per_pass": 1000 * part["proposals"],
                              "worker_proposals_ms_per_video": 1000 * part["proposals (worker)"]
                              / n, "forwards": forwards, "videos": n}
            rows.append([kind, which, f"{n}/{len(data)}", f"{n / forwards:.1f}",
                         part["forward"] * scale, part["gather"] * scale,
                         (part["data"] - part["gather"]) * scale, part["outputs"] * scale,
                         1000 * part["proposals (worker)"] / n, 1000 * part["proposals"],
                         1000 * tail, 1000 * per_video,
                         last, total + last])
    table("(3) evaluation pass (test set) and pseudo-proposal pass (full set), batched, uniform "
          "sampling, untrained weights; s per pass (videos < all: that prefix timed, then "
          "scaled); worker = proposal ms per video in the worker thread (overlapping the next "
          "forward); wait = ms per pass waiting for the last batch's proposals; once = ms per "
          "pass outside the batches (wait included); host = ms per video outside the forward and "
          "the gather; last = mAP + JSON, or dynamic weights",
          ["model", "pass", "videos", "videos/fwd", "forward", "gather", "plan", "outputs",
           "worker ms", "wait ms", "once ms", "host ms", "last", "pass"], rows)
    return cost, host


def videos_per_forward(data, args):
    """Mean videos per evaluation forward over the whole set (the length buckets)."""
    lengths = [batches.eval_item(data, vid)[5] for vid in data.video_names]
    return len(lengths) / len(batches.buckets(lengths, args.eval_batch_rows))


# ----------------------------------------------------------------------------- (5) checkpoints
def part_checkpoint(args, kept, epochs, epoch_s):
    """(5) the time the training loop waits for checkpoints per epoch: the hand-over in
    engine.training.save_checkpoints (the engine's own seam: model_latest.pth after every epoch,
    written by the background writer, atomic + fsync) plus the wait of the next epoch's first
    optimizer step for the copy (the writer's step pre-hook), between simulated epochs of
    epoch_s seconds (sleeping, as a training thread waiting on the device). That step comes one
    training iteration into the epoch: (1)'s iteration time on this device, at most epoch_s. On
    a GPU the copies are queued on a side stream and the step waits for them on the GPU; on the
    CPU the copy thread copies while the iteration computes."""
    from engine import training
    rows, wait = [], {}
    for step, kind in ((0, "base"), (1, "full")):
        model, _, optimizer = kept[kind]
        with tempfile.TemporaryDirectory(dir=os.path.dirname(args.save_dir)) as folder:
            run_args = copy.copy(args)
            run_args.save_dir, run_args.log_path = folder, os.path.join(folder, "log.txt")
            run = training.Run(run_args)
            parts = training.StepParts(step, model, model, optimizer, None, None)
            seconds = []
            for epoch in range(epochs):
                tic = time.perf_counter()
                training.save_checkpoints(run, parts, epoch, improved=False)
                waited = time.perf_counter() - tic
                first = min(kept[kind + " iteration_s"], epoch_s)
                time.sleep(first)                            # the next epoch's first iteration
                tic = time.perf_counter()
                run.writer.before_step()                     # its optimizer step
                seconds.append(waited + time.perf_counter() - tic)
                time.sleep(epoch_s - first)
            run.writer.wait()                                # the run's end: every file written
            run.scalars.close()
            size = os.path.getsize(os.path.join(folder, "model_latest.pth")) / 2**20
        wait[kind] = float(np.mean(seconds))
        rows.append([kind, f"{size:.0f}", str(epochs), epoch_s, wait[kind]])
    table("(5) checkpoint wait per epoch: hand-over in save_checkpoints + the next step's wait for "
          "the copy, simulated epochs (s)", ["model", "MiB", "epochs", "epoch s", "wait s"], rows)
    return wait


# ----------------------------------------------------------------------------- (4) schedule
def part_schedule(args, epoch_time, pass_cost, wait, startup):
    """(4) the epoch loop of a training run (docs/method.md §10) with the measured costs, the
    features resident."""
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
        parts += [("train", epoch_time[(kind, "store")]), ("checkpoint", wait[kind])]
        if refinement.is_eval_epoch(epoch, args):
            parts.append(("eval", pass_cost[(kind, "eval")]))
        for part, seconds in parts:
            cost[part][0] += 1
            cost[part][1] += seconds
    total = sum(s for _, s in cost.values())
    where = {"train": "device (forward, backward, gather) + host (plans)",
             "eval": "device (forward, gather) + host (proposals, overlapped)",
             "pseudo": "device (forward, gather) + host (proposals, overlapped)",
             "checkpoint": "host (file writes)", "startup": "host (file checks, store)"}
    table(f"(4) estimated THUMOS schedule: {args.epochs} epochs, a new step every "
          f"{args.epochs_per_step} up to step {args.num_steps}, eval every {args.eval_freq} + "
          f"last 9, features resident: {total / 3600:.1f} h",
          ["part", "count", "hours", "share", "runs on (GPU run)"],
          [[part, str(n), s / 3600, f"{100 * s / total:.1f}%", where[part]]
           for part, (n, s) in cost.items()])
    return total / 3600, {part: s / 3600 for part, (_, s) in cost.items()}


KEYS = {
    "train_host_ms_per_batch": "host work per training batch with the features resident: the "
    "sampling plan of each item (its own generator, index arithmetic) and the full model's "
    "proposal layout; the larger of the base and full steps",
    "train_gather_ms_per_batch": "the gather + interpolation of a batch where the features are "
    "(the device); the larger of the two steps",
    "train_gather_copy_floor_ms": "one plain copy of the same bytes on the same device",
    "checkpoint_wait_s_per_epoch": "time the training loop waits for checkpoints per epoch, "
    "full model: the hand-over in engine.training.save_checkpoints and the next optimizer "
    "step's wait for the CPU copy (the writing itself runs in the background)",
    "eval_host_ms_per_video": "per evaluated video, the pass minus its forwards and its gathers "
    "(device work with resident features: detail.eval.*.gather_ms_per_video): plans and output "
    "copies per video, and what a pass spends once (start, main loop, the last batch's "
    "proposal wait) spread over the 210 videos; the "
    "larger of base and full; proposals overlapping the next forward (in the worker thread) "
    "are not counted: detail.eval.*.worker_proposals_ms_per_video",
    "forward_videos_per_batch": "mean videos per evaluation forward over the 210 test videos",
    "schedule_estimate_h": "the 800-epoch THUMOS schedule from the measured parts",
}


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--quick", action="store_true",
                        help="1 iteration / 1 batch per epoch / 6 videos per pass / 2 saves")
    parser.add_argument("--iters", type=int, default=3,
                        help="(1) timed iterations after one warm-up")
    parser.add_argument("--max_iters", type=int, default=0,
                        help="(2) batches timed per epoch (0 = all)")
    parser.add_argument("--eval_videos", type=int, default=0,
                        help="(3) videos per pass (0 = all)")
    parser.add_argument("--num_workers", type=int, default=0, help="DataLoader workers (disk)")
    parser.add_argument("--dim", type=int, default=2048,
                        help="feature dim (THUMOS 2048; smaller for a smoke test)")
    parser.add_argument("--save_epochs", type=int, default=4,
                        help="(5) simulated epochs per model")
    parser.add_argument("--epoch_s", type=float, default=1.0,
                        help="(5) seconds of each simulated epoch")
    parser.add_argument("--work_dir", default=os.path.join(tempfile.gettempdir(), "asmloc_bench"),
                        help="the synthetic set and scratch files")
    parser.add_argument("--json", default=None, help="also write the keys to this file")
    opts = parser.parse_args()
    started, load_start = time.perf_counter(), os.getloadavg()[0]
    if opts.quick:
        opts.iters, opts.max_iters, opts.eval_videos = 1, opts.max_iters or 1, opts.eval_videos or 6
        opts.save_epochs = 2
    device = torch.device(opts.device)
    name = (torch.cuda.get_device_name(device) if device.type == "cuda"
            else platform.processor() or platform.machine())
    print(f"device {device} ({name}), torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {os.cpu_count()} cpus, "
          f"load average {load_start:.1f}")
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
    kept = part_iteration(args, device, opts.iters)
    wait = part_checkpoint(args, kept, opts.save_epochs, opts.epoch_s)
    sets, resident, startup = build_sets(args)
    epoch_time = part_epoch(args, device, opts.max_iters, sets, kept)
    del kept
    train = part_batches(args, device, sets)
    pass_cost, host = part_eval(args, device, opts.eval_videos, sets)
    hours, parts = part_schedule(args, epoch_time, pass_cost, wait, startup)
    per_forward = videos_per_forward(sets["base"]["test"], args)
    load_end = os.getloadavg()[0]
    print(f"\nload average at the end {load_end:.1f}; {time.perf_counter() - started:.0f} s")
    if opts.json:
        worst = max(train.values(), key=lambda entry: entry["gather_ms"])
        report = {
            "train_host_ms_per_batch": max(entry["host_ms"] for entry in train.values()),
            "train_gather_ms_per_batch": worst["gather_ms"],
            "train_gather_copy_floor_ms": worst["copy_floor_ms"],
            "checkpoint_wait_s_per_epoch": wait["full"],
            "eval_host_ms_per_video": max(entry["host_ms_per_video"] for entry in host.values()),
            "forward_videos_per_batch": per_forward,
            "schedule_estimate_h": hours, "schedule_parts_h": parts,
            "detail": {"train_batches": train, "eval": host, "checkpoint_wait_s": wait,
                       "epoch_s": {f"{kind} {source}": seconds
                                   for (kind, source), seconds in epoch_time.items()}},
            "meaning": KEYS,
            "machine": {"device": str(device), "name": name, "torch": torch.__version__,
                        "threads": torch.get_num_threads(), "load_average": [load_start, load_end],
                        "seconds": time.perf_counter() - started, "quick": opts.quick,
                        "epoch_s": opts.epoch_s}}
        with open(opts.json, "w") as handle:
            json.dump(report, handle, indent=2)
        print(f"keys written to {opts.json}")


if __name__ == "__main__":
    main()
