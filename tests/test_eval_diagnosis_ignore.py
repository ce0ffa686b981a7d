"""The bins' ignore rule of the diagnosis, both ways: per tIoU (default, DETAD's paper) and at
every tIoU once at one (`ignore_any_tiou`, DETAD's released code). By hand, and the vectorised
version against the loop oracle (eval/reference_diagnosis.py) on random inputs.

Tolerance as in test_eval_diagnosis.py: APs are sums of at most #GT terms in [0, 1], so float64
results agree to a few #GT * eps; atol 1e-12 is far below any real difference (1 / #GT >= 1e-3).
"""
import json

import numpy as np
import pytest
from test_eval_diagnosis import THRESHOLDS, TABLE, gt_file, pred_dict, random_case, run_diagnosis, write_case

from config import build_args
from eval.__main__ import main as eval_main
from eval.detection import ANETDetection
from eval.diagnosis import diagnose_detector
from eval.diagnosis_report import diagnose_evaluation
from eval.reference_diagnosis import loop_diagnose

ATOL = 1e-12


def hand_case(tmp_path):
    """Class a: short GT S = [0, 4], long GT L = [10, 30]; bins short (0, 5], long (5, inf); tIoU 0.1, 0.5.

    p1 (0.9) [12, 16]: tIoU 0.2 with L -> matches L at 0.1 only, unmatched at 0.5
    p2 (0.8) [0, 4]:   matches S at both thresholds
    p3 (0.7) [10, 30]: L is taken by p1 at 0.1 (unmatched there), matches L at 0.5
    """
    gt = gt_file(tmp_path, {"v": {"subset": "test", "duration": 100, "annotations": [
        {"segment": [0, 4], "label": "a"}, {"segment": [10, 30], "label": "a"}]}})
    pred = pred_dict({"v": [("a", 0.9, [12, 16]), ("a", 0.8, [0, 4]), ("a", 0.7, [10, 30])]})
    return gt, pred


def hand_rows(tmp_path, ignore_any_tiou):
    gt, pred = hand_case(tmp_path)
    det = ANETDetection(gt, pred, [0.1, 0.5], "test", "THUMOS", num_tiou_for_average=2)
    table = {"length": ((0, 5, float("inf")), ("short", "long"))}
    diag = diagnose_detector(det, gt, 0.5, bin_table=table, ignore_any_tiou=ignore_any_tiou)
    return {r["bin"]: r for r in diag.by_characteristic.to_dict("records")}


def test_prediction_outside_the_bin_at_one_threshold_by_hand(tmp_path):
    """Short bin (1 GT, N = 2 GT / 1 class = 2 for AP_N):
    per tIoU: 0.1: p1 ignored, p2 hit, p3 FP -> AP 1; 0.5: p1 FP, p2 hit, p3 ignored -> AP 1/2,
              AP_N 2 / (2 + 1) = 2/3; average 3/4, AP_N average 5/6.
    any tIoU: p1 (L at 0.1) and p3 (L at 0.5) are ignored at both -> p2 alone: AP 1 and 1, average 1.
    Long bin: p2 is matched outside (S) at both thresholds, so both rules agree:
              0.1: p1 hit, p3 FP -> 1; 0.5: p1 FP, p3 hit -> 1/2; average 3/4.
    All (2 GT): nothing ignored: 0.1: hit, hit, FP -> 1; 0.5: FP, hit, hit -> precision 1/2 at
              recall 1/2, 2/3 at recall 1 -> interpolated (1/2 + 1/2) * 2/3 = 2/3.
    """
    per, anyt = hand_rows(tmp_path, False), hand_rows(tmp_path, True)
    assert (per["short"]["mAP@0.10"], per["short"]["mAP@0.50"]) == pytest.approx((1.0, 0.5), abs=ATOL)
    assert per["short"]["avg_mAP"] == pytest.approx(0.75, abs=ATOL)
    assert per["short"]["avg_mAP_N"] == pytest.approx((1 + 2 / 3) / 2, abs=ATOL)
    assert (anyt["short"]["mAP@0.10"], anyt["short"]["mAP@0.50"]) == pytest.approx((1.0, 1.0), abs=ATOL)
    assert anyt["short"]["avg_mAP"] == pytest.approx(1.0, abs=ATOL)
    assert anyt["short"]["avg_mAP_N"] == pytest.approx(1.0, abs=ATOL)
    for rows in (per, anyt):
        assert (rows["long"]["mAP@0.10"], rows["long"]["mAP@0.50"]) == pytest.approx((1.0, 0.5), abs=ATOL)
        assert rows["long"]["avg_mAP"] == pytest.approx(0.75, abs=ATOL)
        assert (rows["all"]["mAP@0.10"], rows["all"]["mAP@0.50"]) == pytest.approx((1.0, 2 / 3), abs=ATOL)
        assert rows["short"]["recall"] == 1.0                # recall does not depend on the rule


@pytest.mark.filterwarnings("ignore:.*not a ground-truth class")
@pytest.mark.parametrize("seed,tied", [(20, False), (21, True), (22, False), (23, True)])
def test_both_rules_match_loop_oracle(tmp_path, seed, tied):
    gt, pred = random_case(np.random.default_rng(seed), tied)
    gt_path, _ = write_case(tmp_path, gt, pred)
    averages = {}
    for ignore_any_tiou in (False, True):
        det = ANETDetection(gt_path, pred, THRESHOLDS, "test", "THUMOS", num_tiou_for_average=3)
        diag = diagnose_detector(det, gt_path, 0.5, bin_table=TABLE, ignore_any_tiou=ignore_any_tiou)
        rows, _ = loop_diagnose(gt, pred, THRESHOLDS, "test", TABLE, 0.5, 3, ignore_any_tiou=ignore_any_tiou)
        got = diag.by_characteristic.to_dict("records")
        assert [(r["characteristic"], r["bin"]) for r in got] == [(r["characteristic"], r["bin"]) for r in rows]
        for mine, ref in zip(got, rows):
            for key, want in ref.items():
                if key.startswith(("mAP@", "avg_", "recall")):
                    assert mine[key] == pytest.approx(want, abs=ATOL), (ignore_any_tiou, mine["bin"], key)
        averages[ignore_any_tiou] = np.array([r["avg_mAP"] for r in got if r["gt_count"]])
    assert np.abs(averages[True] - averages[False]).max() > 1e-3      # the cases exercise the difference


@pytest.mark.filterwarnings("ignore:.*not a ground-truth class")
def test_default_is_per_tiou_and_switches_reach_the_diagnosis(tmp_path, capsys):
    gt, pred = random_case(np.random.default_rng(24), tied=False)
    gt_path, pred_path = write_case(tmp_path, gt, pred)
    det = ANETDetection(gt_path, pred, THRESHOLDS, "test", "THUMOS", num_tiou_for_average=3)
    default = diagnose_detector(det, gt_path, bin_table=TABLE)
    assert not default.ignore_any_tiou
    assert default.by_characteristic.equals(run_diagnosis(gt_path, pred).by_characteristic)
    assert build_args("THUMOS", ["--ignore_any_tiou"]).ignore_any_tiou
    assert not build_args("THUMOS", []).ignore_any_tiou
    text = diagnose_evaluation(det, gt_path, tmp_path / "run", "step0_", ignore_any_tiou=True)
    assert "ignored at every tIoU once at one" in text
    assert json.loads((tmp_path / "run" / "step0_diagnosis.json").read_text())["ignore_any_tiou"] is True
    out = tmp_path / "cli"
    assert eval_main(["--gt", str(gt_path), "--pred", str(pred_path), "--subset", "test", "--diagnose",
                      "--ignore_any_tiou", "--out", str(out), "--no_per_class"]) == 0
    assert "ignored at every tIoU once at one" in capsys.readouterr().out
    assert json.loads((out / "diagnosis.json").read_text())["ignore_any_tiou"] is True
    with pytest.raises(SystemExit):                          # the switch alone would change nothing
        eval_main(["--gt", str(gt_path), "--pred", str(pred_path), "--ignore_any_tiou"])
    assert "add --diagnose" in capsys.readouterr().err
