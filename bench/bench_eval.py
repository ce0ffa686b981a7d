"""Time the detection evaluator (array vs loop version) and video_proposals.

Usage: python bench/bench_eval.py [--gt ../shared/data/THUMOS14/gt.json] [--sizes 20000 100000]
Predictions are random over the THUMOS-14 test videos: 60% jittered copies of GT instances
(right label), 40% uniform segments with a random label. Times are the best of --repeat runs
for the array version and one run for the loop version.
"""
import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))          # the loop oracles (tests/oracles/)

from config import build_args                    # noqa: E402
from eval import ANETDetection                   # noqa: E402
from oracles.detection_loop import loop_evaluate  # noqa: E402
from proposals import video_proposals            # noqa: E402


def random_predictions(gt, n, rng, subset="test"):
    videos = {v: info for v, info in gt["database"].items() if info["subset"] == subset}
    names = list(videos)
    labels = sorted({a["label"] for info in videos.values() for a in info["annotations"]})
    results = {}
    near = rng.random(n) < 0.6
    vid_idx = rng.integers(len(names), size=n)
    for i in range(n):
        vid = names[vid_idx[i]]
        info = videos[vid]
        if near[i] and info["annotations"]:
            ann = info["annotations"][rng.integers(len(info["annotations"]))]
            s, e = ann["segment"]
            s, e, label = s + rng.normal(0, 1.0), e + rng.normal(0, 1.0), ann["label"]
        else:
            s = rng.uniform(0, info["duration"])
            e, label = s + rng.exponential(5.0), labels[rng.integers(len(labels))]
        results.setdefault(vid, []).append({"label": label, "score": float(rng.random()),
                                            "segment": [float(s), float(max(s, e))]})
    return {"version": "bench", "results": results, "external_data": {}}


def bench_evaluator(gt_path, sizes, repeat, loop_max):
    gt = json.loads(Path(gt_path).read_text())
    thresholds = np.arange(0.1, 1.0, 0.1)
    rng = np.random.default_rng(0)
    for n in sizes:
        pred = random_predictions(gt, n, rng)
        load, evaluate = [], []
        for _ in range(repeat):
            t0 = time.perf_counter()
            det = ANETDetection(gt_path, pred, thresholds, "test", "THUMOS")
            t1 = time.perf_counter()
            det.evaluate()
            t2 = time.perf_counter()
            load.append(t1 - t0)
            evaluate.append(t2 - t1)
        line = (f"evaluate() {n:>7d} predictions: {min(evaluate):7.3f} s "
                f"(+ {min(load):.3f} s loading gt.json and the predictions), "
                f"avg mAP {100 * det.average_mAP:.2f}")
        if n <= loop_max:
            t0 = time.perf_counter()
            _, ap = loop_evaluate(gt, pred, thresholds, "test")
            loop_time = time.perf_counter() - t0
            diff = np.abs(np.asarray(ap) - det.ap).max()
            line += (f" | loop version {loop_time:7.2f} s -> {loop_time / min(evaluate):5.0f}x"
                     f" (vs evaluate+load {loop_time / (min(evaluate) + min(load)):4.0f}x), "
                     f"max |AP diff| {diff:.1e}")
        print(line, flush=True)


def smooth(rng, n, k, width):
    x = rng.normal(size=(n + width, k))
    kernel = np.ones(width) / width
    return np.stack([np.convolve(x[:, i], kernel, "valid")[:n] for i in range(k)], axis=1)


def bench_proposals(repeat):
    args = build_args("THUMOS")
    rng = np.random.default_rng(1)
    n_snip, n_cls, active = 750, len(args.class_name_lst), [2, 9, 15]
    logits = smooth(rng, n_snip, n_cls + 1, 16) * 8
    logits[:, active] += 3
    cas = np.exp(logits - logits.max(axis=1, keepdims=True))
    cas /= cas.sum(axis=1, keepdims=True)                             # (T, C+1)
    fg = 1 / (1 + np.exp(-smooth(rng, n_snip, 1, 12)[:, 0] * 8))
    att = np.stack([fg, 1 - fg], axis=1)                               # (T, 2)
    fg_cls = np.full(n_cls + 1, 0.01)
    fg_cls[active] = [0.6, 0.4, 0.3]
    cum = np.concatenate([[0.0], np.cumsum(rng.uniform(0.5, 2.0, 900))])
    for pseudo in (False, True):
        for cum_arg in (None, cum):
            times = []
            for _ in range(repeat):
                t0 = time.perf_counter()
                out = video_proposals(fg_cls, att, cas, 900, args, pseudo=pseudo, cum=cum_arg)
                times.append(time.perf_counter() - t0)
            mode = "pseudo" if pseudo else "eval"
            warp = "set " if cum_arg is not None else "None"
            print(f"video_proposals 750 snippets, 3 classes, {mode:6s} mode, cum {warp}: "
                  f"median {1e3 * np.median(times):6.2f} ms, best {1e3 * min(times):6.2f} ms, "
                  f"{len(out)} proposals", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--gt",
                        default=str(REPO / ".." / "shared" / "data" / "THUMOS14" / "gt.json"))
    parser.add_argument("--sizes", type=int, nargs="+", default=[20000, 100000])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--loop_max", type=int, default=100000,
                        help="largest size also timed with the loop")
    cli = parser.parse_args()
    if not Path(cli.gt).is_file():
        sys.exit(f"error: ground truth {cli.gt} not found (pass --gt)")
    bench_evaluator(cli.gt, cli.sizes, cli.repeat, cli.loop_max)
    bench_proposals(max(cli.repeat, 20))


if __name__ == "__main__":
    main()
