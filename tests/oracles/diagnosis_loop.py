"""Slow loop version of the DETAD-style diagnosis (eval/diagnosis.py), from its definitions.

Plain Python, one prediction and one GT at a time; tests pin the vectorised diagnosis to it and
bench/bench_diagnosis.py times it. Ranking as docs/method.md §12: per class np.argsort(scores)[::-1]
over the class's predictions in file order; candidate GT visited in np.argsort(tious)[::-1].
"""
import numpy as np

from eval.diagnosis import ERROR_TYPES
from oracles.detection_loop import loop_tiou


def loop_bin(value, edges):
    for b in range(len(edges) - 1):
        if edges[b] < value <= edges[b + 1] or (b == 0 and value == edges[0]):
            return b
    raise AssertionError(value)


def loop_voc(seq, n_pos, normalizer=None):
    """VOC AP of a hit (1) / false positive (0) sequence; DETAD's precision_N with a normalizer."""
    tp = fp = 0
    prec, rec = [], []
    for h in seq:
        tp, fp = tp + h, fp + (1 - h)
        r = tp / n_pos
        prec.append(tp / (tp + fp) if normalizer is None
                    else r * normalizer / (r * normalizer + fp))
        rec.append(r)
    mprec, mrec = [0.0] + prec + [0.0], [0.0] + rec + [1.0]
    for i in range(len(mprec) - 2, -1, -1):
        mprec[i] = max(mprec[i], mprec[i + 1])
    return sum((mrec[i] - mrec[i - 1]) * mprec[i] for i in range(1, len(mrec))
               if mrec[i] != mrec[i - 1])


def loop_diagnose(gt_data, pred_data, thresholds, subset, table, fp_tiou, n_avg, max_k=10,
                  cumulative=False, ignore_any_tiou=False):
    """Rows of the characteristic table and the false-positive counts (max_k, 6).

    In a bin, a prediction matched to a GT outside it is skipped at that threshold; with
    `ignore_any_tiou` (DETAD's released code) at every threshold once it is at one of them."""
    gts, classes, dur, unscored = [], [], {}, set()
    for vid, info in gt_data["database"].items():
        if info["subset"] != subset:
            continue
        annotations = info.get("annotations")
        if annotations is None or annotations and not any("segment" in a for a in annotations):
            unscored.add(vid)                     # predicted, not scored (docs/method.md §12)
            continue
        dur[vid] = info["duration"]
        for ann in annotations:
            if "segment" not in ann:
                continue
            if ann["label"] not in classes:
                classes.append(ann["label"])
            gts.append({"vid": vid, "label": ann["label"], "seg": ann["segment"]})
    preds = {c: [] for c in classes}
    for vid, plist in pred_data["results"].items():
        if vid in unscored:
            continue
        for p in plist:
            if p["label"] in preds:
                preds[p["label"]].append((vid, p["score"], p["segment"]))
    all_thr = list(thresholds) + [fp_tiou]
    matched, ranked = {}, {}
    for cls in classes:
        plist = preds[cls]
        ranked[cls] = list(np.argsort(np.array([p[1] for p in plist]))[::-1]) if plist else []
        for ti, thr in enumerate(all_thr):
            taken = set()
            for i in ranked[cls]:
                vid, _, seg = plist[i]
                cand = [g for g, gt in enumerate(gts) if gt["vid"] == vid and gt["label"] == cls]
                tious = np.array([loop_tiou(seg, gts[g]["seg"]) for g in cand])
                matched[cls, i, ti] = None
                for j in (np.argsort(tious)[::-1] if cand else []):
                    if tious[j] < thr:
                        break
                    if cand[j] in taken:
                        continue
                    taken.add(cand[j])
                    matched[cls, i, ti] = cand[j]
                    break
    count = {v: sum(g["vid"] == v for g in gts) for v in dur}
    value = {"length": [g["seg"][1] - g["seg"][0] for g in gts],
             "coverage": [(g["seg"][1] - g["seg"][0]) / dur[g["vid"]] for g in gts],
             "instances": [count[g["vid"]] for g in gts]}
    normalizer = len(gts) / len(classes)
    bins = [("all", "all", set(range(len(gts))))]
    for name, (edges, labels) in table.items():
        for b, label in enumerate(labels):
            bins.append((name, label, {g for g in range(len(gts))
                                       if loop_bin(value[name][g], edges) == b}))
    rows = []
    for name, label, members in bins:
        row = {"characteristic": name, "bin": label, "gt_count": len(members)}
        if members:
            maps, maps_n = [], []
            for ti in range(len(thresholds)):
                aps, aps_n = [], []
                for cls in classes:
                    n_pos = sum(gts[g]["label"] == cls for g in members)
                    if n_pos == 0:
                        continue
                    seq = []
                    for i in ranked[cls]:
                        m = matched[cls, i, ti]
                        if ignore_any_tiou and any(matched[cls, i, other] is not None
                                                   and matched[cls, i, other] not in members
                                                   for other in range(len(thresholds))):
                            continue
                        if m is None:
                            seq.append(0)
                        elif m in members:
                            seq.append(1)
                    aps.append(loop_voc(seq, n_pos))
                    aps_n.append(loop_voc(seq, n_pos, normalizer))
                maps.append(np.mean(aps))
                maps_n.append(np.mean(aps_n))
            row.update({f"mAP@{t:.2f}": m for t, m in zip(thresholds, maps)})
            row["avg_mAP"], row["avg_mAP_N"] = np.mean(maps[:n_avg]), np.mean(maps_n[:n_avg])
            found = {m for (c, i, ti), m in matched.items()
                     if ti == len(thresholds) and m is not None}
            row["recall"] = len(found & members) / len(members)
        rows.append(row)
    counts = np.zeros((max_k, len(ERROR_TYPES)), dtype=int)
    for cls in classes:
        n_gt = sum(g["label"] == cls for g in gts)
        for r, i in enumerate(ranked[cls]):
            vid, _, seg = preds[cls][i]
            if matched[cls, i, len(thresholds)] is not None:
                kind = 0
            else:
                best, best_iou = None, -1.0
                for g in gts:
                    if g["vid"] == vid and loop_tiou(seg, g["seg"]) > best_iou:
                        best, best_iou = g, loop_tiou(seg, g["seg"])
                if best is None or best_iou < 0.1:
                    kind = 5
                elif best_iou >= fp_tiou:
                    kind = 1 if best["label"] == cls else 2
                else:
                    kind = 3 if best["label"] == cls else 4
            for k in range(r // n_gt, max_k if cumulative else r // n_gt + 1):
                if k < max_k:
                    counts[k, kind] += 1
    return rows, counts
