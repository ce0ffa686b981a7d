"""Fault test: SIGKILL the tiny pipeline at random moments, rerun the same command, get the same
result.

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


def command(argv):
    return [sys.executable, "-c", LAUNCHER.format(root=str(REPO_ROOT)), *argv]


def checkpoint_states(save_dir):
    names = sorted(name for name in os.listdir(save_dir) if name.endswith(".pth"))
    return {name: torch.load(os.path.join(save_dir, name), weights_only=False) for name in names}


@pytest.mark.slow
def test_sigkill_at_random_moments_then_resume_gives_identical_result(make_tiny_data, tiny_argv,
                                                                      tmp_path):
    data_dir = make_tiny_data(num_train=10, num_test=6, seed=3, durations=(20.0, 50.0))

    def argv(run):
        return tiny_argv(data_dir, tmp_path / run, epochs=10, epochs_per_step=3)

    env = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    started = time.time()
    done = subprocess.run(command(argv("straight")), env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    straight_seconds = time.time() - started

    rng = random.Random(12345)
    kills = 0
    for _ in range(40):                                      # at most 40 attempts
        if kills >= 6:
            break
        process = subprocess.Popen(command(argv("faulty")), env=env,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        time.sleep(rng.uniform(0.3, 0.6 * straight_seconds))
        if process.poll() is None:
            process.kill()
            kills += 1
        process.communicate(timeout=60)
        if process.returncode == 0:                          # finished before the kill: start over
            break
    assert kills >= 5, f"only {kills} kills landed"

    final = subprocess.run(command(argv("faulty")), env=env, capture_output=True, text=True,
                           timeout=600)
    assert final.returncode == 0, final.stderr[-3000:]

    save_dirs = {run: build_args("THUMOS", argv(run)).save_dir for run in ("straight", "faulty")}
    straight, faulty = (checkpoint_states(save_dirs[run]) for run in ("straight", "faulty"))
    assert set(straight) == set(faulty)
    for name, state in straight.items():
        assert state["epoch"] == faulty[name]["epoch"], name
        assert state["best_mAP_per_step"] == faulty[name]["best_mAP_per_step"], name
        for key, value in state["model_state_dict"].items():
            assert torch.equal(value, faulty[name]["model_state_dict"][key]), f"{name}: {key}"
    # the record of every evaluation: each epoch once, the same numbers, however often it was killed
    records = {}
    for run, save_dir in save_dirs.items():
        with open(os.path.join(save_dir, "metrics.jsonl")) as handle:
            records[run] = [{k: v for k, v in json.loads(line).items() if k != "wall_s"}
                            for line in handle]
    epochs = [entry["epoch"] for entry in records["faulty"]]
    assert epochs == sorted(set(epochs)) and epochs[-1] == 9
    assert records["faulty"] == records["straight"]
    with open(os.path.join(save_dirs["faulty"], "results.json")) as handle:
        steps = json.load(handle)["steps"]
    assert [steps[str(k)]["best"]["average_mAP"] for k in range(3)] == [
        100 * value for value in straight["model_latest.pth"]["best_mAP_per_step"]]
