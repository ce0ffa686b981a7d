"""Every kind of bad input ends in exit code 2 and one clear line naming the file or key (no
traceback)."""
import errno
import json
import os

import numpy as np
import pytest
import torch

from config import build_args
from engine import passes
from engine import run as runner
from eval.__main__ import main as eval_main
from model import ASMLoc, ASMLocBase
from synthetic_data import generate_synthetic_dataset

D = 32


@pytest.fixture
def data_dir(tmp_path):
    root = tmp_path / "THUMOS14"
    generate_synthetic_dataset(root, profile="THUMOS14", num_train=4, num_test=3, feature_dim=D,
                               seed=1, durations=(10.0, 30.0))
    return root


def argv_for(data_dir, tmp_path, *extra):
    return ["--data_dir", str(data_dir), "--checkpoint_root", str(tmp_path / "runs"),
            "--feature_dim", str(D), "--epochs", "2", "--epochs_per_step", "1", "--num_steps", "1",
            "--eval_freq", "1", "--sample_segments_num", "32", "--batch_size", "2",
            "--device", "cpu", *extra]


def run_main(argv, capsys, dataset="THUMOS"):
    """Run the entry point; return (exit code, the stderr message)."""
    with pytest.raises(SystemExit) as exc:
        runner.main(dataset, argv)
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    assert err.startswith("error: ")
    return exc.value.code, err


def first_video(data_dir, split="train"):
    return (data_dir / f"split_{split}.txt").read_text().split()[0]


def corrupt_feature(data_dir, array=None, raw=None):
    path = data_dir / "train" / f"{first_video(data_dir)}.npy"
    if raw is not None:
        path.write_bytes(raw)
    else:
        np.save(path, array)
    return path


def edit_gt(data_dir, change):
    gt = json.loads((data_dir / "gt.json").read_text())
    change(gt)
    (data_dir / "gt.json").write_text(json.dumps(gt))


CASES = {
    "missing data folder": (lambda d: d.rename(d.with_name("elsewhere")),
                            ["not found", "download", "train/VID.npy"]),
    "video without features": (lambda d: (d / "train" / f"{first_video(d)}.npy").unlink(),
                               ["is missing"]),
    "video without gt entry": (lambda d: edit_gt(d, lambda gt: gt["database"].pop(first_video(d))),
                               ["has no entry in"]),
    "truncated npy": (lambda d: corrupt_feature(
        d, raw=(d / "test" / f"{first_video(d, 'test')}.npy").read_bytes()[:200]),
        ["not a readable .npy"]),
    "not an npy": (lambda d: corrupt_feature(d, raw=b"hello, these are not features"),
                   ["not a readable .npy"]),
    "wrong rank": (lambda d: corrupt_feature(d, np.zeros(10, np.float32)), ["expected a 2-D"]),
    "wrong dimension": (lambda d: corrupt_feature(d, np.zeros((10, 16), np.float32)),
                        ["dimension 16", "--feature_dim"]),
    "wrong dtype": (lambda d: corrupt_feature(d, np.zeros((10, D), np.int32)),
                    ["dtype int32", "floating point"]),
    "nan features": (lambda d: corrupt_feature(d, np.full((10, D), np.nan, np.float32)),
                     ["NaN or inf"]),
    "gt not json": (lambda d: (d / "gt.json").write_text("{not json"),
                    ["gt.json", "not valid JSON"]),
    "gt without database": (lambda d: (d / "gt.json").write_text('{"version": 1}'),
                            ["gt.json", "database"]),
    "unknown label": (lambda d: edit_gt(d, lambda gt: gt["database"][first_video(d)]
                                        ["annotations"].append({"segment": [1.0, 2.0],
                                                                "label": "Juggling"})),
                      ["'Juggling'", "class list"]),
    "empty split": (lambda d: (d / "split_test.txt").write_text("\n"),
                    ["split_test.txt", "is empty"]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_data(case, data_dir, tmp_path, capsys):
    damage, fragments = CASES[case]
    damage(data_dir)
    code, err = run_main(argv_for(data_dir, tmp_path), capsys)
    assert code == 2
    for fragment in fragments:
        assert fragment in err, err
    # "missing data folder" prints the expected tree
    assert len(err.splitlines()) == 1 or case == "missing data folder"


@pytest.mark.parametrize("extra, fragment", [(["--no_such_key", "3"], "--no_such_key"),
                                             (["--epochs", "3.5"], "--epochs"),
                                             (["-b", "0"], "--batch_size must be at least 1"),
                                             (["--epochs", "0"], "--epochs must be at least 1")])
def test_bad_config(extra, fragment, data_dir, tmp_path, capsys):
    code, err = run_main(argv_for(data_dir, tmp_path, *extra), capsys)
    assert code == 2 and fragment in err


def save_fake_checkpoints(folder, model_by_step):
    folder.mkdir(parents=True, exist_ok=True)
    for name, model in model_by_step.items():
        torch.save({"epoch": 1, "model_state_dict": model.state_dict(), "optimizer": {},
                    "best_test_mAP": np.float64(0.1)}, folder / name)


def test_checkpoint_folder_missing_step_file(data_dir, tmp_path, capsys):
    args = build_args("THUMOS", argv_for(data_dir, tmp_path))
    save_fake_checkpoints(tmp_path / "ckpt",
                          {"model_step0_last_epoch.pth": ASMLocBase.from_config(args)})
    code, err = run_main(argv_for(data_dir, tmp_path, "--test", "--checkpoint",
                                  str(tmp_path / "ckpt")), capsys)
    assert code == 2 and "model_step1_best_epoch.pth" in err and "missing" in err


@pytest.mark.parametrize("kind", ["other dataset", "other model kind"])
def test_checkpoint_of_other_dataset_or_model(kind, data_dir, tmp_path, capsys):
    thumos = build_args("THUMOS", argv_for(data_dir, tmp_path))
    anet = build_args("ActivityNet", ["--feature_dim", str(D), "--device", "cpu"])
    step0 = ASMLocBase.from_config(anet) if kind == "other dataset" else ASMLoc.from_config(thumos)
    save_fake_checkpoints(tmp_path / "ckpt",
                          {"model_step0_last_epoch.pth": step0,
                           "model_step1_best_epoch.pth": ASMLoc.from_config(thumos)})
    code, err = run_main(argv_for(data_dir, tmp_path, "--test", "--checkpoint",
                                  str(tmp_path / "ckpt")), capsys)
    assert code == 2 and "model_step0_last_epoch.pth" in err
    assert (("ActivityNet" in err) if kind == "other dataset"
            else ("full" in err or "MHSA" in err)), err


def test_prediction_file_without_results(tmp_path, capsys):
    gt = {"version": "x", "database": {"v1": {
        "subset": "test", "duration": 10.0,
        "annotations": [{"segment": [1.0, 2.0], "label": "Diving"}]}}}
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "pred.json").write_text(json.dumps({"version": "x", "external_data": {}}))
    code = eval_main(["--gt", str(tmp_path / "gt.json"), "--pred", str(tmp_path / "pred.json")])
    err = capsys.readouterr().err
    assert code != 0 and "results" in err and "pred.json" in err and "Traceback" not in err


def test_output_folder_not_writable(data_dir, tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    code, err = run_main(argv_for(data_dir, tmp_path) + ["--checkpoint_root", str(blocker)], capsys)
    assert code == 2 and "not writable" in err and str(blocker) in err


def test_disk_full_while_saving_keeps_previous_checkpoint(data_dir, tmp_path, capsys, monkeypatch):
    argv = argv_for(data_dir, tmp_path, "--num_steps", "0", "--epochs", "1")
    runner.main("THUMOS", argv)
    latest = os.path.join(build_args("THUMOS", argv).save_dir, "model_latest.pth")
    before = open(latest, "rb").read()

    def full_disk(obj, handle):
        handle.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    code, err = run_main(argv + ["--no_resume"], capsys)
    assert code == 2 and "No space left on device" in err
    assert open(latest, "rb").read() == before
    assert not [name for name in os.listdir(os.path.dirname(latest)) if name.startswith(".tmp_")]


def test_unreadable_latest_checkpoint_falls_back_to_step_file(data_dir, tmp_path, capsys,
                                                              monkeypatch):
    argv = argv_for(data_dir, tmp_path)
    original, calls = passes.train_one_epoch, []

    def stop_in_second_epoch(*args, **kwargs):        # the run is interrupted after its first epoch
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(*args, **kwargs)
    monkeypatch.setattr(passes, "train_one_epoch", stop_in_second_epoch)
    with pytest.raises(SystemExit):
        runner.main("THUMOS", argv)
    monkeypatch.setattr(passes, "train_one_epoch", original)
    save_dir = build_args("THUMOS", argv).save_dir
    open(os.path.join(save_dir, "model_latest.pth"), "wb").write(b"garbage")
    runner.main("THUMOS", argv)
    out = capsys.readouterr().out
    assert "model_latest.pth could not be read" in out and "falling back to" in out
    assert torch.load(os.path.join(save_dir, "model_latest.pth"),
                      weights_only=False)["epoch"] == 2
