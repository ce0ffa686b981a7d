"""End to end (engine/training.py): the refinement pipeline on a tiny synthetic dataset, resume,
and test mode."""
import json
import os
import subprocess
import sys
import time

import pytest
import torch

from config import REPO_ROOT, build_args
from dataset import VideoDataset
from engine import passes
from engine import run as runner


def final_state(save_dir):
    state = torch.load(os.path.join(save_dir, "model_latest.pth"), weights_only=False)
    return state


def test_entry_point_runs_all_steps(tiny_data, tiny_argv, tmp_path):
    argv = tiny_argv(tiny_data, tmp_path)
    done = subprocess.run([sys.executable, str(REPO_ROOT / "main_THUMOS.py"), *argv], cwd=tmp_path,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    save_dir = build_args("THUMOS", argv).save_dir
    files = set(os.listdir(save_dir))
    for name in ["model_latest.pth", "model_step0_last_epoch.pth", "model_step1_last_epoch.pth",
                 "model_step2_best_epoch.pth", "pseudo_proposals_step1.json",
                 "pseudo_proposals_step2.json", "config.json", "log.txt", "tensorboard"]:
        assert name in files, f"{name} missing from {sorted(files)}"
    assert final_state(save_dir)["epoch"] == 6
    assert final_state(save_dir)["step"] == 2
    log = open(os.path.join(save_dir, "log.txt")).read()
    assert "step 2 epoch 5" in log and "avg" in log
    # stdout: one line per evaluation (all 6 epochs are in the last 9), the per-class table once
    # per step; log.txt: the table after every evaluation
    out = done.stdout.splitlines()
    assert len([line for line in out if line.startswith("step ") and " epoch " in line]) == 6
    assert all("mAP@tIoU" in line and "total" in line and "best" in line
               for line in out if line.startswith("step ") and " epoch " in line)
    assert len([line for line in out if line.startswith("per-class AP, step")]) == 3
    assert len([line for line in out if line.startswith("mean")]) == 3
    assert len([line for line in log.splitlines() if line.startswith("mean")]) == 6
    assert len(out) <= 6 + 3 * 30 + 5
    with open(os.path.join(save_dir, "pseudo_proposals_step1.json")) as handle:
        assert set(json.load(handle)["results"]) == set(
            VideoDataset(build_args("THUMOS", argv), "full", "uniform").video_names)


# stop at the first epoch of step 1 (after its switch), or at its second one
@pytest.mark.parametrize("stop_epoch", [2, 3])
def test_resume_after_interrupt_matches_uninterrupted_run(tiny_data, tiny_argv, tmp_path,
                                                          monkeypatch, stop_epoch):
    straight = tiny_argv(tiny_data, tmp_path / "straight")
    best_straight = runner.run("THUMOS", straight)
    interrupted = tiny_argv(tiny_data, tmp_path / "interrupted")

    original = passes.train_one_epoch
    calls = {"n": 0}

    def stop_in_step_one(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == stop_epoch + 1:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(passes, "train_one_epoch", stop_in_step_one)
    with pytest.raises(KeyboardInterrupt):
        runner.run("THUMOS", interrupted)
    monkeypatch.setattr(passes, "train_one_epoch", original)
    best_resumed = runner.run("THUMOS", interrupted)

    assert best_resumed == best_straight
    a = final_state(build_args("THUMOS", straight).save_dir)
    b = final_state(build_args("THUMOS", interrupted).save_dir)
    assert a["epoch"] == b["epoch"] == 6
    for key, value in a["model_state_dict"].items():
        assert torch.equal(value, b["model_state_dict"][key]), key


def test_test_mode_reproduces_training_map(tiny_data, tiny_argv, tmp_path):
    argv = tiny_argv(tiny_data, tmp_path)
    best = runner.run("THUMOS", argv)
    save_dir = build_args("THUMOS", argv).save_dir
    detectors = runner.run("THUMOS", argv + ["--test", "--checkpoint", save_dir, "--visualize",
                                             "--visualize_videos", "2"])
    assert len(detectors) == 3
    assert detectors[-1].average_mAP == pytest.approx(best[-1], abs=1e-12)
    test_dir = os.path.join(save_dir, "test")               # test mode's own folder
    for step in range(3):                                   # --visualize: 2 plots per step
        assert len(os.listdir(os.path.join(test_dir, "visualize", f"test_step{step}"))) == 2
    rows = open(os.path.join(test_dir, "test_per_class_ap_step2.csv")).read().splitlines()
    assert len(rows) == 1 + len(detectors[-1].activity_index)      # header + one row per GT class
    summary = json.load(open(os.path.join(test_dir, "test_summary.json")))
    assert summary["step 2"]["average_mAP"] == pytest.approx(best[-1], abs=1e-12)


def test_training_checkpoint_must_be_a_file(tiny_data, tiny_argv, tmp_path, capsys):
    with pytest.raises(SystemExit):
        runner.main("THUMOS", tiny_argv(tiny_data, tmp_path) + ["--checkpoint", str(tmp_path)])
    assert "is not a checkpoint file" in capsys.readouterr().err


def test_test_mode_names_missing_step_file(tiny_data, tiny_argv, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        runner.main("THUMOS", tiny_argv(tiny_data, tmp_path) + ["--test", "--checkpoint",
                                                                 str(tmp_path)])
    assert exc.value.code == 2
    assert "model_step0_last_epoch.pth" in capsys.readouterr().err


def test_ctrl_c_waits_for_the_checkpoint_write_and_says_so(tiny_data, tiny_argv, tmp_path,
                                                           monkeypatch, capsys):
    """Ctrl-C while the background writer writes (slowed down here): one line says the run
    waits, the checkpoint is complete and recorded, no temporary is left."""
    from engine import checkpoint_files
    real_write, writing = checkpoint_files.write_checkpoint_files, []

    def slow_write(folder, names, data):
        writing.append(list(names))
        time.sleep(0.5)
        return real_write(folder, names, data)

    original = passes.train_one_epoch

    def interrupt_second_epoch(model, loss, optimizer, loader, args, step, epoch):
        if epoch == 1:
            raise KeyboardInterrupt
        return original(model, loss, optimizer, loader, args, step, epoch)

    monkeypatch.setattr(checkpoint_files, "write_checkpoint_files", slow_write)
    monkeypatch.setattr(passes, "train_one_epoch", interrupt_second_epoch)
    argv = tiny_argv(tiny_data, tmp_path)
    with pytest.raises(SystemExit) as exc:
        runner.main("THUMOS", argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 130 and writing
    assert err[0].startswith("waiting for the checkpoint write (") and "model_latest.pth" in err[0]
    assert err[1].startswith("interrupted: rerun the same command to resume")
    save_dir = build_args("THUMOS", argv).save_dir
    assert not [name for name in os.listdir(save_dir) if name.startswith(".tmp_")]
    checkpoint_files.verify_checkpoint(os.path.join(save_dir, "model_latest.pth"))
    assert final_state(save_dir)["epoch"] == 1


def test_precision_settings_are_recorded(tiny_data, tiny_argv, tmp_path):
    """config.json holds the precision keys, results.json what they mean on the run's device
    (a CPU run: float32 everywhere, whatever the TF32 keys say), and the process's TF32 flags are
    back to what they were."""
    flags = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    argv = tiny_argv(tiny_data, tmp_path, "--tf32", "true", "--amp", epochs=2, num_steps=0)
    runner.run("THUMOS", argv)
    save_dir = build_args("THUMOS", argv).save_dir
    config = json.load(open(os.path.join(save_dir, "config.json")))
    assert (config["tf32"], config["cudnn_tf32"], config["amp"], config["amp_dtype"]) == \
        (True, True, True, "bfloat16")
    results = json.load(open(os.path.join(save_dir, "results.json")))
    assert results["precision"] == {"device": "cpu", "autocast": "off", "matmul": "float32",
                                     "cudnn_conv": "float32", "loss": "float32"}
    assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == flags
