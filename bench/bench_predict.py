"""predict.py's cost: the THUMOS preset's whole cascade (base model + 3 refinement steps,
D = 2048) on new videos, through engine/cascade.py as predict.py runs it. Random weights (the cost
does not depend on training, except for the number of proposals, which untrained attention makes
rather large).

(1) one 10-minute video (T = 600 s * 25/16 = 938 snippets), model loading included, once;
(2) a folder of N videos (default 50, each 10 minutes): models loaded once, time per video.
Target: (1) under 3 s on the 2-core CPU.

Run: .venv/bin/python bench/bench_predict.py [--videos 50] [--minutes 10] [--device cpu]
"""
import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from config import build_args  # noqa: E402
from engine import cascade, checkpoints, steps  # noqa: E402
from utils import atomic_torch_save  # noqa: E402


def write_random_checkpoints(folder, args):
    """Checkpoints of untrained models under test mode's file names, in the released schema:
    with the Adam state (twice the weights), as training writes them, so loading costs what it
    costs on a real run."""
    torch.manual_seed(0)
    for step in range(args.num_steps + 1):
        model = steps.build_model(args, step)
        optimizer = steps.build_optimizer(args, model)
        for param in model.parameters():
            param.grad = torch.zeros_like(param)
        optimizer.step()                                          # creates exp_avg / exp_avg_sq
        state = {"epoch": 0, "model_state_dict": model.state_dict(),
                 "optimizer": optimizer.state_dict(), "best_test_mAP": 0.0,
                 "dataset": args.dataset, "model_kind": steps.model_kind(step)}
        atomic_torch_save(state, Path(folder) / checkpoints.cascade_file(step, args.num_steps))


def write_videos(folder, count, snippets, dim, seed=0):
    """Non-negative, temporally smooth random features (I3D-like value range), float32."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        x = np.abs(rng.standard_normal((snippets, dim), dtype=np.float32))
        x = (0.5 * x + 0.5 * np.roll(x, 1, axis=0)).astype(np.float32)
        np.save(folder / f"video_{i:03d}.npy", x)


class Clock:
    """Wall and process-CPU seconds since the last lap (CPU time counts every thread: on a busy
    machine it is the steadier number, and CPU / threads approximates the wall time of a quiet
    one)."""

    def __init__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def lap(self):
        wall, cpu = time.perf_counter(), time.process_time()
        out = (wall - self.wall, cpu - self.cpu)
        self.wall, self.cpu = wall, cpu
        return out


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=50)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--device", default="cpu")
    opts = parser.parse_args()
    args = build_args("THUMOS", ["--device", opts.device])
    snippets = round(opts.minutes * 60 * args.snippets_per_sec)
    print(f"THUMOS preset: {args.num_steps + 1} models, D = {args.feature_dim}, "
          f"S = {args.sample_segments_num}, device {args.device}, "
          f"torch threads {torch.get_num_threads()}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        write_random_checkpoints(tmp / "run", args)
        write_videos(tmp / "one", 1, snippets, args.feature_dim)
        write_videos(tmp / "many", opts.videos, snippets, args.feature_dim, seed=1)

        clock = Clock()                                  # loading without mmap, for comparison
        cascade.load_cascade(tmp / "run", args, "predict", mmap=False)
        wall, cpu = clock.lap()
        print(f"    loading the {args.num_steps + 1} checkpoints read whole (no mmap): "
              f"{wall:.2f} s (CPU {cpu:.2f} s)")

        clock = Clock()                                  # (1): as predict.py runs it
        models = cascade.load_cascade(tmp / "run", args, "predict")
        load = clock.lap()
        detections = cascade.localize_videos(tmp / "one", models, args)
        run = clock.lap()
        count = sum(map(len, detections.values()))
        print(f"(1) one {opts.minutes:g}-minute video (T = {snippets}): {load[0] + run[0]:.2f} s "
              f"(CPU {load[1] + run[1]:.2f} s) = load {load[0]:.2f} s (CPU {load[1]:.2f} s) "
              f"+ cascade {run[0]:.2f} s (CPU {run[1]:.2f} s); {count} detections "
              f"(target < 3 s)")

        clock = Clock()                                  # (2): models already loaded
        detections = cascade.localize_videos(tmp / "many", models, args)
        wall, cpu = clock.lap()
        print(f"(2) folder of {opts.videos} videos of {opts.minutes:g} minutes: {wall:.1f} s "
              f"(CPU {cpu:.1f} s), {wall / opts.videos:.2f} s per video "
              f"(CPU {cpu / opts.videos:.2f} s); models loaded once, before")


if __name__ == "__main__":
    main()
