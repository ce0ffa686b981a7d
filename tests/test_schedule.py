"""engine/refinement.py: the evaluation schedule against the released rule written as a loop
(tests/oracles/schedule_loop.py)."""
from types import SimpleNamespace

import pytest

from engine.refinement import is_eval_epoch
from oracles.schedule_loop import released_eval_epochs

SCHEDULES = [  # (epochs, eval_freq): the demo, THUMOS, ActivityNet and small edge cases
    (60, 5), (800, 5), (100, 5), (10, 1), (9, 3), (12, 5), (1, 5), (3, 7),
]


@pytest.mark.parametrize("epochs, eval_freq", SCHEDULES)
def test_eval_epochs_equal_released_rule(epochs, eval_freq):
    args = SimpleNamespace(epochs=epochs, eval_freq=eval_freq)
    ours = [epoch for epoch in range(epochs) if is_eval_epoch(epoch, args)]
    assert ours == released_eval_epochs(epochs, eval_freq)


def test_eval_epochs_hand_computed():
    """Demo schedule (60 epochs, every 5): 4, 9, ..., 49, then 51..59 (the last 9), and 54, 59
    once."""
    args = SimpleNamespace(epochs=60, eval_freq=5)
    expected = [4, 9, 14, 19, 24, 29, 34, 39, 44, 49] + list(range(51, 60))
    assert [epoch for epoch in range(60) if is_eval_epoch(epoch, args)] == expected
    assert not is_eval_epoch(50, args)  # epochs - 10 is not evaluated (the released rule is strict)
