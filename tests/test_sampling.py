"""sampling.py: sampling and dynamic weights against the slow loop versions of docs/method.md
§7/§9 (tests/oracles/sampling_loop.py), hand-computed targets and attention proposals
(docs/method.md §8), and the conversions between the original and the dynamic timeline."""
import numpy as np
import pytest

import sampling
from oracles.sampling_loop import R, dynamic_loop, lerp_loop, uniform_loop, weights_loop


def random_proposals(rng, n, T, labels=("A", "B", "C")):
    out = []
    for _ in range(n):
        s = rng.uniform(-2, T / R)
        out.append({"label": str(rng.choice(labels)), "score": float(rng.uniform(-0.2, 1)),
                    "segment": [s, s + rng.uniform(0.1, 8)]})
    return out


# ----------------------------------------------------------------------------- sampling
@pytest.mark.parametrize("T,S", [(1, 8), (5, 8), (8, 8), (9, 8), (755, 750), (1000, 37), (3, 2)])
def test_uniform_matches_loop(T, S):
    x = np.random.default_rng(T).standard_normal((T, 4)).astype(np.float32)
    np.testing.assert_array_equal(sampling.uniform_sample(x, S), uniform_loop(x, S))


def test_uniform_float_form():
    x = np.arange(755, dtype=np.float32)[:, None]
    out = sampling.uniform_sample(x, 750)
    # float form: floor(450*(755/750))
    assert 450 * 755 // 750 == 453 and out[450, 0] == 452


@pytest.mark.parametrize("T,S", [(9, 8), (100, 7), (1000, 750), (751, 750), (4000, 750)])
def test_random_bins_and_reproducible(T, S):
    x = np.arange(T, dtype=np.float32)[:, None].repeat(2, axis=1)
    bounds = np.rint(np.linspace(0, T - 1, S + 1)).astype(int)
    for rng in (np.random.default_rng(3), np.random.RandomState(3)):
        idx = sampling.random_sample(x, S, rng)[:, 0].astype(int)
        assert np.all((idx >= bounds[:-1]) & (idx < bounds[1:]))
    a = sampling.random_sample(x, S, np.random.default_rng(5))
    np.testing.assert_array_equal(a, sampling.random_sample(x, S, np.random.default_rng(5)))
    np.random.seed(11)  # noqa: NPY002 (the global generator, on purpose)
    b = sampling.random_sample(x, S)
    np.random.seed(11)  # noqa: NPY002 (the global generator, on purpose)
    np.testing.assert_array_equal(b, sampling.random_sample(x, S))


@pytest.mark.parametrize("T,S", [(2, 9), (5, 8), (300, 750)])
def test_random_interpolates_short_videos(T, S):
    x = np.random.default_rng(T).standard_normal((T, 3)).astype(np.float32)
    np.testing.assert_allclose(sampling.random_sample(x, S), lerp_loop(x, np.linspace(0, T - 1, S)),
                               rtol=1e-5, atol=1e-6)


def test_random_edge_cases():
    x = np.random.default_rng(0).standard_normal((8, 3)).astype(np.float32)
    np.testing.assert_array_equal(sampling.random_sample(x, 8), x)
    # docs/method.md §14: S copies
    np.testing.assert_array_equal(sampling.random_sample(x[:1], 6), x[[0] * 6])


@pytest.mark.parametrize("T", [2, 7, 60, 333])
def test_dynamic_matches_loop(T):
    rng = np.random.default_rng(T)
    x = rng.standard_normal((T, 5)).astype(np.float32)
    w = np.where(rng.random(T) < 0.3, rng.uniform(1, 4, T), 1.0)
    out, cum = sampling.dynamic_sample(x, w)
    ref, ref_cum = dynamic_loop(x, w)
    np.testing.assert_allclose(cum, ref_cum, rtol=1e-12)
    assert out.shape == ref.shape
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)


def test_dynamic_identity_and_one_snippet():
    x = np.random.default_rng(1).standard_normal((50, 4)).astype(np.float32)
    out, cum = sampling.dynamic_sample(x, np.ones(50))
    np.testing.assert_array_equal(out, x)
    np.testing.assert_array_equal(cum, np.arange(51))
    out, cum = sampling.dynamic_sample(x[:1], np.ones(1))
    np.testing.assert_array_equal(out, x[[0, 0]])
    np.testing.assert_array_equal(cum, [0, 0.5, 1])


@pytest.mark.parametrize("seed", range(6))
def test_dynamic_weights_match_loop(seed):
    rng = np.random.default_rng(seed)
    T = int(rng.integers(5, 400))
    props = random_proposals(rng, int(rng.integers(0, 40)), T)
    for alpha, delta, gamma in ((0.7, 0.5, 6), (0.3, 0.0, 10)):
        got = sampling.dynamic_segment_weights(props, T, ["A", "B"], alpha, delta, gamma)
        assert got.dtype == np.float64 and got.shape == (T,)
        np.testing.assert_array_equal(   # bit-identical
            got, weights_loop(props, T, ["A", "B"], alpha, delta, gamma))


def test_dynamic_weights_hand_case():
    # one proposal of 1 s at r = 1, delta 0.5: span [1, 3] → n = 3 ≤ U = 6 → w = 2; run sum 6 → kept
    props = [{"label": "A", "score": 1.0, "segment": [1.5, 2.5]}]
    np.testing.assert_array_equal(
        sampling.dynamic_segment_weights(props, 6, {"A"}, 1.0, 0.5, 3, r=1.0), [1, 2, 2, 2, 1, 1])


# ----------------------------------------------------------------------------- timelines
def test_original_to_dynamic_time_hand_case():
    cum = np.array([0, 1, 3, 4, 5.0])                                  # w = [1, 2, 1, 1]
    np.testing.assert_allclose(
        sampling.original_to_dynamic_time([1.0, 0.5, 4.0, 0.0], cum, 4, r=1.0),
        [2.0, 1.0, 5.0, 0.0])
    np.testing.assert_array_equal(
        sampling.original_to_dynamic_time([1.3, 7.0], np.arange(11.0), 10), [1.3, 7.0])


def test_dynamic_to_original_time():
    # identity cum (all weights 1) leaves times unchanged
    cum = np.arange(11.0)
    np.testing.assert_allclose(
        sampling.dynamic_to_original_time(np.array([0.0, 3.2, 6.4]), cum, 6.4), [0.0, 3.2, 6.4])
    # first snippet stretched to weight 3 of a 2-snippet video: cum [0, 3, 4]; t/d = 0.75 is the
    # end of snippet 0 in sampled time -> 0.5 in original time
    np.testing.assert_allclose(
        sampling.dynamic_to_original_time(np.array([0.75 * 8]), np.array([0.0, 3.0, 4.0]), 8.0),
        [4.0])


# ----------------------------------------------------------------------------- targets
def test_pseudo_instance_label_hand_case():
    props = [{"label": "A", "segment": [1.4, 3.6]}, {"label": "B", "segment": [3.5, 5.5]},
             {"label": "C", "segment": [0.0, 9.0]},                        # not a GT label: ignored
             {"label": "A", "segment": [8.2, 20.0]}]                      # beyond the end: clamped
    got = sampling.pseudo_instance_label(props, {"A", "B"}, ["A", "B", "C"], 1.0, 10)
    want = np.zeros((10, 4), dtype=np.float32)
    want[:, 3] = 1
    want[1:4] = [1, 0, 0, 0]
    want[4] = [0.5, 0.5, 0, 0]                                # round(3.6) = 4, round(3.5) = 4
    want[5:7] = [0, 1, 0, 0]                                  # round(5.5) = 6
    want[8:10] = [1, 0, 0, 0]
    np.testing.assert_array_equal(got, want)
    assert got.dtype == np.float32


def test_pseudo_instance_label_warped():
    cum = np.array([0, 1, 3, 4, 5.0])
    props = [{"label": "A", "segment": [1.0, 2.0]}]                     # warped to [2, 3]
    got = sampling.pseudo_instance_label(props, {"A"}, ["A"], 1.0, 5, warp=cum, vid_len=4, r=1.0)
    np.testing.assert_array_equal(got[:, 0], [0, 0, 1, 1, 0])


def test_attention_bbox_nested_duplicates():
    props = [{"label": "A", "segment": s}
             for s in ([0, 10], [2, 5], [0, 10], [0, 12], [11, 15], [14, 15])]
    bbox, count = sampling.attention_proposal_bbox(props, 1.0, 14, 0.0, 4)
    assert count == 2 and bbox.dtype == np.int64
    np.testing.assert_array_equal(bbox, [[11, 13], [0, 12], [0, 0], [0, 0]])
    bbox, count = sampling.attention_proposal_bbox(props, 1.0, 14, 0.5, 4)
    np.testing.assert_array_equal(bbox[:2], [[9, 13], [0, 13]])


def test_attention_bbox_rounding_beyond_end_and_warp():
    props = [{"label": "A", "segment": [0.5, 2.5]}, {"label": "A", "segment": [20.0, 25.0]}]
    bbox, count = sampling.attention_proposal_bbox(props, 1.0, 14, 0.0, 3)
    # mid 1.5 dur 2: round(0.5) = 0, round(2.5) = 2; beyond the end: start 20 kept, end clamped
    # to 13
    np.testing.assert_array_equal(bbox, [[20, 13], [0, 2], [0, 0]])
    cum = np.array([0, 1, 3, 4, 5.0])
    bbox, count = sampling.attention_proposal_bbox([{"label": "A", "segment": [1.0, 2.0]}], 2.0,
                                                   10, 0.0, 2, warp=cum, vid_len=4, r=1.0)
    np.testing.assert_array_equal(bbox, [[4, 6], [0, 0]])                # warped [2, 3] * scale 2


def test_attention_bbox_more_than_k_warns():
    props = [{"label": "A", "segment": [2.0 * i, 2.0 * i + 1]} for i in range(5)]
    with pytest.warns(UserWarning, match="max_segments_num"):
        bbox, count = sampling.attention_proposal_bbox(props, 1.0, 100, 0.0, 3)
    assert count == 3
    np.testing.assert_array_equal(bbox, [[8, 9], [6, 7], [4, 5]])
