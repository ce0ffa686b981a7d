"""eval/protocol.py: the averages over tIoU ranges and the evaluation protocol line, by hand and
on the real THUMOS split."""
import json

import numpy as np
import pytest

from eval.protocol import describe, protocol_line, range_averages

THUMOS_RANGES = [[0.1, 0.5], [0.3, 0.7]]          # the THUMOS preset's extra_average_ranges


def test_range_averages():
    thresholds = np.arange(0.1, 1.0, 0.1)
    mAP = np.arange(1, 10) / 10.0                                        # 0.1 .. 0.9
    assert range_averages(thresholds, mAP, THUMOS_RANGES) == pytest.approx(
        {"0.1:0.5": 0.3, "0.3:0.7": 0.5})
    assert range_averages(thresholds, mAP, []) == {}                  # the ActivityNet preset's
    # 0.2 missing: not that average
    assert range_averages([0.1, 0.3, 0.5], [1, 2, 3], THUMOS_RANGES) == {}


def test_protocol_names_skipped_videos_by_hand():
    database = {"a": {"subset": "test", "annotations": [{"label": "X", "segment": [0, 1]},
                                                        {"label": "Y", "segment": [2, 3]}]},
                "b": {"subset": "test", "annotations": [{"label": "X", "segment": [0, 1]}]},
                "c": {"subset": "validation", "annotations": [{"label": "Z", "segment": [0, 1]}]}}
    protocol = describe(database, "test", "split_test.txt", ["a", "c", "d"],
                        np.arange(0.1, 1.0, 0.1), 7, THUMOS_RANGES)
    assert (protocol["split_videos"], protocol["evaluated_videos"],
            protocol["gt_videos"]) == (3, 1, 2)
    assert (protocol["gt_instances"], protocol["classes"]) == (3, 2)
    assert protocol["gt_not_in_split"] == [{"video": "b", "gt_instances": 1}]
    assert protocol["split_not_in_gt_subset"] == [{"video": "c", "gt_subset": "validation"},
                                                  {"video": "d", "gt_subset": None}]
    line = protocol_line(protocol)
    assert "lists 3 videos, 1 evaluated" in line and "b (1 GT)" in line
    assert "c (subset 'validation')" in line
    assert "d (no gt.json entry)" in line
    assert "tIoU 0.1:0.1:0.9, average over 0.1:0.7 (7 of 9 thresholds)" in line
    assert line.endswith("also 0.1:0.5 and 0.3:0.7")


def test_videos_without_segments_are_predicted_not_scored_by_hand():
    """A listed video with labels but no segment, or without "annotations", is counted as
    predicted, not scored; its labels are no GT instances; one with an empty annotation list is
    evaluated (no action in it); with no segment at all the protocol is unscored."""
    database = {"a": {"subset": "test", "annotations": [{"label": "X", "segment": [0, 1]},
                                                        {"label": "Y"}]},
                "b": {"subset": "test", "annotations": [{"label": "X"}]},
                "c": {"subset": "test"},
                "d": {"subset": "test", "annotations": [{"label": "Z"}]},
                "e": {"subset": "test", "annotations": []}}
    protocol = describe(database, "test", "split_test.txt", ["a", "b", "c", "e"], [0.5], 1)
    assert (protocol["evaluated_videos"], protocol["unscored_videos"], protocol["gt_videos"],
            protocol["gt_instances"], protocol["classes"]) == (2, 2, 5, 1, 1)
    assert protocol["scored"] and protocol["gt_not_in_split"] == []        # d: nothing missed
    line = protocol_line(protocol)
    assert "lists 4 videos, 2 evaluated" in line
    assert "2 listed videos have no segment in gt.json (labels only, or no annotations): " \
           "predicted, not scored" in line
    assert "no mAP" not in line
    del database["a"]                 # the subset's last segment: nothing left to score
    unscored = describe(database, "test", "split_test.txt", ["b", "c", "e"], [0.5], 1)
    assert not unscored["scored"] and unscored["evaluated_videos"] == 1
    line = protocol_line(unscored)
    assert "2 listed videos have no segment" in line
    assert "no video has a segment: detections are written at every evaluation, not scored " \
           "(no mAP)" in line


def test_protocol_on_real_thumos_split(shared_data):
    root = shared_data / "THUMOS14"
    database = json.loads((root / "gt.json").read_text())["database"]
    split = (root / "split_test.txt").read_text().split()
    test_videos = [vid for vid, info in database.items() if info["subset"] == "test"]
    omitted = [vid for vid in test_videos if vid not in set(split)]
    protocol = describe(database, "test", "split_test.txt", split, np.arange(0.1, 1.0, 0.1), 7,
                        THUMOS_RANGES)
    assert protocol["gt_videos"] == len(test_videos) and protocol["split_videos"] == len(split)
    assert protocol["gt_instances"] == sum(len(database[vid]["annotations"]) for vid in test_videos)
    assert [x["video"] for x in protocol["gt_not_in_split"]] == omitted
    line = protocol_line(protocol)
    # gt.json has them, split_test.txt not
    for vid in ("video_test_0000270", "video_test_0001496"):
        assert vid in omitted and vid in line
    assert f"{len(split)} evaluated" in line
    assert f"{protocol['gt_instances']} GT instances of 20 classes" in line
