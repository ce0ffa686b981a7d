"""Make the repo root importable, point tests at ../shared/data when it exists, seed every test,
offer --reverse-order (run the collected tests last to first, to catch order dependence), and
hold the fixtures that more than one test file uses (tests import the module under test, never
another test file; the slow loop oracles are in tests/oracles/)."""
import random
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

SHARED_DATA = REPO_ROOT.parent / "shared" / "data"

# The tiny refinement run of the end-to-end tests: 32-d features, 6 epochs of which 2 per step
# (the base model and 2 refinement steps), evaluated every 2 epochs and in the last 9, so after
# every epoch.
TINY_RUN = {"feature_dim": 32, "epochs": 6, "epochs_per_step": 2, "num_steps": 2, "eval_freq": 2,
            "sample_segments_num": 48, "max_segments_num": 16, "batch_size": 4, "lr": 0.001,
            "device": "cpu"}

# A process that takes a run folder's lock and keeps it (a training run in another process).
HOLDER = """
import sys, time
sys.path.insert(0, {root!r})
from utils import RunFolderLock
RunFolderLock({folder!r}).acquire()
print("locked", flush=True)
time.sleep(120)
"""


def pytest_addoption(parser):
    parser.addoption("--reverse-order", action="store_true",
                     help="run the tests in reverse order (each must pass in any order)")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--reverse-order"):
        items.reverse()


@pytest.fixture(autouse=True)
def seeded_global_rngs():
    """Seed python, numpy and torch before every test, so a test that draws from a global
    generator (model initial weights, torch.randn) sees the same numbers alone, in the
    suite and in any order. Tests still seed their own generators for their data."""
    import numpy as np
    random.seed(0)
    np.random.seed(0)  # noqa: NPY002 (the global generator, on purpose)
    if "torch" in sys.modules:           # tests without torch stay free of its import time
        sys.modules["torch"].manual_seed(0)


@pytest.fixture(scope="session")
def repo_root():
    """The repository root (config.REPO_ROOT)."""
    import config
    return config.REPO_ROOT


@pytest.fixture
def shared_data():
    """Path to the real annotation files, or skip where they are absent (users' machines)."""
    if not (SHARED_DATA / "THUMOS14" / "gt.json").is_file():
        pytest.skip("../shared/data not available")
    return SHARED_DATA


# ----------------------------------------------------------------------------- configs
@pytest.fixture(scope="session")
def small_args():
    """small_args(dataset="THUMOS", *extra): a preset's config with 32-d features on the CPU."""
    import config

    def make(dataset="THUMOS", *extra):
        return config.build_args(dataset, ["--feature_dim", "32", "--num_heads", "8",
                                           "--device", "cpu", *extra])
    return make


# ----------------------------------------------------------------------------- tiny data and runs
@pytest.fixture(scope="session")
def make_tiny_data(tmp_path_factory):
    """make_tiny_data(num_train=12, num_test=8, seed=0, durations=(20, 60), classes=None,
    feature_dim=32): a tiny synthetic THUMOS-shaped dataset (its folder), generated once per
    session for each set of parameters; classes: the first N THUMOS classes (None: all 20).
    Tests read these folders and never change them."""
    from synthetic_data import default_classes, generate_synthetic_dataset
    made = {}

    def make(num_train=12, num_test=8, seed=0, durations=(20.0, 60.0), classes=None,
             feature_dim=32):
        key = (num_train, num_test, seed, tuple(durations), classes, feature_dim)
        if key not in made:
            root = tmp_path_factory.mktemp("tiny_data") / "THUMOS14"
            generate_synthetic_dataset(root, profile="THUMOS14", num_train=num_train,
                                       num_test=num_test, feature_dim=feature_dim, seed=seed,
                                       class_names=default_classes("THUMOS14")[:classes],
                                       durations=durations)
            made[key] = root
        return made[key]
    return make


@pytest.fixture(scope="session")
def tiny_data(make_tiny_data):
    """The tiny dataset of the end-to-end tests: 12 training and 8 test videos of 20 to 60 s,
    32-d features, all 20 THUMOS classes."""
    return make_tiny_data()


@pytest.fixture(scope="session")
def tiny_argv():
    """tiny_argv(data_dir, checkpoint_root, *extra, **values): the command line of a tiny run
    (TINY_RUN, a value given as key=value replacing the default, None dropping it), then extra."""
    def make(data_dir, checkpoint_root, *extra, **values):
        unknown = set(values) - set(TINY_RUN)
        assert not unknown, f"not a key of TINY_RUN: {sorted(unknown)}; pass it in extra"
        argv = ["--data_dir", str(data_dir), "--checkpoint_root", str(checkpoint_root)]
        for key, value in {**TINY_RUN, **values}.items():
            if value is not None:
                argv += [f"--{key}", str(value)]
        return argv + list(extra)
    return make


# ----------------------------------------------------------------------------- processes
@pytest.fixture
def lock_holder(repo_root):
    """lock_holder(folder): start a process that takes the folder's run lock, prints "locked" and
    keeps it (stdout is a pipe); it is killed at the end of the test if still running."""
    started = []

    def start(folder):
        holder = subprocess.Popen([sys.executable, "-c",
                                   HOLDER.format(root=str(repo_root), folder=str(folder))],
                                  stdout=subprocess.PIPE, text=True)
        started.append(holder)
        return holder
    yield start
    for holder in started:
        if holder.poll() is None:
            holder.kill()
        holder.wait()
        holder.stdout.close()
