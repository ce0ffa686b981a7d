"""Time the DETAD-style diagnosis (eval/diagnosis.py): vectorised vs the loop version.

Usage: python bench/bench_diagnosis.py [--gt ../shared/data/THUMOS14/gt.json] [--size 100000]
       [--loop_size 300]
Predictions are bench_eval.py's random ones over the real THUMOS-14 test GT (60% jittered GT
copies, 40% uniform). Reported: loading the files (the evaluator's loader, shared with the mAP),
the diagnosis itself (matching at 9 tIoU + 0.5, 16 bins, AP and AP_N, false-positive profile;
best of --repeat), and the loop version (tests/oracles/diagnosis_loop.py) on --loop_size
predictions
(it visits every GT of the subset for every prediction, so it is timed on a small set and scaled
linearly to --size). Last, the two ignore rules of the bins side by side: per tIoU (default)
minus at every tIoU once at one (DETAD's released code, `ignore_any_tiou`), on the per-bin
average mAP and AP_N, in points.
"""
import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO / "tests"))                # the loop oracles (tests/oracles/)

from bench_eval import random_predictions             # noqa: E402

from eval.detection import ANETDetection               # noqa: E402
from eval.diagnosis import diagnose_detector, preset_bin_table  # noqa: E402
from oracles.diagnosis_loop import loop_diagnose       # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gt",
                        default=str(REPO.parent / "shared" / "data" / "THUMOS14" / "gt.json"))
    parser.add_argument("--size", type=int, default=100000)
    parser.add_argument("--loop_size", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=3)
    cli = parser.parse_args(argv)
    gt = json.loads(Path(cli.gt).read_text())
    thresholds = np.arange(0.1, 1.0, 0.1)
    rng = np.random.default_rng(0)
    pred = random_predictions(gt, cli.size, rng)
    t0 = time.perf_counter()
    det = ANETDetection(cli.gt, pred, thresholds, "test", "THUMOS")
    load = time.perf_counter() - t0
    det.evaluate()
    times, any_times = [], []
    for _ in range(cli.repeat):
        t0 = time.perf_counter()
        per_tiou = diagnose_detector(det, cli.gt).by_characteristic
        times.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        any_tiou = diagnose_detector(det, cli.gt, ignore_any_tiou=True).by_characteristic
        any_times.append(time.perf_counter() - t0)
    small = random_predictions(gt, cli.loop_size, np.random.default_rng(1))
    t0 = time.perf_counter()
    loop_diagnose(gt, small, thresholds, "test", preset_bin_table("THUMOS"), 0.5, 7)
    loop = time.perf_counter() - t0
    print(f"THUMOS test GT: {len(det.gt_label)} instances, {len(det.video_names)} videos; "
          f"{len(det.p_label)} predictions")
    print(f"{'load files (evaluator loader)':<40}{load:>10.2f} s")
    print(f"{'diagnosis, vectorised (best of ' + str(cli.repeat) + ')':<40}{min(times):>10.2f} s")
    print(f"{'  the same, --ignore_any_tiou':<40}{min(any_times):>10.2f} s")
    print(f"{'loop oracle, ' + str(cli.loop_size) + ' predictions':<40}{loop:>10.2f} s")
    print(f"{'loop oracle scaled to ' + str(cli.size):<40}"
          f"{loop * cli.size / cli.loop_size:>10.0f} s (estimate)")
    bins = per_tiou["characteristic"] != "all"
    for key in ("avg_mAP", "avg_mAP_N"):
        diff = 100 * (per_tiou[key] - any_tiou[key])[bins].dropna()
        print(f"per-bin {key}, per tIoU minus any tIoU: {diff.min():+.2f} .. {diff.max():+.2f} "
              f"points (mean {diff.mean():+.2f}, {len(diff)} bins; the 'all' row: "
              f"{100 * (per_tiou[key] - any_tiou[key])[~bins].iloc[0]:+.2f})")


if __name__ == "__main__":
    main()
