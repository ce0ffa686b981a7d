"""ActivityNet-style detection mAP (SPEC.md section 10), array based.

Shapes: G ground-truth segments, P predictions, H tIoU thresholds, C ground-truth classes.
Ties: predictions of equal score keep their file order (stable descending sort); GT of equal
tIoU with a prediction are visited in gt.json order. A tIoU with an empty union (two
zero-length segments) is 0, not NaN.
"""
import json
import os
import warnings

import numpy as np

from utils import UserError

REQUIRED_FIELDS = ("results", "version", "external_data")


class EvaluationInputError(UserError):
    """A ground-truth or prediction file that cannot be evaluated (missing, malformed)."""


# ----------------------------------------------------------------------------- loading
def _read_json(path, what):
    if not os.path.isfile(path):
        raise EvaluationInputError(f"{what} file {path} not found")
    try:
        with open(path) as handle:
            return json.load(handle)
    except json.JSONDecodeError as err:
        raise EvaluationInputError(f"{what} file {path} is not valid JSON ({err})") from None


def load_ground_truth(gt_file, subset):
    """All annotations of the videos in `subset`, in gt.json order.

    Returns (video_names list, class_names list (order of first appearance),
    gt_video (G,) int, gt_label (G,) int, gt_seg (G, 2) float64).
    """
    data = _read_json(gt_file, "ground-truth")
    if not isinstance(data, dict) or "database" not in data:
        raise EvaluationInputError(f"ground-truth file {gt_file} has no 'database' field")
    video_names, class_index, videos, labels, segments = [], {}, [], [], []
    for vid, info in data["database"].items():
        if info.get("subset") != subset:
            continue
        vcode = len(video_names)
        video_names.append(vid)
        for ann in info.get("annotations", []):
            label = ann["label"]
            if label not in class_index:
                class_index[label] = len(class_index)
            videos.append(vcode)
            labels.append(class_index[label])
            segments.append(ann["segment"][:2])
    if not video_names:
        raise EvaluationInputError(f"ground-truth file {gt_file} has no video in subset {subset!r}")
    gt_seg = np.asarray(segments, dtype=np.float64).reshape(-1, 2)   # (G, 2)
    return (video_names, list(class_index), np.asarray(videos, dtype=np.int64),
            np.asarray(labels, dtype=np.int64), gt_seg)


def load_predictions(prediction, class_index, video_index, source="predictions"):
    """Prediction JSON (path or loaded dict) -> arrays, unknown labels dropped.

    Returns (video (P,) int, -1 for videos outside the GT subset; label (P,) int;
    seg (P, 2) float64; score (P,) float64; number of predictions with an unknown label).
    """
    if not isinstance(prediction, dict):
        source = os.fspath(prediction)
        prediction = _read_json(source, "prediction")
    if not isinstance(prediction, dict):
        raise EvaluationInputError(f"prediction file {source} must hold a JSON object")
    for field in REQUIRED_FIELDS:
        if field not in prediction:
            raise EvaluationInputError(
                f"prediction file {source} lacks the required field '{field}' "
                f"(needs {', '.join(REQUIRED_FIELDS)})")
    results = prediction["results"]
    if not isinstance(results, dict):
        raise EvaluationInputError(f"prediction file {source}: 'results' must map video names to lists")
    entries, counts, vcodes = [], [], []
    for vid, plist in results.items():
        entries.extend(plist)
        counts.append(len(plist))
        vcodes.append(video_index.get(vid, -1))
    try:
        labels = np.asarray([class_index.get(e["label"], -1) for e in entries], dtype=np.int64)
        score = np.asarray([e["score"] for e in entries], dtype=np.float64)            # (P,)
        seg = np.asarray([e["segment"][:2] for e in entries], dtype=np.float64).reshape(-1, 2)
    except (KeyError, TypeError, ValueError, IndexError) as err:
        raise EvaluationInputError(
            f"prediction file {source}: every prediction needs 'label', 'score' and "
            f"'segment': [start, end] ({type(err).__name__}: {err})") from None
    video = np.repeat(np.asarray(vcodes, dtype=np.int64), counts)                      # (P,)
    known = labels >= 0
    n_unknown = int((~known).sum())
    return video[known], labels[known], seg[known], score[known], n_unknown


# ----------------------------------------------------------------------------- matching
def pair_tiou(pred_seg, gt_seg):
    """Element-wise tIoU of paired segments (N, 2), (N, 2) -> (N,); empty union -> 0."""
    inter = np.clip(np.minimum(pred_seg[:, 1], gt_seg[:, 1]) - np.maximum(pred_seg[:, 0], gt_seg[:, 0]),
                    0, None)
    union = (gt_seg[:, 1] - gt_seg[:, 0]) + (pred_seg[:, 1] - pred_seg[:, 0]) - inter
    out = np.zeros_like(inter)
    np.divide(inter, union, out=out, where=union > 0)
    return out


def _segment_positions(counts):
    """For groups of sizes counts (n,), the position of each element inside its group."""
    starts = np.cumsum(counts) - counts
    return np.arange(counts.sum()) - np.repeat(starts, counts)


def match_predictions(p_video, p_label, p_seg, p_score, gt_video, gt_label, gt_seg, thresholds):
    """Greedy matching of SPEC section 10 for every class and threshold at once -> tp (P, H) bool.

    Per (class, video) the predictions are processed in score order; one loop step handles
    the j-th candidate-holding prediction of every (class, video) group and every threshold
    together, so the Python loop runs max-predictions-per-group times, not P times.
    """
    thresholds = np.asarray(thresholds, dtype=np.float64)
    n_pred, n_thr = len(p_score), len(thresholds)
    tp = np.zeros((n_pred, n_thr), dtype=bool)
    if n_pred == 0 or len(gt_video) == 0:
        return tp
    n_vid = int(max(gt_video.max(), p_video.max()) + 1)
    # rank of each prediction in its class list (label asc, score desc, file order on ties)
    order = np.lexsort((-p_score, p_label))
    rank = np.empty(n_pred, dtype=np.int64)
    rank[order] = np.arange(n_pred)
    # candidate (prediction, GT) pairs: same class and video
    gt_key = gt_label * n_vid + gt_video
    gt_order = np.argsort(gt_key, kind="stable")
    gt_key_sorted = gt_key[gt_order]
    p_key = np.where(p_video >= 0, p_label * n_vid + p_video, -1)
    lo = np.searchsorted(gt_key_sorted, p_key, side="left")
    n_cand = np.searchsorted(gt_key_sorted, p_key, side="right") - lo                  # (P,)
    pair_pred = np.repeat(np.arange(n_pred), n_cand)                                    # (N,)
    pair_gt = gt_order[np.repeat(lo, n_cand) + _segment_positions(n_cand)]              # (N,)
    pair_iou = pair_tiou(p_seg[pair_pred], gt_seg[pair_gt])
    keep = pair_iou >= thresholds.min()
    pair_pred, pair_gt, pair_iou = pair_pred[keep], pair_gt[keep], pair_iou[keep]
    if len(pair_pred) == 0:
        return tp
    # active predictions (>= 1 candidate), their step = position in their group's score order
    active = np.unique(pair_pred)
    by_group = active[np.lexsort((rank[active], p_key[active]))]
    _, group_sizes = np.unique(p_key[by_group], return_counts=True)
    step = np.empty(n_pred, dtype=np.int64)
    step[by_group] = _segment_positions(group_sizes)
    act = by_group[np.argsort(step[by_group], kind="stable")]          # active preds, by step
    act_pos = np.empty(n_pred, dtype=np.int64)
    act_pos[act] = np.arange(len(act))
    # pairs grouped by prediction (in act order), then tIoU descending, then GT file order
    pord = np.lexsort((pair_gt, -pair_iou, act_pos[pair_pred]))
    pair_pred, pair_gt, pair_iou = pair_pred[pord], pair_gt[pord], pair_iou[pord]
    pairs_per_act = np.bincount(act_pos[pair_pred], minlength=len(act))
    pair_start = np.concatenate([[0], np.cumsum(pairs_per_act)])                       # (A+1,)
    act_bounds = np.searchsorted(step[act], np.arange(step[act].max() + 2))
    matched = np.zeros((len(gt_video), n_thr), dtype=bool)                              # (G, H)
    ge_thr = pair_iou[:, None] >= thresholds[None, :]                                   # (N, H)
    big = np.iinfo(np.int64).max
    for j in range(len(act_bounds) - 1):
        a0, a1 = act_bounds[j], act_bounds[j + 1]
        p0, p1 = pair_start[a0], pair_start[a1]
        ok = ge_thr[p0:p1] & ~matched[pair_gt[p0:p1]]                                  # (n, H)
        pos = np.where(ok, np.arange(p1 - p0)[:, None], big)
        first = np.minimum.reduceat(pos, pair_start[a0:a1] - p0, axis=0)                # (m, H)
        row, col = np.nonzero(first != big)
        matched[pair_gt[p0 + first[row, col]], col] = True
        tp[act[a0 + row], col] = True
    return tp


def interpolated_ap(tp_sorted, n_pos):
    """VOC-style AP per threshold from score-sorted hits tp_sorted (H, n) -> (H,)."""
    n_thr, n = tp_sorted.shape
    if n == 0:
        return np.zeros(n_thr)
    tp_cum = np.cumsum(tp_sorted, axis=1, dtype=np.float64)                            # (H, n)
    fp_cum = np.cumsum(~tp_sorted, axis=1, dtype=np.float64)
    recall = tp_cum / n_pos
    precision = tp_cum / (tp_cum + fp_cum)
    zeros, ones = np.zeros((n_thr, 1)), np.ones((n_thr, 1))
    mprec = np.hstack([zeros, precision, zeros])                                        # (H, n+2)
    mrec = np.hstack([zeros, recall, ones])
    mprec = np.maximum.accumulate(mprec[:, ::-1], axis=1)[:, ::-1]
    step = mrec[:, 1:] - mrec[:, :-1]                                                   # (H, n+1)
    return np.where(step != 0, step * mprec[:, 1:], 0.0).sum(axis=1)


# ----------------------------------------------------------------------------- evaluator
class ANETDetection:
    """Detection mAP of a prediction file (path or dict) against one subset of gt.json."""

    def __init__(self, ground_truth_file, prediction_file, tiou_thresholds=np.arange(0.5, 1.0, 0.05),
                 subset="validation", dataset="ActivityNet", verbose=False, num_tiou_for_average=None):
        self.tiou_thresholds = np.asarray(tiou_thresholds, dtype=np.float64).reshape(-1)
        if len(self.tiou_thresholds) == 0:
            raise EvaluationInputError("need at least one tIoU threshold")
        self.subset, self.dataset, self.verbose = subset, dataset, verbose
        if num_tiou_for_average is None:
            num_tiou_for_average = 7 if dataset == "THUMOS" else len(self.tiou_thresholds)
        self.num_tiou_for_average = num_tiou_for_average
        (self.video_names, self.class_names, self.gt_video, self.gt_label,
         self.gt_seg) = load_ground_truth(os.fspath(ground_truth_file), subset)
        self.activity_index = {name: i for i, name in enumerate(self.class_names)}
        video_index = {name: i for i, name in enumerate(self.video_names)}
        source = prediction_file if isinstance(prediction_file, dict) else os.fspath(prediction_file)
        (self.p_video, self.p_label, self.p_seg, self.p_score,
         self.n_unknown) = load_predictions(source, self.activity_index, video_index)
        if self.n_unknown:
            where = "predictions" if isinstance(source, dict) else f"prediction file {source}"
            warnings.warn(f"{self.n_unknown} predictions in {where} have a label that is not a "
                          f"ground-truth class of subset {subset!r}; they are ignored", stacklevel=2)
        self.ap = self.mAP = self.average_mAP = None

    def evaluate(self):
        """Compute .ap (H, C), .mAP (H,) and .average_mAP; return the average."""
        n_cls = len(self.class_names)
        tp = match_predictions(self.p_video, self.p_label, self.p_seg, self.p_score,
                               self.gt_video, self.gt_label, self.gt_seg, self.tiou_thresholds)
        order = np.lexsort((-self.p_score, self.p_label))           # class asc, score desc, stable
        tp_sorted = tp[order].T                                         # (H, P)
        bounds = np.searchsorted(self.p_label[order], np.arange(n_cls + 1))
        n_pos = np.bincount(self.gt_label, minlength=n_cls)
        self.ap = np.zeros((len(self.tiou_thresholds), n_cls))      # (H, C)
        for c in range(n_cls):
            self.ap[:, c] = interpolated_ap(tp_sorted[:, bounds[c]:bounds[c + 1]], n_pos[c])
        self.mAP = self.ap.mean(axis=1)
        self.average_mAP = float(self.mAP[:self.num_tiou_for_average].mean())
        if self.verbose:
            print(self.report())
        return self.average_mAP

    def report(self, per_class=True):
        """Readable mAP table (and per-class AP table) as a string, values in percent."""
        if self.mAP is None:
            self.evaluate()
        return format_report(self.tiou_thresholds, self.mAP, self.ap, self.class_names,
                             self.num_tiou_for_average, per_class=per_class)


def format_report(thresholds, mAP, ap, class_names, num_for_average, per_class=True):
    """mAP per threshold + average (+ per-class AP rows) as an aligned text table (percent)."""
    head = "".join(f"{t:>7.2f}" for t in thresholds)
    lines = [f"{'tIoU':<24}{head}{'avg':>8}",
             f"{'mAP':<24}" + "".join(f"{100 * m:>7.2f}" for m in mAP)
             + f"{100 * np.mean(mAP[:num_for_average]):>8.2f}"]
    n_avg = min(num_for_average, len(thresholds))
    lines.append(f"(average over the first {n_avg} of {len(thresholds)} thresholds)")
    if per_class:
        lines.append("per-class AP")
        for c, name in enumerate(class_names):
            lines.append(f"{name[:23]:<24}" + "".join(f"{100 * v:>7.2f}" for v in ap[:, c])
                         + f"{100 * np.mean(ap[:num_for_average, c]):>8.2f}")
    return "\n".join(lines)
