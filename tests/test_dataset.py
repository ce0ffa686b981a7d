"""dataset.py: sampling and dynamic weights against slow loop versions of docs/method.md §7/§9, hand-computed
targets (docs/method.md §8), validation errors, and the dataset items on a tiny synthetic set."""
import json
import math

import numpy as np
import pytest
import torch

import dataset as ds
from refinement import load_step_inputs, save_step_inputs
from config import build_args
from synthetic_data import generate_synthetic_dataset

R = 25 / 16


# ----------------------------------------------------------------------------- slow oracles (from docs/method.md)
def lerp_loop(x, pos):
    T = len(x)
    out = np.zeros((len(pos), x.shape[1]))
    for j, q in enumerate(pos):
        i0 = min(max(math.floor(q), 0), T - 2)
        out[j] = x[i0].astype(np.float64) + (q - i0) * (x[i0 + 1].astype(np.float64) - x[i0])
    return out


def uniform_loop(x, S):
    T = len(x)
    if T == 1:
        return x[[0, 0]]
    if T <= S:
        return x.copy()
    step = T / S
    return np.stack([x[math.floor(i * step)] for i in range(S)])


def dynamic_loop(x, w):
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
    w = np.ones(T)
    U = gamma * (2 * delta + 1)
    for label in labels:
        props = sorted([p for p in proposals if p["label"] == label], key=lambda p: p["score"], reverse=True)
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
            total = np.sum(w[i:j])                                      # the released arithmetic, in its order
            w[i:j] = np.round(total) * w[i:j] / total
            i = j
        else:
            i += 1
    return w


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
    np.testing.assert_array_equal(ds.uniform_sample(x, S), uniform_loop(x, S))


def test_uniform_float_form():
    x = np.arange(755, dtype=np.float32)[:, None]
    out = ds.uniform_sample(x, 750)
    assert 450 * 755 // 750 == 453 and out[450, 0] == 452           # float form: floor(450*(755/750))


@pytest.mark.parametrize("T,S", [(9, 8), (100, 7), (1000, 750), (751, 750), (4000, 750)])
def test_random_bins_and_reproducible(T, S):
    x = np.arange(T, dtype=np.float32)[:, None].repeat(2, axis=1)
    bounds = np.rint(np.linspace(0, T - 1, S + 1)).astype(int)
    for rng in (np.random.default_rng(3), np.random.RandomState(3)):
        idx = ds.random_sample(x, S, rng)[:, 0].astype(int)
        assert np.all((idx >= bounds[:-1]) & (idx < bounds[1:]))
    a = ds.random_sample(x, S, np.random.default_rng(5))
    np.testing.assert_array_equal(a, ds.random_sample(x, S, np.random.default_rng(5)))
    np.random.seed(11)  # noqa: NPY002 (the global generator, on purpose)
    b = ds.random_sample(x, S)
    np.random.seed(11)  # noqa: NPY002 (the global generator, on purpose)
    np.testing.assert_array_equal(b, ds.random_sample(x, S))


@pytest.mark.parametrize("T,S", [(2, 9), (5, 8), (300, 750)])
def test_random_interpolates_short_videos(T, S):
    x = np.random.default_rng(T).standard_normal((T, 3)).astype(np.float32)
    np.testing.assert_allclose(ds.random_sample(x, S), lerp_loop(x, np.linspace(0, T - 1, S)), rtol=1e-5, atol=1e-6)


def test_random_edge_cases():
    x = np.random.default_rng(0).standard_normal((8, 3)).astype(np.float32)
    np.testing.assert_array_equal(ds.random_sample(x, 8), x)
    np.testing.assert_array_equal(ds.random_sample(x[:1], 6), x[[0] * 6])      # docs/method.md §14: S copies


@pytest.mark.parametrize("T", [2, 7, 60, 333])
def test_dynamic_matches_loop(T):
    rng = np.random.default_rng(T)
    x = rng.standard_normal((T, 5)).astype(np.float32)
    w = np.where(rng.random(T) < 0.3, rng.uniform(1, 4, T), 1.0)
    out, cum = ds.dynamic_sample(x, w)
    ref, ref_cum = dynamic_loop(x, w)
    np.testing.assert_allclose(cum, ref_cum, rtol=1e-12)
    assert out.shape == ref.shape
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)


def test_dynamic_identity_and_one_snippet():
    x = np.random.default_rng(1).standard_normal((50, 4)).astype(np.float32)
    out, cum = ds.dynamic_sample(x, np.ones(50))
    np.testing.assert_array_equal(out, x)
    np.testing.assert_array_equal(cum, np.arange(51))
    out, cum = ds.dynamic_sample(x[:1], np.ones(1))
    np.testing.assert_array_equal(out, x[[0, 0]])
    np.testing.assert_array_equal(cum, [0, 0.5, 1])


@pytest.mark.parametrize("seed", range(6))
def test_dynamic_weights_match_loop(seed):
    rng = np.random.default_rng(seed)
    T = int(rng.integers(5, 400))
    props = random_proposals(rng, int(rng.integers(0, 40)), T)
    for alpha, delta, gamma in ((0.7, 0.5, 6), (0.3, 0.0, 10)):
        got = ds.dynamic_segment_weights(props, T, ["A", "B"], alpha, delta, gamma)
        assert got.dtype == np.float64 and got.shape == (T,)
        np.testing.assert_array_equal(got, weights_loop(props, T, ["A", "B"], alpha, delta, gamma))  # bit-identical


def test_dynamic_weights_hand_case():
    # one proposal of 1 s at r = 1, delta 0.5: span [1, 3] → n = 3 ≤ U = 6 → w = 2; run sum 6 → kept
    props = [{"label": "A", "score": 1.0, "segment": [1.5, 2.5]}]
    np.testing.assert_array_equal(ds.dynamic_segment_weights(props, 6, {"A"}, 1.0, 0.5, 3, r=1.0),
                                  [1, 2, 2, 2, 1, 1])


# ----------------------------------------------------------------------------- targets
def test_pseudo_instance_label_hand_case():
    props = [{"label": "A", "segment": [1.4, 3.6]}, {"label": "B", "segment": [3.5, 5.5]},
             {"label": "C", "segment": [0.0, 9.0]},                        # not a GT label: ignored
             {"label": "A", "segment": [8.2, 20.0]}]                      # beyond the end: clamped
    got = ds.pseudo_instance_label(props, {"A", "B"}, ["A", "B", "C"], 1.0, 10)
    want = np.zeros((10, 4), dtype=np.float32)
    want[:, 3] = 1
    want[1:4] = [1, 0, 0, 0]
    want[4] = [0.5, 0.5, 0, 0]                                          # round(3.6) = 4, round(3.5) = 4
    want[5:7] = [0, 1, 0, 0]                                            # round(5.5) = 6
    want[8:10] = [1, 0, 0, 0]
    np.testing.assert_array_equal(got, want)
    assert got.dtype == np.float32


def test_warp_times_hand_case():
    cum = np.array([0, 1, 3, 4, 5.0])                                  # w = [1, 2, 1, 1]
    np.testing.assert_allclose(ds.warp_times([1.0, 0.5, 4.0, 0.0], cum, 4, r=1.0), [2.0, 1.0, 5.0, 0.0])
    np.testing.assert_array_equal(ds.warp_times([1.3, 7.0], np.arange(11.0), 10), [1.3, 7.0])


def test_pseudo_instance_label_warped():
    cum = np.array([0, 1, 3, 4, 5.0])
    props = [{"label": "A", "segment": [1.0, 2.0]}]                     # warped to [2, 3]
    got = ds.pseudo_instance_label(props, {"A"}, ["A"], 1.0, 5, warp=cum, vid_len=4, r=1.0)
    np.testing.assert_array_equal(got[:, 0], [0, 0, 1, 1, 0])


def test_attention_bbox_nested_duplicates():
    props = [{"label": "A", "segment": s} for s in ([0, 10], [2, 5], [0, 10], [0, 12], [11, 15], [14, 15])]
    bbox, count = ds.attention_proposal_bbox(props, 1.0, 14, 0.0, 4)
    assert count == 2 and bbox.dtype == np.int64
    np.testing.assert_array_equal(bbox, [[11, 13], [0, 12], [0, 0], [0, 0]])
    bbox, count = ds.attention_proposal_bbox(props, 1.0, 14, 0.5, 4)
    np.testing.assert_array_equal(bbox[:2], [[9, 13], [0, 13]])


def test_attention_bbox_rounding_beyond_end_and_warp():
    props = [{"label": "A", "segment": [0.5, 2.5]}, {"label": "A", "segment": [20.0, 25.0]}]
    bbox, count = ds.attention_proposal_bbox(props, 1.0, 14, 0.0, 3)
    # mid 1.5 dur 2: round(0.5) = 0, round(2.5) = 2; beyond the end: start 20 kept, end clamped to 13
    np.testing.assert_array_equal(bbox, [[20, 13], [0, 2], [0, 0]])
    cum = np.array([0, 1, 3, 4, 5.0])
    bbox, count = ds.attention_proposal_bbox([{"label": "A", "segment": [1.0, 2.0]}], 2.0, 10, 0.0, 2,
                                             warp=cum, vid_len=4, r=1.0)
    np.testing.assert_array_equal(bbox, [[4, 6], [0, 0]])                # warped [2, 3] * scale 2


def test_attention_bbox_more_than_k_warns():
    props = [{"label": "A", "segment": [2.0 * i, 2.0 * i + 1]} for i in range(5)]
    with pytest.warns(UserWarning, match="max_segments_num"):
        bbox, count = ds.attention_proposal_bbox(props, 1.0, 100, 0.0, 3)
    assert count == 3
    np.testing.assert_array_equal(bbox, [[8, 9], [6, 7], [4, 5]])


# ----------------------------------------------------------------------------- the dataset
def make_args(root, **overrides):
    argv = ["--data_dir", str(root), "--feature_dim", "16", "--sample_segments_num", "32",
            "--max_segments_num", "8", "--feature_cache_gb", "0"]
    for key, value in overrides.items():
        argv += [f"--{key}", str(value)]
    return build_args("THUMOS", argv)


@pytest.fixture
def data_root(tmp_path):
    root = tmp_path / "data"
    generate_synthetic_dataset(root, "THUMOS", 4, 3, feature_dim=16, seed=1, durations=(5.0, 40.0))
    ds.clear_feature_cache()
    return root


def test_items_and_phases(data_root):
    args = make_args(data_root)
    train, test, full = (ds.VideoDataset(args, p, s) for p, s in
                         (("train", "random"), ("test", "uniform"), ("full", "uniform")))
    assert full.video_names == test.video_names + train.video_names
    assert all(full.is_train_video(v) for v in train.video_names) and not full.is_train_video(test.video_names[0])
    item = train[0]
    assert item["features"].shape == (32, 16) and item["features"].dtype == torch.float32
    assert item["proposal_bbox"].shape == (8, 2) and int(item["proposal_count"]) == 0 and item["cum"] is None
    assert torch.all(item["pseudo_instance_label"][:, -1] == 1)
    vid = train.video_names[0]
    assert item["video_label"].sum() == len(train.gt_labels[vid]) > 0
    assert test[0]["features"].shape[0] == min(test.vid_lens[test.video_names[0]], 32)
    np.random.seed(4)  # noqa: NPY002 (the global generator, on purpose)
    a = train[1]["features"]
    np.random.seed(4)  # noqa: NPY002 (the global generator, on purpose)
    assert torch.equal(a, train[1]["features"])
    batch = ds.collate_fn([train[0], train[1]])
    assert batch["features"].shape == (2, 32, 16) and batch["vid_len"].dtype == torch.int64


def test_proposals_and_dynamic(data_root, tmp_path):
    args = make_args(data_root)
    full = ds.VideoDataset(args, "full", "uniform")
    train = ds.VideoDataset(args, "train", "random")
    gt = json.loads((data_root / "gt.json").read_text())["database"]
    results = {v: [{"label": a["label"], "score": 0.9, "segment": a["segment"]} for a in gt[v]["annotations"]]
               for v in full.video_names}
    weights = full.compute_dynamic_weights(results, args)
    assert set(weights) == set(full.video_names)
    assert all(len(weights[v]) == full.vid_lens[v] for v in weights)
    ones = {v: np.ones(full.vid_lens[v]) for v in full.video_names}
    plain = [full[i]["features"] for i in range(len(full))]
    full.set_proposals(results, ones)                                  # dynamic with w = 1 = identity
    for i in range(len(full)):
        assert torch.equal(full[i]["features"], plain[i]) and full[i]["cum"] is not None
    train.set_proposals(results, weights)
    item = train[0]
    vid = train.video_names[0]
    assert item["features"].shape == (32, 16) and int(item["proposal_count"]) >= 1
    assert np.isclose(item["cum"][-1], weights[vid].sum())
    assert torch.allclose(item["pseudo_instance_label"].sum(1), torch.ones(32))
    save_step_inputs(tmp_path, 1, results, weights)                    # what a resume reads back
    loaded, loaded_w = load_step_inputs(tmp_path, 1)
    assert loaded == results and all(np.array_equal(loaded_w[v], weights[v]) for v in weights)
    train.set_proposals(None, None)
    assert train[0]["cum"] is None and int(train[0]["proposal_count"]) == 0


def test_feature_cache_avoids_disk(data_root, monkeypatch):
    args = make_args(data_root, feature_cache_gb=1)
    train = ds.VideoDataset(args, "train", "random")
    monkeypatch.setattr(np, "load", lambda *a, **k: pytest.fail("disk read with a warm cache"))
    train[0]
    ds.VideoDataset(args, "train", "uniform")[1]
    ds.clear_feature_cache()


# ----------------------------------------------------------------------------- validation errors
def expect_error(root, match, **overrides):
    with pytest.raises(ds.DataError, match=match):
        ds.VideoDataset(make_args(root, **overrides), "full", "uniform")


def first_train(root):
    return root / "train" / ((root / "split_train.txt").read_text().split()[0] + ".npy")


def test_missing_folder(tmp_path):
    with pytest.raises(ds.DataError, match="ACM-Net") as err:
        ds.VideoDataset(make_args(tmp_path / "nowhere"), "train", "random")
    assert "split_train.txt" in str(err.value) and "train/VID.npy" in str(err.value)


def test_gt_not_json(data_root):
    (data_root / "gt.json").write_text("{not json")
    expect_error(data_root, "not valid JSON")


def test_gt_without_database(data_root):
    (data_root / "gt.json").write_text('{"version": 1}')
    expect_error(data_root, "no \"database\"")


def test_split_missing_or_empty(data_root):
    (data_root / "split_test.txt").write_text("\n")
    expect_error(data_root, "split_test.txt is empty")
    (data_root / "split_test.txt").unlink()
    expect_error(data_root, "split_test.txt is missing")


def test_entry_without_feature_file(data_root):
    first_train(data_root).unlink()
    expect_error(data_root, "is missing; the split lists")


def test_entry_without_gt(data_root):
    with open(data_root / "split_train.txt", "a") as handle:
        handle.write("video_validation_9999999\n")
    expect_error(data_root, "no entry in")


@pytest.mark.parametrize("kind,match", [
    ("truncated", "not a readable .npy"), ("text", "not a readable .npy"), ("rank", "expected a 2-D"),
    ("dim", "has dimension 8"), ("dtype", "dtype int32; expected floating point"), ("nan", "NaN or inf"),
    ("inf", "NaN or inf"),
    ("empty", "no snippets")])
def test_bad_feature_file(data_root, kind, match):
    path = first_train(data_root)
    good = np.load(path)
    if kind == "truncated":
        path.write_bytes(path.read_bytes()[:-40])
    elif kind == "text":
        path.write_text("hello")
    else:
        bad = {"rank": good[:, 0], "dim": good[:, :8], "dtype": good.astype(np.int32),
               "nan": np.where(np.arange(len(good))[:, None] == 1, np.nan, good).astype(np.float32),
               "inf": np.where(np.arange(len(good))[:, None] == 1, np.inf, good).astype(np.float32),
               "empty": good[:0]}[kind]
        np.save(path, bad)
    expect_error(data_root, match)
    if kind in ("nan", "inf"):
        ds.VideoDataset(make_args(data_root, skip_data_checks="true"), "full", "uniform")   # checks skipped


def test_label_not_in_class_list(data_root):
    gt = json.loads((data_root / "gt.json").read_text())
    vid = (data_root / "split_test.txt").read_text().split()[0]
    gt["database"][vid]["annotations"].append({"segment": [0, 1], "label": "Juggling"})
    (data_root / "gt.json").write_text(json.dumps(gt))
    expect_error(data_root, "'Juggling', which is not in")
