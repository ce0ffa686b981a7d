"""synthetic_data.py: real layout, determinism, demo set handling, and a learnability sanity check."""
import json
from argparse import Namespace

import numpy as np
import pytest

import synthetic_data as sd
from utils import UserError


def read_set(root):
    gt = json.loads((root / "gt.json").read_text())
    splits = {k: (root / f"split_{k}.txt").read_text().split() for k in ("train", "test")}
    return gt, splits


def test_thumos_layout(tmp_path):
    db = sd.generate_synthetic_dataset(tmp_path, "THUMOS", 5, 4, feature_dim=32, seed=3)
    gt, splits = read_set(tmp_path)
    assert gt["database"] == json.loads(json.dumps(db)) and "version" in gt
    assert len(splits["train"]) == 5 and len(splits["test"]) == 4
    classes = set(sd._default_classes("THUMOS"))
    for folder, subset, prefix in (("train", "validation", "video_validation_"), ("test", "test", "video_test_")):
        for vid in splits[folder]:
            entry = gt["database"][vid]
            assert vid.startswith(prefix) and entry["subset"] == subset and entry["annotations"]
            x = np.load(tmp_path / folder / f"{vid}.npy")
            assert x.dtype == np.float32 and x.shape == (round(entry["duration"] * 25 / 16), 32)
            assert x.min() >= 0 and np.isfinite(x).all()
            labels = {a["label"] for a in entry["annotations"]}
            assert 1 <= len(labels) <= 2 and labels <= classes
            for a in entry["annotations"]:
                assert 0 <= a["segment"][0] < a["segment"][1] <= entry["duration"] + 1e-9


def test_deterministic(tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    sd.generate_synthetic_dataset(a, "THUMOS", 3, 2, feature_dim=16, seed=7)
    sd.generate_synthetic_dataset(b, "THUMOS", 3, 2, feature_dim=16, seed=7)
    sd.generate_synthetic_dataset(c, "THUMOS", 3, 2, feature_dim=16, seed=8)
    assert (a / "gt.json").read_bytes() == (b / "gt.json").read_bytes() != (c / "gt.json").read_bytes()
    for path in sorted(a.rglob("*.npy")):
        assert path.read_bytes() == (b / path.relative_to(a)).read_bytes()


def test_activitynet_long_instances(tmp_path):
    sd.generate_synthetic_dataset(tmp_path, "ActivityNet", 6, 4, feature_dim=16, seed=0,
                                  class_names=[f"c{i}" for i in range(12)])
    gt, splits = read_set(tmp_path)
    subsets = {gt["database"][v]["subset"] for v in splits["train"] + splits["test"]}
    assert subsets == {"train", "val"}
    cover = [sum(a["segment"][1] - a["segment"][0] for a in e["annotations"]) / e["duration"]
             for e in gt["database"].values()]
    assert min(cover) > 0.25


def test_real_timeline(tmp_path, shared_data):
    sd.generate_synthetic_dataset(tmp_path, "THUMOS", 2, 2, feature_dim=16, seed=0,
                                  timeline_gt=shared_data / "THUMOS14" / "gt.json")
    gt, splits = read_set(tmp_path)
    real = json.loads((shared_data / "THUMOS14" / "gt.json").read_text())["database"]
    for vid in splits["train"] + splits["test"]:
        assert gt["database"][vid]["annotations"] == real[vid]["annotations"]


def demo_args(root, dim=16):
    return Namespace(data_dir=str(root), dataset="THUMOS", feature_dim=dim,
                     class_name_lst=sd._default_classes("THUMOS"))


def test_ensure_demo_dataset(tmp_path, monkeypatch):
    monkeypatch.setattr(sd, "DEMO_SIZES", {"THUMOS": (3, 2)})
    root = tmp_path / "demo"
    sd.ensure_demo_dataset(demo_args(root))
    assert (root / sd.MARKER).is_file() and len(list((root / "train").glob("*.npy"))) == 3
    stamp = (root / "gt.json").stat().st_mtime_ns
    sd.ensure_demo_dataset(demo_args(root))                                    # complete: kept
    assert (root / "gt.json").stat().st_mtime_ns == stamp
    sd.ensure_demo_dataset(demo_args(root, dim=24))                            # other parameters: rebuilt
    assert np.load(next((root / "train").glob("*.npy"))).shape[1] == 24
    assert not list(tmp_path.glob(".demo.tmp-*"))
    other = tmp_path / "real"
    other.mkdir()
    (other / "gt.json").write_text("{}")
    with pytest.raises(UserError, match="not a synthetic dataset"):           # never deletes user data
        sd.ensure_demo_dataset(demo_args(other))


def test_cli(tmp_path, capsys):
    sd.main(["--out", str(tmp_path), "--num_train", "2", "--num_test", "1", "--feature_dim", "8"])
    assert "wrote 3 videos" in capsys.readouterr().out
    assert len((tmp_path / "split_train.txt").read_text().split()) == 2


def test_learnable_but_not_trivial(tmp_path):
    """Snippet features separate action from background only partly (soft edges, weak instances)."""
    sd.generate_synthetic_dataset(tmp_path, "THUMOS", 12, 0, feature_dim=64, seed=0)
    gt, splits = read_set(tmp_path)
    xs, ys = [], []
    for vid in splits["train"]:
        x = np.load(tmp_path / "train" / f"{vid}.npy")
        t = (np.arange(len(x)) + 0.5) / (25 / 16)
        inside = np.zeros(len(x), bool)
        for a in gt["database"][vid]["annotations"]:
            inside |= (t >= a["segment"][0]) & (t <= a["segment"][1])
        xs.append(x - x.mean(0))
        ys.append(inside)
    x, y = np.concatenate(xs), np.concatenate(ys)
    direction = x[y].mean(0) - x[~y].mean(0)
    score = x @ direction
    accuracy = ((score > np.median(score[y]) / 2) == y).mean()
    assert 0.6 < accuracy < 0.995
