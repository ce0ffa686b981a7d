"""ActivityNet-style detection mAP (docs/method.md §12), array based.

Shapes: G ground-truth segments, P predictions, H tIoU thresholds, C ground-truth classes.
Ranking exactly as the official ActivityNet evaluator, ties included: a class's predictions in
file order are visited in np.argsort(scores)[::-1] order, and the GT a prediction is matched
against (its video's GT of the class, gt.json order) in np.argsort(tious)[::-1] order. Both are
numpy's default (unstable) sort reversed, so equal values come in the order that expression
gives. A tIoU with an empty union (two zero-length segments) is 0/0 = NaN as there: argsort
puts NaN last, so such GT is visited first, and NaN is never "below the threshold", so it is
matched at every threshold (this is how the official number on the sample file comes out).
"""
import os
import warnings

import numpy as np

from config import PRESETS
from eval.files import EvaluationInputError, gt_segments, read_json
from eval.tables import format_report
from utils import group_positions

REQUIRED_FIELDS = ("results", "version", "external_data")


# ----------------------------------------------------------------------------- loading
def load_ground_truth(gt_file, subset):
    """Every annotation with a segment of the videos in `subset`, in gt.json order.

    A video that is predicted, not scored (eval/files.py:gt_segments) goes to `unscored`.
    Returns (video_names list of the scored videos, class_names list (order of first appearance),
    gt_video (G,) int, gt_label (G,) int, gt_seg (G, 2) float64, unscored set of video names).
    """
    data = read_json(gt_file, "ground-truth")
    if not isinstance(data, dict) or "database" not in data:
        raise EvaluationInputError(f"ground-truth file {gt_file} has no 'database' field")
    video_names, class_index, videos, labels, segments = [], {}, [], [], []
    unscored, subsets = set(), set()
    for vid, info in data["database"].items():
        subsets.add(str(info.get("subset")))
        if info.get("subset") != subset:
            continue
        annotations, scored = gt_segments(info)
        if not scored:
            unscored.add(vid)
            continue
        vcode = len(video_names)
        video_names.append(vid)
        for ann in annotations:
            label = ann["label"]
            if label not in class_index:
                class_index[label] = len(class_index)
            videos.append(vcode)
            labels.append(class_index[label])
            segments.append(ann["segment"][:2])
    if not video_names and not unscored:
        raise EvaluationInputError(
            f"ground-truth file {gt_file} has no video in subset {subset!r} (its subsets: "
            f"{', '.join(map(repr, sorted(subsets)))}); choose one (--eval_subset in training, "
            f"--subset for python -m eval)")
    gt_seg = np.asarray(segments, dtype=np.float64).reshape(-1, 2)   # (G, 2)
    return (video_names, list(class_index), np.asarray(videos, dtype=np.int64),
            np.asarray(labels, dtype=np.int64), gt_seg, unscored)


def load_predictions(prediction, class_index, video_index, unscored=()):
    """Prediction JSON (path or loaded dict) -> arrays, unknown labels and the predictions of the
    `unscored` videos dropped.

    Returns (video (P,) int, -1 for videos outside the GT subset; label (P,) int;
    seg (P, 2) float64; score (P,) float64; number of predictions with an unknown label).
    """
    source = "the in-memory predictions"
    if not isinstance(prediction, dict):
        source = f"prediction file {os.fspath(prediction)}"
        prediction = read_json(os.fspath(prediction), "prediction")
    if not isinstance(prediction, dict):
        raise EvaluationInputError(f"{source} must hold a JSON object")
    for field in REQUIRED_FIELDS:
        if field not in prediction:
            raise EvaluationInputError(f"{source} lacks the required field '{field}' "
                                       f"(needs {', '.join(REQUIRED_FIELDS)})")
    results = prediction["results"]
    if not isinstance(results, dict):
        raise EvaluationInputError(f"{source}: 'results' must map video names to lists")
    entries, counts, vcodes = [], [], []
    for vid, plist in results.items():
        if vid in unscored:
            continue
        entries.extend(plist)
        counts.append(len(plist))
        vcodes.append(video_index.get(vid, -1))
    try:
        labels = np.asarray([class_index.get(e["label"], -1) for e in entries], dtype=np.int64)
        score = np.asarray([e["score"] for e in entries], dtype=np.float64)            # (P,)
        seg = np.asarray([e["segment"][:2] for e in entries],
                         dtype=np.float64).reshape(len(entries), 2)
    except (KeyError, TypeError, ValueError, IndexError) as err:
        raise EvaluationInputError(
            f"{source}: every prediction needs 'label', 'score' and 'segment': [start, end] "
            f"({type(err).__name__}: {err})") from None
    if not (np.isfinite(score).all() and np.isfinite(seg).all()):
        raise EvaluationInputError(f"{source}: scores and segments must be finite numbers")
    video = np.repeat(np.asarray(vcodes, dtype=np.int64), counts)                      # (P,)
    known = labels >= 0
    n_unknown = int((~known).sum())
    return video[known], labels[known], seg[known], score[known], n_unknown


# ----------------------------------------------------------------------------- matching
def pair_tiou(pred_seg, gt_seg):
    """Element-wise tIoU of paired segments (N, 2), (N, 2) -> (N,); empty union -> NaN.

    Same operations in the same order as the official segment_iou, so equal inputs give
    bitwise equal tIoU (ties then break identically).
    """
    inter = np.clip(np.minimum(pred_seg[:, 1], gt_seg[:, 1])
                    - np.maximum(pred_seg[:, 0], gt_seg[:, 0]), 0, None)
    union = (gt_seg[:, 1] - gt_seg[:, 0]) + (pred_seg[:, 1] - pred_seg[:, 0]) - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return inter / union


def below(tiou, threshold):
    """The official `tiou < threshold` test (False for NaN, so an empty union always passes)."""
    return tiou < threshold


def _small_int(x):
    """x as int16 when it fits, so that numpy's stable sort can use radix sort."""
    return x.astype(np.int16) if x.max(initial=0) < 2**15 and x.min(initial=0) >= 0 else x


def class_order(p_label, p_score):
    """Predictions by class ascending, then as the official evaluator ranks them -> (P,) indices.

    Per class: its predictions in file order, visited in np.argsort(scores)[::-1] order. The
    order of tied scores depends on the whole array passed to argsort, so this must be the
    class's own score array, exactly (one argsort per class).
    """
    by_class = np.argsort(_small_int(p_label), kind="stable")          # file order inside a class
    bounds = np.searchsorted(p_label[by_class], np.arange(p_label.max(initial=-1) + 2))
    order = by_class.copy()
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        members = by_class[lo:hi]
        order[lo:hi] = members[np.argsort(p_score[members])[::-1]]
    return order


def gt_visit_rank(pair_pred, pair_gt, p_video, p_label, p_seg, gt_video, gt_label, gt_seg):
    """Position of GT pair_gt[i] in the official visiting order of prediction pair_pred[i] -> (N,).

    The official evaluator visits a prediction's video's GT of its class (gt.json order) in
    np.argsort(tious)[::-1] order; with tied tIoU the result depends on every tIoU of that
    list, so the full lists are rebuilt. Lists of one length are stacked and sorted along
    axis 1 (numpy sorts each row as it would sort it alone), so the loop runs over the
    distinct list lengths, not over predictions.
    """
    n_vid = int(max(gt_video.max(), p_video.max()) + 1)
    gt_key = gt_label * n_vid + gt_video
    by_key = np.argsort(gt_key, kind="stable")                        # groups, gt.json order inside
    keys, g_first, g_count = np.unique(gt_key[by_key], return_index=True, return_counts=True)
    pos_in_group = np.empty(len(gt_key), dtype=np.int64)
    pos_in_group[by_key] = group_positions(g_count)
    preds, pred_row = np.unique(pair_pred, return_inverse=True)       # (R,), (N,)
    grp = np.searchsorted(keys, p_label[preds] * n_vid + p_video[preds])
    size = g_count[grp]                                                 # (R,) GT in each list
    offset = np.cumsum(size) - size
    flat_rank = np.empty(int(size.sum()), dtype=np.int64)
    for length in np.unique(size):
        rows = np.flatnonzero(size == length)
        members = by_key[g_first[grp[rows]][:, None] + np.arange(length)]        # (n, length)
        seg = np.repeat(p_seg[preds[rows]], length, axis=0)                      # (n*length, 2)
        tious = pair_tiou(seg, gt_seg[members.ravel()]).reshape(len(rows), length)
        visit = np.argsort(tious, axis=1)[:, ::-1]                               # (n, length)
        rank = np.empty_like(visit)
        np.put_along_axis(rank, visit, np.arange(length)[None, :], axis=1)
        flat_rank[offset[rows][:, None] + np.arange(length)] = rank
    return flat_rank[offset[pred_row] + pos_in_group[pair_gt]]


def candidate_pairs(p_video, p_label, p_seg, gt_video, gt_label, gt_seg, min_tiou):
    """(prediction, GT, tIoU, GT slot) of the same class and video with tIoU >= min_tiou.

    Pairs come grouped by prediction index, then by slot = position of the GT in the
    (class, video, start) order of all GT.

    For min_tiou > 0 only GT overlapping the prediction can qualify: with the GT of each
    (class, video) sorted by start, those start in (pred start - longest GT, pred end), a
    window found by searchsorted (widened by a few ulps; the exact tIoU filters afterwards).
    """
    n_vid = int(max(gt_video.max(), p_video.max()) + 1)
    gt_key = gt_label * n_vid + gt_video
    gt_order = np.lexsort((gt_seg[:, 0], gt_key))                      # by (class, video), start
    keys, g_first, g_count = np.unique(gt_key[gt_order], return_index=True, return_counts=True)
    p_key = np.where(p_video >= 0, p_label * n_vid + p_video, -1)
    if int(max(gt_label.max(), p_label.max()) + 1) * n_vid <= 1 << 24:  # dense key -> group table
        table = np.full(int(max(gt_label.max(), p_label.max()) + 1) * n_vid + 1, -1, dtype=np.int64)
        table[keys] = np.arange(len(keys))
        grp = table[p_key]                                             # -1 key -> last entry, -1
        has_gt = grp >= 0
        grp = np.maximum(grp, 0)
    else:
        grp = np.minimum(np.searchsorted(keys, p_key), len(keys) - 1)   # (P,) GT group of each pred
        has_gt = keys[grp] == p_key
    lo, hi = g_first[grp], g_first[grp] + g_count[grp]
    # a window can miss an empty union (NaN, a candidate) only for a prediction of length <= 0
    # or a GT of negative length: such predictions take their whole group
    p_len = p_seg[:, 1] - p_seg[:, 0]
    if min_tiou > 0 and (gt_seg[:, 1] >= gt_seg[:, 0]).all():
        gt_len = gt_seg[gt_order, 1] - gt_seg[gt_order, 0]
        longest = np.maximum.reduceat(gt_len, g_first)                 # (groups,)
        span = np.abs(gt_seg).max() + np.abs(p_seg).max(initial=0.0) + longest.max() + 1.0
        width = 2.0 ** np.ceil(np.log2(2 * span + 1))                  # group stride, power of 2
        gt_pos = np.repeat(np.arange(len(keys)), g_count) * width + gt_seg[gt_order, 0]
        slack = 8 * np.spacing(len(keys) * width)
        sel = np.flatnonzero(has_gt & (p_len > 0))
        base = grp[sel] * width
        lo[sel] = np.maximum(lo[sel], np.searchsorted(
            gt_pos, base + (p_seg[sel, 0] - longest[grp[sel]]) - slack, "left"))
        hi[sel] = np.minimum(hi[sel], np.searchsorted(
            gt_pos, base + p_seg[sel, 1] + slack, "right"))
    n_cand = np.where(has_gt, np.maximum(hi - lo, 0), 0)                # (P,)
    pair_pred = np.repeat(np.arange(len(p_key)), n_cand)                # (N,)
    pair_slot = np.repeat(lo, n_cand) + group_positions(n_cand)     # position in GT sort order
    pair_iou = pair_tiou(p_seg[pair_pred], gt_seg[gt_order[pair_slot]])
    keep = ~below(pair_iou, min_tiou)
    pair_slot = pair_slot[keep]
    return pair_pred[keep], gt_order[pair_slot], pair_iou[keep], pair_slot


def match_predictions(p_video, p_label, p_seg, p_score, gt_video, gt_label, gt_seg, thresholds,
                      order=None, return_gt=False):
    """Greedy matching of docs/method.md §12 for every class and threshold at once -> tp (P, H)
    bool.

    With return_gt, the matched GT index (P, H) instead, -1 where a prediction is a false positive
    (the diagnosis needs to know which GT was taken).

    Predictions interact only through shared candidate GT (tIoU >= the lowest threshold), so
    the sequential rule runs per component of the prediction-GT candidate graph:
    one loop step handles the j-th prediction (score order) of every component and every
    threshold together; the loop runs max-component-size times, not P times.
    """
    thresholds = np.asarray(thresholds, dtype=np.float64)
    n_pred, n_thr = len(p_label), len(thresholds)
    matched_gt = np.full((n_pred, n_thr), -1, dtype=np.int64)                # (P, H)
    if n_pred == 0 or len(gt_video) == 0:
        return matched_gt if return_gt else matched_gt >= 0
    order = class_order(p_label, p_score) if order is None else order
    pair_pred, pair_gt, pair_iou, pair_slot = candidate_pairs(p_video, p_label, p_seg, gt_video,
                                                              gt_label, gt_seg, thresholds.min())
    if len(pair_pred) == 0:
        return matched_gt if return_gt else matched_gt >= 0
    # components: a prediction joins the GT slots [first, last] of its candidates (a superset of
    # its candidates, so components may merge, never split: still exact); 1D interval sweep
    n_pairs = np.bincount(pair_pred, minlength=n_pred)                  # (P,)
    first_pair = np.cumsum(n_pairs) - n_pairs
    has = np.flatnonzero(n_pairs)
    lo_slot, hi_slot = pair_slot[first_pair[has]], pair_slot[first_pair[has] + n_pairs[has] - 1]
    sweep = np.argsort(_small_int(lo_slot), kind="stable")
    reach = np.maximum.accumulate(hi_slot[sweep])
    new_comp = np.concatenate([[True], lo_slot[sweep][1:] > reach[:-1]])
    comp = np.empty(n_pred, dtype=np.int64)
    comp[has[sweep]] = np.cumsum(new_comp) - 1
    active = order[n_pairs[order] > 0]                                  # (A,) in class/score order
    by_comp = np.argsort(_small_int(comp[active]), kind="stable")       # rank order inside
    step = np.empty(len(active), dtype=np.int64)
    step[by_comp] = group_positions(np.bincount(comp[active]))
    act = active[np.argsort(_small_int(step), kind="stable")]          # active preds, by step
    step = np.sort(step)
    act_pos = np.empty(n_pred, dtype=np.int64)
    act_pos[act] = np.arange(len(act))
    # pairs grouped by prediction (in act order), then in the official GT visiting order: tIoU
    # descending; only a prediction with tied tIoU among its candidates needs gt_visit_rank
    # (candidates have tIoU >= the lowest threshold > the others', so no tie crosses them).
    # candidate_pairs returns pairs grouped by prediction index, so only move whole groups
    multi = np.flatnonzero(n_pairs[pair_pred] > 1)
    if len(multi):
        descending = np.where(np.isnan(pair_iou[multi]), -np.inf, -pair_iou[multi])    # NaN first
        pref = np.lexsort((pair_gt[multi], descending, pair_pred[multi]))
        pair_gt[multi], pair_iou[multi] = pair_gt[multi[pref]], pair_iou[multi[pref]]
        iou = pair_iou[multi]
        tied = (pair_pred[multi[1:]] == pair_pred[multi[:-1]]) & (
            (iou[1:] == iou[:-1]) | (np.isnan(iou[1:]) & np.isnan(iou[:-1])))
        if tied.any():
            redo = multi[np.isin(pair_pred[multi], pair_pred[multi[1:][tied]])]   # whole groups
            rank = gt_visit_rank(pair_pred[redo], pair_gt[redo], p_video, p_label, p_seg,
                                 gt_video, gt_label, gt_seg)
            pref = np.lexsort((rank, pair_pred[redo]))
            pair_gt[redo], pair_iou[redo] = pair_gt[redo[pref]], pair_iou[redo[pref]]
    pair_start = np.concatenate([[0], np.cumsum(n_pairs[act])])         # (A+1,)
    dest = pair_start[act_pos[pair_pred]] + np.arange(len(pair_pred)) - first_pair[pair_pred]
    for arr in (pair_gt, pair_iou):
        arr[dest] = arr.copy()
    pair_pred = act[np.repeat(np.arange(len(act)), n_pairs[act])]
    act_bounds = np.searchsorted(step, np.arange(step[-1] + 2))
    matched = np.zeros((len(gt_video), n_thr), dtype=bool)                             # (G, H)
    ge_thr = ~below(pair_iou[:, None], thresholds[None, :])                            # (N, H)
    index = np.arange(len(pair_gt))[:, None]                                           # (N, 1)
    big = np.iinfo(np.int64).max
    for j in range(len(act_bounds) - 1):
        a0, a1 = act_bounds[j], act_bounds[j + 1]
        p0, p1 = pair_start[a0], pair_start[a1]
        ok = ge_thr[p0:p1] & ~matched[pair_gt[p0:p1]]                                  # (n, H)
        first = np.minimum.reduceat(np.where(ok, index[p0:p1], big), pair_start[a0:a1] - p0, axis=0)
        row, col = np.nonzero(first != big)                                            # (m, H) hits
        matched[pair_gt[first[row, col]], col] = True
        matched_gt[act[a0 + row], col] = pair_gt[first[row, col]]
    return matched_gt if return_gt else matched_gt >= 0


def average_precision(hits, bounds, n_pos):
    """VOC-style AP (docs/method.md §12) for every threshold and class -> (H, C).

    hits (P, H) bool in class order (class ascending, score descending); bounds (C+1,) start of
    each class in that order; n_pos (C,) GT count per class. Recall only rises at hits, and
    precision only rises at hits, so AP = sum over hits of (k/n - (k-1)/n) * (max precision
    over this and later hits), k = hits so far: the padded right-maximum of the spec, exactly.
    """
    n_thr, n_cls = hits.shape[1], len(n_pos)
    thr, pos = np.nonzero(hits.T)                                      # by threshold, then position
    cls = np.searchsorted(bounds, pos, side="right") - 1
    seg = thr * n_cls + cls                                            # nondecreasing
    counts = np.bincount(seg, minlength=n_thr * n_cls)
    k = group_positions(counts) + 1                                 # true positives so far
    precision = k / (pos - bounds[cls] + 1)
    grid = np.zeros((n_thr * n_cls, counts.max(initial=0)))            # (H*C, max hits)
    grid[seg, k - 1] = precision
    right_max = np.maximum.accumulate(grid[:, ::-1], axis=1)[:, ::-1][seg, k - 1]
    npos = n_pos[cls].astype(np.float64)
    ap = np.bincount(seg, weights=(k / npos - (k - 1) / npos) * right_max, minlength=n_thr * n_cls)
    return ap.reshape(n_thr, n_cls)


# ----------------------------------------------------------------------------- evaluator
def preset_average_count(dataset, num_thresholds):
    """num_tiou_for_average of the config preset named `dataset` (all thresholds for a name that
    is no preset)."""
    return PRESETS.get(dataset, {}).get("num_tiou_for_average", num_thresholds)


class ANETDetection:
    """Detection mAP of a prediction file (path or dict) against one subset of gt.json.

    dataset: the released keyword, a preset name of config.py whose num_tiou_for_average (and
    diagnosis bins) apply; None or an unknown name averages over every threshold.
    .unscored: the subset's videos that are predicted, not scored (their predictions are
    dropped); when no video has a segment, .scored is False and evaluate() gives no mAP (None)."""

    def __init__(self, ground_truth_file, prediction_file,
                 tiou_thresholds=np.arange(0.5, 1.0, 0.05), subset="validation",
                 dataset=None, verbose=False, num_tiou_for_average=None):
        self.tiou_thresholds = np.asarray(tiou_thresholds, dtype=np.float64).reshape(-1)
        if len(self.tiou_thresholds) == 0:
            raise EvaluationInputError("need at least one tIoU threshold")
        self.subset, self.dataset, self.verbose = subset, dataset, verbose
        if num_tiou_for_average is None:        # the released keyword: the preset's count
            num_tiou_for_average = preset_average_count(dataset, len(self.tiou_thresholds))
        self.num_tiou_for_average = num_tiou_for_average
        (self.video_names, self.class_names, self.gt_video, self.gt_label, self.gt_seg,
         self.unscored) = load_ground_truth(os.fspath(ground_truth_file), subset)
        self.scored = len(self.gt_video) > 0
        self.activity_index = {name: i for i, name in enumerate(self.class_names)}
        video_index = {name: i for i, name in enumerate(self.video_names)}
        (self.p_video, self.p_label, self.p_seg, self.p_score,
         self.n_unknown) = load_predictions(prediction_file, self.activity_index, video_index,
                                            self.unscored)
        if self.n_unknown and self.scored:
            where = "" if isinstance(prediction_file, dict) else f" in {os.fspath(prediction_file)}"
            warnings.warn(f"{self.n_unknown} predictions{where} have a label that is not a "
                          f"ground-truth class of subset {subset!r}; they are ignored",
                          stacklevel=2)
        self.ap = self.mAP = self.average_mAP = None

    def evaluate(self):
        """Compute .ap (H, C), .mAP (H,) and .average_mAP; return the average (None when no
        video of the subset has a segment: nothing to score)."""
        if not self.scored:
            return None
        n_cls = len(self.class_names)
        order = class_order(self.p_label, self.p_score)               # class asc, score desc
        tp = match_predictions(self.p_video, self.p_label, self.p_seg, self.p_score, self.gt_video,
                               self.gt_label, self.gt_seg, self.tiou_thresholds, order=order)
        bounds = np.searchsorted(self.p_label[order], np.arange(n_cls + 1))
        n_pos = np.bincount(self.gt_label, minlength=n_cls)
        self.ap = average_precision(tp[order], bounds, n_pos)          # (H, C)
        self.mAP = self.ap.mean(axis=1)
        self.average_mAP = float(self.mAP[:self.num_tiou_for_average].mean())
        if self.verbose:
            print(self.report())
        return self.average_mAP

    def report(self, per_class=True):
        """Readable mAP table (and per-class AP table) as a string, values in percent."""
        if self.mAP is None and self.evaluate() is None:
            return (f"not scored: no video of subset {self.subset!r} has a segment in the "
                    f"ground truth ({len(self.unscored)} videos predicted, not scored)")
        return format_report(self.tiou_thresholds, self.mAP, self.ap, self.class_names,
                             self.num_tiou_for_average, per_class=per_class)
