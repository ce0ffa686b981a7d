"""Where a whole training run's time goes: wall seconds per part, and each part's matmul floor.

    .venv/bin/python bench/profile_run.py                      # python main_THUMOS.py --demo
    .venv/bin/python bench/profile_run.py --dataset ActivityNet
    .venv/bin/python bench/profile_run.py -- --epochs 10       # more flags for the run itself
    .venv/bin/python bench/profile_run.py --repo ../old --no_demo -- --data_dir data/synthetic_THUMOS14 \
        --feature_dim 256 --epochs 60 --epochs_per_step 20 --num_steps 2 --sample_segments_num 256 --lr 1e-3
                                                               # another checkout, the same demo data and schedule

Runs the entry point's own `runner.run` in this process (fresh temporary checkpoint root,
--no_resume) with timers wrapped around the engine's pieces; nothing in the code under test
changes. Parts: start-up (interpreter start to the first epoch: imports, datasets, demo data
check), training data (waiting for the loader), forward (+ loss), backward, optimizer (step +
zero_grad), evaluation passes (their forward, proposals, loader, mAP + reports), pseudo-proposal
passes, checkpoint saves, and the rest (logging, TensorBoard, RNG states). CPU timings: the
forward is synchronous, so no device syncs are needed; on cuda the split is approximate.

The floor of a part is its FLOPs over the measured rate of one large float32 matmul on this
device: FLOPs of the matmuls and convolutions are counted with torch's FlopCounterMode on one
representative batch per refinement step (the first of the step's loader) and on one video per
pass kind (evaluation, pseudo proposals) and step; attention FLOPs (not counted by FlopCounterMode
on every backend) come from their shapes (4 B h Nq Nk dh forward, twice that backward); all are
then scaled by the run's counts.
"""
import argparse
import contextlib
import importlib
import os
import sys
import tempfile
import time
from collections import defaultdict

START = time.perf_counter()
HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402

engine = model_module = refinement = entry = None       # the modules of --repo, set by load()
IMPORTED = None


def load(repo):
    """Import the checkout's modules (older checkouts: engine.run is the entry point)."""
    global engine, model_module, refinement, entry, IMPORTED
    sys.path.insert(0, os.path.abspath(repo))
    engine = importlib.import_module("engine")
    model_module = importlib.import_module("model")
    refinement = importlib.import_module("refinement")
    try:
        entry = importlib.import_module("runner").run
    except ImportError:
        entry = engine.run
    IMPORTED = time.perf_counter()


SECONDS = defaultdict(float)
COUNTS = defaultdict(int)
SAMPLES = {}            # (phase, step) -> (model, batch, args) of the first forward of a phase in a step


@contextlib.contextmanager
def timed(part):
    tic = time.perf_counter()
    try:
        yield
    finally:
        SECONDS[part] += time.perf_counter() - tic
        COUNTS[part] += 1


def wrap(owner, name, part_of):
    """Replace owner.name by a timed version; part_of(*args) names the part."""
    original = getattr(owner, name)

    def timed_call(*args, **kwargs):
        with timed(part_of(*args, **kwargs)):
            return original(*args, **kwargs)
    setattr(owner, name, timed_call)


PHASE = ["startup"]     # what the process is doing: startup, train, eval, pseudo


def install_timers():
    def forward_part(model, batch, step, args):
        phase = "train" if model.training else PHASE[0]
        SAMPLES.setdefault((phase, step), (model, batch, args))
        COUNTS[(phase, step)] += 1                       # training iterations / videos per phase and step
        return f"{phase} forward"
    wrap(engine, "forward", forward_part)
    wrap(engine, "video_proposals", lambda *a, **k: f"{PHASE[0]} proposals")
    if hasattr(engine, "score_results"):              # older checkouts score inside engine.evaluate
        wrap(engine, "score_results", lambda *a, **k: "eval mAP")
    wrap(engine, "report_evaluation", lambda *a, **k: "eval reports")     # called after the pass
    wrap(refinement.Refinement, "save_checkpoint", lambda *a, **k: "checkpoint saves")
    original_backward = torch.Tensor.backward

    def backward(self, *args, **kwargs):
        with timed("train backward"):
            return original_backward(self, *args, **kwargs)
    torch.Tensor.backward = backward

    def phased(name, phase):
        original = getattr(engine, name)

        def run_phase(*args, **kwargs):
            before, PHASE[0] = PHASE[0], phase
            with timed(f"{phase} pass total"):
                try:
                    return original(*args, **kwargs)
                finally:
                    PHASE[0] = before
        setattr(engine, name, run_phase)
    phased("evaluate", "eval")
    phased("generate_pseudo_proposals", "pseudo")

    original_epoch = engine.train_one_epoch

    def train_one_epoch(model, loss_fn, optimizer, loader, args, step, epoch):
        if "startup" not in SECONDS:
            SECONDS["startup"] = time.perf_counter() - START
        PHASE[0] = "train"
        if not getattr(optimizer, "_timed", False):
            wrap(optimizer, "step", lambda *a, **k: "train optimizer")
            wrap(optimizer, "zero_grad", lambda *a, **k: "train optimizer")
            optimizer._timed = True
        if not getattr(loss_fn, "_timed", False):
            wrap(loss_fn, "forward", lambda *a, **k: "train loss")
            loss_fn._timed = True
        with timed("train epochs total"):
            return original_epoch(model, loss_fn, optimizer, loader, args, step, epoch)
    engine.train_one_epoch = train_one_epoch

    original_progress = engine.progress

    def progress(iterable, args, desc):             # time spent waiting for the loader
        iterator = iter(original_progress(iterable, args, desc))
        while True:
            with timed(f"{PHASE[0]} data"):
                try:
                    item = next(iterator)
                except StopIteration:
                    return
            yield item
    engine.progress = progress


# ----------------------------------------------------------------------------- floors
def attention_flops(counter):
    """(name, original, counting version) of the model's attention function (`segment_attention`,
    or `masked_attention` before the fused kernel); the fused one's counting version adds
    4 B h Nq Nk dh per call."""
    name = "segment_attention" if hasattr(model_module, "segment_attention") else "masked_attention"
    original = getattr(model_module, name)

    def counted(q, k, v, *rest):
        B, h, Nq, dh = q.shape
        counter[0] += 4 * B * h * Nq * k.shape[2] * dh
        return original(q, k, v, *rest)
    # the hand-written version is two batched matmuls, which FlopCounterMode counts itself
    return name, original, (counted if name == "segment_attention" else original)


def flops_of(fn):
    """(matmul/conv FLOPs counted by FlopCounterMode, attention forward FLOPs) of fn()."""
    from torch.utils.flop_counter import FlopCounterMode
    counter = [0]
    name, original, counted = attention_flops(counter)
    setattr(model_module, name, counted)
    try:
        with FlopCounterMode(display=False) as flop_counter:
            fn()
    finally:
        setattr(model_module, name, original)
    counted_total = flop_counter.get_total_flops()
    sdpa_counted = sum(value for op, value in flop_counter.get_flop_counts()["Global"].items()
                       if "scaled_dot_product" in str(op))
    return counted_total - sdpa_counted, counter[0]


def floors(counts, rate):
    """Seconds of matmul work per part at `rate` FLOP/s; counts {(phase, step): forwards}."""
    out = defaultdict(float)
    for (phase, step), forwards in counts.items():
        model, batch, args = SAMPLES[(phase, step)]
        if phase != "train":
            with torch.no_grad():
                per_video = sum(flops_of(lambda: engine.forward(model, batch, step, args)))
            out[f"{phase} forward"] += forwards * per_video / rate
            continue
        loss_fn = engine.build_loss(args, step)
        fwd = flops_of(lambda: loss_fn(batch["video_label"], engine.forward(model, batch, step, args),
                                       batch["pseudo_instance_label"] if step else None))

        def full_iteration():
            out_ = engine.forward(model, batch, step, args)
            loss, _ = loss_fn(batch["video_label"], out_, batch["pseudo_instance_label"] if step else None)
            loss.backward()
        total = flops_of(full_iteration)
        model.zero_grad(set_to_none=True)
        fwd_flops = fwd[0] + fwd[1]
        bwd_flops = (total[0] - fwd[0]) + 2 * total[1]
        out["train forward"] += forwards * fwd_flops / rate
        out["train backward"] += forwards * bwd_flops / rate
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="THUMOS", choices=["THUMOS", "ActivityNet"])
    parser.add_argument("--no_demo", action="store_true", help="run the preset instead of --demo")
    parser.add_argument("--repo", default=HERE, help="checkout to profile (default: this one)")
    parser.add_argument("run_args", nargs="*", help="flags for the run (after --)")
    args = parser.parse_args(argv)
    load(args.repo)
    install_timers()
    with tempfile.TemporaryDirectory(prefix="asmloc_profile_") as root:
        run_argv = ([] if args.no_demo else ["--demo"]) + ["--no_resume", "--checkpoint_root", root] + args.run_args
        with contextlib.redirect_stdout(open(os.devnull, "w")):
            tic = time.perf_counter()
            entry(args.dataset, run_argv)
            run_seconds = time.perf_counter() - tic
    wall = time.perf_counter() - START
    S, N = defaultdict(float, SECONDS), defaultdict(int, COUNTS)   # the run's; the FLOP counting below adds more
    forwards = {key: value for key, value in N.items() if isinstance(key, tuple)}
    iterations = sum(value for (phase, _), value in forwards.items() if phase == "train")
    device = SAMPLES[("train", 0)][2].device
    sys.path.insert(0, os.path.join(HERE, "bench"))
    from bench_model import matmul_gflops
    rate = matmul_gflops(torch.device(device), 1024) * 1e9
    floor = floors(forwards, rate)
    train = S["train epochs total"]
    rows = [
        ("start-up (imports, datasets)", S["startup"], None, f"imports {IMPORTED - START:.1f} s"),
        ("training: data", S["train data"], None, ""),
        ("training: forward + loss", S["train forward"] + S["train loss"],
         floor["train forward"], f"{iterations} iterations"),
        ("training: backward", S["train backward"], floor["train backward"], ""),
        ("training: optimizer", S["train optimizer"], None, ""),
        ("training: rest of the loop", train - sum(S[f"train {p}"] for p in
                                                   ("data", "forward", "loss", "backward", "optimizer")), None, ""),
        ("evaluation passes", S["eval pass total"] + S["eval reports"], floor["eval forward"],
         f"forward {S['eval forward']:.1f}, proposals {S['eval proposals']:.1f}, "
         f"data {S['eval data']:.1f}, mAP {S['eval mAP']:.1f}, reports {S['eval reports']:.1f}; "
         f"{N['eval pass total']} passes, {N['eval forward']} videos"),
        ("pseudo-proposal passes", S["pseudo pass total"], floor["pseudo forward"],
         f"{N['pseudo pass total']} passes, {N['pseudo forward']} videos"),
        ("checkpoint saves", S["checkpoint saves"], None, f"{N['checkpoint saves']} files"),
    ]
    accounted = sum(row[1] for row in rows)
    rows.append(("rest (logging, TensorBoard, RNG states)", wall - accounted, None, ""))
    print(f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"matmul rate {rate / 1e9:.0f} GFLOP/s (bench_model.matmul_gflops, 4096x1024 @ 1024x1024 float32)")
    print(f"{args.dataset}{'' if args.no_demo else ' --demo'} {' '.join(args.run_args)}: wall {wall:.1f} s "
          f"(run {run_seconds:.1f} s after imports)")
    print(f"{'part':40s} {'s':>7s} {'share':>6s} {'floor s':>8s}  notes")
    for name, seconds, floor_s, note in rows:
        floor_text = f"{floor_s:8.2f}" if floor_s is not None else f"{'-':>8s}"
        print(f"{name:40s} {seconds:7.2f} {100 * seconds / wall:5.1f}% {floor_text}  {note}")


if __name__ == "__main__":
    main()
