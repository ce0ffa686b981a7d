"""Slow loop version of bench/pseudo_label_quality.py's marked rows, written from
docs/method.md §8: one segment and one snippet at a time."""
import numpy as np


def loop_marked(segments, T, r):
    out = [False] * T
    for s, e in segments:
        for t in range(T):
            if max(round(s * r), 0) <= t <= min(round(e * r), T - 1):
                out[t] = True
    return np.array(out)
