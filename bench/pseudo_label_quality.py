"""Snippet-level precision / recall of a run's pseudo instance labels against the training GT.

The pseudo instance label of step k (docs/method.md §8) marks, in each training video, the
snippets max(round(s*r), 0) .. min(round(e*r), T-1) of every proposal in
pseudo_proposals_step{k}.json whose label is one of the video's GT labels. This script marks
the GT instances with the same rule and compares, over all training videos:
  action precision / recall: snippet marked as action (any class) vs inside a GT instance;
  class precision / recall:  (snippet, class) pairs;
  marked: fraction of training snippets the pseudo label calls action (GT: the same for the GT).

    python bench/pseudo_label_quality.py checkpoints/THUMOS/demo/RUN_FOLDER [--step 1] \
        [--gt GT_JSON]

The gt.json comes from the run folder's config.json unless --gt is given; the training subset is
the first of the dataset profile's (train, test) subsets (synthetic_data.PROFILES), the profile
named by the config (synthetic_profile) or by its preset.
"""
import argparse
import json
import os
import sys

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)


def marked_rows(segments, T, r):
    """(T,) bool: rows max(round(s*r), 0) .. min(round(e*r), T-1) of any [s, e]
    (docs/method.md §8)."""
    rows = np.arange(T)
    if not segments:
        return np.zeros(T, bool)
    s, e = np.asarray(segments, dtype=np.float64).reshape(-1, 2).T              # (N,), (N,)
    start = np.maximum(np.round(s * r), 0)
    end = np.minimum(np.round(e * r), T - 1)
    return ((rows[:, None] >= start) & (rows[:, None] <= end)).any(1)            # (T,)


def pseudo_label_quality(proposals, database, subset, r=25 / 16):
    """Counts and ratios of the pseudo labels {VID: [{label, score, segment}]} on `subset`
    videos."""
    tp = fp = fn = tp_c = fp_c = fn_c = total = marked = gt_marked = 0
    for vid, entry in database.items():
        if entry.get("subset") != subset:
            continue
        T = max(int(round(float(entry["duration"]) * r)), 1)
        labels = sorted({a["label"] for a in entry["annotations"]})
        any_pred, any_gt = np.zeros(T, bool), np.zeros(T, bool)
        for label in labels:
            pred = marked_rows([p["segment"] for p in proposals.get(vid, [])
                                if p["label"] == label], T, r)
            gt = marked_rows([a["segment"] for a in entry["annotations"]
                              if a["label"] == label], T, r)
            tp_c, fp_c = tp_c + (pred & gt).sum(), fp_c + (pred & ~gt).sum()
            fn_c = fn_c + (~pred & gt).sum()
            any_pred |= pred
            any_gt |= gt
        tp, fp = tp + (any_pred & any_gt).sum(), fp + (any_pred & ~any_gt).sum()
        fn = fn + (~any_pred & any_gt).sum()
        total, marked, gt_marked = total + T, marked + any_pred.sum(), gt_marked + any_gt.sum()

    def ratio(a, b):
        return float(a / b) if b else float("nan")
    return {"action_precision": ratio(tp, tp + fp), "action_recall": ratio(tp, tp + fn),
            "class_precision": ratio(tp_c, tp_c + fp_c), "class_recall": ratio(tp_c, tp_c + fn_c),
            "marked_frac": ratio(marked, total), "gt_frac": ratio(gt_marked, total),
            "snippets": int(total)}


def training_subset(run_config):
    """The gt.json subset of the training videos of a run's config (dict of config.json): the
    first of its profile's (train, test) subsets."""
    from config import PRESETS
    from synthetic_data import PROFILES
    profile = (run_config.get("synthetic_profile")
               or PRESETS[run_config["dataset"]]["synthetic_profile"])
    return PROFILES[profile]["subsets"][0]


def run_folder_quality(run_dir, step=1, gt_path=None):
    """pseudo_label_quality of run_dir/pseudo_proposals_step{step}.json (gt.json from its
    config.json)."""
    with open(os.path.join(run_dir, "config.json")) as handle:
        config = json.load(handle)
    gt_path = gt_path or os.path.join(config["data_dir"], "gt.json")
    with open(gt_path) as handle:
        database = json.load(handle)["database"]
    with open(os.path.join(run_dir, f"pseudo_proposals_step{step}.json")) as handle:
        proposals = json.load(handle)["results"]
    r = config["frames_per_sec"] / config["segment_frames_num"]
    return pseudo_label_quality(proposals, database, training_subset(config), r)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dirs", nargs="+",
                        help="run folders (with config.json and pseudo_proposals_step*.json)")
    parser.add_argument("--step", type=int, default=1,
                        help="pseudo labels of this step (made by step-1's model)")
    parser.add_argument("--gt", default=None,
                        help="gt.json (default: data_dir of the run's config.json)")
    opts = parser.parse_args(argv)
    print("| run | action precision | action recall | class precision | class recall "
          "| marked | GT |")
    print("|---|---|---|---|---|---|---|")
    for run_dir in opts.run_dirs:
        try:
            q = run_folder_quality(run_dir, opts.step, opts.gt)
        except (OSError, ValueError, KeyError) as err:
            sys.exit(f"error: {run_dir}: cannot read the run's files ({err})")
        print(f"| {run_dir} | {q['action_precision']:.3f} | {q['action_recall']:.3f} "
              f"| {q['class_precision']:.3f} | {q['class_recall']:.3f} | {q['marked_frac']:.3f} "
              f"| {q['gt_frac']:.3f} |")


if __name__ == "__main__":
    main()
