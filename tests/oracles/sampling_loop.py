"""Slow loop versions of sampling.py, written straight from docs/method.md §7 (sampling), §8
(attention proposals) and §9 (dynamic weights): plain Python, one row / snippet / proposal at a
time."""
import math

import numpy as np

R = 25 / 16


def lerp_loop(x, pos):
    """Rows of x (T, D) linearly interpolated at float positions on the grid 0..T-1."""
    T = len(x)
    out = np.zeros((len(pos), x.shape[1]))
    for j, q in enumerate(pos):
        i0 = min(max(math.floor(q), 0), T - 2)
        out[j] = x[i0].astype(np.float64) + (q - i0) * (x[i0 + 1].astype(np.float64) - x[i0])
    return out


def uniform_loop(x, S):
    """Uniform sampling to at most S rows (2 rows for a one-snippet video)."""
    T = len(x)
    if T == 1:
        return x[[0, 0]]
    if T <= S:
        return x.copy()
    step = T / S
    return np.stack([x[math.floor(i * step)] for i in range(S)])


def dynamic_loop(x, w):
    """Dynamic sampling with weights w: (rows, cum)."""
    T = len(x)
    cum = [0.0]
    for v in w:
        cum.append(cum[-1] + v)
    out_pos = []
    for j in range(1, round(cum[-1]) + 1):
        k = 0
        while k < T - 1 and cum[k + 1] <= j:
            k += 1
        out_pos.append(k + (j - cum[k]) / (cum[k + 1] - cum[k]))
    return lerp_loop(x, np.array(out_pos) - 1), np.array(cum)


def weights_loop(proposals, T, labels, alpha, delta, gamma, r=R):
    """The dynamic segment weights (T,) of one video's pseudo proposals."""
    w = np.ones(T)
    U = gamma * (2 * delta + 1)
    for label in labels:
        props = sorted([p for p in proposals if p["label"] == label], key=lambda p: p["score"],
                       reverse=True)
        if not props:
            continue
        c = np.cumsum([p["score"] for p in props])
        n = int(sum(v <= alpha * c.max() for v in c))
        for p in props[:n]:
            s, e = p["segment"]
            mid, dur = (s + e) / 2, e - s
            i_s = max(round((mid - (delta + 0.5) * dur) * r), 0)
            i_e = min(round((mid + (delta + 0.5) * dur) * r), T - 1)
            length = i_e - i_s + 1
            if i_s < i_e and length <= U:
                w[i_s:i_e + 1] = np.maximum(w[i_s:i_e + 1], min(U / length, U))
    i = 0
    while i < T:
        if w[i] > 1:
            j = i
            while j < T and w[j] > 1:
                j += 1
            total = np.sum(w[i:j])                     # the released arithmetic, in its order
            w[i:j] = np.round(total) * w[i:j] / total
            i = j
        else:
            i += 1
    return w


def attention_loop(proposals, scale, out_len, delta, K, labels):
    """The released loop of the attention proposals: a list per label (score descending,
    stable), first occurrence of each [s, e], sorted by start descending (stable) and popped from
    the end; a pair is kept when its end exceeds the last kept end. -> (bbox (K, 2), count)."""
    listed = []
    for label in labels:
        for p in sorted([p for p in proposals if p["label"] == label], key=lambda p: p["score"],
                        reverse=True):
            if list(p["segment"]) not in listed:
                listed.append(list(p["segment"]))
    listed.sort(key=lambda se: se[0], reverse=True)
    kept, last_end = [], -math.inf
    while listed:
        s, e = listed.pop()
        if e > last_end:
            kept.append((s, e))
            last_end = e
    boxes = []
    for s, e in kept:
        mid, dur = (s + e) / 2, e - s
        boxes.append([max(round((mid - (delta + 0.5) * dur) * scale), 0),
                      min(round((mid + (delta + 0.5) * dur) * scale), out_len - 1)])
    boxes.sort(key=lambda b: b[0], reverse=True)
    boxes = boxes[:K]
    return np.array(boxes + [[0, 0]] * (K - len(boxes)), dtype=np.int64).reshape(K, 2), len(boxes)
