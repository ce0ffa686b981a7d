"""Run-folder lock (utils.RunFolderLock): a second process on a folder in use stops at once (exit
2, one line naming the folder and the owner's pid); a lock left by a killed process does not block
the next run."""
import os
import subprocess
import sys
import time

import pytest

from config import REPO_ROOT, build_args
from utils import RunFolderBusy, RunFolderLock, UserError


def wait_for(condition, timeout=120.0):
    deadline = time.time() + timeout
    while not condition():
        if time.time() > deadline:
            pytest.fail("timed out")
        time.sleep(0.05)


def test_lock_names_folder_and_pid_and_stale_lock_is_taken_over(tmp_path, lock_holder):
    folder = str(tmp_path / "run")
    os.makedirs(folder)
    holder = lock_holder(folder)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunFolderBusy) as info:
            RunFolderLock(folder).acquire()
        message = str(info.value)
        assert isinstance(info.value, UserError) and "\n" not in message
        assert folder in message and f"pid {holder.pid}" in message
    finally:
        holder.kill()                                   # SIGKILL: the lock file stays behind
        holder.wait()
    assert os.path.exists(os.path.join(folder, ".lock"))
    with RunFolderLock(folder) as lock:                 # stale: taken over
        assert open(lock.path).read().strip() == str(os.getpid())


@pytest.fixture(scope="module")
def lock_data(make_tiny_data):
    """4 training and 3 test videos of 10 to 30 s, 16-d features."""
    return make_tiny_data(num_train=4, num_test=3, seed=2, durations=(10.0, 30.0), feature_dim=16)


@pytest.mark.slow
def test_second_entry_point_on_same_folder_exits_2_then_resume_after_sigkill(lock_data, tmp_path):
    argv = ["--data_dir", str(lock_data), "--checkpoint_root", str(tmp_path / "runs"),
            "--feature_dim", "16", "--num_steps", "0", "--epochs_per_step", "5", "--eval_freq",
            "1000", "--sample_segments_num", "16", "--batch_size", "2", "--device", "cpu"]
    save_dir = build_args("THUMOS", argv).save_dir
    lock_path = os.path.join(save_dir, ".lock")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    entry = [sys.executable, str(REPO_ROOT / "main_THUMOS.py")]
    first = subprocess.Popen(entry + argv + ["--epochs", "100000"], env=env, cwd=tmp_path,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: first.poll() is not None or (
            os.path.exists(lock_path) and open(lock_path).read().strip() == str(first.pid)))
        assert first.poll() is None, first.stderr.read()[-3000:]
        second = subprocess.run(entry + argv + ["--epochs", "1"], env=env, cwd=tmp_path,
                                capture_output=True, text=True, timeout=300)
        assert second.returncode == 2
        err = second.stderr.strip()
        assert err.count("\n") == 0 and err.startswith("error: ") and "Traceback" not in err
        assert save_dir in err and f"pid {first.pid}" in err
    finally:
        first.kill()
        first.communicate(timeout=60)
    # the killed run's lock does not block the next run (--no_resume: its --epochs differs from
    # the killed run's)
    resumed = subprocess.run(entry + argv + ["--epochs", "1", "--no_resume"], env=env,
                             cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]


@pytest.mark.slow
def test_resume_with_another_seed_is_refused(lock_data, tmp_path):
    """A run folder holds one seed: rerunning it with another --seed stops with a one-line error
    instead of resuming the first seed's run; the same command resumes."""
    argv = ["--data_dir", str(lock_data), "--checkpoint_root", str(tmp_path / "runs"),
            "--feature_dim", "16", "--num_steps", "0", "--epochs_per_step", "2", "--eval_freq",
            "1000", "--sample_segments_num", "16", "--batch_size", "2", "--device", "cpu",
            "--epochs", "1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    entry = [sys.executable, str(REPO_ROOT / "main_THUMOS.py")]
    first = subprocess.run(entry + argv + ["--seed", "3"], env=env, cwd=tmp_path,
                           capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr[-3000:]
    other = subprocess.run(entry + argv + ["--seed", "4"], env=env, cwd=tmp_path,
                           capture_output=True, text=True, timeout=300)
    err = other.stderr.strip()
    assert other.returncode == 2 and err.count("\n") == 0 and "Traceback" not in err
    assert "seed: 3 → 4" in err and build_args("THUMOS", argv).save_dir in err
    same = subprocess.run(entry + argv + ["--seed", "3"], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert same.returncode == 0, same.stderr[-3000:]
    assert "is finished" in same.stdout          # the same run, finished: nothing to resume
