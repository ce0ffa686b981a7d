"""The evaluation protocol of a run, stated (docs/method.md §12): which videos and GT are scored,
how the average is taken. Pure functions of gt.json, the split file and the config.

The GT is every annotation of the videos of the gt.json subset, whether or not the split file lists
the video (THUMOS-14: gt.json subset "test" has two videos that split_test.txt omits; they have no
features, so their GT counts as missed, as in the released numbers). Predictions of a listed video
that is not in the subset are scored as false positives by the evaluator. A video of the subset
with labels but no segment, or without "annotations", is predicted, not scored
(eval/files.py:gt_segments); with no segment at all in the subset, no mAP exists ("scored": false).
"""
import numpy as np

from eval.files import gt_segments


def range_name(low, high):
    return f"{low:.1f}:{high:.1f}"


def range_averages(tiou_thresholds, mAP, ranges):
    """{"0.1:0.5": mean mAP over the thresholds in [0.1, 0.5], ...} for each (low, high) of
    `ranges` (the preset's extra_average_ranges); a range is left out when the tIoU list lacks
    one of its 0.1 steps."""
    thresholds = np.asarray(tiou_thresholds, dtype=np.float64)
    values = np.asarray(mAP, dtype=np.float64)
    out = {}
    for low, high in ranges:
        wanted = np.arange(round(10 * low), round(10 * high) + 1) / 10                # 0.1 steps
        index = [np.flatnonzero(np.isclose(thresholds, t, atol=1e-6)) for t in wanted]
        if all(len(i) for i in index):
            out[range_name(low, high)] = float(values[[i[0] for i in index]].mean())
    return out


def describe(database, subset, split_name, split_videos, tiou_thresholds, num_tiou_for_average,
             extra_ranges=()):
    """The protocol as a JSON-friendly dict.

    database: gt.json's {VID: {"subset", "annotations"}}; split_videos: the videos the run predicts
    (the split file's list, in order); extra_ranges: the preset's extra_average_ranges.
    """
    split_videos = list(dict.fromkeys(split_videos))            # distinct videos, in order
    in_subset = [vid for vid, info in database.items() if info.get("subset") == subset]
    listed = set(split_videos)
    subset_set = set(in_subset)
    segments, scored = {}, {}
    for vid in in_subset:
        segments[vid], scored[vid] = gt_segments(database[vid])
    annotations = [ann for vid in in_subset for ann in segments[vid]]
    thresholds = [round(float(t), 6) for t in tiou_thresholds]
    n_avg = min(int(num_tiou_for_average), len(thresholds))
    return {
        "split_file": split_name, "split_videos": len(split_videos),
        "gt_subset": subset, "gt_videos": len(in_subset),
        "evaluated_videos": len([vid for vid in split_videos if scored.get(vid)]),
        "unscored_videos": len([vid for vid in split_videos
                                if vid in subset_set and not scored[vid]]),
        "scored": bool(annotations),
        "gt_not_in_split": [{"video": vid, "gt_instances": len(segments[vid])}
                            for vid in in_subset if vid not in listed and scored[vid]],
        "split_not_in_gt_subset": [{"video": vid, "gt_subset": database.get(vid, {}).get("subset")}
                                   for vid in split_videos if vid not in subset_set],
        "gt_instances": len(annotations), "classes": len({ann["label"] for ann in annotations}),
        "tiou_thresholds": thresholds, "average_over": [thresholds[0], thresholds[n_avg - 1]],
        "average_count": n_avg,
        "extra_averages": list(range_averages(thresholds, np.zeros(len(thresholds)), extra_ranges)),
    }


def protocol_line(protocol):
    """One log line: videos listed / evaluated / skipped (and why), GT size, tIoU list and
    averages."""
    p = protocol
    t = p["tiou_thresholds"]
    steps = np.diff(t)
    tious = (f"{t[0]:g}:{steps[0]:g}:{t[-1]:g}"
             if len(t) > 2 and np.allclose(steps, steps[0], atol=1e-6)
             else " ".join(f"{x:g}" for x in t))
    parts = [f"evaluation protocol: {p['split_file']} lists {p['split_videos']} videos, "
             f"{p['evaluated_videos']} evaluated against gt.json subset {p['gt_subset']!r} "
             f"({p['gt_videos']} videos, {p['gt_instances']} GT instances of {p['classes']} "
             f"classes)"]
    if p.get("unscored_videos"):
        parts.append(f"{p['unscored_videos']} listed videos have no segment in gt.json (labels "
                     f"only, or no annotations): predicted, not scored")
    if not p.get("scored", True):
        parts.append("no video has a segment: detections are written at every evaluation, not "
                     "scored (no mAP)")
    if p["gt_not_in_split"]:
        names = ", ".join(f"{x['video']} ({x['gt_instances']} GT)" for x in p["gt_not_in_split"])
        parts.append(f"{len(p['gt_not_in_split'])} gt.json videos not in {p['split_file']} are "
                     f"not predicted (no features), their GT counts as missed: {names}")
    if p["split_not_in_gt_subset"]:
        where = [("no gt.json entry" if x["gt_subset"] is None else f"subset {x['gt_subset']!r}")
                 for x in p["split_not_in_gt_subset"]]
        names = ", ".join(f"{x['video']} ({w})" for x, w in zip(p["split_not_in_gt_subset"], where))
        parts.append(f"{len(p['split_not_in_gt_subset'])} listed videos are outside the GT "
                     f"subset, their detections count as false positives: {names}")
    extra = f", also {' and '.join(p['extra_averages'])}" if p["extra_averages"] else ""
    parts.append(f"tIoU {tious}, average over {p['average_over'][0]:g}:{p['average_over'][1]:g} "
                 f"({p['average_count']} of {len(t)} thresholds){extra}")
    return "; ".join(parts)
