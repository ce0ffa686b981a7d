"""One video's model outputs -> scored action proposals (docs/method.md §11), as array functions.

Used for the evaluation detections and for the pseudo proposals between refinement steps.
Shapes: T snippets fed to the model, C classes (+1 background), k predicted classes,
N = len(arange(0, T, 1/scale)) upsampled points, R score-map rows (one per class and
threshold). Values are float64 after upsampling (as in the released code). NMS ties (equal
scores) keep pooling order: the CAS branch thresholds first, then the attention branch, each
from left to right in time. A new proposal method goes here, beside `video_proposals`.
"""
from dataclasses import dataclass

import numpy as np

from sampling import dynamic_to_original_time
from utils import group_positions


def upsample(x, scale):
    """Linear interpolation of x (T, ...) at arange(0, T, 1/scale), extrapolating -> (N, ...)
    float64.

    Same arithmetic as scipy's interp1d(kind='linear', fill_value='extrapolate'), which the
    released code used: the neighbour difference is taken in x's own dtype (float32 model
    outputs), the rest in float64.
    """
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float64)
    n_in = x.shape[0]
    pos = np.arange(0, n_in, 1 / scale)                                   # (N,)
    if n_in == 1:
        return np.repeat(x.astype(np.float64), len(pos), axis=0)
    hi = np.clip(np.searchsorted(np.arange(n_in), pos, side="left"), 1, n_in - 1)
    lo = hi - 1
    frac = (pos - lo).reshape((-1,) + (1,) * (x.ndim - 1))               # (N, 1, ...)
    return (x[hi] - x[lo]) * frac + x[lo]


def group_runs(mask):
    """Runs of consecutive True in each row of mask (R, N) -> (row, first, last) int arrays.

    Runs come in row-major order (by row, then by position).
    """
    mask = np.asarray(mask, dtype=bool)
    n_rows, n = mask.shape
    padded = np.zeros((n_rows, n + 1), dtype=bool)                       # (R, N+1): False separator
    padded[:, :n] = mask
    flat = padded.ravel()
    if n_rows == 0:                                               # e.g. a branch with no thresholds
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty
    edges = np.flatnonzero(flat[1:] != flat[:-1]) + 1                    # run starts / ends (excl.)
    if flat[0]:
        edges = np.concatenate([[0], edges])
    starts, stops = edges[0::2], edges[1::2]
    row = starts // (n + 1)
    return row, starts - row * (n + 1), stops - 1 - row * (n + 1)


def outer_ranges(first, last, lamb, n):
    """Outer margins of runs [first, last] in a length-n signal: [outer_first, first),
    (last, outer_last].

    outer_first = max(0, int(first - lamb*L)), outer_last = min(n-1, int(last + lamb*L)), int()
    truncating.
    """
    length = last - first + 1
    outer_first = np.maximum(0, (first - lamb * length).astype(np.int64))
    outer_last = np.minimum(n - 1, (last + lamb * length).astype(np.int64))
    return outer_first, outer_last


def range_sums(values, starts, stops):
    """Sums of values[starts[i]:stops[i]] (0 for empty ranges) with one reduceat -> (G,)."""
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    starts, stops = np.asarray(starts, dtype=np.int64), np.asarray(stops, dtype=np.int64)
    if len(starts) == 0:
        return np.zeros(0)
    order = np.argsort(starts, kind="stable")                          # keeps reduceat's gaps short
    bounds = np.stack([starts[order], np.maximum(stops[order], starts[order])], axis=1).ravel()
    padded = np.concatenate([values, [0.0]])                          # allow a bound at len(values)
    sums = np.empty(len(starts))
    sums[order] = np.add.reduceat(padded, bounds)[0::2]
    return np.where(stops > starts, sums, 0.0)


def outer_inner_contrast(score_map, row, first, last, lamb):
    """Mean score of each run minus the mean over its outer margins (0 if empty) -> (G,).

    score_map (R, N); row, first, last (G,) int describe runs of row `row`, inclusive ends.
    """
    return summed_contrast([(1.0, np.asarray(score_map, dtype=np.float64), row)], first, last, lamb)


def summed_contrast(terms, first, last, lamb):
    """outer_inner_contrast on a score map given as a weighted sum of rows, never built in full.

    terms: [(weight, values (R, N), row (G,))]; run g's map is sum_j weight_j * values_j[row_j[g]].
    Zero-weight terms are skipped (they add exactly 0).
    """
    terms = [(w, np.asarray(v, dtype=np.float64), np.asarray(r)) for w, v, r in terms if w != 0]
    n = terms[0][1].shape[1] if terms else 1
    outer_first, outer_last = outer_ranges(first, last, lamb, n)

    def sums(starts, stops):
        total = np.zeros(len(first))
        for weight, values, row in terms:
            total = total + weight * range_sums(values.ravel(), row * n + starts, row * n + stops)
        return total

    inner = sums(first, last + 1) / (last - first + 1)
    outer_sum = sums(outer_first, first) + sums(last + 1, outer_last + 1)
    n_outer = (first - outer_first) + (outer_last - last)
    return inner - np.divide(outer_sum, n_outer, out=np.zeros(len(first)), where=n_outer > 0)


def segments_to_seconds(first, last, t_factor):
    """Upsampled index runs [first, last] -> (start, end) seconds: first*f, (last+1)*f."""
    return first * t_factor, (last + 1) * t_factor


def _overlap_pairs(start, end, groups, thresh):
    """Index pairs (a, b), a != b, same group, that may reach IoU >= thresh > 0 -> (E,), (E,).

    A superset (callers test the exact IoU): per group, sort by start; for b starting after a,
    inter <= e_a - s_b + 1 and union >= L_a, so IoU >= thresh needs s_b <= e_a + 1 - thresh*L_a.
    """
    pa, pb = [], []
    for g in np.unique(groups):
        idx = np.flatnonzero(groups == g)
        idx = idx[np.argsort(start[idx], kind="stable")]
        s_sorted = start[idx]
        reach = end[idx] + 1 - thresh * (end[idx] - start[idx] + 1)
        stop = np.searchsorted(s_sorted, reach + 1e-9 * (1 + np.abs(reach)), side="right")   # (n,)
        count = np.maximum(stop - np.arange(len(idx)) - 1, 0)
        a = np.repeat(np.arange(len(idx)), count)
        pa.append(idx[a])
        pb.append(idx[a + 1 + group_positions(count)])
    if not pa:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    return np.concatenate(pa), np.concatenate(pb)


def nms(segments, scores, thresh, groups=None):
    """Greedy NMS within each group (score descending, ties in input order) -> kept indices.

    IoU uses the released +1 convention: length = e - s + 1, inter = max(0, min e - max s + 1);
    a segment with IoU >= thresh to a kept, better-ranked one of its group is dropped. Kept
    indices come sorted by (group, score descending). Instead of visiting kept segments one by
    one, the greedy result is found in rounds over the sparse suppression graph: a segment is
    kept once every better-ranked neighbour is decided and none of them is kept (same result).
    """
    segments = np.asarray(segments, dtype=np.float64).reshape(-1, 2)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    groups = np.zeros(len(scores), dtype=np.int64) if groups is None else np.asarray(groups)
    order = np.lexsort((-scores, groups))                                  # group asc, score desc
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    if len(order) == 0:
        return order
    if thresh <= 0:                                                     # IoU >= 0 always: best only
        return order[np.concatenate([[True], groups[order][1:] != groups[order][:-1]])]
    start, end = segments[:, 0], segments[:, 1]
    length = end - start + 1
    a, b = _overlap_pairs(start, end, groups, thresh)
    inter = np.maximum(0.0, np.minimum(end[a], end[b]) - np.maximum(start[a], start[b]) + 1)
    hit = inter / (length[a] + length[b] - inter) >= thresh               # symmetric IoU
    a, b = a[hit], b[hit]
    # better -> worse
    up, down = np.where(rank[a] < rank[b], a, b), np.where(rank[a] < rank[b], b, a)
    state = np.zeros(len(order), dtype=np.int8)                          # 0 open, 1 kept, 2 dropped
    while len(up):
        blocked = np.zeros(len(order), dtype=bool)
        blocked[down] = True                                              # an open better neighbour
        state[(state == 0) & ~blocked] = 1
        state[down[state[up] == 1]] = 2
        live = (state[up] == 0) & (state[down] == 0)
        up, down = up[live], down[live]
    state[state == 0] = 1
    kept = np.zeros(len(order), dtype=bool)
    kept[order] = state[order] == 1
    return order[kept[order]]


@dataclass(frozen=True, eq=False)
class ProposalSettings:
    """What proposal generation reads (docs/method.md §11), for evaluation or pseudo proposals.

    cas_thresholds / att_thresholds: the two branches' thresholds; gamma_cas / gamma_att: the
    weight of the video score in each branch's proposal score; fusion weights: score map =
    w_cas * cas + w_att * att; oic_lamb: outer length / inner length.
    """
    class_names: tuple
    cls_threshold: float
    upsample_scale: int
    cas_thresholds: np.ndarray
    att_thresholds: np.ndarray
    gamma_cas: float
    gamma_att: float
    fusion_cas_weight: float
    fusion_att_weight: float
    oic_lamb: float
    nms_thresh: float
    frames_per_sec: float
    segment_frames_num: int

    @classmethod
    def from_config(cls, args, pseudo=False):
        """Evaluation settings, or with `pseudo` those of the pseudo proposals (gamma 0)."""
        prefix = "pseudo_" if pseudo else ""
        return cls(
            class_names=tuple(args.class_name_lst), cls_threshold=args.cls_threshold,
            upsample_scale=args.test_upgrade_scale,
            cas_thresholds=thresholds(getattr(args, prefix + "cas_thresh")),
            att_thresholds=thresholds(getattr(args, prefix + "att_thresh")),
            gamma_cas=0.0 if pseudo else args.oic_gamma_cas,
            gamma_att=0.0 if pseudo else args.oic_gamma_att,
            fusion_cas_weight=args.fusion_cas_weight, fusion_att_weight=args.fusion_att_weight,
            oic_lamb=args.oic_lamb, nms_thresh=args.nms_thresh,
            frames_per_sec=args.frames_per_sec, segment_frames_num=args.segment_frames_num)


def thresholds(values):
    return np.asarray(values, dtype=np.float64).reshape(-1)


def predicted_class_mask(scores, threshold):
    """(N, C) bool: the classes with score > threshold, or the argmax where none is
    (docs/method.md §11); scores (N, C) or (C,) video-level class scores."""
    scores = np.atleast_2d(np.asarray(scores))
    chosen = scores > threshold
    none = np.flatnonzero(~chosen.any(axis=1))
    chosen[none, scores[none].argmax(axis=1)] = True
    return chosen


def video_proposals(fg_cls, temp_att, fg_cas, vid_len, args, pseudo=False, cum=None):
    """docs/method.md §11 for one video -> [{label, score, segment: [start, end]}] after
    per-class NMS.

    fg_cls (C+1,), temp_att (T, 2), fg_cas (T, C+1); vid_len = T_vid snippets of the original
    video; cum = dynamic-sampling cumulative weights (T_vid+1,) or None. args: a
    ProposalSettings, or the config namespace (then `pseudo` picks the pseudo-proposal settings).
    """
    settings = args if isinstance(args, ProposalSettings) else \
        ProposalSettings.from_config(args, pseudo)
    return proposals_from_outputs(fg_cls, temp_att, fg_cas, vid_len, settings, cum)


def proposals_from_outputs(fg_cls, temp_att, fg_cas, vid_len, settings, cum=None):
    """video_proposals with explicit settings (a ProposalSettings)."""
    fg_cls = np.asarray(fg_cls, dtype=np.float64).reshape(-1)
    n_cls = len(settings.class_names)
    video_score = fg_cls[:n_cls]                                           # (C,)
    classes = np.flatnonzero(predicted_class_mask(video_score, settings.cls_threshold)[0])
    scale = settings.upsample_scale
    n_snip = np.shape(temp_att)[0]
    cas = upsample(np.asarray(fg_cas)[:, classes], scale).T                # (k, N) float64
    att = upsample(np.asarray(temp_att)[:, 0], scale)                      # (N,)
    th_cas, th_att = settings.cas_thresholds, settings.att_thresholds
    gamma_cas, gamma_att = settings.gamma_cas, settings.gamma_att
    w_cas, w_att = settings.fusion_cas_weight, settings.fusion_att_weight
    k, n = cas.shape
    # Each (class, threshold) gives a score map w_cas*cas + w_att*att whose thresholded term is
    # zeroed below theta, and runs where that term is >= theta.
    # CAS branch: rows (class, h) of the thresholded CAS.
    sel_cas = cas[:, None, :] >= th_cas[None, :, None]                     # (k, H1, N)
    kept_cas = np.where(sel_cas, cas[:, None, :], 0.0).reshape(k * len(th_cas), n)
    row_c, first_c, last_c = group_runs(sel_cas.reshape(k * len(th_cas), n))
    cls_c, thr_c = np.divmod(row_c, max(len(th_cas), 1))
    # attention branch: the runs do not depend on the class, so they are found once
    sel_att = att[None, :] >= th_att[:, None]                              # (H2, N)
    kept_att = np.where(sel_att, att[None, :], 0.0)
    row_a, first_a, last_a = group_runs(sel_att)
    cls_a, row_a = np.repeat(np.arange(k), len(row_a)), np.tile(row_a, k)
    first_a, last_a = np.tile(first_a, k), np.tile(last_a, k)
    # pool in the released order: per class, CAS thresholds then attention ones, left to right
    cls_pos = np.concatenate([cls_c, cls_a])
    thr_idx = np.concatenate([thr_c, len(th_cas) + row_a])
    first, last = np.concatenate([first_c, first_a]), np.concatenate([last_c, last_a])
    is_cas = np.arange(len(cls_pos)) < len(cls_c)
    order = np.lexsort((first, thr_idx, cls_pos))
    order = order[last[order] > first[order]]                             # skip runs shorter than 2
    cls_pos, thr_idx, first, last, is_cas = (x[order]
                                             for x in (cls_pos, thr_idx, first, last, is_cas))
    contrast = np.empty(len(order))
    c, a = is_cas, ~is_cas
    contrast[c] = summed_contrast([(w_cas, kept_cas, cls_pos[c] * len(th_cas) + thr_idx[c]),
                                   (w_att, att[None, :], np.zeros(c.sum(), dtype=np.int64))],
                                  first[c], last[c], settings.oic_lamb)
    contrast[a] = summed_contrast([(w_att, kept_att, thr_idx[a] - len(th_cas)),
                                   (w_cas, cas, cls_pos[a])],
                                  first[a], last[a], settings.oic_lamb)
    gamma = np.where(is_cas, gamma_cas, gamma_att)
    score = contrast + gamma * video_score[classes][cls_pos]
    t_factor = (settings.segment_frames_num * vid_len) / (settings.frames_per_sec * scale * n_snip)
    start, end = segments_to_seconds(first, last, t_factor)
    if cum is not None:
        duration = settings.segment_frames_num * vid_len / settings.frames_per_sec
        start = dynamic_to_original_time(start, cum, duration)
        end = dynamic_to_original_time(end, cum, duration)
    segs = np.stack([start, end], axis=1)                                  # (G, 2)
    kept = nms(segs, score, settings.nms_thresh, groups=cls_pos)
    names = [settings.class_names[c] for c in classes[cls_pos[kept]].tolist()]
    return [{"label": name, "score": sc, "segment": seg}
            for name, sc, seg in zip(names, score[kept].tolist(), segs[kept].tolist())]
