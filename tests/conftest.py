"""Make the repo root importable, point tests at ../shared/data when it exists, seed every test,
and offer --reverse-order (run the collected tests last to first, to catch order dependence)."""
import random
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


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


@pytest.fixture
def shared_data():
    """Path to the real annotation files, or skip where they are absent (users' machines)."""
    if not (SHARED_DATA / "THUMOS14" / "gt.json").is_file():
        pytest.skip("../shared/data not available")
    return SHARED_DATA
