"""Temporal sampling, pseudo targets and dynamic segment weights as pure array functions
(docs/method.md §7, §8, §9).

Shapes: T_vid snippets on disk, S rows fed to the model, D feature dim, C classes (+1 background),
K proposals. Random sampling draws from the given generator, or numpy's global RNG when None.
"""
import warnings

import numpy as np

R = 25 / 16  # snippets per second (I3D: 16-frame snippets at 25 fps)


# ----------------------------------------------------------------------------- temporal sampling
def lerp_rows(x, pos):
    """Rows of x (T, D) linearly interpolated at float positions `pos` on the grid 0..T-1,
    extrapolating.

    Positions on grid nodes are plain row copies (exact; most rows under dynamic sampling).
    """
    T = x.shape[0]
    pos = np.asarray(pos, dtype=np.float64)
    if T == 1:
        return np.repeat(np.asarray(x[:1]), len(pos), axis=0)
    dtype = x.dtype if np.issubdtype(x.dtype, np.floating) else np.float64
    node = np.rint(pos)
    on_node = (np.abs(pos - node) < 1e-9) & (node >= 0) & (node <= T - 1)  # 1e-9: cumsum round-off
    i0 = np.clip(np.floor(pos), 0, T - 2).astype(np.int64)
    i0[on_node] = node[on_node]
    out = np.asarray(x[i0], dtype=dtype)                                 # (N, D)
    between = np.flatnonzero(~on_node)
    if len(between):
        frac = (pos[between] - i0[between]).astype(dtype)[:, None]       # (n, 1)
        out[between] = out[between] * (1 - frac) \
            + np.asarray(x[i0[between] + 1], dtype=dtype) * frac
    return out


def uniform_plan(T, S):
    """Row indices of uniform(x, S) (docs/method.md §7): T/S in float64 first, then
    floor(i*(T/S))."""
    if T == 1:
        return np.zeros(2, dtype=np.int64)
    if T <= S:
        return np.arange(T, dtype=np.int64)
    return np.floor(np.arange(S) * (T / S)).astype(np.int64)


def randint(rng, low, high):
    if rng is None:
        return np.random.randint(low, high)  # noqa: NPY002 (the global generator, on purpose)
    if isinstance(rng, np.random.Generator):
        return rng.integers(low, high)
    return rng.randint(low, high)


def random_plan(T, S, rng=None):
    """random(x, S) as int row indices or float interpolation positions (docs/method.md §7, §14
    for T == 1)."""
    if T == 1:
        return np.zeros(S, dtype=np.int64)
    if T < S:
        return np.linspace(0, T - 1, S)
    if T == S:
        return np.arange(T, dtype=np.int64)
    bounds = np.rint(np.linspace(0, T - 1, S + 1)).astype(np.int64)
    return np.asarray(randint(rng, bounds[:-1], bounds[1:]), dtype=np.int64)


def apply_plan(x, plan):
    if np.issubdtype(plan.dtype, np.integer):
        return np.asarray(x[plan])
    return lerp_rows(x, plan)


def uniform_sample(x, S):
    """docs/method.md §7 uniform sampling of x (T_vid, D) to at most S rows
    (2 rows when T_vid == 1)."""
    return apply_plan(x, uniform_plan(x.shape[0], S))


def random_sample(x, S, rng=None):
    """docs/method.md §7 random sampling to S rows; rng: np.random.Generator/RandomState,
    None = np.random."""
    return apply_plan(x, random_plan(x.shape[0], S, rng))


def interp_extrap(v, xp, fp):
    """np.interp with linear extrapolation on both sides (xp increasing, len >= 2)."""
    k = np.clip(np.searchsorted(xp, v, side="right") - 1, 0, len(xp) - 2)
    return fp[k] + (v - xp[k]) * (fp[k + 1] - fp[k]) / (xp[k + 1] - xp[k])


def dynamic_positions(weights):
    """(cum, p): cum = [0, cumsum(w)] and the positions p_j, j = 1..round(cum[-1]), on the grid
    0..T_vid."""
    w = np.asarray(weights, dtype=np.float64)
    cum = np.concatenate([[0.0], np.cumsum(w)])
    M = int(round(float(cum[-1])))
    if M < 1:
        raise ValueError(f"dynamic weights sum to {cum[-1]}; they must sum to at least 0.5")
    return cum, interp_extrap(np.arange(1, M + 1, dtype=np.float64), cum, np.arange(len(w) + 1.0))


def dynamic_sample(x, weights):
    """Dynamic sampling (docs/method.md §7) -> (features (M, D), cum); row j = x at p_j on the
    grid 1..T_vid."""
    if x.shape[0] == 1:
        return np.asarray(x[[0, 0]]), np.array([0.0, 0.5, 1.0])
    cum, pos = dynamic_positions(weights)
    return lerp_rows(x, pos - 1), cum


def original_to_dynamic_time(t, cum, vid_len, r=R):
    """Seconds of the original video -> seconds on the dynamic timeline (training targets):
    (interp(t*r + 1; 0..T_vid -> cum) - 1) / r, extrapolating; identity when cum is None."""
    t = np.asarray(t, dtype=np.float64)
    if cum is None:
        return t
    grid = np.linspace(0, vid_len, len(cum))  # 0..T_vid; [0, 0.5, 1] for one-snippet videos
    return (interp_extrap(t * r + 1, grid, np.asarray(cum, dtype=np.float64)) - 1) / r


def dynamic_to_original_time(t, cum, duration):
    """Seconds on the dynamic timeline -> seconds of the original video (proposals):
    interp(t / duration; cum / cum[-1] -> linspace(0, 1)) * duration."""
    cum = np.asarray(cum, dtype=np.float64).reshape(-1)
    return np.interp(np.asarray(t) / duration, cum / cum[-1],
                     np.linspace(0, 1, len(cum))) * duration


# ----------------------------------------------------------------------------- proposals → targets
def proposal_arrays(proposals):
    """List of {label, score, segment} → (segments (P, 2) float64, labels (P,) str, scores (P,)
    float64)."""
    if isinstance(proposals, tuple):
        return proposals
    seg = np.array([p["segment"] for p in proposals], dtype=np.float64).reshape(-1, 2)
    labels = np.array([p["label"] for p in proposals], dtype=str)
    scores = np.array([p.get("score", 0.0) for p in proposals], dtype=np.float64)
    return seg, labels, scores


def select_labels(proposals, labels):
    """The proposals whose label is in `labels` (array form)."""
    seg, names, scores = proposal_arrays(proposals)
    keep = np.isin(names, np.array(sorted(labels), dtype=str))
    return seg[keep], names[keep], scores[keep]


def attention_proposal_order(proposals, labels=None):
    """docs/method.md §8: the distinct [s, e] pairs (P, 2) of the proposals with a label in
    `labels`, in the order the released loop processes them.

    The list is built per label (each label's proposals by score descending, stable w.r.t. the
    file order), keeping the first occurrence of each distinct [s, e]; it is then processed by
    ascending start and, among equal starts, in the reverse of that list order (the released code
    sorts by start descending, stably, and pops from the end). The released code iterates the
    labels of a Python set, whose order varies between processes; `labels` gives the order instead
    (callers pass the class-list order).
    None: the labels present, sorted.
    """
    seg, names, scores = proposal_arrays(proposals)
    labels = sorted(set(names.tolist())) if labels is None else list(dict.fromkeys(labels))
    listed = [sel[np.argsort(-scores[sel], kind="stable")]
              for sel in (np.flatnonzero(names == lab) for lab in labels)]
    seg = seg[np.concatenate(listed)] if listed else seg[:0]            # (P, 2) in list order
    # first occurrence of each [s, e]
    seg = seg[np.sort(np.unique(seg, axis=0, return_index=True)[1])]
    # start asc; equal start: list order reversed
    return seg[np.lexsort((-np.arange(len(seg)), seg[:, 0]))]


def attention_proposal_bbox(proposals, scale, out_len, delta, K, warp=None, vid_len=None, r=R,
                            labels=None):
    """docs/method.md §8 attention proposals → (bbox (K, 2) int64, count). `warp` = cum of dynamic
    sampling or None; `labels`: the video's label set in class-list order (see
    attention_proposal_order)."""
    seg = attention_proposal_order(proposals, labels)
    # a pair is kept when its end exceeds the last kept end, i.e. the largest end processed
    # before it
    prev_max = np.maximum.accumulate(np.concatenate([[-np.inf], seg[:-1, 1]]))
    seg = seg[seg[:, 1] > prev_max]
    s, e = (original_to_dynamic_time(seg[:, 0], warp, vid_len, r),
            original_to_dynamic_time(seg[:, 1], warp, vid_len, r))
    mid, dur = (s + e) / 2, e - s
    start = np.maximum(np.rint((mid - (delta + 0.5) * dur) * scale), 0).astype(np.int64)
    end = np.minimum(np.rint((mid + (delta + 0.5) * dur) * scale), out_len - 1).astype(np.int64)
    order = np.argsort(-start, kind="stable")  # start descending, ties keep order
    if len(order) > K:
        warnings.warn(f"a video has more attention proposals than max_segments_num = {K}; "
                      f"keeping the first {K} sorted by start (docs/method.md §14)", stacklevel=2)
        order = order[:K]
    bbox = np.zeros((K, 2), dtype=np.int64)
    bbox[:len(order)] = np.stack([start[order], end[order]], axis=1)
    return bbox, len(order)


def pseudo_instance_label(proposals, gt_labels, class_names, scale, out_len, warp=None,
                          vid_len=None, r=R):
    """docs/method.md §8 pseudo instance label (out_len, C+1) float32 from proposals with a label
    in `gt_labels`."""
    C = len(class_names)
    seg, names, _ = select_labels(proposals, set(gt_labels) & set(class_names))
    index = {name: i for i, name in enumerate(class_names)}
    cls = np.array([index[n] for n in names], dtype=np.int64)
    lo = np.maximum(np.rint(original_to_dynamic_time(seg[:, 0], warp, vid_len, r) * scale), 0)
    hi = np.minimum(np.rint(original_to_dynamic_time(seg[:, 1], warp, vid_len, r) * scale),
                    out_len - 1)
    t = np.arange(out_len)
    inside = ((t >= lo[:, None]) & (t <= hi[:, None])).astype(np.float32)  # (P, out_len)
    onehot = np.eye(C, dtype=np.float32)[cls]                               # (P, C)
    fg = (inside.T @ onehot) > 0                                            # (out_len, C)
    label = np.concatenate([fg, ~fg.any(axis=1, keepdims=True)], axis=1).astype(np.float32)
    return label / np.maximum(label.sum(axis=1, keepdims=True), 1e-6)


def dynamic_segment_weights(proposals, vid_len, labels, alpha, delta, gamma, r=R):
    """docs/method.md §9 per-snippet sampling weights (vid_len,) float64 from one video's pseudo
    proposals."""
    seg, names, scores = proposal_arrays(proposals)
    kept = []
    for label in sorted(set(labels)):                                   # a video has few labels
        sel = np.flatnonzero(names == label)
        if len(sel) == 0:
            continue
        sel = sel[np.argsort(-scores[sel], kind="stable")]
        c = np.cumsum(scores[sel])
        kept.append(sel[:np.count_nonzero(c <= alpha * c.max())])
    w = np.ones(vid_len, dtype=np.float64)
    if not kept:
        return w
    s, e = seg[np.concatenate(kept)].T
    mid, dur = (s + e) / 2, e - s
    i_s = np.maximum(np.rint((mid - (delta + 0.5) * dur) * r), 0).astype(np.int64)
    i_e = np.minimum(np.rint((mid + (delta + 0.5) * dur) * r), vid_len - 1).astype(np.int64)
    U = gamma * (2 * delta + 1)
    n = i_e - i_s + 1
    use = (i_s < i_e) & (n <= U)
    if use.any():
        t = np.arange(vid_len)
        inside = (t >= i_s[use, None]) & (t <= i_e[use, None])             # (P, vid_len)
        value = np.minimum(U / n[use], U)[:, None]
        w = np.maximum(w, np.where(inside, value, 1.0).max(axis=0))
    big = w > 1
    if big.any():
        # the released arithmetic, per run of consecutive w > 1: np.sum over the run (pairwise,
        # index order), then round(sum) * w / sum; another summation or w * (round(sum) / sum)
        # differs in the last bits, and a run summing to k + 1/2 then rounds the other way
        # (docs/method.md §9)
        edges = np.flatnonzero(np.diff(np.concatenate([[False], big, [False]]).astype(np.int8)))
        for a, b in zip(edges[::2], edges[1::2]):                       # runs [a, b); few per video
            total = np.sum(w[a:b])
            w[a:b] = np.round(total) * w[a:b] / total
    return w
