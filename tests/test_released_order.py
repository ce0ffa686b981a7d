"""Refinement-step targets in the released code's order (sampling.py, docs/method.md §8, §9):
equal-start attention proposals against a loop written from the method text, hand-computed
equal-start pairs, a stretched run whose exact sum is k + 1/2, and the dynamic weights of every
demo training video against the §9 loop (tests/oracles/sampling_loop.py)."""
import numpy as np
import pytest

import dataset as ds
import synthetic_data
import sampling
import synthetic_data as sd
from config import build_args
from oracles.sampling_loop import R, attention_loop, weights_loop
from synthetic_data import generate_synthetic_dataset


def grid_proposals(rng, n, labels=("A", "B", "C")):
    """Starts, ends and scores on coarse grids, so equal starts, duplicates and score ties are
    common."""
    out = []
    for _ in range(n):
        s = float(rng.integers(0, 8)) / 2
        out.append({"label": str(rng.choice(labels)), "score": float(rng.choice([0.2, 0.5, 0.9])),
                    "segment": [s, s + float(rng.integers(1, 10)) / 2]})
    return out


# ----------------------------------------------------------------------------- attention proposals
def box(delta, s, e):
    """Hand-computed box of one pair at scale 1 (for the cases below)."""
    mid, dur = (s + e) / 2, e - s
    return [max(round(mid - (delta + 0.5) * dur), 0), min(round(mid + (delta + 0.5) * dur), 19)]


def test_equal_start_lower_scored_shorter_both_kept():
    # list [2, 6] (0.9), [2, 4] (0.3); equal start: [2, 4] processed first (kept, end 4), then
    # [2, 6] (6 > 4: kept)
    props = [{"label": "A", "score": 0.9, "segment": [2.0, 6.0]},
             {"label": "A", "score": 0.3, "segment": [2.0, 4.0]}]
    bbox, count = sampling.attention_proposal_bbox(props, 1.0, 20, 0.5, 4)
    assert count == 2 and box(0.5, 2, 4) == [1, 5] and box(0.5, 2, 6) == [0, 8]
    # nested, start descending
    np.testing.assert_array_equal(bbox, [[1, 5], [0, 8], [0, 0], [0, 0]])


def test_equal_start_lower_scored_longer_shorter_dropped():
    # list [2, 4] (0.9), [2, 6] (0.3): [2, 6] processed first (kept), then [2, 4] (4 ≤ 6: dropped)
    props = [{"label": "A", "score": 0.9, "segment": [2.0, 4.0]},
             {"label": "A", "score": 0.3, "segment": [2.0, 6.0]}]
    bbox, count = sampling.attention_proposal_bbox(props, 1.0, 20, 0.5, 4)
    assert count == 1
    np.testing.assert_array_equal(bbox, [[0, 8], [0, 0], [0, 0], [0, 0]])


def test_equal_start_order_of_labels_and_duplicates():
    # one pair per label: the label order decides which is listed first, so which is processed first
    props = [{"label": "B", "score": 0.1, "segment": [2.0, 6.0]},
             {"label": "A", "score": 0.9, "segment": [2.0, 4.0]},
             {"label": "B", "score": 0.05, "segment": [2.0, 4.0]}]   # a duplicate: its first counts
    bbox, count = sampling.attention_proposal_bbox(props, 1.0, 20, 0.0, 3, labels=["A", "B"])
    assert count == 1                                        # list [2,4], [2,6]: [2,6] first
    np.testing.assert_array_equal(bbox, [[2, 6], [0, 0], [0, 0]])
    bbox, count = sampling.attention_proposal_bbox(props, 1.0, 20, 0.0, 3, labels=["B", "A"])
    assert count == 2                                        # list [2,6], [2,4]: [2,4] first
    np.testing.assert_array_equal(bbox, [[2, 4], [2, 6], [0, 0]])   # equal starts: processing order
    bbox, count = sampling.attention_proposal_bbox(props, 1.0, 20, 0.0, 3, labels=["B"])
    assert count == 2                                        # B alone: [2,6] (0.1), [2,4] (0.05)


@pytest.mark.parametrize("seed", range(8))
def test_attention_matches_loop(seed):
    rng = np.random.default_rng(seed)
    props = grid_proposals(rng, int(rng.integers(1, 30)))
    labels = [str(v) for v in rng.permutation(["A", "B", "C"])[:int(rng.integers(1, 4))]]
    for scale, delta in ((1.0, 0.0), (1.7, 0.5), (0.6, 0.25)):
        chosen = sampling.select_labels(props, set(labels))
        if not len(chosen[0]):
            continue
        got = sampling.attention_proposal_bbox(chosen, scale, 12, delta, 6, labels=labels)
        want = attention_loop(props, scale, 12, delta, 6, labels)
        assert got[1] == want[1]
        np.testing.assert_array_equal(got[0], want[0])


def test_dataset_passes_class_list_order(tmp_path):
    root = tmp_path / "data"
    generate_synthetic_dataset(root, "THUMOS14", 3, 2, feature_dim=8, seed=1,
                               durations=(5.0, 40.0))
    ds.clear_feature_cache()
    args = build_args("THUMOS", ["--data_dir", str(root), "--feature_dim", "8",
                                 "--sample_segments_num", "1000", "--max_segments_num", "4",
                                 "--feature_cache_gb", "0", "--delta", "0"])
    test = ds.VideoDataset(args, "test", "uniform")        # label set: labels of the proposals
    vid = test.video_names[0]
    first, second = args.class_name_lst[3], args.class_name_lst[7]
    props = [{"label": second, "score": 0.9, "segment": [2.0 / R, 4.0 / R]},
             {"label": first, "score": 0.1, "segment": [2.0 / R, 6.0 / R]}]
    test.set_proposals({vid: props}, None)
    item = test[0]
    T = test.vid_lens[vid]
    want = attention_loop(props, R * item["features"].shape[0] / T, item["features"].shape[0], 0.0,
                          4, [first, second])
    assert int(item["proposal_count"]) == want[1] == 2          # listed [2, 6], [2, 4]: both kept
    np.testing.assert_array_equal(item["proposal_bbox"].numpy(), want[0])


# -------------------------------------------------------------- dynamic weights (docs/method.md §9)
def test_half_sum_run_rounds_as_released():
    # r = 1, delta 0, U = 12: [2, 9] spans 8 snippets → 1.5, [3, 9] spans 7 → 12/7; the run
    # w[2..9] sums to exactly 13.5: np.sum gives 13.5 → round 14 (a cumulative sum gives
    # 13.499999999999998 → 13)
    props = [{"label": "A", "score": 1.0, "segment": [2.0, 9.0]},
             {"label": "A", "score": 0.5, "segment": [3.0, 9.0]}]
    run = np.array([1.5] + [12 / 7] * 7)
    assert np.sum(run) == 13.5 and np.cumsum(run)[-1] < 13.5         # the two summations differ
    w = sampling.dynamic_segment_weights(props, 12, {"A"}, 1.0, 0.0, 12, r=1.0)
    np.testing.assert_array_equal(w, [1, 1, 14 * 1.5 / 13.5] + [14 * (12 / 7) / 13.5] * 7 + [1, 1])
    cum, pos = sampling.dynamic_positions(w)
    assert len(pos) == 18                                            # M = 4 + 14, not 4 + 13


def demo_proposals(rng, gt, duration, class_names):
    """Pseudo proposals shaped like a refinement step's: jittered copies of each GT instance (some
    on the snippet grid, so spans and sums hit exact values), plus spurious ones of other
    classes."""
    out = []
    for a in gt:
        s, e = a["segment"]
        for _ in range(int(rng.integers(1, 5))):
            js, je = s + rng.normal(0, 0.6), e + rng.normal(0, 0.6)
            if rng.random() < 0.4:
                js, je = np.round(js * R) / R, np.round(je * R) / R
            out.append({"label": a["label"], "score": float(rng.uniform(0, 1)),
                        "segment": [float(js), float(je)]})
    for _ in range(int(rng.integers(0, 6))):
        s = rng.uniform(0, duration)
        out.append({"label": str(rng.choice(class_names)), "score": float(rng.uniform(0, 1)),
                    "segment": [float(s), float(s + rng.uniform(0.3, 6))]})
    return out


def test_demo_training_videos_weights_bit_identical(tmp_path):
    args = build_args("THUMOS", ["--demo"])
    params = synthetic_data.demo_params(args)
    params = {key: val for key, val in params.items() if key != "generator"} | {"feature_dim": 4}
    database = generate_synthetic_dataset(tmp_path / "demo", **params)
    train = [v for v, info in database.items() if info["subset"] == "validation"]
    assert len(train) == sd.PROFILES["THUMOS14"]["demo_videos"][0]
    rng = np.random.default_rng(23)
    stretched = 0
    for vid in train:
        info = database[vid]
        T = int(np.load(tmp_path / "demo" / "train" / f"{vid}.npy", mmap_mode="r").shape[0])
        props = demo_proposals(rng, info["annotations"], info["duration"], args.class_name_lst)
        labels = {a["label"] for a in info["annotations"]}
        got = sampling.dynamic_segment_weights(props, T, labels, args.alpha, args.delta, args.gamma)
        np.testing.assert_array_equal(
            got, weights_loop(props, T, labels, args.alpha, args.delta, args.gamma))
        stretched += bool((got > 1).any())
    assert stretched > len(train) // 2                               # the runs were exercised
