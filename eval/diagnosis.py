"""DETAD-style diagnosis of detections: mAP by instance characteristic and false-positive types.

After Alwassel et al., "Diagnosing Error in Temporal Action Detectors" (DETAD, ECCV 2018), with
the definitions of its paper and reference code:

- Matching: the detection mAP's greedy matching (docs/method.md §12) against *all* GT of the
  subset, at every tIoU threshold. Predictions are ranked per class by ``np.argsort(scores)[::-1]``
  on the class's predictions in file order (`eval.detection.class_order`).
- By characteristic: every GT instance falls in one bin of its length (s), its coverage
  (length / video duration) and the number of instances in its video (all classes). For a bin,
  AP is computed on the bin's GT only: a prediction matched to a GT of the bin is a true
  positive, an unmatched prediction a false positive, and a prediction matched to a GT outside
  the bin is ignored at that threshold (neither; DETAD, section 3). mAP = mean over the classes
  with GT in the bin.
- Normalized AP (DETAD's AP_N): precision_N = R*N / (R*N + FP), with R the recall on the class's
  GT (of the bin), FP the false positives so far and N the average number of GT instances per
  class over the whole subset (one N for every bin), so bins of different sizes compare.
- Recall and miss rate of a bin at the diagnosis tIoU a: the share of its GT matched / not
  matched by any prediction.
- False-positive breakdown at tIoU a (default 0.5; DETAD section 4): every prediction is a true
  positive (matched) or, else, by the GT of *any* label in its video with the highest tIoU
  (the first in gt.json order on ties): tIoU >= a -> double detection if that GT has the
  prediction's label, wrong label otherwise; 0.1 <= tIoU < a -> localization error (same label)
  or confusion (other label); tIoU < 0.1 with every GT, or no GT in the video -> background.
  Profile over k = 1..10: per class c with G_c GT, its predictions ranked k*G_c - G_c .. k*G_c - 1
  (DETAD's code; `cumulative=True`: ranks 0 .. k*G_c - 1, the "top k*G" reading), pooled over
  classes; each share = count / number of those predictions.

Bins: right-closed (lo, hi], the first also holds its lower edge; the last is open-ended so
every GT falls in a bin.

Where we differ from DETAD's released code (on purpose): the ignore rule of a bin is applied per
tIoU threshold, as the paper defines it (its code removes, for every threshold, the predictions
ignored at *any* threshold; it only uses one threshold on THUMOS, where both agree;
`ignore_any_tiou=True`, `--ignore_any_tiou` on the command line, follows its code); GT of zero
length and coverage > 1 are kept (the evaluator keeps them); AP and AP_N are both reported.
Matching is the evaluator's own (eval.detection.match_predictions), so tied scores and tied tIoU
are visited exactly as the official evaluator visits them.

Vectorised: loops run over thresholds, bins, classes (ranking) and the rank inside a component
of the prediction-GT candidate graph (matching), never over single predictions.
"""
from typing import NamedTuple

import numpy as np

from config import PRESETS
from eval.detection import ANETDetection, candidate_pairs, class_order, match_predictions
from eval.files import EvaluationInputError, read_json
from utils import group_positions

INF = float("inf")
# Bin edges, by the name a preset gives in its diagnosis_bins key: characteristic -> (edges, bin
# names). "DETAD": the DETAD paper's (ActivityNet). "THUMOS14-test": chosen from the real
# THUMOS14 test subset of gt.json (212 videos, 3358 instances): length (s) quantiles
# 20/40/60/80 % = 1.5/2.5/4.2/6.9, median 3.2, max 86.6; coverage quantiles =
# .0062/.0094/.0154/.0260, max .91; instances per video quantiles (per instance) = 12/22/36/62,
# min 1, max 218. Round edges near those quantiles give bins of comparable size: GT per bin,
# length 730/659/572/759/638, coverage 637/798/541/678/704, instances 539/651/1028/727/413
# (pinned by tests/test_eval_diagnosis.py).
BIN_TABLE = {
    "DETAD": {
        "length": ((0, 30, 60, 120, 180, INF), ("XS", "S", "M", "L", "XL")),
        "coverage": ((0, 0.2, 0.4, 0.6, 0.8, INF), ("XS", "S", "M", "L", "XL")),
        "instances": ((0, 1, 4, 8, INF), ("XS", "S", "M", "L")),
    },
    "THUMOS14-test": {
        "length": ((0, 1.5, 2.5, 4, 7, INF), ("XS", "S", "M", "L", "XL")),
        "coverage": ((0, 0.006, 0.01, 0.015, 0.025, INF), ("XS", "S", "M", "L", "XL")),
        "instances": ((0, 10, 20, 40, 80, INF), ("XS", "S", "M", "L", "XL")),
    },
}
ERROR_TYPES = ("true positive", "double detection", "wrong label", "localization", "confusion",
               "background")
MIN_TIOU = 0.1   # DETAD: below this tIoU with every GT a false positive is a background error


class Diagnosis(NamedTuple):
    """Result of `diagnose`; tables are pandas DataFrames (empty bins hold None)."""
    by_characteristic: object   # DataFrame: one row per (characteristic, bin)
    fp_breakdown: object        # DataFrame: one row per k, a share column per error type
    tiou_thresholds: np.ndarray
    num_tiou_for_average: int
    fp_tiou: float
    average_mAP: float           # the evaluator's average mAP on all GT
    normalizer: float            # N of AP_N
    ignore_any_tiou: bool = False  # the bins' ignore rule: DETAD's released code (True) or per tIoU


# ----------------------------------------------------------------------------- characteristics
def gt_characteristics(gt_video, gt_seg, durations):
    """length (s), coverage (length / duration) and instances in the video, each (G,)."""
    length = gt_seg[:, 1] - gt_seg[:, 0]
    coverage = length / durations[gt_video]
    instances = np.bincount(gt_video, minlength=len(durations))[gt_video].astype(np.float64)
    return {"length": length, "coverage": coverage, "instances": instances}


def assign_bins(values, edges):
    """Bin index of each value for right-closed bins (e0, e1], (e1, e2], ...; e0 goes to bin 0."""
    index = np.searchsorted(np.asarray(edges, dtype=np.float64), values, side="left") - 1
    return np.clip(index, 0, len(edges) - 2)


def load_durations(gt_file, video_names):
    """Duration (s) of each video (in `video_names` order) from gt.json; needed for coverage."""
    database = read_json(gt_file, "ground-truth")["database"]
    durations = np.empty(len(video_names))
    for i, vid in enumerate(video_names):
        value = database[vid].get("duration")
        try:
            durations[i] = float(value)
        except (TypeError, ValueError):
            durations[i] = np.nan
        if not durations[i] > 0:
            raise EvaluationInputError(f"ground-truth file {gt_file}: video {vid} needs a positive "
                                       f"'duration' for the coverage bins (got {value!r})")
    return durations


# ----------------------------------------------------------------------------- ranking, matching
def match_to_gt(p_video, p_label, p_seg, gt_video, gt_label, gt_seg, thresholds, order):
    """Greedy matching of docs/method.md §12 -> matched GT index (P, H), -1 where unmatched.

    The evaluator's own matching (eval.detection.match_predictions), so predictions and GT are
    visited exactly as the official evaluator visits them, ties included.
    """
    return match_predictions(p_video, p_label, p_seg, None, gt_video, gt_label, gt_seg, thresholds,
                             order=order, return_gt=True)


# ---------------------------------------------------------------------------- AP with ignored rows
def voc_ap(hit_col, hit_row, fp_cum, col_thr, row_class, n_pos, normalizer=None,
           fp_dropped=None):
    """VOC AP (docs/method.md §12) of M columns -> (M, C); NaN where a class has no GT in the
    column.

    Rows are the ranked predictions (class ascending, rank). A column lists its hits as
    (hit_col, hit_row) pairs sorted by column, then row; its false positives are those of its
    threshold col_thr[m]: fp_cum (H, R) running count of unmatched predictions. Every other row
    is ignored (matched to a GT outside the column's bin). n_pos (M, C) GT per column and class.
    fp_dropped (Q,): per hit, the unmatched rows of its class up to it that the column ignores
    (not false positives there). With `normalizer` N, precision is DETAD's R*N / (R*N + FP).
    AP = sum over hits of (1/n) * max precision over this and later hits of the class, as
    eval.detection.average_precision computes it.
    """
    n_cols, n_cls = n_pos.shape
    bounds = np.searchsorted(row_class, np.arange(n_cls + 1))
    cls = row_class[hit_row]
    seg = hit_col * n_cls + cls                                            # nondecreasing
    counts = np.bincount(seg, minlength=n_cols * n_cls)
    k = group_positions(counts) + 1                                        # true positives so far
    thr, start = col_thr[hit_col], bounds[cls]
    f = fp_cum[thr, hit_row] - np.where(start > 0, fp_cum[thr, np.maximum(start - 1, 0)], 0)
    if fp_dropped is not None:
        f = f - fp_dropped
    npos = n_pos[hit_col, cls].astype(np.float64)
    if normalizer is None:
        precision = k / (k + f)
    else:
        recall_n = k / npos * normalizer
        precision = recall_n / (recall_n + f)
    grid = np.zeros((n_cols * n_cls, counts.max(initial=0)))               # (M*C, max hits)
    grid[seg, k - 1] = precision
    right_max = np.maximum.accumulate(grid[:, ::-1], axis=1)[:, ::-1][seg, k - 1]
    ap = np.bincount(seg, weights=(k / npos - (k - 1) / npos) * right_max, minlength=n_cols * n_cls)
    ap = ap.astype(np.float64).reshape(n_cols, n_cls)              # float even without hits
    ap[n_pos == 0] = np.nan
    return ap


# ----------------------------------------------------------------------------- the two analyses
def bin_masks(characteristics, bin_table, n_gt):
    """[(characteristic, bin name, range text, GT mask (G,))], "all" first, then the table's
    bins."""
    masks = [("all", "all", "all", np.ones(n_gt, dtype=bool))]
    for name, (edges, labels) in bin_table.items():
        index = assign_bins(characteristics[name], edges)
        for b, label in enumerate(labels):
            hi = "inf" if edges[b + 1] == INF else f"{edges[b + 1]:g}"
            masks.append((name, label, f"({edges[b]:g}, {hi}]", index == b))
    return masks


def ignored_any_tiou(matched, in_bin):
    """(P, B): rows matched to a GT outside bin b at one threshold or more (DETAD's released code
    ignores them in bin b at every threshold)."""
    outside = np.zeros((matched.shape[0], in_bin.shape[1]), dtype=bool)
    for column in matched.T:                                                      # per threshold
        hit = column >= 0
        outside[hit] |= ~in_bin[column[hit]]
    return outside


def dropped_false_positives(matched, ignored, hit_col, hit_row, row_class, n_thr):
    """Per hit (Q,): the unmatched rows of its class up to it that its bin ignores (see voc_ap)."""
    start = np.searchsorted(row_class, np.arange(row_class.max(initial=0) + 1))[row_class[hit_row]]
    dropped = np.zeros(len(hit_col), dtype=np.int64)
    hit_bin, hit_thr = np.divmod(hit_col, n_thr)
    for b in np.unique(hit_bin):
        cum = np.cumsum(ignored[:, b] & (matched.T < 0), axis=1)                 # (H, P)
        sel = hit_bin == b
        thr, row, first = hit_thr[sel], hit_row[sel], start[sel]
        dropped[sel] = cum[thr, row] - np.where(first > 0, cum[thr, np.maximum(first - 1, 0)], 0)
    return dropped


def characteristic_rows(gt_label, masks, matched, matched_a, row_class, n_cls, thresholds, n_avg,
                        normalizer, ignore_any_tiou=False):
    """One dict per bin of `masks`: GT count, mAP per tIoU, averages, recall and miss rate at
    tIoU a.

    matched (P, H): matched GT of the ranked predictions at each threshold; matched_a (P,): at
    tIoU a. A column is (bin b, threshold h), index b*H + h. A row matched to a GT outside the
    bin is ignored at that threshold, or with `ignore_any_tiou` at every threshold once it is at
    one.
    """
    in_bin = np.stack([mask for *_, mask in masks], axis=1)                   # (G, B)
    n_bins, n_thr = in_bin.shape[1], len(thresholds)
    # (Q,) by threshold, row
    thr_of_hit, row_of_hit = np.nonzero(matched.T >= 0)
    # (Q, B) bins of its GT
    gt_bins = in_bin[matched[row_of_hit, thr_of_hit]]
    ignored = ignored_any_tiou(matched, in_bin) if ignore_any_tiou else None  # (P, B)
    if ignored is not None:
        gt_bins &= ~ignored[row_of_hit]
    q, b = np.nonzero(gt_bins)
    hit_col = b * n_thr + thr_of_hit[q]
    sort = np.argsort(hit_col, kind="stable")                                 # rows stay ascending
    hit_col, hit_row = hit_col[sort], row_of_hit[q][sort]
    fp_cum = np.cumsum(matched.T < 0, axis=1)                                 # (H, P)
    fp_dropped = (None if ignored is None else
                  dropped_false_positives(matched, ignored, hit_col, hit_row, row_class, n_thr))
    col_thr = np.tile(np.arange(n_thr), n_bins)                               # (B*H,)
    n_pos = np.stack([np.bincount(gt_label[in_bin[:, b]], minlength=n_cls)
                      for b in range(n_bins)])                                # (B, C)
    n_pos_cols = np.repeat(n_pos, n_thr, axis=0)                              # (B*H, C)
    ap = voc_ap(hit_col, hit_row, fp_cum, col_thr, row_class, n_pos_cols,
                fp_dropped=fp_dropped).reshape(n_bins, n_thr, n_cls)
    ap_n = voc_ap(hit_col, hit_row, fp_cum, col_thr, row_class, n_pos_cols,
                  normalizer, fp_dropped).reshape(n_bins, n_thr, n_cls)
    valid = n_pos > 0                                                         # (B, C)
    found = np.unique(matched_a[matched_a >= 0])                              # GT found at tIoU a
    rows = []
    for b, (name, label, span, mask) in enumerate(masks):
        n_gt = int(mask.sum())
        row = {"characteristic": name, "bin": label, "range": span, "gt_count": n_gt,
               "classes": int(valid[b].sum())}
        if n_gt == 0:                                                         # empty bin: no values
            row.update({key: None for key in _value_keys(thresholds)})
            rows.append(row)
            continue
        m_ap = np.where(valid[b], ap[b], 0).sum(axis=1) / valid[b].sum()      # (H,)
        m_ap_n = np.where(valid[b], ap_n[b], 0).sum(axis=1) / valid[b].sum()
        for t, value in zip(thresholds, m_ap):
            row[f"mAP@{t:.2f}"] = float(value)
        row["avg_mAP"] = float(m_ap[:n_avg].mean())
        row["avg_mAP_N"] = float(m_ap_n[:n_avg].mean())
        recall = float(mask[found].sum() / n_gt)
        row["recall"], row["miss_rate"] = recall, 1.0 - recall
        rows.append(row)
    return rows


def _value_keys(thresholds):
    return [f"mAP@{t:.2f}" for t in thresholds] + ["avg_mAP", "avg_mAP_N", "recall", "miss_rate"]


def error_types(matched_a, p_video, p_label, p_seg, gt_video, gt_label, gt_seg, fp_tiou):
    """DETAD error type (index into ERROR_TYPES) of each prediction at tIoU fp_tiou -> (P,) int."""
    types = np.full(len(p_label), ERROR_TYPES.index("background"), dtype=np.int64)
    if len(p_label) and len(gt_video):
        zeros_p, zeros_g = np.zeros_like(p_label), np.zeros_like(gt_label)  # any label: video only
        pair_pred, pair_gt, pair_iou, _ = candidate_pairs(p_video, zeros_p, p_seg, gt_video,
                                                          zeros_g, gt_seg, MIN_TIOU)
        # best GT first per prediction
        best = np.lexsort((pair_gt, -pair_iou, pair_pred))
        first = (best[np.concatenate([[True], pair_pred[best][1:] != pair_pred[best][:-1]])]
                 if len(best) else best)
        pred, gt, iou = pair_pred[first], pair_gt[first], pair_iou[first]
        same = gt_label[gt] == p_label[pred]
        types[pred] = np.where(iou >= fp_tiou, np.where(same, 1, 2), np.where(same, 3, 4))
    types[matched_a >= 0] = 0
    return types


def fp_profile(types_ranked, row_class, n_gt_per_class, max_k=10, cumulative=False):
    """Counts (max_k, 6) of each error type among the predictions of slice k = 1..max_k."""
    bounds = np.searchsorted(row_class, np.arange(len(n_gt_per_class) + 1))
    rank = np.arange(len(row_class)) - bounds[row_class]                     # rank inside its class
    k = rank // n_gt_per_class[row_class]                                    # 0-based slice
    keep = k < max_k
    counts = np.bincount(k[keep] * len(ERROR_TYPES) + types_ranked[keep],
                         minlength=max_k * len(ERROR_TYPES)).reshape(max_k, len(ERROR_TYPES))
    return np.cumsum(counts, axis=0) if cumulative else counts


def preset_bin_table(dataset):
    """The BIN_TABLE entry that the config preset named `dataset` chooses (diagnosis_bins)."""
    name = PRESETS.get(dataset, {}).get("diagnosis_bins")
    if name not in BIN_TABLE:
        raise EvaluationInputError(f"no diagnosis bins for dataset {dataset!r}: its preset's "
                                   f"diagnosis_bins is {name!r} (known: {', '.join(BIN_TABLE)})")
    return BIN_TABLE[name]


def diagnose_detector(detector, ground_truth_file, fp_tiou=0.5, max_k=10, cumulative=False,
                      bin_table=None, ignore_any_tiou=False):
    """Diagnosis of a loaded ANETDetection (its GT, predictions, thresholds and averaging).

    ignore_any_tiou: a prediction matched to a GT outside a bin is ignored in that bin at every
    threshold once it is at one of them (DETAD's released code), instead of at that threshold
    only."""
    import pandas as pd
    if bin_table is None:
        bin_table = preset_bin_table(detector.dataset)
    if detector.mAP is None and detector.evaluate() is None:
        raise EvaluationInputError(f"nothing to diagnose: no video of subset {detector.subset!r} "
                                   f"of {ground_truth_file} has a segment")
    durations = load_durations(ground_truth_file, detector.video_names)
    thresholds = detector.tiou_thresholds
    n_cls = len(detector.class_names)
    match_thr = np.append(thresholds, fp_tiou)                                # last column: tIoU a
    order = class_order(detector.p_label, detector.p_score)
    args = (detector.p_video, detector.p_label, detector.p_seg)
    gt = (detector.gt_video, detector.gt_label, detector.gt_seg)
    matched = match_to_gt(*args, *gt, match_thr, order)                       # (P, H+1)
    row_class = detector.p_label[order]
    n_gt_per_class = np.bincount(detector.gt_label, minlength=n_cls)
    normalizer = len(detector.gt_label) / n_cls
    masks = bin_masks(gt_characteristics(detector.gt_video, detector.gt_seg, durations), bin_table,
                      len(detector.gt_label))
    rows = characteristic_rows(detector.gt_label, masks, matched[order][:, :-1], matched[:, -1],
                               row_class, n_cls, thresholds, detector.num_tiou_for_average,
                               normalizer, ignore_any_tiou)
    types = error_types(matched[:, -1], *args, *gt, fp_tiou)[order]
    counts = fp_profile(types, row_class, n_gt_per_class, max_k, cumulative)
    totals = counts.sum(axis=1)
    fp_rows = []
    for k in range(max_k):
        row = {"k": k + 1, "predictions": int(totals[k])}
        for name, count in zip(ERROR_TYPES, counts[k]):
            row[name] = float(count / totals[k]) if totals[k] else None
        fp_rows.append(row)
    return Diagnosis(pd.DataFrame(rows), pd.DataFrame(fp_rows), thresholds,
                     detector.num_tiou_for_average, float(fp_tiou), float(detector.average_mAP),
                     float(normalizer), bool(ignore_any_tiou))


def diagnose(ground_truth_file, prediction_file, tiou_thresholds, subset, dataset,
             num_tiou_for_average=None, fp_tiou=0.5, max_k=10, cumulative=False,
             ignore_any_tiou=False):
    """Diagnosis of a prediction file (path or dict) against one subset of gt.json.

    Same inputs, subset rules and errors as ANETDetection (it loads them)."""
    detector = ANETDetection(ground_truth_file, prediction_file, tiou_thresholds, subset, dataset,
                             num_tiou_for_average=num_tiou_for_average)
    return diagnose_detector(detector, ground_truth_file, fp_tiou, max_k, cumulative,
                             ignore_any_tiou=ignore_any_tiou)


def short_action_mAP(ground_truth_file, prediction_file, tiou_thresholds, subset, dataset,
                     num_tiou_for_average=None, bin_name="XS"):
    """Average mAP on the GT of the shortest length bin (BIN_TABLE) -> float, None if that bin
    is empty.

    For ablation tables: e.g. short_action_mAP(gt_file, "result.json", args.tiou_thresholds,
    args.eval_subset, args.dataset). From an evaluated ANETDetection (what
    engine.passes.evaluate returns): short_action_mAP_of(detector, gt_file)."""
    detector = ANETDetection(ground_truth_file, prediction_file, tiou_thresholds, subset, dataset,
                             num_tiou_for_average=num_tiou_for_average)
    return short_action_mAP_of(detector, ground_truth_file, bin_name)


def short_action_mAP_of(detector, ground_truth_file, bin_name="XS"):
    """short_action_mAP of a loaded ANETDetection."""
    table = diagnose_detector(detector, ground_truth_file).by_characteristic
    value = table[(table["characteristic"] == "length")
                  & (table["bin"] == bin_name)]["avg_mAP"].iloc[0]
    return None if np.isnan(value) else float(value)
