"""eval.proposals: pure helpers on hand-computed cases, video_proposals vs a loop version of docs/method.md §11."""
import json

import numpy as np
import pytest
from scipy.interpolate import interp1d

from config import build_args
from eval import (group_runs, nms, outer_inner_contrast, outer_ranges, range_sums, segments_to_seconds,
                  upsample, video_proposals, warp_times, write_results_json)


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
    # first - 1.5 = 0.5 -> 0; last + 1.5 = 5.5 -> 5: outer = {0, 1, 5} -> (0.1 + 0.2 + 0.3) / 3 = 0.2
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


def loop_nms(segs, scores, thresh):
    """Released-style greedy NMS, one kept segment at a time (stable order on ties)."""
    order = list(np.argsort(-scores, kind="stable"))
    keep = []
    while order:
        i = order.pop(0)
        keep.append(i)
        rest = []
        for j in order:
            inter = max(0.0, min(segs[i, 1], segs[j, 1]) - max(segs[i, 0], segs[j, 0]) + 1)
            if inter / ((segs[i, 1] - segs[i, 0] + 1) + (segs[j, 1] - segs[j, 0] + 1) - inter) < thresh:
                rest.append(j)
        order = rest
    return keep


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


def test_seconds_and_warp():
    start, end = segments_to_seconds(np.array([0, 10]), np.array([4, 19]), 0.5)
    assert start.tolist() == [0.0, 5.0] and end.tolist() == [2.5, 10.0]
    # identity cum (all weights 1) leaves times unchanged
    cum = np.arange(11.0)
    np.testing.assert_allclose(warp_times(np.array([0.0, 3.2, 6.4]), cum, 6.4), [0.0, 3.2, 6.4])
    # first snippet stretched to weight 3 of a 2-snippet video: cum [0, 3, 4]; t/d = 0.75 is the
    # end of snippet 0 in sampled time -> 0.5 in original time
    np.testing.assert_allclose(warp_times(np.array([0.75 * 8]), np.array([0.0, 3.0, 4.0]), 8.0), [4.0])


def test_write_results_json(tmp_path):
    path = tmp_path / "sub" / "result.json"
    write_results_json(path, {"v": [{"label": "A", "score": 0.5, "segment": [1.0, 2.0]}]})
    data = json.loads(path.read_text())
    assert set(data) == {"version", "results", "external_data"}
    assert data["results"]["v"][0]["segment"] == [1.0, 2.0]


# ----------------------------------------------------------------------------- loop version of §8
def loop_video_proposals(fg_cls, temp_att, fg_cas, vid_len, args, pseudo=False, cum=None):
    n_cls = len(args.class_name_lst)
    s = fg_cls[:n_cls]
    pred = [c for c in range(n_cls) if s[c] > args.cls_threshold] or [int(np.argmax(s))]
    scale, n_snip = args.test_upgrade_scale, temp_att.shape[0]
    pos = np.arange(0, n_snip, 1 / scale)
    cas = interp1d(np.arange(n_snip), fg_cas[:, pred], axis=0, fill_value="extrapolate")(pos)
    att = interp1d(np.arange(n_snip), temp_att[:, 0], fill_value="extrapolate")(pos)
    n = len(pos)
    t_factor = (args.segment_frames_num * vid_len) / (args.frames_per_sec * scale * n_snip)
    duration = args.segment_frames_num * vid_len / args.frames_per_sec
    if pseudo:
        branches = [("cas", args.pseudo_cas_thresh, 0.0), ("att", args.pseudo_att_thresh, 0.0)]
    else:
        branches = [("cas", args.cas_thresh, args.oic_gamma_cas), ("att", args.att_thresh, args.oic_gamma_att)]
    w_cas, w_att, lamb = args.fusion_cas_weight, args.fusion_att_weight, args.oic_lamb
    pool = {c: [] for c in pred}
    for branch, thresholds, gamma in branches:
        for theta in thresholds:
            for ci, c in enumerate(pred):
                if branch == "cas":
                    sig = cas[:, ci]
                    smap = w_cas * np.where(sig < theta, 0, sig) + w_att * att
                else:
                    sig = att
                    smap = w_cas * cas[:, ci] + w_att * np.where(att < theta, 0, att)
                idx = np.where(sig >= theta)[0]
                for g in np.split(idx, np.where(np.diff(idx) != 1)[0] + 1):
                    if len(g) < 2:
                        continue
                    length = len(g)
                    inner = np.mean(smap[g])
                    o_s = max(0, int(g[0] - lamb * length))
                    o_e = min(n - 1, int(g[-1] + lamb * length))
                    outer_idx = list(range(o_s, g[0])) + list(range(g[-1] + 1, o_e + 1))
                    outer = np.mean(smap[outer_idx]) if outer_idx else 0
                    start, end = g[0] * t_factor, (g[-1] + 1) * t_factor
                    if cum is not None:
                        xp, fp = cum / cum[-1], np.linspace(0, 1, len(cum))
                        start = np.interp(start / duration, xp, fp) * duration
                        end = np.interp(end / duration, xp, fp) * duration
                    pool[c].append([inner - outer + gamma * s[c], start, end])
    out = []
    for c in pred:
        props = sorted(pool[c], key=lambda p: -p[0])          # stable
        while props:
            best = props.pop(0)
            out.append((args.class_name_lst[c], best[0], best[1], best[2]))
            kept = []
            for p in props:
                inter = max(0.0, min(best[2], p[2]) - max(best[1], p[1]) + 1)
                iou = inter / ((best[2] - best[1] + 1) + (p[2] - p[1] + 1) - inter)
                if iou < args.nms_thresh:
                    kept.append(p)
            props = kept
    return out


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
        cum = np.concatenate([[0.0], np.cumsum(rng.uniform(0.5, 3.0, vid_len))]) if with_cum else None
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
    assert all(type(p["score"]) is float and all(type(t) is float for t in p["segment"]) for p in out)
    scores = [p["score"] for p in out]
    assert scores == sorted(scores, reverse=True)
