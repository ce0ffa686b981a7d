"""Nothing a user passes in is lost or silently accepted: for each case the exact one line, the exit
status, and the files before and after (every file's bytes and mtime, nothing deleted, no stray
folder). Items of the reliability issue: 1 the demo data folder, 5 split files, 6 value ranges,
9 failed starts, 10 frame rates, 11 reruns and refusals, 12 test mode, 14 help and tables
(8, extraction: tests/test_extract.py)."""
import hashlib
import json
import math
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import config
import predict
import synthetic_data
from config import build_args
from engine import cascade
from engine import run as runner
from eval.files import DataError, read_split
from eval.protocol import describe
from eval.tables import in_class_list_order
from model import ASMLocBase
from options import parse_rate


def snapshot(root, folder_times=False):
    """{relative path: (sha256, mtime_ns)} of every file under root, and every folder (hidden
    ones too), with its mtime_ns (root's too) when folder_times; {} when root does not exist."""
    root = Path(root)
    out = {".": root.stat().st_mtime_ns} if folder_times and root.exists() else {}
    for path in sorted(root.rglob("*")) if root.exists() else []:
        name = path.relative_to(root).as_posix()
        out[name] = ((hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns)
                     if path.is_file() else ("folder", path.stat().st_mtime_ns if folder_times
                                             else None))
    return out


def one_error_line(dataset, argv, capsys):
    """Run the entry point; (exit status, its one stderr line)."""
    with pytest.raises(SystemExit) as exc:
        runner.main(dataset, argv)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in err, err
    return exc.value.code, err.strip()


@pytest.fixture(scope="module")
def tiny_run(tiny_data, tiny_argv, tmp_path_factory):
    """A finished tiny run (base model + one step, one epoch each) and its --test folder."""
    root = tmp_path_factory.mktemp("reliability")
    argv = tiny_argv(tiny_data, root / "runs", epochs=2, epochs_per_step=1, num_steps=1,
                     eval_freq=1)
    runner.run("THUMOS", argv)
    save_dir = build_args("THUMOS", argv).save_dir
    return {"argv": argv, "save_dir": save_dir, "root": root, "data": tiny_data}


# ----------------------------------------------------------------------------- 1: the demo folder
@pytest.fixture
def small_demo(monkeypatch, tmp_path):
    """The THUMOS demo set with 3 training and 2 test videos, generated into tmp_path/demo."""
    monkeypatch.setitem(synthetic_data.PROFILES["THUMOS14"], "demo_videos", (3, 2))
    folder = tmp_path / "demo"
    synthetic_data.ensure_demo_dataset(build_args("THUMOS", ["--demo", "--data_dir", str(folder),
                                                        "--device", "cpu"]))
    return folder


def test_demo_copy_with_notes_and_a_changed_value_is_refused_untouched(small_demo, tmp_path,
                                                                      capsys):
    copy = tmp_path / "copy"
    shutil.copytree(small_demo, copy)
    (copy / "notes.txt").write_text("my notes")
    npy = sorted((copy / "train").glob("*.npy"))[0]
    features = np.load(npy)
    features[3, 5] = np.nan
    np.save(npy, features)
    before = snapshot(tmp_path, folder_times=True)
    code, err = one_error_line("THUMOS", ["--demo", "--data_dir", str(copy), "--checkpoint_root",
                                          str(tmp_path / "runs"), "--device", "cpu"], capsys)
    assert code == 2
    assert err == (f"error: demo data {copy} is not the demo set this run needs (train/{npy.name} "
                   f"differs from the checksum in SYNTHETIC.json; files it did not generate: "
                   f"notes.txt); it was left untouched: --demo writes only into a new or empty "
                   f"--data_dir, or over its own unchanged {config.demo_data_dir('THUMOS')}: pass "
                   f"a new --data_dir, or drop --data_dir")
    assert snapshot(tmp_path, folder_times=True) == before   # byte-identical, no stray folder


def test_demo_copy_with_other_parameters_names_the_parameter(small_demo, tmp_path, capsys):
    before = snapshot(tmp_path)
    code, err = one_error_line("THUMOS", ["--demo", "--data_dir", str(small_demo),
                                          "--feature_dim", "128", "--checkpoint_root",
                                          str(tmp_path / "runs"), "--device", "cpu"], capsys)
    assert code == 2 and "(feature_dim: 256 → 128)" in err and "left untouched" in err
    assert snapshot(tmp_path) == before


def test_demo_on_a_real_dataset_says_how_to_train_on_it(tiny_data, tmp_path, capsys):
    before = snapshot(tiny_data)
    code, err = one_error_line("THUMOS", ["--demo", "--data_dir", str(tiny_data),
                                          "--checkpoint_root", str(tmp_path), "--device", "cpu"],
                               capsys)
    assert code == 2 and err == (
        f"error: --demo trains the small demo schedule on generated data, but --data_dir "
        f"{tiny_data} holds a dataset of its own (no SYNTHETIC.json); it was left untouched: to "
        f"train on it, drop --demo (python main_THUMOS.py --data_dir {tiny_data}), or give --demo "
        f"a new or empty --data_dir")
    assert snapshot(tiny_data) == before and not any(tmp_path.iterdir())


# ----------------------------------------------------------------------------- 5: split files
def test_duplicated_split_line_is_refused_and_blank_lines_are_allowed(tiny_data, tmp_path, capsys,
                                                                       tiny_argv):
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    names = (data / "split_train.txt").read_text().split()
    lines = ["", names[0], "", *names[1:], names[2]]
    (data / "split_train.txt").write_text("\n".join(lines) + "\n")
    before = snapshot(tmp_path)
    code, err = one_error_line("THUMOS", tiny_argv(data, tmp_path / "runs"), capsys)
    assert code == 2 and err == (
        f"error: split file {data / 'split_train.txt'} line {len(names) + 3}: video {names[2]} is "
        f"listed again (first on line 5); list each video once")
    assert snapshot(tmp_path) == before
    assert read_split(tiny_data / "split_train.txt") == names        # blank lines: skipped
    (data / "split_train.txt").write_text("\n\n" + "\n\n".join(names) + "\n\n")
    assert read_split(data / "split_train.txt") == names
    (data / "split_train.txt").write_text("a\nb\n\na\n")
    with pytest.raises(DataError, match="line 4: video a is listed again"):
        read_split(data / "split_train.txt")


def test_protocol_counts_distinct_videos():
    database = {f"v{i}": {"subset": "test", "annotations": []} for i in range(3)}
    protocol = describe(database, "test", "split_test.txt", ["v0", "v1", "v1", "v2", "v0"],
                        [0.5], 1)
    assert protocol["split_videos"] == 3 and protocol["evaluated_videos"] == 3


# ----------------------------------------------------------------------------- 6: value ranges
def numeric_keys(dataset):
    """{key: default} of every numeric key (numbers and number lists) a preset has."""
    defaults = {**config.COMMON, **config.PRESETS[dataset], **config.EXTRA_OPTIONS}
    return {key: value for key, value in defaults.items()
            if not isinstance(value, (bool, str))
            and (isinstance(value, (int, float)) or all(isinstance(float(x), float)
                                                        for x in np.ravel(value)))}


def bad_values(key, default):
    """Values just outside the key's range (and NaN for a real-valued key), as flag text."""
    valid = config.RANGES[key]
    integer = isinstance(default, int) and key not in config.RATE_KEYS
    step = 1 if integer else 0.5
    values = [valid.low if valid.low_open else valid.low - step]
    if valid.high != math.inf:
        values.append(valid.high if valid.high_open else valid.high + step)
    values += [] if integer else [math.nan, math.inf]
    return [str(value) for value in values]


def test_every_numeric_key_has_a_range():
    keys = set().union(*(numeric_keys(dataset) for dataset in config.PRESETS))
    assert keys == set(config.RANGES)


@pytest.mark.parametrize("dataset", sorted(config.PRESETS))
def test_every_numeric_key_out_of_range_is_one_line(dataset, tmp_path, capsys):
    cases = 0
    for key, default in numeric_keys(dataset).items():
        for bad in bad_values(key, default):
            flag = [bad] if np.ndim(default) == 0 else ["0.5", bad]     # a list: one value bad
            code, err = one_error_line(dataset, [f"--{key}", *flag, "--device", "cpu",
                                                 "--checkpoint_root", str(tmp_path)], capsys)
            assert code == 2 and re.search(rf"--{key}\b", err), (key, bad, err)
            cases += 1
    assert cases > len(numeric_keys(dataset)) and not any(tmp_path.iterdir())


def test_nan_and_negative_lr_are_one_line(capsys, tmp_path):
    root = ["--device", "cpu", "--checkpoint_root", str(tmp_path)]
    assert one_error_line("THUMOS", ["--lr", "nan", *root], capsys) == (
        2, "error: --lr must be positive and finite, got nan")
    assert one_error_line("THUMOS", ["--lr", "-1", *root], capsys) == (
        2, "error: --lr must be positive and finite, got -1.0")
    assert one_error_line("THUMOS", ["--cas_thresh", "0.1", "1.5", *root], capsys) == (
        2, "error: --cas_thresh values must each be in [0, 1], got 1.5")


# ----------------------------------------------------------------------------- 9: failed starts
def test_test_mode_on_a_missing_folder_makes_no_folder(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, err = one_error_line("THUMOS", ["--test", "--checkpoint", "nothere", "--device", "cpu"],
                               capsys)
    assert code == 2 and err == ("error: checkpoint folder nothere not found; --test needs a run "
                                 "folder with one model_step*.pth file per step")
    assert not any(tmp_path.iterdir())                   # no checkpoints/THUMOS/test/nothere


def test_run_stopped_by_bad_data_leaves_no_folder(tiny_data, tiny_argv, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    npy = sorted((data / "test").glob("*.npy"))[0]
    np.save(npy, np.full((4, 32), np.inf, np.float32))
    code, err = one_error_line("THUMOS", tiny_argv(data, tmp_path / "runs"), capsys)
    assert code == 2 and err == (f"error: feature file {npy} contains NaN or inf values (as "
                                 f"float32); re-extract it")
    assert not (tmp_path / "runs").exists()


def test_a_start_that_fails_in_a_folder_it_made_removes_that_folder(tiny_run, capsys):
    """A checkpoint that does not fit is found once the test folder exists: that folder goes, and
    the run folder is as it was."""
    folder = Path(tiny_run["root"]) / "mismatch"
    shutil.copytree(tiny_run["save_dir"], folder, ignore=shutil.ignore_patterns("test*"))
    shutil.copy(folder / "model_step1_best_epoch.pth", folder / "model_step0_last_epoch.pth")
    (folder / "checksums.json").unlink()            # as released files: no sha256 record
    before = snapshot(folder)
    code, err = one_error_line("THUMOS", tiny_run["argv"] + ["--test", "--checkpoint",
                                                            str(folder)], capsys)
    assert code == 2 and "model_step0_last_epoch.pth" in err and "full" in err
    assert snapshot(folder) == before                                 # no test/ left behind


# ----------------------------------------------------------------------------- 10: frame rates
def test_frame_rates_are_floats_and_ratios():
    assert parse_rate("29.97") == 29.97 and parse_rate("30000/1001") == 30000 / 1001
    args = build_args("THUMOS", ["--frames_per_sec", "30000/1001", "--device", "cpu"])
    assert args.frames_per_sec == 30000 / 1001 and args.snippets_per_sec == 30000 / 1001 / 16
    assert json.loads(config.config_text(args))["frames_per_sec"] == 30000 / 1001     # a number
    known, rest = predict.parse_predict_args(["--features", "x", "--checkpoint", "c", "--fps",
                                              "30000/1001"])
    assert rest[-2:] == ["--frames_per_sec", repr(30000 / 1001)]
    with pytest.raises(config.ConfigError, match="--frames_per_sec: expected a frame rate"):
        build_args("THUMOS", ["--frames_per_sec", "fast"])


def test_bad_predict_flag_is_one_line(capsys, tmp_path):
    with pytest.raises(SystemExit) as exc:
        predict.main(["--checkpoint", str(tmp_path), "--features", str(tmp_path), "--fps", "fast"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and err == (
        "error: argument --fps: expected a frame rate such as 25, 29.97 or 30000/1001, got 'fast' "
        "(see predict.py --help)\n")
    assert not any(tmp_path.iterdir())


ACTIONS = [(11, 27), (57, 77), (103, 132)]     # class 0 from snippet a up to snippet b (excluded)


def localizing_checkpoint(folder, dim=8):
    """A one-step cascade (num_steps 0) trained at 25 fps whose weights make the CAS of class 0
    follow feature channel 0 and the background follow channel 1: detections land on the
    snippets where channel 0 is 1."""
    args = build_args("THUMOS", ["--feature_dim", str(dim), "--num_steps", "0", "--device",
                                 "cpu"])
    model = ASMLocBase.from_config(args)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.zero_()
        model.feature_embedding[0].weight[:, :, 1] = torch.eye(dim)      # embedding = ReLU(x)
        model.att_branch.weight[0, 0, 0] = model.att_branch.weight[1, 1, 0] = 20.0
        model.snippet_cls.weight[0, 0] = model.snippet_cls.weight[-1, 1] = 20.0
    folder.mkdir()
    torch.save({"epoch": 1, "model_state_dict": model.state_dict(), "dataset": "THUMOS",
                "step": 0}, folder / "model_step0_best_epoch.pth")
    (folder / "config.json").write_text(json.dumps({
        "dataset": "THUMOS", "feature_dim": dim, "num_steps": 0, "frames_per_sec": 25.0,
        "segment_frames_num": 16}))
    return args


def features_at(folder, fps, snippets=168, dim=8, snippet_frames=16):
    """One video's features at `fps` (90 s at 29.97 fps): channel 0 is 1 on the snippets of
    ACTIONS, channel 1 elsewhere; extract_config.json records the rate. Returns the snippet
    duration and the actions in seconds."""
    folder.mkdir()
    x = np.zeros((snippets, dim), np.float32)
    x[:, 1] = 1.0
    for start, end in ACTIONS:
        x[start:end] = 0.0
        x[start:end, 0] = 1.0
    np.save(folder / "walk.npy", x)
    (folder / "extract_config.json").write_text(json.dumps({"fps": fps,
                                                           "snippet_frames": snippet_frames}))
    duration = snippet_frames / fps
    return duration, [(start * duration, end * duration) for start, end in ACTIONS]


def found_actions(folder, fps_flag, snippet_s, truth):
    """predict.py on folder/features with --fps fps_flag: for each action of `truth` (seconds),
    whether a detection of class 0 matches it within one snippet at both ends."""
    out = folder / f"pred_{fps_flag.replace('/', '_')}.json"
    predict.main(["--checkpoint", str(folder / "run"), "--features", str(folder / "features"),
                  "--fps", fps_flag, "--out", str(out), "--device", "cpu"])
    detections = json.loads(out.read_text())["results"]["walk"]
    name = build_args("THUMOS", ["--device", "cpu"]).class_name_lst[0]
    return [any(d["label"] == name and abs(d["segment"][0] - start) <= snippet_s
                and abs(d["segment"][1] - end) <= snippet_s for d in detections)
            for start, end in truth]


@pytest.mark.parametrize("rate", ["29.97", "30000/1001"])
def test_predict_at_29_97_fps_finds_actions_within_a_snippet(rate, tmp_path, capsys):
    fps = parse_rate(rate)
    localizing_checkpoint(tmp_path / "run")
    snippet_s, truth = features_at(tmp_path / "features", fps)
    assert found_actions(tmp_path, rate, snippet_s, truth) == [True] * len(truth)
    printed = capsys.readouterr().out
    warnings = [line for line in printed.splitlines() if line.startswith("warning:")]
    assert warnings == [
        f"warning: the features' snippets span {16 / fps:.4f} s (16 frames at {rate} fps, "
        f"extract_config.json in {tmp_path / 'features'}), the model was trained on snippets of "
        f"0.6400 s (16 frames at 25 fps): snippets now span a different time than in training "
        f"(an action covers {fps / 25:.3g} times as many of them), which can lower the scores; "
        f"detection times follow the features' time base"]
    assert found_actions(tmp_path, "25", snippet_s, truth)[1:] == [False, False]   # wrong rate


def test_fps_flag_other_than_training_warns_once(tmp_path, capsys):
    localizing_checkpoint(tmp_path / "run")
    features_at(tmp_path / "features", 25.0)
    (tmp_path / "features" / "extract_config.json").unlink()       # the time base is the flags'
    predict.main(["--checkpoint", str(tmp_path / "run"), "--features", str(tmp_path / "features"),
                  "--fps", "30", "--out", str(tmp_path / "p.json"), "--device", "cpu"])
    warnings = [line for line in capsys.readouterr().out.splitlines() if "warning" in line]
    assert warnings == [
        "warning: the features' snippets span 0.5333 s (16 frames at 30 fps), the model was "
        "trained on snippets of 0.6400 s (16 frames at 25 fps): snippets now span a different "
        "time than in training (an action covers 1.2 times as many of them), which can lower the "
        "scores; detection times follow the features' time base"]


def test_features_at_another_rate_than_the_flags_say_how_to_time_them(tmp_path, capsys, recwarn):
    localizing_checkpoint(tmp_path / "run")
    features_at(tmp_path / "features", 29.97)
    predict.main(["--checkpoint", str(tmp_path / "run"), "--features", str(tmp_path / "features"),
                  "--out", str(tmp_path / "p.json"), "--device", "cpu"])
    warnings = [line for line in capsys.readouterr().out.splitlines() if "warning" in line]
    assert len(warnings) == 1 and not [w for w in recwarn if "extracted at" in str(w.message)]
    assert warnings[0].endswith("; detections are timed at 25 fps with 16-frame snippets and will "
                                "be off: pass --fps 29.97 --snippet_frames 16")


# ----------------------------------------------------------------------------- 11: reruns
def test_rerun_of_a_finished_run_writes_nothing(tiny_run, capsys):
    before = snapshot(tiny_run["save_dir"], folder_times=True)
    results = json.loads(Path(tiny_run["save_dir"], "results.json").read_text())
    best = runner.run("THUMOS", tiny_run["argv"])
    out = capsys.readouterr().out.splitlines()
    assert out[0] == (f"run {tiny_run['save_dir']} is finished (its results.json); nothing was "
                      f"run or written: --no_resume trains it again, --suffix NAME trains a "
                      f"variant in a folder of its own")
    assert out[1].startswith("best average mAP per step: step 0 "
                             f"{results['steps']['0']['best']['average_mAP']:.2f}, step 1 ")
    assert best == [results["steps"][k]["best"]["average_mAP"] / 100 for k in ("0", "1")]
    assert snapshot(tiny_run["save_dir"], folder_times=True) == before


def test_refusals_touch_no_file_not_even_the_lock(tiny_run, capsys, lock_holder):
    before = snapshot(tiny_run["save_dir"], folder_times=True)
    code, err = one_error_line("THUMOS", tiny_run["argv"] + ["--lamb_bg", "0.9"], capsys)
    assert code == 2 and "(lamb_bg: 0.5 → 0.9) and was left untouched" in err
    assert snapshot(tiny_run["save_dir"], folder_times=True) == before
    holder = lock_holder(tiny_run["save_dir"])
    assert holder.stdout.readline().strip() == "locked"
    during = snapshot(tiny_run["save_dir"], folder_times=True)
    code, err = one_error_line("THUMOS", tiny_run["argv"], capsys)
    assert code == 2 and f"is in use by another process (pid {holder.pid})" in err
    assert snapshot(tiny_run["save_dir"], folder_times=True) == during


# ----------------------------------------------------------------------------- 12: test mode
def test_failed_test_attempt_does_not_block_the_next(tiny_run, tmp_path, capsys):
    """Without config.json and without the run's flags the cascade is incomplete: one line, no
    test folder; the retry with the flags works; another test-time flag needs --suffix or
    --overwrite."""
    folder = tmp_path / "released"
    shutil.copytree(tiny_run["save_dir"], folder,
                    ignore=shutil.ignore_patterns("config.json", "test*"))
    before = snapshot(folder)
    data = ["--data_dir", str(tiny_run["data"]), "--device", "cpu"]
    code, err = one_error_line("THUMOS", ["--test", "--checkpoint", str(folder), *data], capsys)
    assert code == 2 and "is missing model_step1_last_epoch.pth" in err and "--demo" in err
    assert snapshot(folder) == before
    flags = tiny_run["argv"]
    runner.run("THUMOS", flags + ["--test", "--checkpoint", str(folder)])
    assert (folder / "test" / "config.json").is_file()
    capsys.readouterr()
    tested = snapshot(folder / "test")
    code, err = one_error_line("THUMOS", flags + ["--test", "--checkpoint", str(folder),
                                                  "--nms_thresh", "0.3"], capsys)
    assert code == 2 and err.endswith("add --suffix NAME for a test folder of its own, or "
                                      "--overwrite to write over them")
    assert snapshot(folder / "test") == tested
    runner.run("THUMOS", flags + ["--test", "--checkpoint", str(folder), "--nms_thresh", "0.3",
                                  "--overwrite"])
    assert json.loads((folder / "test" / "config.json").read_text())["nms_thresh"] == 0.3


def test_failed_test_attempt_takes_back_its_config_json(tiny_run, tmp_path, capsys, monkeypatch):
    folder = tmp_path / "run"
    shutil.copytree(tiny_run["save_dir"], folder, ignore=shutil.ignore_patterns("test*"))
    (folder / "test").mkdir()                                  # there, but without a config.json

    def fails(args, inputs=None):
        raise cascade.InputError("a test pass failed")
    monkeypatch.setattr(cascade, "test_cascade", fails)
    code, err = one_error_line("THUMOS", tiny_run["argv"] + ["--test", "--checkpoint",
                                                            str(folder)], capsys)
    assert code == 2 and err == "error: a test pass failed"
    assert not (folder / "test" / "config.json").exists() and (folder / "test").is_dir()


def test_overwrite_is_for_test_mode(capsys, tmp_path):
    assert one_error_line("THUMOS", ["--overwrite", "--device", "cpu", "--checkpoint_root",
                                     str(tmp_path)], capsys) == (
        2, "error: --overwrite is for test mode (--test); to start a training run over use "
           "--no_resume")


# ----------------------------------------------------------------------------- 14: help, tables
def test_predict_help_lists_every_option(capsys):
    with pytest.raises(SystemExit):
        predict.parse_predict_args(["--help"])
    text = capsys.readouterr().out
    for option in ("--checkpoint", "--demo", "--features", "--videos", "--fps", "--top_k"):
        assert option in text
    assert "Any key of config.py is taken as well" in text


def test_entry_help_shows_each_keys_default_and_its_comment(capsys):
    with pytest.raises(SystemExit):
        build_args("THUMOS", ["--help"])
    text = " ".join(capsys.readouterr().out.split())              # argparse wraps lines
    described = config.source_comments(config.__file__, ("COMMON", "PRESETS", "EXTRA_OPTIONS"))
    assert described["nms_thresh"] == "tIoU above which a lower-scored detection is dropped"
    assert "--nms_thresh NMS_THRESH tIoU above which a lower-scored detection is dropped " \
           "(default 0.45)" in text
    assert "--lr LR Adam learning rate (betas 0.9, 0.999) (default 0.0001; --demo 0.001)" in text
    assert "--oic_gamma_cas OIC_GAMMA_CAS weight of the video score in the CAS-branch proposal " \
           "score (default 0)" in text
    defaults = {**config.COMMON, **config.PRESETS["THUMOS"], **config.EXTRA_OPTIONS}
    assert sum(f"--{key} " in text for key in defaults) == len(defaults)
    assert text.count("(default ") >= len(defaults)


def test_per_class_tables_follow_the_class_list(tiny_run):
    activity_index = {"b": 0, "c": 1, "a": 2}
    ap = np.array([[0.2, 0.3, 0.1], [0.4, 0.6, 0.5]])
    names, ordered = in_class_list_order(activity_index, ap, ["a", "b", "c", "d"])
    assert names == ["a", "b", "c"]
    np.testing.assert_array_equal(ordered, [[0.1, 0.2, 0.3], [0.5, 0.4, 0.6]])
    csv = Path(tiny_run["save_dir"], "per_class_ap_step1.csv").read_text().splitlines()[1:]
    listed = build_args("THUMOS", ["--device", "cpu"]).class_name_lst
    rows = [line.split(",")[0] for line in csv]
    assert rows == [name for name in listed if name in rows]


# ----------------------------------------------------------------------------- 13: demo numbers
def test_demo_check_line_places_the_final_step_against_the_range():
    line = runner.reports.demo_check_line
    assert line([0.1, 0.1525], (14.0, 16.0), set()) == (
        "demo check: final step 15.25, within the expected range for this demo (14.00-16.00 on "
        "any CPU)")
    assert line([0.3, 0.125], (14.0, 16.0), set()) == (
        "demo check: final step 12.50, outside the expected range for this demo (14.00-16.00): "
        "see docs/demo.md")
    assert line([0.15], (14.0, 16.0), {"seed", "epochs"}) == (
        "demo check: no expected range for a demo changed by --epochs, --seed")


def test_every_demo_has_an_expected_range_stated_in_its_docs(repo_root):
    demo_doc = (repo_root / "docs" / "demo.md").read_text()
    assert set(config.DEMO_EXPECTED_MAP) == set(config.DEMO_PRESETS)
    for dataset, (low, high) in config.DEMO_EXPECTED_MAP.items():
        assert 0 < low < high < 100
        assert f"{low:.2f}-{high:.2f}" in demo_doc, dataset


def test_a_changed_demo_ends_with_no_range(small_demo, tmp_path, capsys):
    argv = ["--demo", "--data_dir", str(small_demo), "--checkpoint_root", str(tmp_path / "runs"),
            "--epochs", "2", "--epochs_per_step", "1", "--num_steps", "1", "--device", "cpu"]
    runner.run("THUMOS", argv)
    last = capsys.readouterr().out.splitlines()[-1]
    assert last == ("demo check: no expected range for a demo changed by --data_dir, --epochs, "
                    "--epochs_per_step, --num_steps")
