"""Slow loop version of the detection mAP, written straight from docs/method.md §12.

Plain Python, one prediction at a time. Tests pin the array-based evaluator to it and
bench/bench_eval.py times it. Ranking as the official ActivityNet evaluator: a class's
predictions in file order visited in np.argsort(scores)[::-1] order, and for each prediction
its video's GT of the class (gt.json order) in np.argsort(tious)[::-1] order, ties included.
An empty union gives tIoU 0/0 = NaN as there: visited first, never below a threshold.
"""
import numpy as np


def loop_tiou(pred, gt):
    """tIoU of two [start, end] segments (prediction, ground truth); NaN for an empty union."""
    inter = max(0.0, min(pred[1], gt[1]) - max(pred[0], gt[0]))
    union = (gt[1] - gt[0]) + (pred[1] - pred[0]) - inter
    if union == 0:                                   # numpy's 0/0 (and x/0) as in the official code
        return float("nan") if inter == 0 else float("inf")
    return inter / union


def loop_average_precision(hits, n_pos):
    """VOC AP from a list of 0/1 hits in score order and the number of GT."""
    tp = fp = 0
    precision, recall = [], []
    for hit in hits:
        tp += hit
        fp += 1 - hit
        precision.append(tp / (tp + fp))
        recall.append(tp / n_pos)
    mprec = [0.0] + precision + [0.0]
    mrec = [0.0] + recall + [1.0]
    for i in range(len(mprec) - 2, -1, -1):
        mprec[i] = max(mprec[i], mprec[i + 1])
    return sum((mrec[i] - mrec[i - 1]) * mprec[i] for i in range(1, len(mrec))
               if mrec[i] != mrec[i - 1])


def loop_evaluate(gt_data, pred_data, thresholds, subset):
    """Return (class names, ap[threshold][class]) for loaded gt.json / prediction dicts."""
    gt = {}                      # (video, label) -> list of segments, gt.json order
    classes = []
    unscored = set()             # videos of the subset without a segment: predicted, not scored
    for vid, info in gt_data["database"].items():
        if info["subset"] != subset:
            continue
        annotations = info.get("annotations")
        if annotations and not any("segment" in ann for ann in annotations) \
                or annotations is None:                # labels only, or not annotated
            unscored.add(vid)
        for ann in info.get("annotations", []):
            if "segment" not in ann:                 # a video-level label is not ground truth
                continue
            if ann["label"] not in classes:
                classes.append(ann["label"])
            gt.setdefault((vid, ann["label"]), []).append(ann["segment"])
    preds = {c: [] for c in classes}
    for vid, plist in pred_data["results"].items():
        if vid in unscored:
            continue
        for p in plist:
            if p["label"] in preds:
                preds[p["label"]].append((vid, p["score"], p["segment"]))
    ap = [[0.0] * len(classes) for _ in thresholds]
    for ci, cls in enumerate(classes):
        n_pos = sum(len(v) for (_, label), v in gt.items() if label == cls)
        scores = np.array([p[1] for p in preds[cls]], dtype=np.float64)
        ranked = [preds[cls][i] for i in np.argsort(scores)[::-1]]   # the official order, ties too
        used = [set() for _ in thresholds]                         # matched GT per threshold
        hits = [[] for _ in thresholds]
        for vid, _, seg in ranked:
            segs = gt.get((vid, cls), [])
            tious = [loop_tiou(seg, g) for g in segs]
            visit = np.argsort(np.array(tious, dtype=np.float64))[::-1] if segs else []
            for ti, thr in enumerate(thresholds):
                hit = 0
                for j in visit:
                    if tious[j] < thr:
                        break
                    if (vid, int(j)) in used[ti]:
                        continue
                    used[ti].add((vid, int(j)))
                    hit = 1
                    break
                hits[ti].append(hit)
        for ti in range(len(thresholds)):
            ap[ti][ci] = loop_average_precision(hits[ti], n_pos) if ranked else 0.0
    return classes, ap
