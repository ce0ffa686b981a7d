"""metrics.jsonl and results.json (engine/record.py) of a tiny run: what the log prints, no
duplicates after a kill between the record's append and the checkpoint save; --val_videos: held
out, never trained on, selected."""
import hashlib
import json
import os
import re
import sys

import pytest

from config import build_args
from dataset import VideoDataset
from engine import passes, training
from engine import run as runner
from utils import UserError


@pytest.fixture(scope="module")
def record_data(make_tiny_data):
    """5 of the 20 classes: enough videos per class that the mAP moves from epoch to epoch."""
    return make_tiny_data(classes=5)


@pytest.fixture(scope="module")
def record_argv(tiny_argv):
    """The tiny run at lr 0.003."""
    def make(data_dir, root, *extra):
        return tiny_argv(data_dir, root, *extra, lr=0.003)
    return make


def read_record(save_dir):
    with open(os.path.join(save_dir, "metrics.jsonl")) as handle:
        return [json.loads(line) for line in handle]


def without_wall(entries):
    return [{k: v for k, v in entry.items() if k != "wall_s"} for entry in entries]


def log_line(save_dir, prefix):
    with open(os.path.join(save_dir, "log.txt")) as handle:
        return [line for line in handle.read().splitlines() if line.startswith(prefix)][-1]


def test_record_matches_log_and_resume_after_kill_before_checkpoint_has_no_duplicate(
        record_data, record_argv, tmp_path, monkeypatch):
    straight = record_argv(record_data, tmp_path / "straight")
    best = runner.run("THUMOS", straight)
    save_dir = build_args("THUMOS", straight).save_dir
    entries = read_record(save_dir)
    assert len({e["average_mAP"] for e in entries}) > 2     # a record that can tell epochs apart
    # every epoch evaluated
    assert [(e["step"], e["epoch"]) for e in entries] == [(e // 2, e) for e in range(6)]
    assert all("val" not in e and {"total", "accuracy"} <= set(e["train"]) for e in entries)
    assert all(a["wall_s"] <= b["wall_s"] for a, b in zip(entries, entries[1:]))
    with open(os.path.join(save_dir, "results.json")) as handle:
        results = json.load(handle)
    # the final best per step equals what the log prints, and the record's evaluation of that epoch
    printed = [float(v) for v in re.findall(r"step \d+ (-?[\d.]+)",
                                            log_line(save_dir, "best average mAP per step:"))]
    steps = results["steps"]
    assert [float(f"{steps[str(k)]['best']['average_mAP']:.2f}") for k in range(3)] == printed
    assert [steps[str(k)]["best"]["average_mAP"] for k in range(3)] == [
        100 * value for value in best]
    for k in range(3):
        mine = [e for e in entries if e["step"] == k]
        top = max(e["average_mAP"] for e in mine)
        first_best = next(e for e in mine if e["average_mAP"] == top)
        assert steps[str(k)]["best"]["epoch"] == first_best["epoch"]
        assert steps[str(k)]["best"]["mAP"] == first_best["mAP"]
        assert steps[str(k)]["last"]["epoch"] == mine[-1]["epoch"]
        assert "val_selected" not in steps[str(k)]
        assert set(steps[str(k)]["best"]["averages"]) == {"0.1:0.5", "0.3:0.7"}
    assert "last epoch average mAP per step: " + ", ".join(
        f"step {k} {steps[str(k)]['last']['average_mAP']:.2f} (epoch {2 * k + 1})"
        for k in range(3)) == log_line(save_dir, "last epoch average mAP per step:")
    with open(os.path.join(save_dir, "config.json"), "rb") as handle:
        assert results["config_sha256"] == hashlib.sha256(handle.read()).hexdigest()
    assert results["validation"] is None and results["protocol"]["evaluated_videos"] == 8
    assert {"git_commit", "torch", "numpy", "python", "device", "wall_s"} <= set(results)
    assert log_line(save_dir, "evaluation protocol:").startswith(
        "evaluation protocol: split_test.txt lists 8 videos")

    # killed after epoch 3's evaluation was recorded, before any of its checkpoints was saved
    killed = record_argv(record_data, tmp_path / "killed")
    original = training.save_checkpoints

    def kill_at_epoch_3(run, parts, epoch, improved):
        if epoch == 3:
            raise KeyboardInterrupt
        return original(run, parts, epoch, improved)
    monkeypatch.setattr(training, "save_checkpoints", kill_at_epoch_3)
    with pytest.raises(KeyboardInterrupt):
        runner.run("THUMOS", killed)
    killed_dir = build_args("THUMOS", killed).save_dir
    assert [e["epoch"] for e in read_record(killed_dir)] == [0, 1, 2, 3]
    assert not os.path.exists(os.path.join(killed_dir, "results.json"))
    monkeypatch.setattr(training, "save_checkpoints", original)
    assert runner.run("THUMOS", killed) == best
    # epoch 3 once, as straight
    assert without_wall(read_record(killed_dir)) == without_wall(entries)
    with open(os.path.join(killed_dir, "results.json")) as handle:
        assert json.load(handle)["steps"] == steps
    # a finished run rerun: nothing to train, the record and results stay; it returns the best
    # of results.json, which keeps percent (x 100, then / 100: the last bit may round)
    assert runner.run("THUMOS", killed) == pytest.approx(best, rel=4 * sys.float_info.epsilon)
    assert without_wall(read_record(killed_dir)) == without_wall(entries)


def test_val_videos_held_out_never_trained_and_selected(record_data, record_argv, tmp_path,
                                                        monkeypatch):
    argv = record_argv(record_data, tmp_path, "--val_videos", "0.25")
    trained = set()
    original = passes.forward

    def recording_forward(model, batch, args):
        if model.training:
            trained.update(batch["vid_name"])
        return original(model, batch, args)
    monkeypatch.setattr(passes, "forward", recording_forward)
    runner.run("THUMOS", argv)
    args = build_args("THUMOS", argv)
    with open(os.path.join(args.save_dir, "val_videos.txt")) as handle:
        held_out = handle.read().split()
    train_list = (record_data / "split_train.txt").read_text().split()
    assert len(held_out) == 3 and set(held_out) < set(train_list)                 # 25 % of 12
    assert trained == set(train_list) - set(held_out)                    # and no held-out video
    with open(os.path.join(args.save_dir, "val_gt.json")) as handle:
        assert sorted(json.load(handle)["database"]) == sorted(held_out)
    with open(os.path.join(args.save_dir, "pseudo_proposals_step1.json")) as handle:
        assert set(held_out) <= set(json.load(handle)["results"])        # scored like test videos
    full = VideoDataset(args, "full", "uniform", held_out=held_out)
    assert not any(full.is_train_video(vid) for vid in held_out)         # predicted label sets
    entries = read_record(args.save_dir)
    with open(os.path.join(args.save_dir, "results.json")) as handle:
        results = json.load(handle)
    assert results["validation"]["videos"] == 3
    for k in range(3):
        mine = [e for e in entries if e["step"] == k]
        top = max(e["val"]["average_mAP"] for e in mine)
        chosen = next(e for e in mine if e["val"]["average_mAP"] == top)
        selected = results["steps"][str(k)]["val_selected"]
        assert (selected["epoch"], selected["average_mAP"], selected["val_average_mAP"]) == (
            chosen["epoch"], chosen["average_mAP"], top)
    line = log_line(args.save_dir, "validation-selected per step:")
    assert f"step 2 epoch {results['steps']['2']['val_selected']['epoch']} " in line
    # the folder is this held-out list's: resuming it without the flag is refused
    with pytest.raises(UserError, match=r"val_videos: \S+ → "):
        runner.run("THUMOS", record_argv(record_data, tmp_path))
