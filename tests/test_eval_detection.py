"""eval/detection.py: array evaluator vs the loop oracle of docs/method.md §12
(tests/oracles/detection_loop.py), hand-computed AP, edge cases, CLI."""
import json
import subprocess
import sys

import numpy as np
import pytest

from config import REPO_ROOT as REPO
from eval import ANETDetection, EvaluationInputError
from oracles.detection_loop import loop_evaluate
from utils import UserError

SHARED_DATA = REPO / ".." / "shared" / "data"
SHARED_GT = SHARED_DATA / "THUMOS14" / "gt.json"
SHARED_ANET_GT = SHARED_DATA / "ActivityNet13" / "gt.json"
PRED_FIELDS = {"version": "VERSION 1.3", "external_data": {"used": True}}


def make_gt(tmp_path, videos, extra_subset=()):
    """videos: {vid: [(label, start, end), ...]} in subset 'test'; extra_subset: vids in 'train'."""
    db = {vid: {"subset": "test", "duration": 100.0,
                "annotations": [{"label": lab, "segment": [s, e]} for lab, s, e in anns]}
          for vid, anns in videos.items()}
    for vid in extra_subset:
        db[vid] = {"subset": "train", "duration": 100.0,
                   "annotations": [{"label": "A", "segment": [0, 5]}]}
    path = tmp_path / "gt.json"
    path.write_text(json.dumps({"version": "x", "database": db}))
    return path


def make_pred(results):
    """results: {vid: [(label, score, start, end), ...]}."""
    return {"results": {vid: [{"label": lab, "score": sc, "segment": [s, e]}
                              for lab, sc, s, e in plist]
                        for vid, plist in results.items()}, **PRED_FIELDS}


# ----------------------------------------------------------------------------- hand-computed AP
def test_hand_case_duplicate_detection(tmp_path):
    # GT A: v1 [0,10]. p1 [0,10] .9 -> tIoU 1, TP. p2 [0,5] .8 -> tIoU .5 >= .5 but GT taken -> FP.
    # precision [1, .5], recall [1, 1]; padded prec [0,1,.5,0] -> right max [1,1,.5,0];
    # recall steps only at 0 -> 1 (x 1) -> AP = 1.
    gt = make_gt(tmp_path, {"v1": [("A", 0, 10)]})
    det = ANETDetection(gt, make_pred({"v1": [("A", 0.9, 0, 10), ("A", 0.8, 0, 5)]}), [0.5],
                        "test", "X")
    assert det.evaluate() == pytest.approx(1.0, abs=1e-15)


def test_hand_case_two_thresholds(tmp_path):
    # GT A: v1 [0,10], [20,30]. p1 [20,30] .9 TP; p2 [50,60] .8 FP; p3 [0,8] .7 tIoU 8/10 = .8.
    # thr .5: hits 1,0,1: prec [1,.5,2/3] rec [.5,.5,1] -> .5*1 + .5*2/3 = 5/6.
    # thr .9: hits 1,0,0: prec [1,.5,1/3] rec [.5,.5,.5] -> .5*1 (+ the final 0.5 step x 0) = .5.
    gt = make_gt(tmp_path, {"v1": [("A", 0, 10), ("A", 20, 30)]})
    pred = make_pred({"v1": [("A", 0.9, 20, 30), ("A", 0.8, 50, 60), ("A", 0.7, 0, 8)]})
    det = ANETDetection(gt, pred, [0.5, 0.9], "test", "X")
    det.evaluate()
    np.testing.assert_allclose(det.mAP, [5 / 6, 0.5], atol=1e-15)


def test_hand_case_classes_videos_and_next_gt(tmp_path):
    # A: GT v1 [0,10] and [0,8]. p1 [0,10] .9 -> tIoU 1 / .8 -> TP on [0,10].
    #    p2 [0,10] .8 -> [0,10] taken -> next GT [0,8] (.8): TP at .5, FP at .9.
    #    thr .5: AP 1. thr .9: hits 1,0 of 2 GT: prec [1,.5] rec [.5,.5] -> .5.
    # B: GT v2 [5,15]. p [5,15] .95 in v1 (no B GT there) -> FP; p [6,15] .5 in v2, tIoU .9 -> TP
    #    at both. hits 0,1: prec [0,.5] rec [0,1] -> padded prec right-max .5 -> AP .5.
    # C: GT v3, no predictions -> AP 0. Outside-subset video and unknown label: ignored / FP-free.
    gt = make_gt(tmp_path, {"v1": [("A", 0, 10), ("A", 0, 8)], "v2": [("B", 5, 15)],
                            "v3": [("C", 1, 2)]}, extra_subset=["w"])
    pred = make_pred({"v1": [("A", 0.9, 0, 10), ("A", 0.8, 0, 10), ("B", 0.95, 5, 15)],
                      "v2": [("B", 0.5, 6, 15), ("Z", 0.99, 6, 15)]})
    with pytest.warns(UserWarning, match="1 predictions"):
        det = ANETDetection(gt, pred, [0.5, 0.9], "test", "X")
    assert det.evaluate() == pytest.approx(np.mean([(1 + 0.5 + 0) / 3, (0.5 + 0.5 + 0) / 3]),
                                           abs=1e-15)
    assert list(det.activity_index) == ["A", "B", "C"]
    np.testing.assert_allclose(det.ap, [[1, 0.5, 0], [0.5, 0.5, 0]], atol=1e-15)
    text = det.report()
    assert "mAP" in text and "per-class AP" in text and "C" in text.splitlines()[-1]


def test_hand_case_equal_tiou_visits_gt_in_official_order(tmp_path):
    # GT A: g0 [0,10], g1 [10,20]. p1 [5,15] .9 has tIoU 5/15 with both; the official order is
    # np.argsort([1/3, 1/3])[::-1] = [1, 0] (a sort of two equal keys keeps them, reversing
    # flips them), so p1 takes g1. p2 [0,10] .8: g0 tIoU 1, free -> TP. hits 1,1 -> AP 1
    # (visiting g0 first, in file order, would leave p2 an FP and give AP .5).
    assert list(np.argsort(np.array([1 / 3, 1 / 3]))[::-1]) == [1, 0]
    gt = make_gt(tmp_path, {"v1": [("A", 0, 10), ("A", 10, 20)]})
    det = ANETDetection(gt, make_pred({"v1": [("A", 0.9, 5, 15), ("A", 0.8, 0, 10)]}), [0.3],
                        "test", "X")
    assert det.evaluate() == pytest.approx(1.0, abs=1e-15)


def test_hand_case_tied_scores_in_official_order(tmp_path):
    # two predictions of equal score for one GT [0,10]: np.argsort([.7, .7])[::-1] = [1, 0], so the
    # second in the file, [0,10], comes first and is a TP; [0,4] (tIoU .4) is an FP at .5:
    # hits 1,0 -> prec [1,.5] rec [1,1] -> AP 1 (file order would give hits 0,1 and AP .5).
    gt = make_gt(tmp_path, {"v1": [("A", 0, 10)]})
    det = ANETDetection(gt, make_pred({"v1": [("A", 0.7, 0, 4), ("A", 0.7, 0, 10)]}), [0.5],
                        "test", "X")
    assert det.evaluate() == pytest.approx(1.0, abs=1e-15)


def test_hand_case_tied_score_groups(tmp_path):
    # scores .9 .5 .9 .5 in file order: argsort = [1, 3, 0, 2] (a small sort keeps equal keys in
    # order), reversed: p2, p0, p3, p1. GT A: [0,10], [20,30].
    # p0 [0,10] .9 (tIoU 1), p1 [20,30] .5 (1), p2 [0,9] .9 (.9), p3 [21,30] .5 (.9).
    # thr .5: p2 TP, p0 FP, p3 TP, p1 FP: prec [1,.5,2/3,.5] rec [.5,.5,1,1] -> .5 + .5*2/3 = 5/6.
    # thr .95: p2 FP, p0 TP, p3 FP, p1 TP: prec [0,.5,1/3,.5] rec [0,.5,.5,1] -> .5*.5 + .5*.5 = .5.
    # (file order p0, p2, p1, p3 would give AP 1 at both thresholds.)
    assert list(np.argsort(np.array([0.9, 0.5, 0.9, 0.5]))[::-1]) == [2, 0, 3, 1]
    gt = make_gt(tmp_path, {"v1": [("A", 0, 10), ("A", 20, 30)]})
    pred = make_pred({"v1": [("A", 0.9, 0, 10), ("A", 0.5, 20, 30), ("A", 0.9, 0, 9),
                             ("A", 0.5, 21, 30)]})
    det = ANETDetection(gt, pred, [0.5, 0.95], "test", "X")
    det.evaluate()
    np.testing.assert_allclose(det.ap[:, 0], [5 / 6, 0.5], atol=1e-15)


def test_videos_without_segments_are_predicted_not_scored(tmp_path):
    """A subset video with labels but no segment, or without "annotations": its predictions are
    dropped, not false positives; the result is that of the GT and predictions without it, and
    the loop oracle's. A video with an empty annotation list is scored (no action in it: its
    predictions are false positives, the official rule). No segment in the subset: no mAP; no
    video in it: one line naming the subsets and the flags."""
    rng = np.random.default_rng(3)
    videos = {f"v{i}": [(str(rng.choice(["A", "B"])), s, s + float(rng.integers(2, 9)))
                        for s in rng.integers(0, 50, size=3).astype(float)] for i in range(4)}
    preds = {vid: [(str(rng.choice(["A", "B"])), float(rng.random()), s, s + 5.0)
                   for s in rng.integers(0, 50, size=6).astype(float)]
             for vid in [*videos, "labels_only", "empty"]}
    scored = ANETDetection(make_gt(tmp_path, videos), make_pred(
        {vid: p for vid, p in preds.items() if vid in videos}), [0.3, 0.5], "test", "X")
    scored.evaluate()
    gt_path = make_gt(tmp_path, videos)
    data = json.loads(gt_path.read_text())
    data["database"]["labels_only"] = {"subset": "test", "duration": 100.0,
                                       "annotations": [{"label": "A"}, {"label": "B"}]}
    data["database"]["empty"] = {"subset": "test", "duration": 100.0}       # not annotated
    gt_path.write_text(json.dumps(data))
    det = ANETDetection(gt_path, make_pred(preds), [0.3, 0.5], "test", "X")
    assert det.scored and det.unscored == {"labels_only", "empty"}
    det.evaluate()
    np.testing.assert_array_equal(det.ap, scored.ap)
    classes, ap = loop_evaluate(data, make_pred(preds), [0.3, 0.5], "test")
    assert classes == det.class_names
    np.testing.assert_allclose(det.ap, ap, rtol=0, atol=1e-12)
    # an empty annotation list: scored, its predictions false positives (so the rule matters)
    data["database"]["empty"]["annotations"] = []
    gt_path.write_text(json.dumps(data))
    background = ANETDetection(gt_path, make_pred(preds), [0.3, 0.5], "test", "X")
    assert background.unscored == {"labels_only"} and "empty" in background.video_names
    background.evaluate()
    assert (background.ap <= det.ap).all() and (background.ap < det.ap).any()
    np.testing.assert_allclose(background.ap, loop_evaluate(data, make_pred(preds), [0.3, 0.5],
                                                            "test")[1], rtol=0, atol=1e-12)
    del data["database"]["empty"]["annotations"]
    data["database"] = {vid: data["database"][vid] for vid in ("labels_only", "empty")}
    gt_path.write_text(json.dumps(data))
    none = ANETDetection(gt_path, make_pred(preds), [0.5], "test", "X")
    assert not none.scored and none.evaluate() is None and none.mAP is None
    assert none.report().startswith("not scored: no video of subset 'test' has a segment")
    with pytest.raises(EvaluationInputError, match=r"has no video in subset 'val' \(its subsets: "
                                                   r"'test'\); choose one \(--eval_subset"):
        ANETDetection(gt_path, make_pred(preds), [0.5], "val", "X")


# ----------------------------------------------------------------------------- oracle agreement
def random_case(rng):
    classes = ["A", "B", "C", "D", "E"][: int(rng.integers(1, 6))]
    grid = lambda size: rng.integers(0, 8, size=size) * 2.5           # noqa: E731  (exact tIoU ties)
    videos = {}
    for v in range(int(rng.integers(1, 7))):
        anns = []
        for _ in range(int(rng.integers(0, 6))):
            s = float(grid(1)[0])
            e = s + float(rng.choice([0.0, 2.5, 5.0, 7.5, 12.5, 20.0]))     # zero-length GT too
            anns.append((str(rng.choice(classes)), s, e))
        if anns and rng.random() < 0.3:
            anns.append(anns[0])                                            # duplicate GT
        videos[f"v{v}"] = anns
    if not any(videos.values()):
        videos["v0"] = [(classes[0], 0.0, 5.0)]
    results = {}
    pred_videos = list(videos) + ["unseen", "w"]
    for _ in range(int(rng.integers(0, 60))):
        vid = str(rng.choice(pred_videos))
        label = str(rng.choice(classes + ["Z"]))                            # Z: not a GT class
        s = float(grid(1)[0]) + float(rng.choice([0.0, 0.3]))
        e = s + float(rng.choice([0.0, 2.5, 5.0, 7.5, 10.0, 3.1]))
        score = float(np.round(rng.random(), 1))                            # many tied scores
        results.setdefault(vid, []).append((label, score, s, e))
    return videos, results


@pytest.mark.filterwarnings("ignore:.*not a ground-truth class")
def test_fast_equals_loop_oracle_random(tmp_path):
    rng = np.random.default_rng(2022)
    thresholds = np.arange(0.1, 1.0, 0.1)
    n_compared = 0
    for case in range(60):
        videos, results = random_case(rng)
        gt_path = make_gt(tmp_path, videos, extra_subset=["w"])
        pred = make_pred(results)
        det = ANETDetection(gt_path, pred, thresholds, "test", "THUMOS")
        det.evaluate()
        classes, ap = loop_evaluate(json.loads(gt_path.read_text()), pred, thresholds, "test")
        assert list(det.activity_index) == classes
        np.testing.assert_allclose(det.ap, np.array(ap), rtol=0, atol=1e-12, err_msg=f"case {case}")
        n_compared += 1
    assert n_compared >= 50


@pytest.mark.filterwarnings("ignore:.*not a ground-truth class")
@pytest.mark.parametrize("thresholds", [[0.0, 0.3, 0.5], [0.5, 0.3, 0.75]])
def test_fast_equals_loop_oracle_zero_and_unsorted_thresholds(tmp_path, thresholds):
    rng = np.random.default_rng(len(thresholds) + int(10 * thresholds[0]))
    for case in range(10):
        videos, results = random_case(rng)
        gt_path = make_gt(tmp_path, videos)
        pred = make_pred(results)
        det = ANETDetection(gt_path, pred, thresholds, "test", "X")
        det.evaluate()
        _, ap = loop_evaluate(json.loads(gt_path.read_text()), pred, thresholds, "test")
        np.testing.assert_allclose(det.ap, np.array(ap), rtol=0, atol=1e-12, err_msg=f"case {case}")


def tied_case(rng, n_levels):
    """Long lists with ties: one class's predictions take n_levels distinct scores (1: all equal),
    and a video holds up to 40 GT of a class on a coarse grid (duplicates, equal tIoU), so both
    argsorts see more than 16 equal keys (numpy then leaves its small-array sort)."""
    levels = rng.random(n_levels).round(3)
    videos = {}
    for v in range(3):
        anns = []
        for _ in range(int(rng.integers(10, 41))):
            s = float(rng.integers(0, 6) * 5.0)
            anns.append((str(rng.choice(["A", "B"])), s, s + float(rng.choice([0.0, 5.0, 10.0]))))
        videos[f"v{v}"] = anns
    results = {}
    for _ in range(int(rng.integers(40, 160))):
        vid = str(rng.choice(list(videos) + ["unseen"]))
        s = float(rng.integers(0, 12) * 2.5)
        e = s + float(rng.choice([0.0, 2.5, 5.0, 10.0]))
        results.setdefault(vid, []).append((str(rng.choice(["A", "B"])),
                                            float(rng.choice(levels)), s, e))
    return videos, results


@pytest.mark.parametrize("n_levels", [1, 2, 5])
def test_fast_equals_loop_oracle_tied_scores_and_tious(tmp_path, n_levels):
    """All scores equal (n_levels 1) or groups of equal scores, with many equal tIoU per GT list."""
    rng = np.random.default_rng(100 + n_levels)
    thresholds = [0.1, 0.3, 0.5, 0.7]
    for case in range(8):
        videos, results = tied_case(rng, n_levels)
        gt_path = make_gt(tmp_path, videos)
        pred = make_pred(results)
        det = ANETDetection(gt_path, pred, thresholds, "test", "X")
        det.evaluate()
        _, ap = loop_evaluate(json.loads(gt_path.read_text()), pred, thresholds, "test")
        np.testing.assert_allclose(det.ap, np.array(ap), rtol=0, atol=1e-12, err_msg=f"case {case}")


def test_official_sample_file_gives_official_map(shared_data):
    """The official toolkit's sample detection file (every score 1.0) scores 0.9315399 with the
    official evaluator on this gt.json (subset val); a stable sort would give 0.938.

    With every score equal, the ranking is whatever np.argsort does with equal float64 keys,
    which depends on numpy's sort code for the CPU (SIMD or not). 0.9315399 is the number where
    argsort keeps equal keys in order (numpy 2.x here); elsewhere the official evaluator gives
    another number too, and only the agreement with the loop oracle is checked.
    """
    folder = shared_data / "ActivityNet13"
    thresholds = np.linspace(0.5, 0.95, 10)
    sample = folder / "sample_detection_prediction_v.json"
    det = ANETDetection(folder / "gt.json", sample, thresholds, "val", "ActivityNet")
    average = det.evaluate()
    _, ap = loop_evaluate(json.loads((folder / "gt.json").read_text()),
                          json.loads(sample.read_text()), thresholds, "val")
    np.testing.assert_allclose(det.ap, np.array(ap), rtol=0, atol=1e-12)
    if not all(np.array_equal(np.argsort(np.ones(n)), np.arange(n)) for n in range(1, 200)):
        pytest.skip("this numpy/CPU orders equal float64 keys differently; the official number "
                    "differs too")
    run = [sys.executable, "-m", "eval", "--gt", str(folder / "gt.json"), "--pred", str(sample),
           "--dataset", "ActivityNet", "--subset", "val", "--no_per_class"]
    out = subprocess.run(run, cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[1].split()[-1] == "93.15"
    assert average == pytest.approx(0.9315399, abs=5e-8)


def random_real_predictions(gt, subset, n, rng):
    videos = {v: info for v, info in gt["database"].items() if info["subset"] == subset}
    vids = list(videos)
    labels = sorted({a["label"] for info in videos.values() for a in info["annotations"]})
    results = {}
    for _ in range(n):
        vid = vids[rng.integers(len(vids))]
        anns = videos[vid]["annotations"]
        if anns and rng.random() < 0.6:                          # near a GT instance
            ann = anns[rng.integers(len(anns))]
            s, e = ann["segment"]
            s, e, label = s + rng.normal(0, 1), e + rng.normal(0, 1), ann["label"]
        else:
            s = rng.uniform(0, videos[vid]["duration"])
            e, label = s + rng.exponential(5), labels[rng.integers(len(labels))]
        results.setdefault(vid, []).append((label, float(rng.random()), float(s), float(max(s, e))))
    return make_pred(results)


@pytest.mark.skipif(not SHARED_ANET_GT.is_file(),
                    reason="shared ActivityNet annotations not available")
def test_fast_equals_loop_oracle_real_activitynet_gt():
    gt = json.loads(SHARED_ANET_GT.read_text())
    pred = random_real_predictions(gt, "val", 3000, np.random.default_rng(11))
    thresholds = np.arange(0.5, 1.0, 0.05)
    det = ANETDetection(SHARED_ANET_GT, pred, thresholds, "val", "ActivityNet")
    average = det.evaluate()
    classes, ap = loop_evaluate(gt, pred, thresholds, "val")
    assert list(det.activity_index) == classes and len(classes) == 200
    np.testing.assert_allclose(det.ap, np.array(ap), rtol=0, atol=1e-12)
    assert average == pytest.approx(det.mAP.mean())


@pytest.mark.skipif(not SHARED_GT.is_file(), reason="shared THUMOS14 annotations not available")
@pytest.mark.filterwarnings("ignore:.*not a ground-truth class")
def test_fast_equals_loop_oracle_real_thumos_gt():
    gt = json.loads(SHARED_GT.read_text())
    test_videos = {v: info for v, info in gt["database"].items() if info["subset"] == "test"}
    assert len(test_videos) == 212
    pred = random_real_predictions(gt, "test", 3000, np.random.default_rng(7))
    thresholds = np.arange(0.1, 1.0, 0.1)
    det = ANETDetection(SHARED_GT, pred, thresholds, "test", "THUMOS")
    det.evaluate()
    classes, ap = loop_evaluate(gt, pred, thresholds, "test")
    assert list(det.activity_index) == classes and len(classes) == 20
    np.testing.assert_allclose(det.ap, np.array(ap), rtol=0, atol=1e-12)
    assert det.average_mAP == pytest.approx(det.mAP[:7].mean())


# ----------------------------------------------------------------------------- edge cases
def test_empty_predictions_give_zero(tmp_path):
    gt = make_gt(tmp_path, {"v1": [("A", 0, 10)], "v2": [("B", 3, 4)]})
    path = tmp_path / "pred.json"
    path.write_text(json.dumps({"results": {}, **PRED_FIELDS}))
    det = ANETDetection(gt, path, np.arange(0.5, 1.0, 0.05), "test", "ActivityNet")
    assert det.evaluate() == 0.0
    assert det.ap.shape == (10, 2) and not det.ap.any() and det.mAP.shape == (10,)


@pytest.mark.parametrize("field", ["results", "version", "external_data"])
def test_missing_field_is_named(tmp_path, field):
    gt = make_gt(tmp_path, {"v1": [("A", 0, 10)]})
    data = make_pred({"v1": [("A", 0.5, 0, 10)]})
    del data[field]
    path = tmp_path / "pred.json"
    path.write_text(json.dumps(data))
    with pytest.raises(EvaluationInputError, match=f"'{field}'") as info:
        ANETDetection(gt, path, [0.5], "test", "X")
    assert str(path) in str(info.value) and isinstance(info.value, UserError)


def test_malformed_prediction_and_missing_files(tmp_path):
    gt = make_gt(tmp_path, {"v1": [("A", 0, 10)]})
    bad = {"results": {"v1": [{"label": "A", "segment": [0, 1]}]}, **PRED_FIELDS}
    with pytest.raises(EvaluationInputError, match="score"):
        ANETDetection(gt, bad, [0.5], "test", "X")
    with pytest.raises(EvaluationInputError, match="'version'"):
        ANETDetection(gt, {"results": {}, "external_data": {}}, [0.5], "test", "X")
    with pytest.raises(EvaluationInputError, match="finite"):
        ANETDetection(gt, make_pred({"v1": [("A", float("nan"), 0, 1)]}), [0.5], "test", "X")
    with pytest.raises(EvaluationInputError, match="segment"):
        ANETDetection(gt, make_pred({"v1": [("A", 0.5, 0, 1)]}) | {"results": {"v1": [
            {"label": "A", "score": 0.5, "segment": [1.0]},
            {"label": "A", "score": 0.5, "segment": [2.0]}]}}, [0.5], "test", "X")
    with pytest.raises(EvaluationInputError, match="not found"):
        ANETDetection(gt, tmp_path / "nope.json", [0.5], "test", "X")
    with pytest.raises(EvaluationInputError, match="subset 'val'"):
        ANETDetection(gt, make_pred({}), [0.5], "val", "X")


def test_unknown_labels_ignored_and_counted(tmp_path):
    gt = make_gt(tmp_path, {"v1": [("A", 0, 10)]})
    pred = make_pred({"v1": [("Q", 0.99, 0, 10), ("A", 0.5, 0, 10), ("R", 0.9, 0, 1)]})
    with pytest.warns(UserWarning, match="2 predictions"):
        det = ANETDetection(gt, pred, [0.5], "test", "X")
    assert det.evaluate() == 1.0


def test_zero_length_segments_match_as_in_official_evaluator(tmp_path):
    # a zero-length prediction on a zero-length GT: the official 0/0 = NaN tIoU is not "below"
    # any threshold and argsort puts NaN last, so after [::-1] that GT is visited first -> TP.
    # p1 [5,5] .9: tIoU NaN with g0 [5,5] -> TP; p2 [0,10] .8: tIoU 1 with g1 -> TP. AP 1.
    gt = make_gt(tmp_path, {"v1": [("A", 5, 5), ("A", 0, 10)]})
    det = ANETDetection(gt, make_pred({"v1": [("A", 0.9, 5, 5), ("A", 0.8, 0, 10)]}), [0.1, 0.9],
                        "test", "X")
    det.evaluate()
    np.testing.assert_allclose(det.ap[:, 0], [1.0, 1.0], atol=1e-15)
    # a zero-length prediction and a zero-length GT at different times: also 0/0 -> TP, and the
    # candidate search must not skip the GT for lying outside the prediction's window
    gt = make_gt(tmp_path, {"v1": [("A", 50, 50), ("A", 0, 10)]})
    det = ANETDetection(gt, make_pred({"v1": [("A", 0.9, 5, 5)]}), [0.5], "test", "X")
    det.evaluate()
    assert det.ap[0, 0] == pytest.approx(0.5, abs=1e-15)                # hits 1 of 2 GT


# ----------------------------------------------------------------------------- command line
def test_cli_prints_table_and_fails_cleanly(tmp_path):
    gt = make_gt(tmp_path, {"v1": [("A", 0, 10)]})
    pred = tmp_path / "pred.json"
    pred.write_text(json.dumps(make_pred({"v1": [("A", 0.9, 0, 10)]})))
    run = [sys.executable, "-m", "eval", "--gt", str(gt), "--pred", str(pred), "--subset", "test"]
    ok = subprocess.run(run + ["--tiou", "0.5", "0.7"], cwd=REPO, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert "mAP" in ok.stdout and "100.00" in ok.stdout
    bad = subprocess.run(run[:6] + [str(tmp_path / "missing.json"), "--subset", "test"], cwd=REPO,
                         capture_output=True, text=True)
    assert bad.returncode != 0 and bad.stderr.strip().count("\n") == 0
    assert "missing.json" in bad.stderr
