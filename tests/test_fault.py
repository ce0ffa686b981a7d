"""Fault tests: SIGKILL the tiny pipeline at random moments, or while the background writer
writes a checkpoint, rerun the same command, get the same result.

Saves are slowed down (a sleep before each atomic rename) so that some kills land while a
checkpoint or result file is being written.
"""
import json
import os
import random
import subprocess
import sys
import time

import pytest
import torch

from config import REPO_ROOT, build_args

# Runs the real entry point with os.replace slowed down (kills then often land mid-save).
LAUNCHER = """
import os, sys, time
sys.path.insert(0, {root!r})
real_replace = os.replace
def slow_replace(src, dst):
    time.sleep(0.05)
    real_replace(src, dst)
os.replace = slow_replace
from engine.run import main
main("THUMOS", sys.argv[1:])
"""
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}


def command(argv):
    return [sys.executable, "-c", LAUNCHER.format(root=str(REPO_ROOT)), *argv]


def checkpoint_states(save_dir):
    names = sorted(name for name in os.listdir(save_dir) if name.endswith(".pth"))
    return {name: torch.load(os.path.join(save_dir, name), weights_only=False) for name in names}


def records(save_dir):
    with open(os.path.join(save_dir, "metrics.jsonl")) as handle:
        return [{k: v for k, v in json.loads(line).items() if k != "wall_s"} for line in handle]


@pytest.fixture(scope="module")
def straight(make_tiny_data, tiny_argv, tmp_path_factory):
    """The uninterrupted run: argv(root) for a run under root, its seconds, its folder."""
    data_dir = make_tiny_data(num_train=10, num_test=6, seed=3, durations=(20.0, 50.0))

    def argv(root):
        return tiny_argv(data_dir, root, epochs=10, epochs_per_step=3)

    root = tmp_path_factory.mktemp("straight")
    started = time.time()
    done = subprocess.run(command(argv(root)), env=ENV, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return argv, time.time() - started, build_args("THUMOS", argv(root)).save_dir


def assert_same_as_straight(straight, faulty_root):
    """Rerun the faulty command to its end; checkpoints and record equal the straight run's."""
    argv, _, straight_dir = straight
    final = subprocess.run(command(argv(faulty_root)), env=ENV, capture_output=True, text=True,
                           timeout=600)
    assert final.returncode == 0, final.stderr[-3000:]
    faulty_dir = build_args("THUMOS", argv(faulty_root)).save_dir
    expected, got = checkpoint_states(straight_dir), checkpoint_states(faulty_dir)
    assert set(expected) == set(got)
    for name, state in expected.items():
        assert state["epoch"] == got[name]["epoch"], name
        assert state["best_mAP_per_step"] == got[name]["best_mAP_per_step"], name
        for key, value in state["model_state_dict"].items():
            assert torch.equal(value, got[name]["model_state_dict"][key]), f"{name}: {key}"
    # the record of every evaluation: each epoch once, the same numbers, however often it was killed
    epochs = [entry["epoch"] for entry in records(faulty_dir)]
    assert epochs == sorted(set(epochs)) and epochs[-1] == 9
    assert records(faulty_dir) == records(straight_dir)
    with open(os.path.join(faulty_dir, "results.json")) as handle:
        steps = json.load(handle)["steps"]
    assert [steps[str(k)]["best"]["average_mAP"] for k in range(3)] == [
        100 * value for value in expected["model_latest.pth"]["best_mAP_per_step"]]


@pytest.mark.slow
def test_sigkill_at_random_moments_then_resume_gives_identical_result(straight, tmp_path):
    argv, straight_seconds, _ = straight
    rng = random.Random(12345)
    kills = 0
    for _ in range(40):                                      # at most 40 attempts
        if kills >= 6:
            break
        process = subprocess.Popen(command(argv(tmp_path)), env=ENV,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        time.sleep(rng.uniform(0.3, 0.6 * straight_seconds))
        if process.poll() is None:
            process.kill()
            kills += 1
        process.communicate(timeout=60)
        if process.returncode == 0:                          # finished before the kill: start over
            break
    assert kills >= 5, f"only {kills} kills landed"
    assert_same_as_straight(straight, tmp_path)


def writing_checkpoint(save_dir):
    """True while a checkpoint's temporary file exists (.tmp_NAME.pth.XXXX): the background
    writer is writing."""
    names = os.listdir(save_dir) if os.path.isdir(save_dir) else []
    return any(name.startswith(".tmp_") and ".pth." in name for name in names)


@pytest.mark.slow
def test_sigkill_during_a_background_checkpoint_write(straight, tmp_path):
    """Kill the moment a checkpoint's temporary file appears: the background writer is then
    writing while the training thread goes on. Attempt k kills during its (k+1)-th write, so the
    run gets further each time; then the same result as the uninterrupted run."""
    argv, _, _ = straight
    save_dir = build_args("THUMOS", argv(tmp_path)).save_dir
    kills = 0
    for attempt in range(3):
        if os.path.isdir(save_dir):        # the killed write's temporary: the run removes it too
            for name in os.listdir(save_dir):
                if name.startswith(".tmp_"):
                    os.remove(os.path.join(save_dir, name))
        process = subprocess.Popen(command(argv(tmp_path)), env=ENV,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        writes = 0
        while process.poll() is None:
            if writing_checkpoint(save_dir):
                writes += 1
                if writes > attempt:
                    process.kill()
                    kills += 1
                    break
                while process.poll() is None and writing_checkpoint(save_dir):
                    time.sleep(0.001)
            time.sleep(0.001)
        process.communicate(timeout=60)
        assert process.returncode != 0, "the run ended before the kill"
    assert kills == 3
    assert_same_as_straight(straight, tmp_path)
