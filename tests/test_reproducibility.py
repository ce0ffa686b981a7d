"""Bit-identical runs on one machine: the same seed gives the same checkpoints whatever the number
of DataLoader workers and whether the features are resident, and with --deterministic (on the
CPU the flag changes no number)."""
import os

import pytest
import torch

from config import build_args
from engine import passes
from engine import run as runner


@pytest.fixture(scope="module")
def repro_data(make_tiny_data):
    """10 training and 6 test videos of 20 to 50 s (seed 5). The tiny run (tiny_argv) has 6
    epochs, 2 per step: every step has a second epoch (persistent workers are reused there)."""
    return make_tiny_data(num_train=10, num_test=6, seed=5, durations=(20.0, 50.0))


def run_and_read(argv):
    """(best mAP per step, {checkpoint name: state}, the log's mAP lines) of one run."""
    best = runner.run("THUMOS", argv)
    save_dir = build_args("THUMOS", argv).save_dir
    states = {name: torch.load(os.path.join(save_dir, name), weights_only=False)
              for name in sorted(os.listdir(save_dir)) if name.endswith(".pth")}
    with open(os.path.join(save_dir, "log.txt")) as handle:
        # without the wall clock
        lines = [line.split(" | lr ")[-1] for line in handle if "mAP@tIoU" in line]
    return best, states, lines


@pytest.fixture(scope="module")
def reference(repro_data, tiny_argv, tmp_path_factory):
    return run_and_read(tiny_argv(repro_data, tmp_path_factory.mktemp("j0"), "--num_workers", "0"))


def assert_same_run(a, b):
    best_a, states_a, lines_a = a
    best_b, states_b, lines_b = b
    assert best_a == best_b
    assert lines_a == lines_b and len(lines_a) == 6
    assert set(states_a) == set(states_b) and "model_step2_best_epoch.pth" in states_a
    for name, state in states_a.items():
        assert state["epoch"] == states_b[name]["epoch"], name
        for key, value in state["model_state_dict"].items():
            assert torch.equal(value, states_b[name]["model_state_dict"][key]), f"{name}: {key}"
        assert state["rng"]["loader"].equal(states_b[name]["rng"]["loader"]), name
        assert state["rng"]["torch"].equal(states_b[name]["rng"]["torch"]), name


def test_same_run_with_two_workers(repro_data, tiny_argv, tmp_path, reference):
    """Batch order and each item's random sampling come from the run's generator in the main
    process, so the features read from disk by a DataLoader with -j 2 (feature_cache_gb 0;
    workers kept between epochs) repeat the default run (features resident, batches gathered
    from the store) bit for bit."""
    assert_same_run(reference, run_and_read(tiny_argv(repro_data, tmp_path, "--num_workers", "2",
                                                      "--feature_cache_gb", "0")))


def test_same_run_twice_and_with_deterministic(repro_data, tiny_argv, tmp_path, reference,
                                               monkeypatch):
    """Two CPU runs are bit-identical; --deterministic is on during the run, restored after, and
    changes no number on the CPU."""
    assert_same_run(reference, run_and_read(tiny_argv(repro_data, tmp_path / "again")))
    seen = []
    original = passes.train_one_epoch

    def recording(*args, **kwargs):
        seen.append(torch.are_deterministic_algorithms_enabled())
        return original(*args, **kwargs)

    monkeypatch.setattr(passes, "train_one_epoch", recording)
    before = torch.are_deterministic_algorithms_enabled()
    assert_same_run(reference, run_and_read(tiny_argv(repro_data, tmp_path / "det",
                                                      "--deterministic")))
    assert seen == [True] * 6
    assert torch.are_deterministic_algorithms_enabled() == before
