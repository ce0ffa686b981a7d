"""--val_videos parsing and the stratified, seeded choice; the evaluation protocol line (real THUMOS split)."""
import json

import numpy as np
import pytest

from eval.protocol import describe, protocol_line, range_averages
from utils import UserError
from validation import choose_held_out, parse_amount, read_id_file, strata, stratum_quotas


def test_parse_amount(tmp_path):
    assert parse_amount("", 100) is None and parse_amount("0", 100) is None
    assert parse_amount("20", 100) == ("count", 20)
    assert parse_amount("0.2", 100) == ("count", 20) and parse_amount("0.25", 10) == ("count", 2)   # round half even
    ids = tmp_path / "ids.txt"
    ids.write_text("a\n")
    assert parse_amount(str(ids), 100) == ("file", str(ids))
    for bad in ("1.0", "1.5", "-3", "100", "abc", "0.001"):
        with pytest.raises(UserError, match="--val_videos"):
            parse_amount(bad, 100)


def test_read_id_file_checks_ids(tmp_path):
    path = tmp_path / "ids.txt"
    path.write_text("c\na\n\n")
    assert read_id_file(path, ["a", "b", "c"]) == ["a", "c"]                     # training list order
    path.write_text("a\nzz\n")
    with pytest.raises(UserError, match="zz is not a video of split_train.txt"):
        read_id_file(path, ["a", "b"])
    path.write_text("a\nb\n")
    with pytest.raises(UserError, match="between 1 and 1"):
        read_id_file(path, ["a", "b"])


def test_strata_rarest_label_by_hand():
    labels = [["A"], ["A", "B"], ["B"], ["C"], ["A", "A"], []]                   # A: 3 videos, B: 2, C: 1
    assert strata(labels, ["A", "B", "C"]).tolist() == [0, 1, 1, 2, 0, 3]
    assert strata([["A", "B"], ["A", "B"]], ["B", "A"]).tolist() == [0, 0]       # tie: class list order


def quotas_loop(sizes, total):
    """Largest remainder written out: floors, then one more video to the strata in order of their
    remainder (largest first, earlier stratum on ties), skipping full strata, round after round."""
    exact = [total * size / sum(sizes) for size in sizes]
    quota = [min(int(np.floor(x)), size - 1) for x, size in zip(exact, sizes)]
    while sum(quota) < total:
        best = None
        for i, size in enumerate(sizes):
            if quota[i] < size - 1 and (best is None or exact[i] - quota[i] > exact[best] - quota[best]):
                best = i
        quota[best] += 1
    return quota


def test_stratum_quotas_by_hand_and_against_loop():
    assert stratum_quotas([5, 3, 2], 3).tolist() == [1, 1, 1]           # exact 1.5 .9 .6: floors 1 0 0, then .9, .6
    assert stratum_quotas([1, 9], 5).tolist() == [0, 5]                 # a one-video stratum keeps its video
    with pytest.raises(UserError, match="at most 8"):
        stratum_quotas([1, 9], 9)
    rng = np.random.default_rng(5)
    for _ in range(200):
        sizes = rng.integers(1, 12, size=rng.integers(1, 8)).tolist()
        total = int(rng.integers(0, sum(sizes) - len(sizes) + 1))
        quotas = stratum_quotas(sizes, total)
        assert quotas.tolist() == quotas_loop(sizes, total)
        assert quotas.sum() == total and (quotas <= np.asarray(sizes) - 1).all()


def test_choice_is_stratified_and_seeded(shared_data):
    """On the real THUMOS training labels: 20 % of every rarest-label stratum, a draw per seed."""
    database = json.loads((shared_data / "THUMOS14" / "gt.json").read_text())["database"]
    classes = (shared_data / "THUMOS14" / "classes.txt").read_text().split()
    names = (shared_data / "THUMOS14" / "split_train.txt").read_text().split()
    labels = [[ann["label"] for ann in database[vid]["annotations"]] for vid in names]
    chosen = choose_held_out(names, labels, classes, 40, seed=2)
    assert len(chosen) == 40 and chosen == [vid for vid in names if vid in set(chosen)]
    assert choose_held_out(names, labels, classes, 40, seed=2) == chosen
    assert choose_held_out(names, labels, classes, 40, seed=3) != chosen
    group = strata(labels, classes)
    held = np.isin(names, chosen)
    for g in np.unique(group):
        size = int((group == g).sum())
        assert abs(held[group == g].sum() - 0.2 * size) < 1 and held[group == g].sum() < size
    for c, name in enumerate(classes):                  # every class keeps most of its training videos
        having = np.array([name in set(x) for x in labels])
        assert held[having].sum() <= np.ceil(0.2 * having.sum()) + 2 and (having & ~held).any()


def test_range_averages():
    thresholds = np.arange(0.1, 1.0, 0.1)
    mAP = np.arange(1, 10) / 10.0                                        # 0.1 .. 0.9
    assert range_averages(thresholds, mAP, "THUMOS") == pytest.approx({"0.1:0.5": 0.3, "0.3:0.7": 0.5})
    assert range_averages(thresholds, mAP, "ActivityNet") == {}
    assert range_averages([0.1, 0.3, 0.5], [1, 2, 3], "THUMOS") == {}    # 0.2 missing: not that average


def test_protocol_names_skipped_videos_by_hand():
    database = {"a": {"subset": "test", "annotations": [{"label": "X"}, {"label": "Y"}]},
                "b": {"subset": "test", "annotations": [{"label": "X"}]},
                "c": {"subset": "validation", "annotations": [{"label": "Z"}]}}
    protocol = describe(database, "test", "split_test.txt", ["a", "c", "d"], np.arange(0.1, 1.0, 0.1), 7, "THUMOS")
    assert (protocol["split_videos"], protocol["evaluated_videos"], protocol["gt_videos"]) == (3, 1, 2)
    assert (protocol["gt_instances"], protocol["classes"]) == (3, 2)
    assert protocol["gt_not_in_split"] == [{"video": "b", "gt_instances": 1}]
    assert protocol["split_not_in_gt_subset"] == [{"video": "c", "gt_subset": "validation"},
                                                  {"video": "d", "gt_subset": None}]
    line = protocol_line(protocol)
    assert "lists 3 videos, 1 evaluated" in line and "b (1 GT)" in line and "c (subset 'validation')" in line
    assert "d (no gt.json entry)" in line and "tIoU 0.1:0.1:0.9, average over 0.1:0.7 (7 of 9 thresholds)" in line
    assert line.endswith("also 0.1:0.5 and 0.3:0.7")


def test_protocol_on_real_thumos_split(shared_data):
    root = shared_data / "THUMOS14"
    database = json.loads((root / "gt.json").read_text())["database"]
    split = (root / "split_test.txt").read_text().split()
    test_videos = [vid for vid, info in database.items() if info["subset"] == "test"]
    omitted = [vid for vid in test_videos if vid not in set(split)]
    protocol = describe(database, "test", "split_test.txt", split, np.arange(0.1, 1.0, 0.1), 7, "THUMOS")
    assert protocol["gt_videos"] == len(test_videos) and protocol["split_videos"] == len(split)
    assert protocol["gt_instances"] == sum(len(database[vid]["annotations"]) for vid in test_videos)
    assert [x["video"] for x in protocol["gt_not_in_split"]] == omitted
    line = protocol_line(protocol)
    for vid in ("video_test_0000270", "video_test_0001496"):           # gt.json has them, split_test.txt not
        assert vid in omitted and vid in line
    assert f"{len(split)} evaluated" in line and f"{protocol['gt_instances']} GT instances of 20 classes" in line
