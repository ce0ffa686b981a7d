"""Slow loop version of the detection mAP, written straight from SPEC.md section 10.

Plain Python, one prediction at a time. Tests pin the array-based evaluator to it and
bench/bench_eval.py times it. Same tie rules as eval/detection.py: equal scores keep file
order, equal tIoU visit GT in gt.json order, an empty union gives tIoU 0.
"""


def loop_tiou(pred, gt):
    """tIoU of two [start, end] segments (prediction, ground truth)."""
    inter = max(0.0, min(pred[1], gt[1]) - max(pred[0], gt[0]))
    union = (gt[1] - gt[0]) + (pred[1] - pred[0]) - inter
    return inter / union if union > 0 else 0.0


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
    return sum((mrec[i] - mrec[i - 1]) * mprec[i] for i in range(1, len(mrec)) if mrec[i] != mrec[i - 1])


def loop_evaluate(gt_data, pred_data, thresholds, subset):
    """Return (class names, ap[threshold][class]) for loaded gt.json / prediction dicts."""
    gt = {}                      # (video, label) -> list of segments, gt.json order
    classes = []
    for vid, info in gt_data["database"].items():
        if info["subset"] != subset:
            continue
        for ann in info["annotations"]:
            if ann["label"] not in classes:
                classes.append(ann["label"])
            gt.setdefault((vid, ann["label"]), []).append(ann["segment"])
    preds = {c: [] for c in classes}
    for vid, plist in pred_data["results"].items():
        for p in plist:
            if p["label"] in preds:
                preds[p["label"]].append((vid, p["score"], p["segment"]))
    ap = [[0.0] * len(classes) for _ in thresholds]
    for ci, cls in enumerate(classes):
        n_pos = sum(len(v) for (_, label), v in gt.items() if label == cls)
        ranked = sorted(preds[cls], key=lambda p: -p[1])          # stable: ties keep file order
        used = [set() for _ in thresholds]                         # matched GT per threshold
        hits = [[] for _ in thresholds]
        for vid, _, seg in ranked:
            segs = gt.get((vid, cls), [])
            tious = [loop_tiou(seg, g) for g in segs]
            visit = sorted(range(len(segs)), key=lambda j: -tious[j])
            for ti, thr in enumerate(thresholds):
                hit = 0
                for j in visit:
                    if tious[j] < thr:
                        break
                    if (vid, j) in used[ti]:
                        continue
                    used[ti].add((vid, j))
                    hit = 1
                    break
                hits[ti].append(hit)
        for ti in range(len(thresholds)):
            ap[ti][ci] = loop_average_precision(hits[ti], n_pos) if ranked else 0.0
    return classes, ap
