"""engine/reports.py: the summary JSON of test mode (merged step by step), read back for the
mAP-over-steps plot (engine/plots.py)."""
import json

import numpy as np
import pytest

from engine import plots, reports


def test_summary_json_merge_keeps_earlier_steps(tmp_path):
    path = tmp_path / "summary.json"
    tious = np.arange(0.1, 0.4, 0.1)
    reports.write_summary_json(path, {"step 0": {"mAP": np.array([0.5, 0.4, 0.3]),
                                                 "average_mAP": np.float64(0.4),
                                                 "tiou_thresholds": tious}})
    reports.write_summary_json(path, {"step 1": {"mAP": [0.6, 0.5, 0.4], "average_mAP": 0.5,
                                                 "tiou_thresholds": tious.tolist()}})
    reports.write_summary_json(path, {"step 1": {"mAP": [0.7, 0.6, 0.5], "average_mAP": 0.6,
                                                 "tiou_thresholds": tious.tolist()}})
    data = json.loads(path.read_text())
    assert sorted(data) == ["step 0", "step 1"]
    assert data["step 0"]["average_mAP"] == pytest.approx(0.4)
    assert data["step 1"]["mAP"] == [0.7, 0.6, 0.5]
    per_step = plots.summary_to_per_step(reports.read_summary_json(path))
    assert list(per_step) == [0, 1] and per_step[1][2] == pytest.approx(0.6)
    assert reports.read_summary_json(tmp_path / "missing.json") == {}
