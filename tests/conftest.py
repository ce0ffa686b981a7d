"""Make the repo root importable and point tests at ../shared/data when it exists."""
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


@pytest.fixture
def shared_data():
    """Path to the real annotation files, or skip where they are absent (users' machines)."""
    if not (SHARED_DATA / "THUMOS14" / "gt.json").is_file():
        pytest.skip("../shared/data not available")
    return SHARED_DATA
