"""Chance level of the demo: oracle video labels, random segments and scores (no model).

For every test video and each of its ground-truth classes, N segments are drawn with uniform
random centres and lengths resampled from the training instances' lengths, with random scores;
the mAP of these predictions is what "localization at chance" scores on the dataset.

    python bench/chance_level.py --data_dir data/synthetic_THUMOS14
"""
import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from config import build_args  # noqa: E402
from eval import ANETDetection  # noqa: E402
from synthetic_data import PROFILES  # noqa: E402


def chance_predictions(database, eval_subset, train_subset, per_class, rng):
    lengths = np.array([a["segment"][1] - a["segment"][0] for v in database.values()
                        if v["subset"] == train_subset for a in v["annotations"]])
    results = {}
    for vid, video in database.items():
        if video["subset"] != eval_subset:
            continue
        duration = video["duration"]
        results[vid] = []
        for label in sorted({a["label"] for a in video["annotations"]}):
            centre = rng.uniform(0, duration, per_class)
            half = rng.choice(lengths, per_class) / 2
            for c, h, score in zip(centre, half, rng.uniform(0, 1, per_class)):
                segment = [float(max(c - h, 0)), float(min(c + h, duration))]
                results[vid].append({"label": label, "score": float(score), "segment": segment})
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_dir", default="data/synthetic_THUMOS14")
    parser.add_argument("--per_class", type=int, default=20,
                        help="random segments per video and class")
    parser.add_argument("--repeats", type=int, default=5)
    cli = parser.parse_args(argv)
    args = build_args("THUMOS", ["--demo", "--data_dir", cli.data_dir])
    with open(os.path.join(cli.data_dir, "gt.json")) as handle:
        database = json.load(handle)["database"]
    train_subset = PROFILES[args.synthetic_profile]["subsets"][0]      # gt.json's training videos
    averages = []
    for seed in range(cli.repeats):
        results = chance_predictions(database, args.eval_subset, train_subset, cli.per_class,
                                     np.random.default_rng(seed))
        detector = ANETDetection(os.path.join(cli.data_dir, "gt.json"),
                                 {"version": "chance", "results": results, "external_data": {}},
                                 args.tiou_thresholds, args.eval_subset, args.dataset)
        averages.append(detector.evaluate())
    print(f"chance level (oracle labels, random segments): average mAP@0.1:0.7 "
          f"{100 * np.mean(averages):.2f} ± {100 * np.std(averages):.2f} over {cli.repeats} draws")


if __name__ == "__main__":
    main()
