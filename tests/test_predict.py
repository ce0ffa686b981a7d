"""predict.py / engine/cascade.py: the trained cascade on new feature files equals test mode,
and bad input gives one-line errors."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

import predict
from config import REPO_ROOT, build_args
from dataset import VideoDataset
from engine import cascade, checkpoints, passes, steps
from engine import run as runner
from utils import UserError

# model / cascade config of the tiny run; data_dir points nowhere: predict must not need the dataset
MODEL_FLAGS = ["--feature_dim", "32", "--num_steps", "2", "--epochs_per_step", "2",
               "--sample_segments_num", "48", "--max_segments_num", "16", "--device", "cpu"]


@pytest.fixture(scope="module")
def trained(tiny_data, tiny_argv, tmp_path_factory):
    """The tiny end-to-end run, its --test outputs, and the test videos' features in a bare
    folder."""
    root = tmp_path_factory.mktemp("run")
    argv = tiny_argv(tiny_data, root)
    runner.run("THUMOS", argv)
    save_dir = build_args("THUMOS", argv).save_dir
    runner.run("THUMOS", argv + ["--test", "--checkpoint", save_dir])
    bare = root / "new_videos"                        # features only: no gt.json, no split files
    shutil.copytree(tiny_data / "test", bare)
    with open(os.path.join(save_dir, "test", "test_result_step2.json")) as handle:
        expected = json.load(handle)["results"]
    return {"argv": argv, "save_dir": save_dir, "features": bare, "expected": expected,
            "data": tiny_data}


def predict_args(save_dir, extra=()):
    return build_args("THUMOS", MODEL_FLAGS + ["--checkpoint", str(save_dir),
                                               "--data_dir", "missing", *extra])


def assert_same_detections(got, want):
    """The same detections (labels, order) with scores and times equal up to float32 rounding:
    a video evaluated in another batch of videos than test mode's gets its outputs from another
    forward shape (engine/passes.py inference_pass)."""
    assert [d["label"] for d in got] == [d["label"] for d in want]
    for a, b in zip(got, want):
        np.testing.assert_allclose([a["score"], *a["segment"]], [b["score"], *b["segment"]],
                                   rtol=1e-5, atol=1e-6)


def run_predict(argv, cwd):
    return subprocess.run([sys.executable, str(REPO_ROOT / "predict.py"), *argv], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


# ------------------------------------------------------------------------ same detections as --test
def test_predict_script_reproduces_test_mode(trained, tmp_path):
    assert not (trained["features"] / "gt.json").exists()
    out = tmp_path / "pred.json"
    done = run_predict(["--checkpoint", trained["save_dir"], "--features", str(trained["features"]),
                        "--out", str(out), "--data_dir", str(tmp_path / "nothing_here"),
                        *MODEL_FLAGS], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert set(result) >= {"version", "results", "external_data"}
    assert result["results"] == trained["expected"]      # same videos, segments, scores, order
    assert sum(map(len, result["results"].values())) > 0


def test_predict_one_file_and_csv(trained, tmp_path):
    vid = sorted(trained["expected"])[0]
    out = tmp_path / "one.csv"
    predict.main(["--checkpoint", trained["save_dir"], "--features",
                  str(trained["features"] / f"{vid}.npy"), "--out", str(out), "--format", "csv",
                  *MODEL_FLAGS])
    rows = out.read_text().splitlines()
    assert rows[0] == "video,label,score,start,end"
    expected = trained["expected"][vid]
    assert len(rows) == 1 + len(expected)
    got = []
    for row in rows[1:]:
        name, label, score, start, end = row.split(",")
        assert name == vid
        got.append({"label": label, "score": float(score), "segment": [float(start), float(end)]})
    assert_same_detections(got, expected)          # one video alone: float32 rounding


def test_localize_on_arrays_with_models_loaded_once(trained):
    args = predict_args(trained["save_dir"])
    models = cascade.load_cascade(trained["save_dir"], args)
    videos = {vid: np.load(trained["features"] / f"{vid}.npy")
              for vid in sorted(trained["expected"])[:3]}
    got = cascade.localize_videos(videos, models, args)
    assert list(got) == list(videos)
    for vid in videos:
        assert_same_detections(got[vid], trained["expected"][vid])
    vid = next(iter(videos))
    assert_same_detections(cascade.localize(videos[vid], models, args), trained["expected"][vid])
    assert_same_detections(cascade.localize(str(trained["features"] / f"{vid}.npy"),
                                            trained["save_dir"], args), trained["expected"][vid])


def test_cascade_equals_step_by_step_passes(trained):
    """Oracle: test mode as it was written before the cascade (evaluation pass on the test
    split, pseudo-proposal pass on the full set, both through engine/passes.py) gives the same
    detections at every step as the shared cascade (one forward per video, test split only)."""
    args = build_args("THUMOS", trained["argv"] + ["--test", "--checkpoint", trained["save_dir"]])
    paths = checkpoints.cascade_paths(trained["save_dir"], args)
    test_set = VideoDataset(args, "test", "uniform")
    full_set = VideoDataset(args, "full", "uniform")
    results = weights = None
    expected = []
    for step, path in enumerate(paths):
        test_set.set_proposals(results, weights)
        full_set.set_proposals(results, weights)
        model = steps.build_model(args, step)
        checkpoints.load_model_state(model, checkpoints.load_checkpoint(path), path, args)
        expected.append(passes.predict_proposals(model, test_set, args, step, pseudo=False,
                                                 desc="oracle")[0])
        if step < args.num_steps:
            results, weights = passes.generate_pseudo_proposals(model, full_set, args, step)
    got = []
    cascade.run_cascade(paths, VideoDataset(args, "test", "uniform"), args,
                        on_step=lambda step, detections, outputs: got.append(detections))
    assert len(got) == 3
    for step in range(3):
        assert got[step] == expected[step], f"step {step}"
    assert got[-1] == trained["expected"]


def test_plot_writes_one_png_per_video(trained, tmp_path):
    vids = sorted(trained["expected"])[:2]
    folder = tmp_path / "two"
    folder.mkdir()
    for vid in vids:
        shutil.copy(trained["features"] / f"{vid}.npy", folder)
    predict.main(["--checkpoint", trained["save_dir"], "--features", str(folder), "--out",
                  str(tmp_path / "p.json"), "--plot", *MODEL_FLAGS])
    assert sorted(os.listdir(tmp_path / "p_plots")) == [f"{vid}.png" for vid in vids]


@pytest.mark.parametrize("length", [1, 2, 3, 9])
def test_very_short_videos_get_an_answer(trained, length):
    """Shorter than the model's top-k / conv context: still detections in the output format
    (maybe none)."""
    args = predict_args(trained["save_dir"])
    x = np.random.default_rng(length).random((length, 32), dtype=np.float32)
    detections = cascade.localize(x, trained["save_dir"], args)
    assert isinstance(detections, list)
    duration = length * 16 / 25
    for det in detections:
        assert det["label"] in args.class_name_lst and np.isfinite(det["score"])
        assert -1e-9 <= det["segment"][0] <= det["segment"][1] <= duration + 1e-9


def test_fps_and_snippet_frames_set_the_time_base(trained):
    """--fps / --snippet_frames become frames_per_sec / segment_frames_num (and r = fps /
    snippet_frames). Detections are not a plain rescaling (the released NMS adds 1 s to lengths),
    so check the range."""
    known, rest = predict.parse_predict_args(["--features", "x", "--fps", "30", "--snippet_frames",
                                              "8", "--checkpoint", "c"])
    assert rest[-4:] == ["--frames_per_sec", "30.0", "--segment_frames_num", "8"]
    args = predict_args(trained["save_dir"], rest[-4:])
    assert args.snippets_per_sec == 30 / 8
    vid = sorted(trained["expected"])[0]
    x = np.load(trained["features"] / f"{vid}.npy")
    got = cascade.localize(x, trained["save_dir"], args)
    ends = [d["segment"][1] for d in got]
    # seconds of the new rate
    assert got and max(ends) <= len(x) * 8 / 30 + 1e-9 < len(x) * 16 / 25
    defaults = predict_args(trained["save_dir"], ["--frames_per_sec", "25",
                                                  "--segment_frames_num", "16"])
    assert_same_detections(cascade.localize(x, trained["save_dir"], defaults),
                           trained["expected"][vid])


# ----------------------------------------------------------------------------- output filters
def test_filter_detections_by_score_and_top_k():
    dets = [{"label": "a", "score": s, "segment": [i, i + 1.0]}
            for i, s in enumerate([0.5, 0.9, 0.1, 0.9, 0.3])]
    assert predict.filter_detections(dets) == dets
    assert [d["score"] for d in predict.filter_detections(dets, score_threshold=0.3)] == [
        0.5, 0.9, 0.9, 0.3]
    # order kept
    assert [d["segment"][0] for d in predict.filter_detections(dets, top_k=2)] == [1, 3]
    assert [d["segment"][0] for d in predict.filter_detections(dets, top_k=3)] == [0, 1, 3]
    # tie: the first
    assert [d["segment"][0] for d in predict.filter_detections(dets, 0.4, top_k=1)] == [1]
    assert predict.filter_detections(dets, score_threshold=2.0) == []


# ------------------------------------------------------------------------- bad input, one line each
def error_of(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        predict.main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    return err


def save(path, array):
    np.save(path, array)
    return str(path)


@pytest.mark.parametrize("array, message", [
    (np.zeros((10, 31), dtype=np.float32),
     "have dimension 31, but the model was trained on 32-d features;"),
    (np.zeros((10, 32, 1), dtype=np.float32), "expected a 2-D (T, 32) array"),
    (np.zeros(32, dtype=np.float32), "expected a 2-D (T, 32) array"),
    (np.zeros((10, 32), dtype=np.int64), "have dtype int64; expected floating point"),
    (np.full((10, 32), 1e300, dtype=np.float64), "contain NaN or inf values (as float32)"),
    (np.full((10, 32), np.nan, dtype=np.float32), "contain NaN or inf"),
    (np.full((10, 32), np.inf, dtype=np.float32), "contain NaN or inf"),
    (np.zeros((0, 32), dtype=np.float32), "have no snippets"),
])
def test_bad_feature_file(trained, tmp_path, capsys, array, message):
    path = save(tmp_path / "bad.npy", array)
    err = error_of(["--checkpoint", trained["save_dir"], "--features", path, "--out",
                    str(tmp_path / "o.json"), *MODEL_FLAGS], capsys)
    assert message in err and path in err
    assert not (tmp_path / "o.json").exists()


def test_bad_array_for_localize(trained):
    args = predict_args(trained["save_dir"])
    with pytest.raises(UserError,
                       match="have dimension 16, but the model was trained on 32-d features;"):
        cascade.localize(np.zeros((5, 16), dtype=np.float32), trained["save_dir"], args)
    with pytest.raises(UserError, match="expected a numpy array"):
        cascade.localize([[0.0] * 32], trained["save_dir"], args)


def test_unreadable_and_missing_features(trained, tmp_path, capsys):
    (tmp_path / "junk.npy").write_text("not an array")
    checkpoint = ["--checkpoint", trained["save_dir"]]
    err = error_of(checkpoint + ["--features", str(tmp_path / "junk.npy"), *MODEL_FLAGS], capsys)
    assert "junk.npy are not a readable .npy array" in err
    err = error_of(checkpoint + ["--features", str(tmp_path / "nope"), *MODEL_FLAGS], capsys)
    assert "nope not found" in err
    (tmp_path / "x.txt").write_text("x")
    err = error_of(checkpoint + ["--features", str(tmp_path / "x.txt"), *MODEL_FLAGS], capsys)
    assert "is not a .npy file" in err


def test_empty_feature_folder(trained, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    err = error_of(["--checkpoint", trained["save_dir"], "--features", str(tmp_path / "empty"),
                    *MODEL_FLAGS], capsys)
    assert "holds no .npy files" in err


def test_checkpoint_folder_missing_a_step_file(trained, tmp_path, capsys):
    partial = tmp_path / "partial"
    shutil.copytree(trained["save_dir"], partial)
    os.remove(partial / "model_step1_last_epoch.pth")
    features = ["--features", str(trained["features"])]
    err = error_of(["--checkpoint", str(partial), *features, *MODEL_FLAGS], capsys)
    assert "is missing model_step1_last_epoch.pth" in err and "num_steps = 2" in err
    # a folder without config.json (released checkpoints) and the preset's num_steps (3) instead
    # of the run's (2): names the files and the flags to pass
    released = tmp_path / "released"
    shutil.copytree(trained["save_dir"], released,
                    ignore=shutil.ignore_patterns("config.json", "test"))
    at = MODEL_FLAGS.index("--num_steps")
    flags = MODEL_FLAGS[:at] + MODEL_FLAGS[at + 2:]
    err = error_of(["--checkpoint", str(released), *features, *flags], capsys)
    assert "model_step2_last_epoch.pth, model_step3_best_epoch.pth" in err and "--num_steps" in err
    err = error_of(["--checkpoint", str(tmp_path / "none"), *features, *MODEL_FLAGS], capsys)
    assert "checkpoint folder" in err and "not found" in err
    err = error_of(["--features", str(trained["features"]), *MODEL_FLAGS], capsys)
    assert "needs --checkpoint" in err


def test_checkpoint_of_the_other_dataset(trained, tmp_path, capsys):
    other = tmp_path / "other"
    # without the sha256 record (a folder of hand-made checkpoints), which would refuse the edit
    shutil.copytree(trained["save_dir"], other, ignore=shutil.ignore_patterns("checksums.json"))
    path = other / "model_step0_last_epoch.pth"
    state = torch.load(path, weights_only=False)
    state["dataset"] = "ActivityNet"
    torch.save(state, path)
    err = error_of(["--checkpoint", str(other), "--features", str(trained["features"]),
                    *MODEL_FLAGS], capsys)
    assert "was trained on ActivityNet, not THUMOS" in err and "--dataset ActivityNet" in err


def test_checkpoint_of_another_feature_dim(trained, capsys):
    flags = [("64" if f == "32" else f) for f in MODEL_FLAGS]
    err = error_of(["--checkpoint", trained["save_dir"], "--features", str(trained["features"]),
                    *flags], capsys)
    assert "feature_dim differs: checkpoint 32, config 64" in err
