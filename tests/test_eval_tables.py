"""eval/tables.py: the per-class AP CSV and the aligned per-class table."""
import csv

import numpy as np
import pytest

from eval import tables

NAMES = ["BaseballPitch", "Billiards", "CliffDiving", "Diving"]


def test_per_class_csv_and_table(tmp_path):
    tious = np.arange(0.1, 1.0, 0.1)
    ap = np.random.default_rng(1).random((len(tious), len(NAMES)))
    path = tmp_path / "per_class_ap.csv"
    tables.write_per_class_ap_csv(path, NAMES, tious, ap, num_tiou_for_average=7)
    with open(path, newline="") as handle:
        rows = list(csv.reader(handle))
    header, body = rows[0], rows[1:]
    assert header[0] == "class" and len(header) == 1 + len(tious) + 1
    assert header[1] == "AP@0.10" and header[-1] == "avg(0.10-0.70)"
    assert [r[0] for r in body] == NAMES
    np.testing.assert_allclose([float(r[-1]) for r in body], ap[:7].mean(0), atol=1e-6)
    np.testing.assert_allclose([float(r[5]) for r in body], ap[4], atol=1e-6)
    # a {name: column} mapping (ANETDetection.activity_index) gives the same order by column
    mapping = {name: i for i, name in enumerate(NAMES)}
    tables.write_per_class_ap_csv(tmp_path / "b.csv", dict(reversed(mapping.items())), tious, ap, 7)
    assert (tmp_path / "b.csv").read_text() == path.read_text()
    table = tables.format_per_class_table(NAMES, tious, ap, 7)
    lines = table.splitlines()
    assert len(lines) == 1 + 1 + len(NAMES) + 2 and lines[-1].startswith("mean")
    assert f"{100 * ap[0, 0]:.2f}" in lines[2]
    with pytest.raises(ValueError):
        tables.write_per_class_ap_csv(tmp_path / "c.csv", NAMES[:2], tious, ap)
