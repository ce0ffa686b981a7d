"""dataset.py: the dataset items on a tiny synthetic set (phases, proposals, dynamic sampling,
collate, feature cache) and the errors of a dataset on disk. The array functions it uses are
tested in test_sampling.py."""
import json

import numpy as np
import pytest
import torch

import dataset as ds
from config import build_args
from engine.checkpoints import load_step_inputs, save_step_inputs
from synthetic_data import generate_synthetic_dataset


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
    generate_synthetic_dataset(root, "THUMOS14", 4, 3, feature_dim=16, seed=1,
                               durations=(5.0, 40.0))
    ds.clear_feature_cache()
    return root


def test_items_and_phases(data_root):
    args = make_args(data_root)
    train, test, full = (ds.VideoDataset(args, p, s) for p, s in
                         (("train", "random"), ("test", "uniform"), ("full", "uniform")))
    assert full.video_names == test.video_names + train.video_names
    assert all(full.is_train_video(v) for v in train.video_names)
    assert not full.is_train_video(test.video_names[0])
    item = train[0]
    assert item["features"].shape == (32, 16) and item["features"].dtype == torch.float32
    assert item["proposal_bbox"].shape == (8, 2) and int(item["proposal_count"]) == 0
    assert item["cum"] is None
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
    results = {v: [{"label": a["label"], "score": 0.9, "segment": a["segment"]}
                   for a in gt[v]["annotations"]] for v in full.video_names}
    weights = full.compute_dynamic_weights(results, args)
    assert set(weights) == set(full.video_names)
    assert all(len(weights[v]) == full.vid_lens[v] for v in weights)
    ones = {v: np.ones(full.vid_lens[v]) for v in full.video_names}
    plain = [full[i]["features"] for i in range(len(full))]
    full.set_proposals(results, ones)                          # dynamic with w = 1 = identity
    for i in range(len(full)):
        assert torch.equal(full[i]["features"], plain[i]) and full[i]["cum"] is not None
    train.set_proposals(results, weights)
    item = train[0]
    vid = train.video_names[0]
    assert item["features"].shape == (32, 16) and int(item["proposal_count"]) >= 1
    assert np.isclose(item["cum"][-1], weights[vid].sum())
    assert torch.allclose(item["pseudo_instance_label"].sum(1), torch.ones(32))
    save_step_inputs(tmp_path, 1, results, weights)            # what a resume reads back
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
    with pytest.raises(ds.DataError, match=match) as error:
        ds.VideoDataset(make_args(root, **overrides), "full", "uniform")
    return error.value


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
    ("truncated", "not a readable .npy"), ("text", "not a readable .npy"),
    ("rank", "expected a 2-D"), ("dim", "has dimension 8"),
    ("dtype", "dtype int32; expected floating point"), ("nan", "NaN or inf"), ("inf", "NaN or inf"),
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
        # checks skipped
        ds.VideoDataset(make_args(data_root, skip_data_checks="true"), "full", "uniform")


def test_label_not_in_class_list(data_root):
    gt = json.loads((data_root / "gt.json").read_text())
    vid = (data_root / "split_test.txt").read_text().split()[0]
    gt["database"][vid]["annotations"].append({"segment": [0, 1], "label": "Juggling"})
    (data_root / "gt.json").write_text(json.dumps(gt))
    error = expect_error(data_root, "'Juggling', which is not in")
    class_list = str(build_args("THUMOS").class_list_file)          # the file and the flag
    assert class_list in str(error) and "--class_list FILE" in str(error)


def test_annotations_without_segments_give_the_labels(data_root):
    """Training reads labels only: an annotation without a segment gives its label (and no
    segment to plot); one without a label is an error naming gt.json."""
    gt = json.loads((data_root / "gt.json").read_text())
    vid = (data_root / "split_train.txt").read_text().split()[0]
    before = ds.VideoDataset(make_args(data_root), "train", "random")
    labels = [ann["label"] for ann in gt["database"][vid]["annotations"]]
    gt["database"][vid]["annotations"] = [{"label": name} for name in labels]
    (data_root / "gt.json").write_text(json.dumps(gt))
    after = ds.VideoDataset(make_args(data_root), "train", "random")
    assert after.gt_labels[vid] == before.gt_labels[vid] == set(labels)
    np.testing.assert_array_equal(after.video_labels[vid], before.video_labels[vid])
    assert after.gt_segments[vid] == [] and before.gt_segments[vid]
    gt["database"][vid]["annotations"].append({"segment": [0, 1]})
    (data_root / "gt.json").write_text(json.dumps(gt))
    error = expect_error(data_root, "has an annotation without a \"label\"")
    assert str(data_root / "gt.json") in str(error)
