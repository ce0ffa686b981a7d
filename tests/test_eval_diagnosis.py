"""DETAD-style diagnosis (eval/diagnosis.py) against the slow loop oracle
(tests/oracles/diagnosis_loop.py, written from the definitions), hand-computed cases for every
error type and bin rule, consistency with the evaluator, the CLI and bad input; the bins' ignore
rule both ways: per tIoU (default, DETAD's paper) and at every tIoU once at one
(`ignore_any_tiou`, DETAD's released code), by hand and against the loop oracle.

Tolerances: APs are sums of at most #GT terms in [0, 1] computed in a different order by the
oracle, so float64 results agree to a few #GT * eps; atol 1e-12 is far above that and far below
any real difference (1 / #GT >= 1e-3 here).
"""
import json
import warnings

import numpy as np
import pytest

from config import build_args
from eval.__main__ import main as eval_main
from eval.detection import ANETDetection, class_order, match_predictions
from eval.diagnosis import (BIN_TABLE, ERROR_TYPES, assign_bins, diagnose, diagnose_detector,
                            match_to_gt, short_action_mAP, short_action_mAP_of)
from eval.diagnosis_report import diagnose_evaluation
from oracles.diagnosis_loop import loop_diagnose

ATOL = 1e-12
# XL stays empty
TABLE = {"length": ((0, 2, 5, 10, 500, float("inf")), ("XS", "S", "M", "L", "XL")),
         "coverage": ((0, 0.05, 0.1, float("inf")), ("S", "M", "L")),
         "instances": ((0, 2, 4, float("inf")), ("S", "M", "L"))}
THRESHOLDS = np.array([0.1, 0.3, 0.5, 0.7])


# ----------------------------------------------------------------------------- random data
def random_case(rng, tied):
    classes = [f"c{i}" for i in range(4)]
    database = {}
    for v in range(7):
        duration = float(rng.uniform(30, 100))
        anns = []
        for _ in range(int(rng.integers(0, 7))):
            length = float(np.exp(rng.uniform(np.log(0.5), np.log(25))))
            start = float(rng.uniform(0, duration - length))
            anns.append({"segment": [start, start + length],
                         "label": classes[int(rng.integers(0, 2 + v % 3))]})
        database[f"v{v}"] = {"subset": "test", "duration": duration, "annotations": anns}
    database["train0"] = {"subset": "train", "duration": 50.0,
                          "annotations": [{"segment": [1.0, 5.0], "label": "c0"}]}
    results = {}
    for vid in list(database) + ["unknown"]:
        plist = []
        for ann in database.get(vid, {"annotations": []})["annotations"]:
            for _ in range(int(rng.integers(0, 4))):
                s, e = ann["segment"]
                jit = rng.normal(0, 0.25 * (e - s) + 0.2, 2)
                label = ann["label"] if rng.random() < 0.7 else classes[int(rng.integers(0, 4))]
                plist.append({"label": label, "score": 0.0,
                              "segment": [s + jit[0], max(e + jit[1], s + jit[0] + 0.1)]})
        for _ in range(int(rng.integers(0, 5))):
            s = float(rng.uniform(0, 90))
            plist.append({"label": classes[int(rng.integers(0, 4))], "score": 0.0,
                          "segment": [s, s + rng.uniform(0.3, 15)]})
        for p in plist:
            p["score"] = float(np.round(rng.random(), 1) if tied else rng.random())
        results[vid] = plist
    gt = {"version": "t", "taxonomy": [], "database": database}
    return gt, {"version": "t", "results": results, "external_data": {}}


def write_case(tmp_path, gt, pred):
    gt_path, pred_path = tmp_path / "gt.json", tmp_path / "pred.json"
    gt_path.write_text(json.dumps(gt))
    pred_path.write_text(json.dumps(pred))
    return gt_path, pred_path


def run_diagnosis(gt_path, pred, fp_tiou=0.5, cumulative=False, max_k=10, table=TABLE):
    det = ANETDetection(gt_path, pred, THRESHOLDS, "test", "THUMOS", num_tiou_for_average=3)
    return diagnose_detector(det, gt_path, fp_tiou, max_k, cumulative, bin_table=table)


@pytest.mark.filterwarnings("ignore:.*not a ground-truth class")  # random labels absent from the GT
@pytest.mark.parametrize("seed,tied,cumulative", [(0, False, False), (1, True, False),
                                                   (2, True, True), (3, False, True),
                                                   (4, True, False)])
def test_matches_loop_oracle(tmp_path, seed, tied, cumulative):
    gt, pred = random_case(np.random.default_rng(seed), tied)
    gt_path, _ = write_case(tmp_path, gt, pred)
    diag = run_diagnosis(gt_path, pred, cumulative=cumulative)
    rows, counts = loop_diagnose(gt, pred, THRESHOLDS, "test", TABLE, 0.5, 3, 10, cumulative)
    got = diag.by_characteristic.to_dict("records")
    assert [(r["characteristic"], r["bin"], r["gt_count"]) for r in got] == \
           [(r["characteristic"], r["bin"], r["gt_count"]) for r in rows]
    assert any(r["gt_count"] == 0 for r in rows)                         # an empty bin is exercised
    for mine, ref in zip(got, rows):
        for key, want in ref.items():
            if key.startswith(("mAP@", "avg_", "recall")):
                assert mine[key] == pytest.approx(want, abs=ATOL), (mine["bin"], key)
        if ref["gt_count"] == 0:
            assert np.isnan(mine["avg_mAP"]) and np.isnan(mine["recall"])   # empty, not a number
    fp = diag.fp_breakdown
    assert list(fp["predictions"]) == list(counts.sum(axis=1))
    for t, name in enumerate(ERROR_TYPES):
        share = np.where(counts.sum(axis=1) > 0,
                         counts[:, t] / np.maximum(counts.sum(axis=1), 1), np.nan)
        np.testing.assert_allclose(fp[name].to_numpy(dtype=float), share, atol=ATOL)


def test_all_row_equals_evaluator(tmp_path):
    gt, pred = random_case(np.random.default_rng(5), tied=False)
    gt_path, _ = write_case(tmp_path, gt, pred)
    det = ANETDetection(gt_path, pred, THRESHOLDS, "test", "THUMOS", num_tiou_for_average=3)
    det.evaluate()
    row = run_diagnosis(gt_path, pred).by_characteristic.iloc[0]
    np.testing.assert_allclose([row[f"mAP@{t:.2f}"] for t in THRESHOLDS], det.mAP, atol=ATOL)


@pytest.mark.parametrize("seed", [6, 7])
def test_bin_ap_equals_evaluator_on_filtered_files(tmp_path, seed):
    """Per-bin AP == the evaluator's AP on gt.json filtered to the bin, with the predictions that
    DETAD ignores (matched to GT outside the bin at that threshold) removed from the file."""
    gt, pred = random_case(np.random.default_rng(seed), tied=False)
    gt_path, _ = write_case(tmp_path, gt, pred)
    diag = run_diagnosis(gt_path, pred).by_characteristic
    det = ANETDetection(gt_path, pred, THRESHOLDS, "test", "THUMOS")
    order = class_order(det.p_label, det.p_score)
    # (P, H), file order of kept preds
    matched = match_to_gt(det.p_video, det.p_label, det.p_seg, det.gt_video, det.gt_label,
                          det.gt_seg, THRESHOLDS, order)
    edges, labels = TABLE["length"]
    gt_bin = assign_bins(det.gt_seg[:, 1] - det.gt_seg[:, 0], edges)
    flat = [(vid, p) for vid, plist in pred["results"].items() for p in plist
            if p["label"] in det.activity_index]
    for b, label in enumerate(labels):
        if not (gt_bin == b).any():
            continue
        database = {}
        g = 0
        for vid, info in gt["database"].items():
            anns = info["annotations"]
            keep = []
            for ann in anns:
                if info["subset"] == "test":
                    if gt_bin[g] == b:
                        keep.append(ann)
                    g += 1
            database[vid] = {**info, "annotations": keep if info["subset"] == "test" else anns}
        filtered_gt = tmp_path / f"gt_{label}.json"
        filtered_gt.write_text(json.dumps({"version": "t", "database": database}))
        row = diag[(diag["characteristic"] == "length") & (diag["bin"] == label)].iloc[0]
        for h, thr in enumerate(THRESHOLDS):
            results = {vid: [] for vid in pred["results"]}
            for (vid, p), m in zip(flat, matched[:, h]):
                if m < 0 or gt_bin[m] == b:
                    results[vid].append(p)
            with warnings.catch_warnings():                             # labels absent from the bin
                warnings.simplefilter("ignore")
                ref = ANETDetection(filtered_gt, {"version": "t", "results": results,
                                                  "external_data": {}}, [thr], "test", "THUMOS")
                ref.evaluate()
            assert row[f"mAP@{thr:.2f}"] == pytest.approx(ref.mAP[0], abs=ATOL), (label, thr)


@pytest.mark.parametrize("seed", [8, 9])
def test_match_to_gt_agrees_with_evaluator_matching(seed):
    rng = np.random.default_rng(seed)
    n_gt, n_pred = 60, 400
    gt_video, gt_label = rng.integers(0, 5, n_gt), rng.integers(0, 3, n_gt)
    start = rng.uniform(0, 100, n_gt)
    gt_seg = np.stack([start, start + rng.uniform(0.5, 20, n_gt)], axis=1)
    pick = rng.integers(0, n_gt, n_pred)
    p_seg = gt_seg[pick] + rng.normal(0, 2, (n_pred, 2))
    p_seg[:, 1] = np.maximum(p_seg[:, 1], p_seg[:, 0] + 0.1)
    p_video = np.where(rng.random(n_pred) < 0.05, -1, gt_video[pick])
    p_label, p_score = rng.integers(0, 3, n_pred), rng.random(n_pred)
    order = class_order(p_label, p_score)
    matched = match_to_gt(p_video, p_label, p_seg, gt_video, gt_label, gt_seg, THRESHOLDS, order)
    tp = match_predictions(p_video, p_label, p_seg, p_score, gt_video, gt_label, gt_seg, THRESHOLDS,
                           order=order)
    np.testing.assert_array_equal(matched >= 0, tp)
    for h in range(len(THRESHOLDS)):                                    # each GT taken at most once
        taken = matched[:, h][matched[:, h] >= 0]
        assert len(np.unique(taken)) == len(taken)


# ----------------------------------------------------------------------------- hand-computed cases
def gt_file(tmp_path, database):
    path = tmp_path / "gt.json"
    path.write_text(json.dumps({"version": "t", "database": database}))
    return path


def pred_dict(results):
    return {"version": "t", "external_data": {}, "results": {
        vid: [{"label": lab, "score": s, "segment": seg} for lab, s, seg in plist]
        for vid, plist in results.items()}}


def test_every_error_type_by_hand(tmp_path):
    """One prediction of each DETAD type at tIoU 0.5 (G = 4 for class a, 1 for b)."""
    gt = gt_file(tmp_path, {
        "v1": {"subset": "test", "duration": 100, "annotations": [
            {"segment": [0, 10], "label": "a"}, {"segment": [20, 30], "label": "b"}]},
        "v2": {"subset": "test", "duration": 100, "annotations": [
            {"segment": [0, 10], "label": "a"}, {"segment": [5, 15], "label": "c"}]},
        "v3": {"subset": "test", "duration": 100, "annotations": [
            {"segment": [0, 10], "label": "a"}, {"segment": [50, 60], "label": "a"}]},
        "v4": {"subset": "test", "duration": 100, "annotations": []}})
    pred = pred_dict({"v1": [("a", 0.9, [0, 10]),      # TP
                             ("a", 0.8, [0, 9]),       # double detection: tIoU 0.9 with a taken GT
                             ("a", 0.7, [20, 30]),     # wrong label: tIoU 1 with b
                             ("a", 0.6, [0, 3]),       # localization: tIoU 0.3 with a
                             ("a", 0.5, [20, 23]),     # confusion: tIoU 0.3 with b
                             ("a", 0.4, [60, 70])],    # background: no overlap
                      # best GT is c (tIoU 1; 1/3 with a): wrong label
                      "v2": [("a", 0.3, [5, 15])],
                      "v3": [("a", 0.2, [80, 90])],    # background
                      "v4": [("a", 0.1, [0, 10])],     # video without GT: background
                      "elsewhere": [("a", 0.05, [0, 10])]})   # video outside the subset: background
    det = ANETDetection(gt, pred, [0.5], "test", "THUMOS")
    fp = diagnose_detector(det, gt, 0.5, max_k=3, cumulative=False).fp_breakdown
    # class a: G = 4, ranks 0-3 (TP, double, wrong, localization), 4-7 (confusion, background,
    # wrong, background), 8-9 (background, background)
    shares = fp[list(ERROR_TYPES)].to_numpy()
    np.testing.assert_allclose(shares[0], [0.25, 0.25, 0.25, 0.25, 0, 0])
    np.testing.assert_allclose(shares[1], [0, 0, 0.25, 0, 0.25, 0.5])
    np.testing.assert_allclose(shares[2], [0, 0, 0, 0, 0, 1])
    assert list(fp["predictions"]) == [4, 4, 2]
    cum = diagnose_detector(det, gt, 0.5, max_k=3, cumulative=True).fp_breakdown
    assert list(cum["predictions"]) == [4, 8, 10]
    np.testing.assert_allclose(cum["background"], [0, 2 / 8, 4 / 10])


def test_ignored_predictions_and_normalized_ap_by_hand(tmp_path):
    """Short GT [0, 1] and long GT [10, 20] of class a; N = 2 GT / 1 class = 2."""
    gt = gt_file(tmp_path, {"v": {"subset": "test", "duration": 100, "annotations": [
        {"segment": [0, 1], "label": "a"}, {"segment": [10, 20], "label": "a"}]}})
    pred = pred_dict({"v": [("a", 0.95, [40, 41]),   # FP in every bin
                            ("a", 0.9, [10, 20]),    # matches the long GT: ignored in the short bin
                            ("a", 0.8, [0, 1])]})    # matches the short GT
    table = {"length": ((0, 5, float("inf")), ("short", "long"))}
    det = ANETDetection(gt, pred, [0.5], "test", "THUMOS")
    rows = {r["bin"]: r for r in diagnose_detector(det, gt, 0.5, bin_table=table)
            .by_characteristic.to_dict("records")}
    # short: FP then hit -> precision 1/2 at recall 1: AP 0.5; AP_N = 1*2 / (1*2 + 1) = 2/3
    assert rows["short"]["mAP@0.50"] == pytest.approx(0.5, abs=ATOL)
    assert rows["short"]["avg_mAP_N"] == pytest.approx(2 / 3, abs=ATOL)
    # long: the same (FP, hit; the short-GT match is ignored)
    assert rows["long"]["mAP@0.50"] == pytest.approx(0.5, abs=ATOL)
    # all: FP, hit, hit -> precisions 1/2, 2/3 at recall 1/2, 1: AP = 0.5*2/3 + 0.5*2/3
    assert rows["all"]["mAP@0.50"] == pytest.approx(2 / 3, abs=ATOL)
    assert rows["short"]["recall"] == 1.0 and rows["short"]["miss_rate"] == 0.0


def test_bin_rules_by_hand():
    edges = BIN_TABLE["THUMOS14-test"]["length"][0]              # (0, 1.5, 2.5, 4, 7, inf)
    values = np.array([0.0, 1e-9, 1.5, np.nextafter(1.5, 2), 2.5, 4.0, 7.0, 7.5, 1e6])
    np.testing.assert_array_equal(assign_bins(values, edges), [0, 0, 0, 1, 1, 2, 3, 4, 4])
    edges = BIN_TABLE["DETAD"]["instances"][0]                  # DETAD: 1 | 2-4 | 5-8 | >8
    np.testing.assert_array_equal(assign_bins(np.arange(1.0, 11.0), edges),
                                  [0, 1, 1, 1, 2, 2, 2, 2, 3, 3])
    edges = BIN_TABLE["DETAD"]["coverage"][0]                   # (0, .2], (.2, .4], ... (.8, inf)
    np.testing.assert_array_equal(assign_bins(np.array([0.2, 0.21, 0.8, 1.0]), edges), [0, 1, 3, 4])


def test_characteristics_by_hand(tmp_path):
    """Coverage = length / duration; instances counts every label of the video."""
    gt = gt_file(tmp_path, {
        "v1": {"subset": "test", "duration": 10, "annotations": [
            {"segment": [0, 1], "label": "a"}, {"segment": [2, 5], "label": "b"},
            {"segment": [6, 8], "label": "a"}]},
        "v2": {"subset": "test", "duration": 100,
               "annotations": [{"segment": [0, 50], "label": "a"}]}})
    table = {"coverage": ((0, 0.15, 0.4, float("inf")), ("S", "M", "L")),
             "instances": ((0, 1, 4, float("inf")), ("one", "few", "many"))}
    det = ANETDetection(gt, pred_dict({}), [0.5], "test", "THUMOS")
    rows = diagnose_detector(det, gt, bin_table=table).by_characteristic.set_index(
        ["characteristic", "bin"])
    # coverage: 0.1 (S), 0.3 (M), 0.2 (M), 0.5 (L); instances: 3, 3, 3 (few), 1 (one)
    assert [rows.loc[("coverage", b), "gt_count"] for b in ("S", "M", "L")] == [1, 2, 1]
    assert [rows.loc[("instances", b), "gt_count"] for b in ("one", "few", "many")] == [1, 3, 0]
    assert rows.loc[("all", "all"), "avg_mAP"] == 0.0            # no predictions: AP 0, not NaN
    assert np.isnan(rows.loc[("instances", "many"), "avg_mAP"])  # empty bin


# ----------------------------------------------------------------------------- CLI and bad input
def test_cli_writes_tables_and_plots(tmp_path, capsys):
    gt, pred = random_case(np.random.default_rng(10), tied=True)
    gt_path, pred_path = write_case(tmp_path, gt, pred)
    out = tmp_path / "out"
    assert eval_main(["--gt", str(gt_path), "--pred", str(pred_path), "--subset", "test",
                      "--dataset", "THUMOS", "--diagnose", "--out", str(out),
                      "--no_per_class"]) == 0
    printed = capsys.readouterr().out
    assert "false-positive profile" in printed and "empty" in printed  # THUMOS bins: some are empty
    for name in ("diagnosis_bins.csv", "diagnosis_fp.csv", "diagnosis.json", "diagnosis_bins.png",
                 "diagnosis_fp.png"):
        assert (out / name).stat().st_size > 0
    data = json.loads((out / "diagnosis.json").read_text())
    empty = [r for r in data["by_characteristic"] if r["gt_count"] == 0]
    assert empty and all(r["avg_mAP"] is None for r in empty)              # null, not NaN
    assert (out / "diagnosis_bins.png").read_bytes()[:4] == b"\x89PNG"


def test_short_action_map(tmp_path):
    gt, pred = random_case(np.random.default_rng(11), tied=False)
    gt_path, _ = write_case(tmp_path, gt, pred)
    value = short_action_mAP(gt_path, pred, THRESHOLDS, "test", "THUMOS", num_tiou_for_average=3)
    table = diagnose(gt_path, pred, THRESHOLDS, "test", "THUMOS", 3).by_characteristic
    assert value == table[(table["characteristic"] == "length")
                          & (table["bin"] == "XS")]["avg_mAP"].iloc[0]
    det = ANETDetection(gt_path, pred, THRESHOLDS, "test", "THUMOS", num_tiou_for_average=3)
    assert short_action_mAP_of(det, gt_path) == value
    empty = {"length": ((0, 1e-3, float("inf")), ("XS", "rest"))}         # no GT that short: None
    assert short_action_mAP_of(det, gt_path) is not None
    assert diagnose_detector(det, gt_path, bin_table=empty).by_characteristic[
        "avg_mAP"].isna().sum() == 1


@pytest.mark.parametrize("change,message", [
    (lambda gt, pred: pred.pop("external_data"), "lacks the required field 'external_data'"),
    (lambda gt, pred: pred["results"]["v0"].append({"label": "c0", "score": 1.0}),
     "needs 'label', 'score'"),
    (lambda gt, pred: gt["database"]["v0"].pop("duration"), "video v0 needs a positive 'duration'"),
])
def test_bad_input_one_line_errors(tmp_path, capsys, change, message):
    gt, pred = random_case(np.random.default_rng(12), tied=False)
    pred["results"].setdefault("v0", [])
    gt["database"]["v0"]["annotations"].append({"segment": [1, 2], "label": "c0"})
    change(gt, pred)
    gt_path, pred_path = write_case(tmp_path, gt, pred)
    assert eval_main(["--gt", str(gt_path), "--pred", str(pred_path), "--subset", "test",
                      "--diagnose", "--out", str(tmp_path / "out")]) != 0   # the CLI's error status
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err


def test_diagnose_switch_and_run_folder_hook(tmp_path):
    """--diagnose is a config switch; the engine's hook writes every file with the step prefix."""
    assert build_args("THUMOS", ["--diagnose"]).diagnose and not build_args("THUMOS", []).diagnose
    gt, pred = random_case(np.random.default_rng(13), tied=False)
    gt_path, _ = write_case(tmp_path, gt, pred)
    det = ANETDetection(gt_path, pred, THRESHOLDS, "test", "THUMOS")
    det.evaluate()
    text = diagnose_evaluation(det, gt_path, tmp_path / "run" / "diagnosis", "test_step1_")
    assert "mAP (%) by GT characteristic" in text
    assert sorted(p.name for p in (tmp_path / "run" / "diagnosis").iterdir()) == [
        f"test_step1_{name}" for name in ("diagnosis.json", "diagnosis_bins.csv",
                                           "diagnosis_bins.png", "diagnosis_fp.csv",
                                           "diagnosis_fp.png")]


def test_thumos_bins_on_real_gt(shared_data):
    """The bin sizes stated beside BIN_TABLE, and the "all" row equals the evaluator on real GT."""
    gt_path = shared_data / "THUMOS14" / "gt.json"
    gt = json.loads(gt_path.read_text())
    rng = np.random.default_rng(14)
    results = {}
    for vid, info in gt["database"].items():
        if info["subset"] == "test":
            results[vid] = [{"label": a["label"], "score": float(rng.random()),
                             "segment": [a["segment"][0] + rng.normal(0, 1),
                                         a["segment"][1] + rng.normal(0, 1)]}
                            for a in info["annotations"][::3]]
    pred = {"version": "t", "results": results, "external_data": {}}
    det = ANETDetection(gt_path, pred, np.arange(0.1, 1.0, 0.1), "test", "THUMOS")
    det.evaluate()
    table = diagnose_detector(det, gt_path).by_characteristic
    sizes = {c: list(table[table["characteristic"] == c]["gt_count"])
             for c in ("length", "coverage", "instances")}
    assert sizes == {"length": [730, 659, 572, 759, 638], "coverage": [637, 798, 541, 678, 704],
                     "instances": [539, 651, 1028, 727, 413]}
    np.testing.assert_allclose([table.iloc[0][f"mAP@{t:.2f}"] for t in det.tiou_thresholds],
                               det.mAP, atol=ATOL)


# ---------------------------------------------------------------------------- the bins' ignore rule
def hand_case(tmp_path):
    """Class a: short GT S = [0, 4], long GT L = [10, 30]; bins short (0, 5], long (5, inf);
    tIoU 0.1, 0.5.

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
    any tIoU: p1 (L at 0.1) and p3 (L at 0.5) are ignored at both -> p2 alone: AP 1 and 1,
              average 1.
    Long bin: p2 is matched outside (S) at both thresholds, so both rules agree:
              0.1: p1 hit, p3 FP -> 1; 0.5: p1 FP, p3 hit -> 1/2; average 3/4.
    All (2 GT): nothing ignored: 0.1: hit, hit, FP -> 1; 0.5: FP, hit, hit -> precision 1/2 at
              recall 1/2, 2/3 at recall 1 -> interpolated (1/2 + 1/2) * 2/3 = 2/3.
    """
    per, anyt = hand_rows(tmp_path, False), hand_rows(tmp_path, True)
    assert (per["short"]["mAP@0.10"], per["short"]["mAP@0.50"]) == pytest.approx((1.0, 0.5),
                                                                                  abs=ATOL)
    assert per["short"]["avg_mAP"] == pytest.approx(0.75, abs=ATOL)
    assert per["short"]["avg_mAP_N"] == pytest.approx((1 + 2 / 3) / 2, abs=ATOL)
    assert (anyt["short"]["mAP@0.10"], anyt["short"]["mAP@0.50"]) == pytest.approx((1.0, 1.0),
                                                                                    abs=ATOL)
    assert anyt["short"]["avg_mAP"] == pytest.approx(1.0, abs=ATOL)
    assert anyt["short"]["avg_mAP_N"] == pytest.approx(1.0, abs=ATOL)
    for rows in (per, anyt):
        assert (rows["long"]["mAP@0.10"], rows["long"]["mAP@0.50"]) == pytest.approx((1.0, 0.5),
                                                                                    abs=ATOL)
        assert rows["long"]["avg_mAP"] == pytest.approx(0.75, abs=ATOL)
        assert (rows["all"]["mAP@0.10"], rows["all"]["mAP@0.50"]) == pytest.approx((1.0, 2 / 3),
                                                                                  abs=ATOL)
        assert rows["short"]["recall"] == 1.0                # recall does not depend on the rule


@pytest.mark.filterwarnings("ignore:.*not a ground-truth class")
@pytest.mark.parametrize("seed,tied", [(20, False), (21, True), (22, False), (23, True)])
def test_both_rules_match_loop_oracle(tmp_path, seed, tied):
    gt, pred = random_case(np.random.default_rng(seed), tied)
    gt_path, _ = write_case(tmp_path, gt, pred)
    averages = {}
    for ignore_any_tiou in (False, True):
        det = ANETDetection(gt_path, pred, THRESHOLDS, "test", "THUMOS", num_tiou_for_average=3)
        diag = diagnose_detector(det, gt_path, 0.5, bin_table=TABLE,
                                 ignore_any_tiou=ignore_any_tiou)
        rows, _ = loop_diagnose(gt, pred, THRESHOLDS, "test", TABLE, 0.5, 3,
                                ignore_any_tiou=ignore_any_tiou)
        got = diag.by_characteristic.to_dict("records")
        assert [(r["characteristic"], r["bin"]) for r in got] == [
            (r["characteristic"], r["bin"]) for r in rows]
        for mine, ref in zip(got, rows):
            for key, want in ref.items():
                if key.startswith(("mAP@", "avg_", "recall")):
                    assert mine[key] == pytest.approx(want, abs=ATOL), (ignore_any_tiou,
                                                                        mine["bin"], key)
        averages[ignore_any_tiou] = np.array([r["avg_mAP"] for r in got if r["gt_count"]])
    # the cases exercise the difference
    assert np.abs(averages[True] - averages[False]).max() > 1e-3


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
    stored = json.loads((tmp_path / "run" / "step0_diagnosis.json").read_text())
    assert stored["ignore_any_tiou"] is True
    out = tmp_path / "cli"
    assert eval_main(["--gt", str(gt_path), "--pred", str(pred_path), "--subset", "test",
                      "--diagnose", "--ignore_any_tiou", "--out", str(out),
                      "--no_per_class"]) == 0
    assert "ignored at every tIoU once at one" in capsys.readouterr().out
    assert json.loads((out / "diagnosis.json").read_text())["ignore_any_tiou"] is True
    with pytest.raises(SystemExit):                          # the switch alone would change nothing
        eval_main(["--gt", str(gt_path), "--pred", str(pred_path), "--ignore_any_tiou"])
    assert "add --diagnose" in capsys.readouterr().err
