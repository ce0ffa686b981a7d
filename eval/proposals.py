"""One video's model outputs -> scored action proposals (SPEC.md section 8), as array functions.

Shapes: T snippets fed to the model, C classes (+1 background), k predicted classes,
N = len(arange(0, T, 1/scale)) upsampled points, R score-map rows (one per class and threshold).
Values are float64 after upsampling (as in the released code). NMS ties (equal scores) keep pooling order: the CAS
branch thresholds first, then the attention branch, each from left to right in time.
"""
import numpy as np

from utils import atomic_write_json


def upsample(x, scale):
    """Linear interpolation of x (T, ...) at arange(0, T, 1/scale), extrapolating -> (N, ...) float64.

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
    padded = np.zeros((n_rows, n + 1), dtype=bool)                        # (R, N+1): False separator
    padded[:, :n] = mask
    flat = padded.ravel()
    edges = np.flatnonzero(flat[1:] != flat[:-1]) + 1                      # run starts / ends (excl.)
    if flat[0]:
        edges = np.concatenate([[0], edges])
    starts, stops = edges[0::2], edges[1::2]
    row = starts // (n + 1)
    return row, starts - row * (n + 1), stops - 1 - row * (n + 1)


def threshold_runs(x, thresholds):
    """Runs of x[m] >= thresholds[h] for every signal m and threshold h, without an (M, H, N) mask.

    x (M, N), thresholds (H,) -> (m, h, first, last) int arrays, sorted by (m, h, first); equal to
    group_runs(x[:, None, :] >= thresholds[None, :, None]) with rows m*H + h. A run of threshold
    theta starts at i when x[i-1] < theta <= x[i]: with thresholds sorted, that is a contiguous
    index range found by searchsorted, so the work is O(M*N log H + number of runs).
    """
    x = np.asarray(x, dtype=np.float64)
    thresholds = np.asarray(thresholds, dtype=np.float64).reshape(-1)
    n_sig, n = x.shape
    srt = np.argsort(thresholds, kind="stable")
    above = np.zeros((n_sig, n + 2), dtype=np.int64)                       # (M, N+2), 0-padded
    above[:, 1:-1] = np.searchsorted(thresholds[srt], x, side="right")     # #thresholds <= x
    cur = above[:, 1:-1]
    events = []
    for neighbour in (above[:, :-2], above[:, 2:]):                        # starts, then ends
        count = np.maximum(cur - neighbour, 0).ravel()                     # (M*N,)
        where = np.flatnonzero(count)
        count = count[where]
        flat = np.repeat(where, count)
        h = srt[np.repeat(neighbour.ravel()[where], count) + _positions(count)]
        m, i = np.divmod(flat, n)
        order = np.lexsort((i, h, m))
        events.append((m[order], h[order], i[order]))
    (m, h, first), (_, _, last) = events
    return m, h, first, last


def _positions(counts):
    """For consecutive groups of sizes counts (n,), each element's position in its group."""
    starts = np.cumsum(counts) - counts
    return np.arange(starts[-1] + counts[-1] if len(counts) else 0) - np.repeat(starts, counts)


def outer_ranges(first, last, lamb, n):
    """Outer margins of runs [first, last] in a length-n signal: [outer_first, first), (last, outer_last].

    outer_first = max(0, int(first - lamb*L)), outer_last = min(n-1, int(last + lamb*L)), int() truncating.
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
    order = np.argsort(starts, kind="stable")                             # keeps reduceat's gaps short
    bounds = np.stack([starts[order], np.maximum(stops[order], starts[order])], axis=1).ravel()
    padded = np.concatenate([values, [0.0]])                               # allow a bound at len(values)
    sums = np.empty(len(starts))
    sums[order] = np.add.reduceat(padded, bounds)[0::2]
    return np.where(stops > starts, sums, 0.0)


def outer_inner_contrast(score_map, row, first, last, lamb):
    """Mean score of each run minus the mean over its outer margins (0 if empty) -> (G,).

    score_map (R, N); row, first, last (G,) int describe runs of row `row`, inclusive ends.
    """
    score_map = np.asarray(score_map, dtype=np.float64)
    n = score_map.shape[1]
    outer_first, outer_last = outer_ranges(first, last, lamb, n)
    flat, off = score_map.ravel(), row * n
    inner = range_sums(flat, off + first, off + last + 1) / (last - first + 1)
    outer_sum = range_sums(flat, off + outer_first, off + first) + range_sums(flat, off + last + 1,
                                                                              off + outer_last + 1)
    n_outer = (first - outer_first) + (outer_last - last)
    return inner - np.divide(outer_sum, n_outer, out=np.zeros(len(first)), where=n_outer > 0)


def segments_to_seconds(first, last, t_factor):
    """Upsampled index runs [first, last] -> (start, end) seconds: first*f, (last+1)*f."""
    return first * t_factor, (last + 1) * t_factor


def warp_times(t, cum, duration):
    """Dynamic-sampling time warp back to the original video: interp(t/d; cum/cum[-1] -> linspace)*d."""
    cum = np.asarray(cum, dtype=np.float64).reshape(-1)
    return np.interp(np.asarray(t) / duration, cum / cum[-1], np.linspace(0, 1, len(cum))) * duration


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
        pb.append(idx[a + 1 + _positions(count)])
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
    if thresh <= 0:                                                        # IoU >= 0 always: best only
        return order[np.concatenate([[True], groups[order][1:] != groups[order][:-1]])]
    start, end = segments[:, 0], segments[:, 1]
    length = end - start + 1
    a, b = _overlap_pairs(start, end, groups, thresh)
    inter = np.maximum(0.0, np.minimum(end[a], end[b]) - np.maximum(start[a], start[b]) + 1)
    hit = inter / (length[a] + length[b] - inter) >= thresh               # symmetric IoU
    a, b = a[hit], b[hit]
    up, down = np.where(rank[a] < rank[b], a, b), np.where(rank[a] < rank[b], b, a)   # better -> worse
    state = np.zeros(len(order), dtype=np.int8)                            # 0 open, 1 kept, 2 dropped
    while len(up):
        blocked = np.zeros(len(order), dtype=bool)
        blocked[down] = True                                               # an open better neighbour
        state[(state == 0) & ~blocked] = 1
        state[down[state[up] == 1]] = 2
        live = (state[up] == 0) & (state[down] == 0)
        up, down = up[live], down[live]
    state[state == 0] = 1
    kept = np.zeros(len(order), dtype=bool)
    kept[order] = state[order] == 1
    return order[kept[order]]


def _branch_settings(args, pseudo):
    """(cas thresholds, att thresholds, gamma cas, gamma att) for evaluation or pseudo mode."""
    if pseudo:
        return (np.asarray(args.pseudo_cas_thresh, dtype=np.float64).reshape(-1),
                np.asarray(args.pseudo_att_thresh, dtype=np.float64).reshape(-1), 0.0, 0.0)
    return (np.asarray(args.cas_thresh, dtype=np.float64).reshape(-1),
            np.asarray(args.att_thresh, dtype=np.float64).reshape(-1),
            args.oic_gamma_cas, args.oic_gamma_att)


def _row_contrast(fused, zeroed, diff, cls_pos, z_row, d_row, row, first, last, lamb):
    """outer_inner_contrast for the runs of length >= 2 of an implicit (rows, N) score map.

    Row r's map is fused[c] on its runs and zeroed[z] elsewhere; all runs, sorted by (row, first),
    are given by cls_pos c, z_row z, d_row d (row of diff = fused[c] - zeroed[z]), row, first,
    last. Inside a run the map is fused; a margin sums zeroed plus diff over the other runs of
    its row that it covers. fused (k, N), zeroed (Z, N), diff (D, N).
    """
    k, n = fused.shape
    prop = np.flatnonzero(last > first)                                    # (P,) runs scored
    c, z, r, f, g = cls_pos[prop], z_row[prop], row[prop], first[prop], last[prop]   # g: last index
    inner = range_sums(fused, c * n + f, c * n + g + 1) / (g - f + 1)
    outer_first, outer_last = outer_ranges(f, g, lamb, n)
    margin = (range_sums(zeroed, z * n + outer_first, z * n + f)
              + range_sums(zeroed, z * n + g + 1, z * n + outer_last + 1))
    # other runs of the same row that reach into the margins: run indices [q_lo, p) and (p, q_hi)
    q_lo = np.searchsorted(row * (n + 1) + last, r * (n + 1) + outer_first, side="left")
    q_hi = np.searchsorted(row * (n + 1) + first, r * (n + 1) + outer_last, side="right")
    n_left, n_right = prop - q_lo, q_hi - prop - 1
    owner = np.concatenate([np.repeat(np.arange(len(prop)), n_left), np.repeat(np.arange(len(prop)), n_right)])
    q = np.concatenate([np.repeat(q_lo, n_left) + _positions(n_left),
                        np.repeat(prop + 1, n_right) + _positions(n_right)])
    lo = np.maximum(first[q], np.concatenate([np.repeat(outer_first, n_left), np.repeat(g + 1, n_right)]))
    hi = np.minimum(last[q] + 1, np.concatenate([np.repeat(f, n_left), np.repeat(outer_last + 1, n_right)]))
    d_base = d_row[q] * n
    margin = margin + np.bincount(owner, weights=range_sums(diff, d_base + lo, d_base + hi),
                                  minlength=len(prop))
    n_outer = (f - outer_first) + (outer_last - g)
    return inner - np.divide(margin, n_outer, out=np.zeros(len(prop)), where=n_outer > 0)


def video_proposals(fg_cls, temp_att, fg_cas, vid_len, args, pseudo=False, cum=None):
    """SPEC section 8 for one video -> [{label, score, segment: [start, end]}] after per-class NMS.

    fg_cls (C+1,), temp_att (T, 2), fg_cas (T, C+1); vid_len = T_vid snippets of the original
    video; cum = dynamic-sampling cumulative weights (T_vid+1,) or None.
    """
    fg_cls = np.asarray(fg_cls, dtype=np.float64).reshape(-1)
    n_cls = len(args.class_name_lst)
    video_score = fg_cls[:n_cls]                                           # (C,)
    classes = np.flatnonzero(video_score > args.cls_threshold)
    if classes.size == 0:
        classes = np.array([int(np.argmax(video_score))])
    scale = args.test_upgrade_scale
    n_snip = np.shape(temp_att)[0]
    cas = upsample(np.asarray(fg_cas)[:, classes], scale).T                  # (k, N) float64
    att = upsample(np.asarray(temp_att)[:, 0], scale)                         # (N,)
    th_cas, th_att, gamma_cas, gamma_att = _branch_settings(args, pseudo)
    w_cas, w_att = args.fusion_cas_weight, args.fusion_att_weight
    k, n = cas.shape
    n1, n_rows = len(th_cas), len(th_cas) + len(th_att)
    # Score-map rows r = class * R + h, h over the CAS-branch thresholds then the attention ones.
    # Row value = fused where the branch signal >= theta, else the fusion with that term zeroed.
    fused = w_cas * cas + w_att * att                                      # (k, N)
    zeroed = np.vstack([(w_cas * 0.0 + w_att * att)[None], w_cas * cas + w_att * 0.0])  # (1+k, N)
    m1, h1, f1, l1 = threshold_runs(cas, th_cas)
    _, h2, f2, l2 = threshold_runs(att[None], th_att)                      # shared by all classes
    cls_pos = np.concatenate([m1, np.repeat(np.arange(k), len(h2))])       # (G,) index into classes
    thr_idx = np.concatenate([h1, n1 + np.tile(h2, k)])
    first, last = np.concatenate([f1, np.tile(f2, k)]), np.concatenate([l1, np.tile(l2, k)])
    order = np.lexsort((first, thr_idx, cls_pos))                          # row-major = pooling order
    cls_pos, thr_idx, first, last = cls_pos[order], thr_idx[order], first[order], last[order]
    row = cls_pos * n_rows + thr_idx
    is_cas = thr_idx < n1
    z_row = np.where(is_cas, 0, 1 + cls_pos)                               # row of `zeroed`
    diff = np.vstack([fused - zeroed[0], fused - zeroed[1:]])              # (2k, N): cas, att rows
    d_row = np.where(is_cas, cls_pos, k + cls_pos)
    contrast = _row_contrast(fused, zeroed, diff, cls_pos, z_row, d_row, row, first, last, args.oic_lamb)
    prop = np.flatnonzero(last > first)                                    # skip runs shorter than 2
    cls_pos, first, last = cls_pos[prop], first[prop], last[prop]
    gamma = np.where(is_cas[prop], gamma_cas, gamma_att)
    score = contrast + gamma * video_score[classes][cls_pos]
    t_factor = (args.segment_frames_num * vid_len) / (args.frames_per_sec * scale * n_snip)
    start, end = segments_to_seconds(first, last, t_factor)
    if cum is not None:
        duration = args.segment_frames_num * vid_len / args.frames_per_sec
        start, end = warp_times(start, cum, duration), warp_times(end, cum, duration)
    segs = np.stack([start, end], axis=1)                                  # (G, 2)
    kept = nms(segs, score, args.nms_thresh, groups=cls_pos)
    names = [args.class_name_lst[c] for c in classes[cls_pos[kept]].tolist()]
    return [{"label": name, "score": sc, "segment": seg}
            for name, sc, seg in zip(names, score[kept].tolist(), segs[kept].tolist())]


def write_results_json(path, results_by_video, version="VERSION 1.3", external_data=None):
    """Write {"version", "results": {VID: [...]}, "external_data"} atomically (evaluator input)."""
    if external_data is None:
        external_data = {"used": True, "details": "I3D RGB + flow features pretrained on Kinetics"}
    atomic_write_json(path, {"version": version, "results": results_by_video,
                             "external_data": external_data})
