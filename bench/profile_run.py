"""Where a whole training run's time goes: wall seconds per part, and each part's matmul floor.

    .venv/bin/python bench/profile_run.py                      # python main_THUMOS.py --demo
    .venv/bin/python bench/profile_run.py --dataset ActivityNet
    .venv/bin/python bench/profile_run.py -- --epochs 10       # more flags for the run itself
    .venv/bin/python bench/profile_run.py --json parts.json -- --device cuda

Runs the entry point's own `engine.run.run` in this process (fresh temporary checkpoint root,
--no_resume) with a timer installed through the engine's seam (`engine.timing.set_timer`): the
engine names the parts of a run (`engine.timing.timed`) and nothing in the code under test is
replaced.
Parts, which add up to the run's wall time: start-up (interpreter start to the first epoch:
imports, datasets, demo data check), training epochs (split into waiting for the loader,
forward + loss, zero_grad + backward, optimizer step, the rest of the loop), evaluation passes
(forward, proposals, loader, mAP, then the per-class reports), pseudo-proposal passes,
checkpoint hand-overs to the background writer (a wait for the writer is "checkpoint wait",
inside them or inside an optimizer step), and what no part covers (logging, TensorBoard, RNG
states, step switches).
On cuda the timer synchronises the device at the edges of every part, so the split is exact
and the run slightly slower than without it.

The floor of a part is its FLOPs over the measured rate of one large float32 matmul on the
device: FLOPs of the matmuls, convolutions and attention are counted with torch's
FlopCounterMode on the first batch of each refinement step and on the first forward (a batch of
videos) per pass kind and step, then scaled by the run's counts (iterations, videos).
FlopCounterMode does not count the CPU's fused attention kernels, so they get the formula
4 B h Nq Nk dh (forward), twice that (backward).
"""
import argparse
import contextlib
import os
import sys
import tempfile
import time
from collections import defaultdict

START = time.perf_counter()
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [REPO, os.path.join(REPO, "bench")]

import torch  # noqa: E402

import config  # noqa: E402
from bench_model import matmul_gflops  # noqa: E402
from engine import passes, steps, timing  # noqa: E402
from engine import run as runner  # noqa: E402

IMPORTED = time.perf_counter()


class PartTimer:
    """engine.timing.set_timer's timer: seconds and calls per part, the first forward of each
    (phase, step) kept for the floors and the forwards counted."""

    def __init__(self):
        self.seconds, self.calls = defaultdict(float), defaultdict(int)
        self.samples, self.forwards = {}, defaultdict(int)
        self.first_epoch = None

    @staticmethod
    def sync():
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.synchronize()

    @contextlib.contextmanager
    def __call__(self, part, context):
        if part == "train epoch" and self.first_epoch is None:
            self.first_epoch = time.perf_counter()
        if part.endswith(" forward"):
            key = (part.split()[0], context["step"])
            self.samples.setdefault(key, context)
            # iterations of training; videos of a pass (several per forward)
            self.forwards[key] += 1 if key[0] == "train" else len(context["batch"]["vid_name"])
        self.sync()
        tic = time.perf_counter()
        try:
            yield
        finally:
            self.sync()
            self.seconds[part] += time.perf_counter() - tic
            self.calls[part] += 1


# ----------------------------------------------------------------------------- floors
def attention_formulas():
    """FlopCounterMode formulas (on shapes) for the CPU fused attention ops it does not count."""
    def forward(query, key, *_, **__):
        batch, heads, queries, head_dim = query
        return 4 * batch * heads * queries * key[2] * head_dim

    def backward(_grad, query, key, *rest, **kwargs):
        return 2 * forward(query, key)
    aten, formulas = torch.ops.aten, {}
    for name, formula in (("_scaled_dot_product_flash_attention_for_cpu", forward),
                          ("_scaled_dot_product_flash_attention_for_cpu_backward", backward)):
        if hasattr(aten, name):
            formulas[getattr(aten, name)] = formula
    return formulas


def flops_of(fn):
    from torch.utils.flop_counter import FlopCounterMode
    with FlopCounterMode(display=False, custom_mapping=attention_formulas()) as counter:
        fn()
    return counter.get_total_flops()


def floors(timer, rate):
    """Seconds of matmul work per part at `rate` FLOP/s."""
    out = defaultdict(float)
    for (phase, step), forwards in timer.forwards.items():
        sample = timer.samples[(phase, step)]
        model, batch, args = (sample[key] for key in ("model", "batch", "args"))
        if phase != "train":                    # per video: the sample forward's mean
            with torch.no_grad():
                flops = flops_of(lambda: passes.forward(model, batch, args))
            out[f"{phase} forward"] += forwards * flops / len(batch["vid_name"]) / rate
            continue
        loss_fn = steps.build_loss(args, step)
        label = batch["video_label"].to(args.device)
        pseudo = batch["pseudo_instance_label"].to(args.device)    # the base loss ignores it

        def loss():
            return loss_fn(label, passes.forward(model, batch, args), pseudo)[0]
        fwd = flops_of(loss)
        total = flops_of(lambda: loss().backward())
        model.zero_grad(set_to_none=True)
        out["train forward"] += forwards * fwd / rate
        out["train backward"] += forwards * (total - fwd) / rate
    return out


# ----------------------------------------------------------------------------- the table
def part_rows(timer, wall):
    """[(name, seconds, floor key or None, note, top level)]: the top-level rows add up to
    `wall`."""
    S, N = timer.seconds, timer.calls
    iterations = sum(n for (phase, _), n in timer.forwards.items() if phase == "train")
    videos = {phase: sum(n for (p, _), n in timer.forwards.items() if p == phase)
              for phase in ("eval", "pseudo")}
    train_parts = (S["train data"] + S["train forward"] + S["train backward"]
                   + S["train optimizer"])
    rows = [
        ("start-up (imports, datasets)", (timer.first_epoch or START) - START, None,
         f"imports {IMPORTED - START:.1f} s", True),
        ("training epochs", S["train epoch"], None,
         f"{N['train epoch']} epochs, {iterations} iterations", True),
        ("  data (waiting for the loader)", S["train data"], None, "", False),
        ("  forward + loss", S["train forward"], "train forward", "", False),
        ("  backward (zero_grad + backward)", S["train backward"], "train backward", "", False),
        ("  optimizer step", S["train optimizer"], None, "", False),
        ("  rest of the loop", S["train epoch"] - train_parts, None, "", False),
        ("evaluation passes", S["eval pass"] + S["eval reports"], "eval forward",
         f"{N['eval pass']} passes, {videos['eval']} videos", True),
        ("  forward", S["eval forward"], None, "", False),
        ("  proposals", S["eval proposals"], None, "", False),
        ("  data", S["eval data"], None, "", False),
        ("  mAP", S["eval mAP"], None, "", False),
        ("  reports (tables, CSV, JSON)", S["eval reports"], None, "", False),
        ("pseudo-proposal passes", S["pseudo pass"], "pseudo forward",
         f"{N['pseudo pass']} passes, {videos['pseudo']} videos", True),
        ("checkpoint hand-overs (written in the background)", S["checkpoint save"], None,
         f"{N['checkpoint save']} epochs; the loop waited {S['checkpoint wait']:.2f} s for "
         f"copies and writes", True),
    ]
    timed_total = sum(row[1] for row in rows if row[4])
    rows.append(("untimed (logging, TensorBoard, RNG, step switches)", wall - timed_total, None,
                 "", True))
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default=config.DEFAULT_PRESET, choices=sorted(config.PRESETS))
    parser.add_argument("--no_demo", action="store_true", help="run the preset instead of --demo")
    parser.add_argument("--json", default=None,
                        help="also write the parts, floors and wall time to this file")
    parser.add_argument("run_args", nargs="*", help="flags for the run (after --)")
    args = parser.parse_args(argv)
    timer = PartTimer()
    previous = timing.set_timer(timer)
    try:
        with tempfile.TemporaryDirectory(prefix="asmloc_profile_") as root:
            run_argv = (([] if args.no_demo else ["--demo"])
                        + ["--no_resume", "--checkpoint_root", root] + args.run_args)
            with contextlib.redirect_stdout(open(os.devnull, "w")):
                tic = time.perf_counter()
                runner.run(args.dataset, run_argv)
                wall = time.perf_counter() - START
                run_seconds = time.perf_counter() - tic
    finally:
        timing.set_timer(previous)                      # the FLOP counting below runs untimed
    device = timer.samples[("train", 0)]["args"].device
    rate = matmul_gflops(torch.device(device), 1024) * 1e9
    floor = floors(timer, rate)
    rows = part_rows(timer, wall)
    print(f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"matmul rate {rate / 1e9:.0f} GFLOP/s "
          f"(bench_model.matmul_gflops, 4096x1024 @ 1024x1024 float32)")
    print(f"{args.dataset}{'' if args.no_demo else ' --demo'} {' '.join(args.run_args)}: "
          f"wall {wall:.1f} s (run {run_seconds:.1f} s after imports)")
    print(f"{'part':52s} {'s':>7s} {'share':>6s} {'floor s':>8s}  notes")
    for name, seconds, floor_key, note, _ in rows:
        floor_text = f"{floor[floor_key]:8.2f}" if floor_key else f"{'-':>8s}"
        print(f"{name:52s} {seconds:7.2f} {100 * seconds / wall:5.1f}% {floor_text}  {note}")
    if args.json:
        from utils import atomic_write_json
        atomic_write_json(args.json, {
            "wall": wall, "device": str(device), "torch": torch.__version__,
            "parts": {name: seconds for name, seconds, *_, top in rows if top},
            "detail": {name.strip(): seconds for name, seconds, *_, top in rows if not top},
            "floors": dict(floor), "calls": dict(timer.calls)})


if __name__ == "__main__":
    main()
