"""A run folder (engine/run_folder.py): a run's identity is its whole resolved config: a run
folder resumes only under the config that made it (else one line naming each changed key,
nothing written); test mode and predict.py take the run's config.json (flags win), and test mode
writes into a folder of its own."""
import hashlib
import json
import os
import shutil

import numpy as np
import pytest

import config
import predict
from config import ConfigError, build_args
from dataset import DataError, VideoDataset, check_feature_file, clear_feature_cache
from engine import passes, run_folder
from engine import run as runner
from engine.cascade import check_features


@pytest.fixture(scope="module")
def run_argv(tiny_argv):
    """One refinement step of two epochs each, evaluated after every epoch."""
    def make(data_dir, root, *extra):
        return tiny_argv(data_dir, root, *extra, epochs=4, num_steps=1, eval_freq=1)
    return make


def folder_hashes(folder, skip=(".lock",), skip_dirs=("test",)):
    """{relative path: sha256} of every file under `folder` (the lock file and test mode's folder
    aside)."""
    out = {}
    for root, dirs, files in os.walk(folder):
        if root == folder:
            dirs[:] = [d for d in dirs if d not in skip_dirs]
        for name in files:
            if name not in skip:
                path = os.path.join(root, name)
                digest = hashlib.sha256(open(path, "rb").read()).hexdigest()
                out[os.path.relpath(path, folder)] = digest
    return out


def error_line(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        runner.main("THUMOS", argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


@pytest.fixture(scope="module")
def trained(tiny_data, run_argv, tmp_path_factory):
    """A tiny run trained with a threshold override (--nms_thresh 0.3), and every evaluation it
    made."""
    root = tmp_path_factory.mktemp("identity")
    argv = run_argv(tiny_data, root, "--nms_thresh", "0.3")
    evaluations, original = [], passes.evaluate

    def recording(model, dataset, args, step, result_path):
        detector = original(model, dataset, args, step, result_path)
        evaluations.append((step, detector.average_mAP, np.array(detector.mAP)))
        return detector
    passes.evaluate = recording
    try:
        best = runner.run("THUMOS", argv)
    finally:
        passes.evaluate = original
    return {"argv": argv, "save_dir": build_args("THUMOS", argv).save_dir, "best": best,
            "evaluations": evaluations, "data": tiny_data, "root": root}


# --------------------------------------------------------------- training: resume only the same run
def test_changed_flag_is_refused_and_the_folder_left_untouched(trained, capsys):
    save_dir = trained["save_dir"]
    before = folder_hashes(save_dir)
    err = error_line(trained["argv"] + ["--lamb_bg", "0.9", "--lr", "0.0003"], capsys)
    assert "lamb_bg: 0.5 → 0.9" in err and "lr: 0.001 → 0.0003" in err
    assert save_dir in err
    assert "--suffix NAME" in err and "--no_resume" in err
    assert folder_hashes(save_dir) == before
    # keys that cannot change a result are not compared; the same config resumes (nothing left
    # to train)
    assert runner.run("THUMOS", trained["argv"] + ["--visualize_videos", "3",
                                                   "--feature_cache_gb", "0"]) == trained["best"]


def test_edited_config_py_is_refused_and_suffix_trains_its_own_run(trained, capsys, monkeypatch):
    save_dir = trained["save_dir"]
    before = folder_hashes(save_dir)
    monkeypatch.setitem(config.PRESETS["THUMOS"], "lamb_bg", 0.9)   # an ablation in config.py
    err = error_line(trained["argv"], capsys)
    assert "lamb_bg: 0.5 → 0.9" in err
    assert folder_hashes(save_dir) == before
    argv = trained["argv"] + ["--suffix", "lb09", "--epochs", "1"]  # only its folder matters
    own = build_args("THUMOS", argv).save_dir
    assert own != save_dir
    runner.run("THUMOS", argv)
    assert json.load(open(os.path.join(own, "config.json")))["lamb_bg"] == 0.9
    assert "resumed from" not in open(os.path.join(own, "log.txt")).read()
    assert os.path.isfile(os.path.join(own, "model_latest.pth"))


def test_released_folder_without_config_resumes_with_a_note(trained, tmp_path, capsys):
    argv = trained["argv"][:]
    argv[argv.index("--checkpoint_root") + 1] = str(tmp_path)
    save_dir = build_args("THUMOS", argv).save_dir
    shutil.copytree(trained["save_dir"], save_dir,
                    ignore=shutil.ignore_patterns("config.json", "results.json", "test", ".lock"))
    runner.run("THUMOS", argv + ["--lamb_bg", "0.9"])                      # nothing to compare with
    out = capsys.readouterr().out
    assert "has no config.json" in out and "could not be checked" in out and "resumed from" in out


def test_differences_compare_result_keys_exactly():
    args = build_args("THUMOS", ["--device", "cpu"])
    saved = run_folder.as_stored(args)
    assert run_folder.differences(saved, run_folder.as_stored(args)) == ([], [])
    changed = build_args("THUMOS", ["--device", "cuda", "--visualize_videos", "0", "--outdir", "x",
                                    "--debug", "--att_thresh",
                                    *map(str, np.arange(0.1, 0.925, 0.025)[:-1]), "--amp"])
    diff, one_sided = run_folder.differences(saved, run_folder.as_stored(changed))
    assert [key for key, _, _ in diff] == ["amp", "att_thresh"] and one_sided == []
    del saved["lamb_fg"]                                           # recorded by one side only
    saved["pred_segment_path"] = ""                            # a flag of another meaning: ignored
    assert run_folder.differences(saved, run_folder.as_stored(args)) == ([], ["lamb_fg"])
    assert run_folder.format_changes([("lamb_bg", 0.5, 0.9), ("data_dir", "a", "b")]) == \
        "lamb_bg: 0.5 → 0.9, data_dir: a → b"


# ---------------------------------------------------------------------- test mode: the run's config
def test_test_mode_uses_the_runs_config_and_its_own_folder(trained, lock_holder, capsys):
    save_dir = trained["save_dir"]
    before = folder_hashes(save_dir)
    holder = lock_holder(save_dir)
    try:
        assert holder.stdout.readline().strip() == "locked"    # a training run holds the folder
        # without the override
        argv = [a for a in trained["argv"] if a not in ("--nms_thresh", "0.3")]
        detectors = runner.run("THUMOS", argv + ["--test", "--checkpoint", save_dir, "--visualize",
                                                 "--visualize_videos", "1"])
    finally:
        holder.kill()
        holder.wait()
    out = capsys.readouterr().out
    assert "config of the run: " + os.path.join(save_dir, "config.json") in out
    assert ("test mode writes its results, log and plots to " + os.path.join(save_dir, "test")
            in out)
    final = [e for e in trained["evaluations"] if e[0] == 1]
    # the first best: its checkpoint
    best = next(e for e in final if e[1] == max(x[1] for x in final))
    assert detectors[-1].average_mAP == best[1] == trained["best"][-1]
    np.testing.assert_array_equal(np.asarray(detectors[-1].mAP), best[2])  # every tIoU, exactly
    assert folder_hashes(save_dir) == before                           # the run's files unchanged
    test_dir = os.path.join(save_dir, "test")
    for name in ("test_result_step0.json", "test_result_step1.json", "test_summary.json",
                 "log.txt", "test_per_class_ap_step1.csv", "config.json",
                 os.path.join("visualize", "test_step1")):
        assert os.path.exists(os.path.join(test_dir, name)), name
    assert json.load(open(os.path.join(test_dir, "config.json")))["nms_thresh"] == 0.3


def test_test_mode_flags_win_and_are_printed(trained, capsys, monkeypatch):
    # edited since training: not used
    monkeypatch.setitem(config.PRESETS["THUMOS"], "cls_threshold", 0.6)
    argv = ["--test", "--checkpoint", trained["save_dir"], "--nms_thresh", "0.45"]
    args = build_args("THUMOS", argv)
    lines = run_folder.adopt_trained_config(args, argv)
    assert "nms_thresh: 0.3 → 0.45" in lines
    assert args.nms_thresh == 0.45 and args.cls_threshold == 0.25
    assert args.feature_dim == 32 and args.num_steps == 1
    assert any(line.startswith("the run's values, not config.py's: ") and "cls_threshold" in line
               for line in lines)
    assert args.data_dir == str(trained["data"])
    assert args.class_name_lst == build_args("THUMOS").class_name_lst


def test_test_mode_elsewhere_when_the_run_folder_is_read_only(trained, tmp_path, monkeypatch):
    save_dir = trained["save_dir"]
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: False
                        if os.path.abspath(path) == os.path.abspath(save_dir)
                        else real_access(path, mode))
    args = build_args("THUMOS", ["--test", "--checkpoint", save_dir,
                                 "--checkpoint_root", str(tmp_path)])
    assert run_folder.test_output_folder(args) == os.path.join(str(tmp_path), "THUMOS", "test",
                                                               os.path.basename(save_dir))


def test_released_checkpoints_use_config_py_with_a_note(trained, tmp_path):
    argv = ["--test", "--checkpoint", str(tmp_path), "--nms_thresh", "0.2"]
    args = build_args("THUMOS", argv)
    lines = run_folder.adopt_trained_config(args, argv)
    assert len(lines) == 1 and "has no config.json" in lines[0] and "config.py" in lines[0]
    assert args.nms_thresh == 0.2 and args.feature_dim == 2048


def test_predict_without_flags_gives_test_modes_detections(trained, tmp_path):
    test_result = os.path.join(trained["save_dir"], "test", "test_result_step1.json")
    if not os.path.isfile(test_result):
        runner.run("THUMOS", ["--test", "--checkpoint", trained["save_dir"]])
    out = tmp_path / "pred.json"
    predict.main(["--checkpoint", trained["save_dir"], "--features", str(trained["data"] / "test"),
                  "--out", str(out)])
    assert json.load(open(out))["results"] == json.load(open(test_result))["results"]


# ------------------------------------------------------------------- released flags, feature dtypes
def test_released_pred_segment_path_is_refused():
    with pytest.raises(ConfigError, match="--pred_segment_path is not supported: in the released "
                                          "code it reads"):
        build_args("THUMOS", ["--pred_segment_path", "pseudo.json"])
    assert build_args("THUMOS", ["--result_path", "r.json"]).result_path == "r.json"


@pytest.mark.parametrize("dtype", [np.float16, np.float64])
def test_float16_and_float64_features_give_the_float32_result(tiny_data, tmp_path, dtype):
    rng = np.random.default_rng(5)
    x = rng.normal(size=(37, 32)).astype(dtype)
    np.save(tmp_path / "other.npy", x)
    np.save(tmp_path / "f32.npy", x.astype(np.float32))
    got = check_feature_file(tmp_path / "other.npy", 32)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, np.load(tmp_path / "f32.npy"))
    np.testing.assert_array_equal(check_features(x, 32, "x"), x.astype(np.float32))
    # a dataset of such files gives the items of the same dataset in float32
    items = {}
    for kind in ("other", "f32"):
        root = tmp_path / kind
        os.makedirs(root / "test")
        for name in ("gt.json", "split_train.txt", "split_test.txt"):
            (root / name).write_bytes((tiny_data / name).read_bytes())
        for vid in (tiny_data / "split_test.txt").read_text().split():
            array = np.load(tiny_data / "test" / f"{vid}.npy")
            stored = array.astype(dtype)
            np.save(root / "test" / f"{vid}.npy",
                    stored.astype(np.float32) if kind == "f32" else stored)
        clear_feature_cache()
        args = build_args("THUMOS", ["--data_dir", str(root), "--feature_dim", "32",
                                     "--sample_segments_num", "20", "--device", "cpu"])
        dataset = VideoDataset(args, "test", "uniform")
        items[kind] = [dataset[i]["features"].numpy() for i in range(len(dataset))]
    for a, b in zip(items["other"], items["f32"]):
        np.testing.assert_array_equal(a, b)


def test_non_finite_features_are_refused_with_the_file_name(tmp_path):
    # 1e300: inf as float32
    for dtype, value in ((np.float16, np.nan), (np.float64, np.inf), (np.float64, 1e300)):
        x = np.zeros((5, 8), dtype=dtype)
        x[2, 3] = value
        path = tmp_path / f"bad_{np.dtype(dtype).name}.npy"
        np.save(path, x)
        with pytest.raises(DataError, match="contains NaN or inf") as info:
            check_feature_file(path, 8)
        assert str(path) in str(info.value)
    np.save(tmp_path / "ints.npy", np.zeros((5, 8), dtype=np.int16))
    with pytest.raises(DataError, match="dtype int16; expected floating point"):
        check_feature_file(tmp_path / "ints.npy", 8)


def test_test_results_are_written_over_only_under_their_config(trained, capsys):
    save_dir = trained["save_dir"]
    runner.run("THUMOS", ["--test", "--checkpoint", save_dir])
    test_dir = os.path.join(save_dir, "test")
    before = folder_hashes(test_dir, skip_dirs=())
    err = error_line(["--test", "--checkpoint", save_dir, "--nms_thresh", "0.45"], capsys)
    assert (f"test folder {test_dir} holds test results made with another config "
            f"(nms_thresh: 0.3 → 0.45)") in err
    assert "--suffix NAME" in err
    assert folder_hashes(test_dir, skip_dirs=()) == before
    runner.run("THUMOS", ["--test", "--checkpoint", save_dir, "--nms_thresh", "0.45",
                          "--suffix", "nms45"])
    assert "nms_thresh: 0.3 → 0.45" in capsys.readouterr().out
    with open(os.path.join(save_dir, "test_nms45", "config.json")) as handle:
        assert json.load(handle)["nms_thresh"] == 0.45


def test_test_mode_takes_the_runs_class_names_and_dataset_name(tmp_path, monkeypatch):
    """A user's run: test mode and predict.py use the class names and dataset name of its
    config.json, even once its data folder's classes.txt is gone; --class_list given now wins;
    a changed class list refuses to resume."""
    monkeypatch.chdir(tmp_path)
    data = tmp_path / "mydata"
    data.mkdir()
    (data / "classes.txt").write_text("Slide\nBounce\nPulse\n")
    trained = build_args("THUMOS", ["--data_dir", "mydata"])
    folder = tmp_path / "run"
    folder.mkdir()
    config.save_config(trained, folder / "config.json")
    (data / "classes.txt").unlink()
    argv = ["--test", "--checkpoint", str(folder)]
    args = build_args("THUMOS", argv)
    assert args.dataset_name == "THUMOS" and args.action_cls_num == 20
    lines = run_folder.adopt_trained_config(args, argv)
    assert args.class_name_lst == ["Slide", "Bounce", "Pulse"] and args.action_cls_num == 3
    assert args.dataset_name == "mydata" and "class_names" in args.class_list_file
    assert any("class_names" in line for line in lines)
    monkeypatch.setattr(os, "access", lambda path, mode: False)             # read-only run folder
    assert run_folder.test_output_folder(args) == os.path.join("checkpoints", "mydata", "test",
                                                               "run")
    flag = argv + ["--class_list", "THUMOS14.txt"]
    explicit = build_args("THUMOS", flag)
    lines = run_folder.adopt_trained_config(explicit, flag)
    assert explicit.action_cls_num == 20
    assert any(line.startswith('class_names: ["Slide", "Bounce", "Pulse"] → '
                               '["BaseballPitch", "BasketballDunk", "Billiards", ... 20 items]')
               for line in lines), lines
    # resuming under another class list: refused, the change named
    (data / "classes.txt").write_text("Slide\nPulse\nBounce\n")
    again = build_args("THUMOS", ["--data_dir", "mydata"])
    again.save_dir = str(folder)
    (folder / "model_latest.pth").write_bytes(b"")
    with pytest.raises(run_folder.RunConfigChanged, match='class_names: \\["Slide", "Bounce", '
                                                          '"Pulse"\\] → \\["Slide", "Pulse"'):
        run_folder.check_run_folder(again)
