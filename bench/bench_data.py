"""Data pipeline benchmark: synthetic generator time (40-video THUMOS-like set, D = 2048;
target < 20 s) and item load time at D = 2048, T = 750 (target < 5 ms) for uniform / random /
dynamic sampling, with and without the in-memory feature cache.

Run: .venv/bin/python bench/bench_data.py
"""
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import dataset as ds  # noqa: E402
from config import build_args  # noqa: E402
from synthetic_data import PROFILES, generate_synthetic_dataset  # noqa: E402


def time_items(data, repeats=30):
    data[0]                                                   # warm the page cache / feature cache
    start = time.perf_counter()
    for _ in range(repeats):
        data[0]
    return (time.perf_counter() - start) / repeats * 1e3


def main():
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        generate_synthetic_dataset(Path(tmp) / "set40", "THUMOS14", 20, 20, feature_dim=2048,
                                   seed=0)
        print(f"generator: 40-video THUMOS-like set at D=2048 in "
              f"{time.perf_counter() - start:.2f} s (target < 20 s)")

        root = Path(tmp) / "t750"
        annotations = [{"segment": [10.0 + 40 * k, 13.0 + 40 * k], "label": "Diving"}
                       for k in range(10)]
        gt = {"database": {f"video_{s}_{i:07d}": {"duration": 750 / (25 / 16), "subset": s,
                                                  "annotations": annotations}
                           for s in PROFILES["THUMOS14"]["subsets"] for i in range(2)}}
        generate_synthetic_dataset(root, "THUMOS14", 2, 2, feature_dim=2048, seed=0,
                                   timeline_gt=gt)
        for cache_gb in (0, 4):
            ds.clear_feature_cache()
            args = build_args("THUMOS", ["--data_dir", str(root),
                                         "--feature_cache_gb", str(cache_gb)])
            train = ds.VideoDataset(args, "train", "random")
            test = ds.VideoDataset(args, "test", "uniform")
            assert train.vid_lens[train.video_names[0]] == 750
            results = {v: [{"label": "Diving", "score": 0.8,
                            "segment": [10.0 + 40 * k, 13.0 + 40 * k]} for k in range(10)]
                       for v in train.video_names + test.video_names}
            line = [f"item load D=2048 T=750 S=750, cache {'on ' if cache_gb else 'off'}:"]
            for name, data in (("uniform", test), ("random", train)):
                line.append(f"{name} {time_items(data):.2f} ms")
            for name, data in (("dynamic-uniform", test), ("dynamic-random", train)):
                data.set_proposals(results, data.compute_dynamic_weights(results, args))
                line.append(f"{name} {time_items(data):.2f} ms")
            print(", ".join(line) + " (target < 5 ms)")
        ds.clear_feature_cache()


if __name__ == "__main__":
    np.random.seed(0)  # noqa: NPY002 (the global generator, on purpose)
    main()
