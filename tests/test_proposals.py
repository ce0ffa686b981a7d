"""proposals.py: pure helpers on hand-computed cases, NMS and video_proposals vs the loop
versions of docs/method.md §11 (tests/oracles/proposals_loop.py)."""
import numpy as np
import pytest
from scipy.interpolate import interp1d

from config import build_args
from oracles.proposals_loop import loop_nms, loop_video_proposals
from proposals import (group_runs, nms, outer_inner_contrast, outer_ranges, range_sums,
                       segments_to_seconds, upsample, video_proposals)


# ----------------------------------------------------------------------------- helpers alone
def test_upsample_matches_scipy_extrapolating():
    rng = np.random.default_rng(0)
    for n_in, scale in [(2, 20), (7, 20), (50, 3), (13, 7)]:
        x = rng.random((n_in, 3)).astype(np.float32)
        pos = np.arange(0, n_in, 1 / scale)
        for xx in (x, x.astype(np.float64)):                      # bit-exact for float32 and 64
            ref = interp1d(np.arange(n_in), xx, axis=0, fill_value="extrapolate")(pos)
            assert ref.dtype == np.float64 and np.array_equal(upsample(xx, scale), ref)
        assert upsample(x[:, 0], scale).shape == (len(pos),)
    # beyond the last point the line keeps going: x = [0, 1] at 1.5 -> 1.5
    assert upsample(np.array([0.0, 1.0]), 2).tolist() == [0.0, 0.5, 1.0, 1.5]
    assert upsample(np.array([[4.0]]), 4).tolist() == [[4.0]] * 4


def test_group_runs_hand_case():
    mask = np.array([[1, 1, 0, 1, 0, 0, 1, 1],
                     [0, 0, 0, 0, 0, 0, 0, 0],
                     [1, 0, 1, 1, 1, 1, 1, 1]], dtype=bool)
    row, first, last = group_runs(mask)
    assert row.tolist() == [0, 0, 0, 2, 2]
    assert first.tolist() == [0, 3, 6, 0, 2]
    assert last.tolist() == [1, 3, 7, 0, 7]


def test_outer_ranges_truncate_like_int():
    # L = 3, lamb 0.5 -> 1.5: first - 1.5 = 0.5 -> 0; last + 1.5 = 5.5 -> 5 (clipped to n - 1 = 4)
    of, ol = outer_ranges(np.array([2]), np.array([4]), 0.5, 5)
    assert (of.tolist(), ol.tolist()) == ([0], [4])
    # first - lamb*L negative -> int() truncates toward 0, then max(0, .)
    of, ol = outer_ranges(np.array([0, 10]), np.array([4, 14]), 0.2, 100)
    assert of.tolist() == [0, 9] and ol.tolist() == [5, 15]


def test_range_sums_empty_and_tail():
    v = np.arange(10.0)
    assert range_sums(v, [2, 5, 9, 3, 0], [5, 5, 10, 3, 10]).tolist() == [9.0, 0.0, 9.0, 0.0, 45.0]


def test_outer_inner_contrast_hand_case():
    # row 0: run [2, 4] (L = 3), lamb 0.5 -> outer [0, 2) U (4, 5] (int(1.5) = 1 -> max(0, 0) ...)
    smap = np.array([[0.1, 0.2, 0.9, 0.8, 0.7, 0.3, 0.0],
                     [0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5]])
    # first - 1.5 = 0.5 -> 0; last + 1.5 = 5.5 -> 5: outer = {0, 1, 5}
    # -> (0.1 + 0.2 + 0.3) / 3 = 0.2
    # inner = (0.9 + 0.8 + 0.7) / 3 = 0.8 -> 0.6
    # row 1: run [0, 6] covers everything -> outer empty -> 0.5 - 0
    out = outer_inner_contrast(smap, np.array([0, 1]), np.array([2, 0]), np.array([4, 6]), 0.5)
    np.testing.assert_allclose(out, [0.6, 0.5], atol=1e-15)


def test_nms_hand_case():
    segs = np.array([[0.0, 10.0], [1.0, 10.0], [20.0, 22.0], [9.0, 12.0], [0.0, 10.0]])
    scores = np.array([0.9, 0.8, 0.7, 0.95, 0.9])
    # +1 convention: [0,10] vs [1,10]: inter 10, lengths 11 and 10 -> 10/11 = 0.909 -> dropped
    # [9,12] (best) vs [0,10]: inter 10 - 9 + 1 = 2, lengths 4, 11 -> 2/13 = 0.154 -> both kept
    # the tie 0.9 / 0.9 (identical segments): input order, the first is kept, the copy dropped
    keep = nms(segs, scores, 0.45)
    assert keep.tolist() == [3, 0, 2]
    # IoU exactly at the threshold is dropped: [0,1] vs [1,2]: inter 1, lengths 2, 2 -> 1/3
    assert nms(np.array([[0.0, 1.0], [1.0, 2.0]]), np.array([1.0, 0.5]), 1 / 3).tolist() == [0]
    assert nms(np.array([[0.0, 1.0], [1.0, 2.0]]), np.array([1.0, 0.5]), 0.34).tolist() == [0, 1]
    # groups never suppress each other
    assert nms(segs[[0, 4]], scores[[0, 4]], 0.45, groups=np.array([1, 0])).tolist() == [1, 0]
    assert nms(np.zeros((0, 2)), np.zeros(0), 0.5).tolist() == []


def test_nms_equals_greedy_loop_random():
    rng = np.random.default_rng(3)
    for case in range(60):
        n = int(rng.integers(0, 120))
        start = np.round(rng.uniform(0, 30, n), int(rng.integers(0, 3)))
        segs = np.stack([start, start + np.round(rng.exponential(4, n), 1)], axis=1)
        scores = np.round(rng.random(n), 2)                        # ties
        groups = rng.integers(0, 3, n)
        thresh = float(rng.choice([0.0, 0.2, 0.45, 0.9, 1.0, 1.5]))
        want = []
        for g in range(3):
            idx = np.flatnonzero(groups == g)
            want += idx[loop_nms(segs[idx], scores[idx], thresh)].tolist()
        assert nms(segs, scores, thresh, groups=groups).tolist() == want, case


def test_seconds():
    # (the warp of the dynamic timeline back to the original: test_sampling.py)
    start, end = segments_to_seconds(np.array([0, 10]), np.array([4, 19]), 0.5)
    assert start.tolist() == [0.0, 5.0] and end.tolist() == [2.5, 10.0]


def smooth_noise(rng, n, k, width):
    x = rng.normal(size=(n + width, k))
    kernel = np.ones(width) / width
    return np.stack([np.convolve(x[:, i], kernel, "valid")[:n] for i in range(k)], axis=1)


def random_video(rng, n_cls, n_snip, active):
    logits = smooth_noise(rng, n_snip, n_cls + 1, 8) * 8
    logits[:, active] += 6
    cas = np.exp(logits - logits.max(axis=1, keepdims=True))
    cas /= cas.sum(axis=1, keepdims=True)                           # (T, C+1)
    fg = 1 / (1 + np.exp(-smooth_noise(rng, n_snip, 1, 6)[:, 0] * 8))
    att = np.stack([fg, 1 - fg], axis=1)                            # (T, 2)
    fg_cls = np.full(n_cls + 1, 0.001)
    fg_cls[active] = rng.uniform(0.3, 0.9, len(active))
    return fg_cls.astype(np.float32), att.astype(np.float32), cas.astype(np.float32)


@pytest.mark.parametrize("dataset", ["THUMOS", "ActivityNet"])
@pytest.mark.parametrize("pseudo", [False, True])
@pytest.mark.parametrize("with_cum", [False, True])
def test_video_proposals_equals_loop(dataset, pseudo, with_cum):
    args = build_args(dataset)
    n_cls = len(args.class_name_lst)
    rng = np.random.default_rng([len(dataset), pseudo, with_cum])
    for trial in range(2):
        n_snip = int(rng.integers(20, 60))
        vid_len = int(rng.integers(n_snip, 3 * n_snip))
        active = rng.choice(n_cls, size=int(rng.integers(1, 4)), replace=False)
        fg_cls, att, cas = random_video(rng, n_cls, n_snip, active)
        if trial == 1:
            fg_cls[:] = 0.001                                          # no class above threshold
            fg_cls[active[0]] = 0.002
        cum = (np.concatenate([[0.0], np.cumsum(rng.uniform(0.5, 3.0, vid_len))]) if with_cum
               else None)
        got = video_proposals(fg_cls, att, cas, vid_len, args, pseudo=pseudo, cum=cum)
        want = loop_video_proposals(fg_cls, att, cas, vid_len, args, pseudo=pseudo, cum=cum)
        assert len(got) == len(want) > 0
        for g, (label, score, start, end) in zip(got, want):
            assert g["label"] == label and g["segment"] == [start, end]
            assert abs(g["score"] - score) < 1e-12
        if trial == 1:
            assert {g["label"] for g in got} == {args.class_name_lst[active[0]]}


def test_video_proposals_argmax_fallback_and_output_types():
    args = build_args("THUMOS")
    rng = np.random.default_rng(5)
    fg_cls, att, cas = random_video(rng, 20, 40, np.array([7]))
    fg_cls[:] = 0.0
    fg_cls[7], fg_cls[20] = 0.2, 0.9                 # background is never a predicted class
    out = video_proposals(fg_cls, att, cas, 55, args)
    assert out and all(p["label"] == args.class_name_lst[7] for p in out)
    assert all(type(p["score"]) is float and all(type(t) is float for t in p["segment"])
               for p in out)
    scores = [p["score"] for p in out]
    assert scores == sorted(scores, reverse=True)
