"""synthetic_data.py: real layout, determinism, demo set handling, and a learnability sanity
check."""
import json
import os
import subprocess
import sys
from argparse import Namespace
from pathlib import Path

import numpy as np
import pytest

import synthetic_data as sd
from config import REPO_ROOT
from utils import UserError


def read_set(root):
    gt = json.loads((root / "gt.json").read_text())
    splits = {k: (root / f"split_{k}.txt").read_text().split() for k in ("train", "test")}
    return gt, splits


def test_thumos_layout(tmp_path):
    db = sd.generate_synthetic_dataset(tmp_path, "THUMOS14", 5, 4, feature_dim=32, seed=3)
    gt, splits = read_set(tmp_path)
    assert gt["database"] == json.loads(json.dumps(db)) and "version" in gt
    assert len(splits["train"]) == 5 and len(splits["test"]) == 4
    classes = set(sd.default_classes("THUMOS14"))
    for folder, subset, prefix in (("train", "validation", "video_validation_"),
                                   ("test", "test", "video_test_")):
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
    sd.generate_synthetic_dataset(a, "THUMOS14", 3, 2, feature_dim=16, seed=7)
    sd.generate_synthetic_dataset(b, "THUMOS14", 3, 2, feature_dim=16, seed=7)
    sd.generate_synthetic_dataset(c, "THUMOS14", 3, 2, feature_dim=16, seed=8)
    assert ((a / "gt.json").read_bytes() == (b / "gt.json").read_bytes()
            != (c / "gt.json").read_bytes())
    for path in sorted(a.rglob("*.npy")):
        assert path.read_bytes() == (b / path.relative_to(a)).read_bytes()


def test_activitynet_layout_and_single_class(tmp_path):
    sd.generate_synthetic_dataset(tmp_path, "ActivityNet13", 6, 4, feature_dim=16, seed=0,
                                  class_names=[f"c{i}" for i in range(12)])
    gt, splits = read_set(tmp_path)
    subsets = {gt["database"][v]["subset"] for v in splits["train"] + splits["test"]}
    assert subsets == {"train", "val"}
    for entry in gt["database"].values():
        assert len({a["label"] for a in entry["annotations"]}) == 1 and entry["annotations"]


def sample_statistics(profile, n, seed):
    """Per-video duration, action fraction, classes; per-instance length (s and fraction) of n
    timelines."""
    rng = np.random.default_rng(seed)
    out = {"duration": [], "cover": [], "classes": [], "length": [], "length_frac": [],
           "instances": []}
    for _ in range(n):
        d, starts, ends, n_cls = sd.sample_timeline(profile, rng)
        out["duration"].append(d)
        out["cover"].append((ends - starts).sum() / d)
        out["classes"].append(n_cls)
        out["instances"].append(len(starts))
        out["length"].extend(ends - starts)
        out["length_frac"].extend((ends - starts) / d)
        assert np.all(np.diff(starts) > 0) and np.all(starts[1:] >= ends[:-1] - 1e-9)
        assert ends[-1] <= d + 1e-9
    return {key: np.asarray(val, dtype=np.float64) for key, val in out.items()}


def target_quantile(table, p, scale=1.0, low=-np.inf, high=np.inf):
    """(x, F(x)): quantile p of a measured table after the generator's scaling and clipping, and
    the target CDF there (clipping puts the mass below `low` at `low`, so F(low) can exceed p)."""
    x = float(np.clip(scale * np.interp(p, sd.QUANTILE_P, table), low, high))
    return x, (1.0 if x >= high else float(np.interp(x / scale, table, sd.QUANTILE_P)))


# Sampling error of an empirical quantile: sd(F(q_hat)) = sqrt(p(1-p)/n) <= 0.5/sqrt(n) in
# probability; with n >= 4000 that is <= 0.008, so comparing the empirical CDF at the target
# quantile with p within 0.04 (5 standard errors) fails by chance with probability < 1e-6 per
# check.
P_CHECK = (0.1, 0.25, 0.5, 0.75, 0.9)


def cdf_at(values, x):
    return float(np.mean(values <= x))


def test_thumos_timelines_match_measured_statistics():
    stats, n = sd.REAL_STATS["THUMOS14"], 4000
    sample = sample_statistics("THUMOS14", n, seed=11)
    low, high = sd.PROFILES["THUMOS14"]["durations"]
    for p in P_CHECK:
        q, f = target_quantile(stats["duration_s"], p, sd.PROFILES["THUMOS14"]["time_scale"], low,
                               high)
        assert abs(cdf_at(sample["duration"], q) - f) < 0.04, ("duration", p)
        # instance lengths are drawn iid from the measured table (capped at MAX_INSTANCE_S and at
        # 0.95 d)
        q, f = target_quantile(stats["length_s"], p, high=sd.MAX_INSTANCE_S)
        assert abs(cdf_at(sample["length"], q) - f) < 0.04, ("length", p)
    # classes per video: 2 classes as often as measured, less the 1-instance videos that cannot
    # have 2
    two = np.mean(sample["classes"] == 2)
    possible = np.mean(sample["instances"] >= 2)
    assert abs(two - stats["classes_p"][1] * possible) < 4 * np.sqrt(0.25 / n)
    # the action fraction is matched on average (the number of instances is rounded per video)
    target_cover = np.mean(np.interp(np.linspace(0, 1, 10001), sd.QUANTILE_P,
                                     stats["inside_frac"]).clip(0.02, 0.98))
    assert abs(sample["cover"].mean() - target_cover) < 0.03


def test_activitynet_timelines_match_measured_statistics():
    stats, n = sd.REAL_STATS["ActivityNet13"], 4000
    sample = sample_statistics("ActivityNet13", n, seed=12)
    low, high = sd.PROFILES["ActivityNet13"]["durations"]
    for p in P_CHECK:
        q, f = target_quantile(stats["duration_s"], p, sd.PROFILES["ActivityNet13"]["time_scale"],
                               low, high)
        assert abs(cdf_at(sample["duration"], q) - f) < 0.04, ("duration", p)
        # the per-video action fraction is drawn from the table (clipped to [0.02, 0.98]) and kept
        # exactly
        q, f = target_quantile(stats["inside_frac"], p, low=0.02, high=0.98)
        assert abs(cdf_at(sample["cover"], q) - f) < 0.04, ("action fraction", p)
    counts = np.bincount(sample["instances"].astype(int), minlength=7)[1:7] / n
    assert np.abs(counts - np.asarray(stats["instances_p"])).max() < 4 * np.sqrt(0.25 / n)
    assert np.all(sample["classes"] == 1)


def test_annotation_statistics_of_generated_set(tmp_path):
    """bench/annotation_stats.py measures what the generator wrote (hand-checkable on one
    video)."""
    from bench.annotation_stats import annotation_statistics, video_statistics
    entry = {"duration": 10.0, "annotations": [{"segment": [1.0, 2.0], "label": "a"},
                                               {"segment": [1.5, 3.0], "label": "b"},
                                               {"segment": [6.0, 7.0], "label": "a"}]}
    stats = video_statistics(entry)
    # T = round(10 * 25/16) = 16 snippets, centres (t + 0.5) / 1.5625; inside [1, 3] or [6, 7]:
    centres = (np.arange(16) + 0.5) / (25 / 16)
    inside = ((centres >= 1) & (centres <= 3)) | ((centres >= 6) & (centres <= 7))
    assert stats["inside_frac"] == inside.mean() and stats["instances"] == 3
    assert stats["classes"] == 2
    # overlaps merged first
    assert stats["length_s"] == [1.0, 1.5, 1.0] and stats["gap_s"] == [3.0]
    db = sd.generate_synthetic_dataset(tmp_path, "THUMOS14", 30, 10, feature_dim=8, seed=1)
    train = annotation_statistics(tmp_path / "gt.json", "validation")
    assert len(train["duration_s"]) == 30
    assert train["instances"].sum() == sum(len(e["annotations"]) for e in db.values()
                                           if e["subset"] == "validation")


def test_real_timeline(tmp_path, shared_data):
    sd.generate_synthetic_dataset(tmp_path, "THUMOS14", 2, 2, feature_dim=16, seed=0,
                                  timeline_gt=shared_data / "THUMOS14" / "gt.json")
    gt, splits = read_set(tmp_path)
    real = json.loads((shared_data / "THUMOS14" / "gt.json").read_text())["database"]
    for vid in splits["train"] + splits["test"]:
        assert gt["database"][vid]["annotations"] == real[vid]["annotations"]


def demo_args(root, dim=16):
    return Namespace(data_dir=str(root), dataset="THUMOS", feature_dim=dim,
                     class_name_lst=sd.default_classes("THUMOS14"), synthetic_profile="THUMOS14")


@pytest.mark.parametrize("profile", ["THUMOS14", "ActivityNet13"])
def test_byte_identical_with_one_and_two_threads(tmp_path, profile):
    """Fresh processes with 1 and 2 BLAS / OpenMP threads write the same bytes (BLAS float32
    products differed in the last bits between the two before the arithmetic was fixed)."""
    for threads in (1, 2):
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "OPENBLAS_NUM_THREADS": str(threads),
               "MKL_NUM_THREADS": str(threads)}
        command = [sys.executable, str(REPO_ROOT / "synthetic_data.py"), "--out",
                   str(tmp_path / str(threads)), "--profile", profile, "--num_train", "5",
                   "--num_test", "3", "--feature_dim", "256", "--seed", "1"]
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
    one, two = tmp_path / "1", tmp_path / "2"
    files = sorted(path.relative_to(one) for path in one.rglob("*") if path.is_file())
    assert len(files) == 8 + 3 and files == sorted(path.relative_to(two) for path in two.rglob("*")
                                                   if path.is_file())
    for name in files:
        assert (one / name).read_bytes() == (two / name).read_bytes(), name
    assert sd.files_sha256(one) == sd.files_sha256(two)


def test_files_sha256_covers_names_and_bytes(tmp_path):
    sd.generate_synthetic_dataset(tmp_path, "THUMOS14", 2, 1, feature_dim=8, seed=0)
    digest = sd.files_sha256(tmp_path)
    assert len(digest) == 64 and sd.files_sha256(tmp_path) == digest
    (tmp_path / sd.MARKER).write_text("{}")                              # the marker is not covered
    assert sd.files_sha256(tmp_path) == digest
    npy = next((tmp_path / "test").glob("*.npy"))
    npy.rename(npy.with_name("other.npy"))                               # a name changes it
    assert sd.files_sha256(tmp_path) != digest
    npy.with_name("other.npy").rename(npy)
    x = np.load(npy)
    x[0, 0] = np.nextafter(x[0, 0], np.float32(np.inf))                       # one value by one ulp
    np.save(npy, x)
    assert sd.files_sha256(tmp_path) != digest


def test_ensure_demo_dataset(tmp_path, monkeypatch, capsys):
    """Generated when missing, kept when complete, generated again only in the default demo folder
    and only over its own unchanged files; a user's folder is refused and left as it was."""
    monkeypatch.setitem(sd.PROFILES["THUMOS14"], "demo_videos", (3, 2))
    root = tmp_path / "demo"
    monkeypatch.setattr(sd, "demo_data_dir", lambda dataset: str(root))          # the default
    digest = sd.ensure_demo_dataset(demo_args(root))
    assert (root / sd.MARKER).is_file() and len(list((root / "train").glob("*.npy"))) == 3
    marker = json.loads((root / sd.MARKER).read_text())
    assert marker["sha256"] == digest == sd.files_sha256(root)
    assert marker["files"] == sd.files_manifest(root) and len(marker["files"]) == 3 + 2 + 3
    stamp = (root / "gt.json").stat().st_mtime_ns
    assert sd.ensure_demo_dataset(demo_args(root)) == digest         # complete: kept
    assert (root / "gt.json").stat().st_mtime_ns == stamp and capsys.readouterr().out == ""
    # other parameters, files unchanged: the default folder is generated again
    sd.ensure_demo_dataset(demo_args(root, dim=24))
    assert "feature_dim: 16 → 24; generating it again" in capsys.readouterr().out
    assert np.load(next((root / "train").glob("*.npy"))).shape[1] == 24
    assert not list(tmp_path.glob(".demo.tmp-*"))
    # an older record without the manifest still vouches for the files it checksums
    marker = json.loads((root / sd.MARKER).read_text())
    (root / sd.MARKER).write_text(json.dumps({k: v for k, v in marker.items() if k != "files"}))
    assert sd.ensure_demo_dataset(demo_args(root, dim=24)) == marker["sha256"]
    (root / sd.MARKER).write_text(json.dumps(marker))
    # a file missing (an interrupted regeneration): its own folder is generated again
    (root / "split_test.txt").unlink()
    sd.ensure_demo_dataset(demo_args(root, dim=24))
    assert "missing: split_test.txt" in capsys.readouterr().out
    # an edited file: refused, even in the default folder, and nothing changes
    npy = next((root / "train").glob("*.npy"))
    np.save(npy, np.load(npy) + 1)
    before = folder_digest(root)
    with pytest.raises(UserError, match=rf"{npy.relative_to(root)} differs from the checksum"):
        sd.ensure_demo_dataset(demo_args(root, dim=24))
    assert folder_digest(root) == before


def folder_digest(root):
    """{relative path: sha256} of every file and folder under root."""
    return {str(p.relative_to(root)): sd.hashlib.sha256(p.read_bytes()).hexdigest()
            if p.is_file() else "folder" for p in Path(root).rglob("*")}


def test_ensure_demo_dataset_never_touches_a_users_folder(tmp_path, monkeypatch):
    monkeypatch.setitem(sd.PROFILES["THUMOS14"], "demo_videos", (3, 2))
    real = tmp_path / "real"
    real.mkdir()
    (real / "gt.json").write_text("{}")
    with pytest.raises(UserError, match="holds a dataset of its own .* drop --demo"):
        sd.ensure_demo_dataset(demo_args(real))
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="not empty and holds no SYNTHETIC.json"):
        sd.ensure_demo_dataset(demo_args(tmp_path / "other"))
    assert (tmp_path / "other" / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other", "real"]


def test_cli(tmp_path, capsys):
    sd.main(["--out", str(tmp_path), "--num_train", "2", "--num_test", "1", "--feature_dim", "8"])
    assert "wrote 3 videos" in capsys.readouterr().out
    assert len((tmp_path / "split_train.txt").read_text().split()) == 2


def test_learnable_but_not_trivial(tmp_path):
    """Snippet features separate action from background only partly (soft edges, weak instances)."""
    sd.generate_synthetic_dataset(tmp_path, "THUMOS14", 12, 0, feature_dim=64, seed=0)
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
