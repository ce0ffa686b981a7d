"""Your own videos, your own classes (docs/custom_data.md).

- Training reads only the labels of the training videos: the same gt.json with its training
  segments removed gives the same run, bit for bit (metrics, pseudo proposals, weights).
- A test split without segments trains, writes detections at every evaluation and says "not
  scored" in the log and results.json; test mode and predict.py work on it.
- A wrong evaluation subset stops before training, naming gt.json and --eval_subset.
- With OpenCV's contrib build: the whole path on generated videos of two made-up classes with
  known action times and random I3D weights: the CSV, extract_features.py --labels, a tiny
  training run, test mode and predict.py (files, shapes, class names, the run folder's name,
  test videos without segments predicted but not scored; no mAP is asserted).
"""
import json
import os
import shutil

import numpy as np
import pytest
import torch

import predict
from config import build_args
from engine import run as runner
from utils import UserError


def copy_without_segments(source, target, subsets, drop=()):
    """A copy of a data folder whose videos of `subsets` keep their labels, not their segments
    (the videos of `drop` lose their annotations altogether: not annotated)."""
    shutil.copytree(source, target)
    gt = json.loads((target / "gt.json").read_text())
    for vid, info in gt["database"].items():
        if info["subset"] in subsets:
            info["annotations"] = [{"label": ann["label"]} for ann in info["annotations"]]
        if vid in drop:
            del info["annotations"]
    (target / "gt.json").write_text(json.dumps(gt))
    return target


def metrics(save_dir):
    with open(os.path.join(save_dir, "metrics.jsonl")) as handle:
        return [{k: v for k, v in json.loads(line).items() if k != "wall_s"} for line in handle]


def weights(path):
    return torch.load(path, weights_only=False, map_location="cpu")["model_state_dict"]


# ----------------------------------------------------------------------------- labels are enough
def test_training_on_labels_without_segments_is_the_same_run(tiny_data, tiny_argv, tmp_path):
    labels_only = copy_without_segments(tiny_data, tmp_path / "labels_only", ("validation",))
    gt = json.loads((labels_only / "gt.json").read_text())["database"]
    assert all("segment" not in ann for info in gt.values() if info["subset"] == "validation"
               for ann in info["annotations"])
    runs = {}
    for name, data in (("segments", tiny_data), ("labels", labels_only)):
        argv = tiny_argv(data, tmp_path / name)
        runs[name] = (runner.run("THUMOS", argv), build_args("THUMOS", argv).save_dir)
    (best_a, dir_a), (best_b, dir_b) = runs["segments"], runs["labels"]
    assert best_a == best_b and metrics(dir_a) == metrics(dir_b) and len(metrics(dir_a)) == 6
    for step in (1, 2):
        name = f"pseudo_proposals_step{step}.json"
        assert json.load(open(os.path.join(dir_a, name))) == json.load(open(os.path.join(dir_b,
                                                                                          name)))
    for name in ("model_step2_best_epoch.pth", "model_latest.pth"):
        a, b = weights(os.path.join(dir_a, name)), weights(os.path.join(dir_b, name))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_test_split_without_segments_is_predicted_not_scored(tiny_data, tiny_argv, tmp_path,
                                                               capsys):
    test_list = (tiny_data / "split_test.txt").read_text().split()
    data = copy_without_segments(tiny_data, tmp_path / "unscored", ("test",), drop=test_list[:2])
    argv = tiny_argv(data, tmp_path / "runs")
    best = runner.run("THUMOS", argv)
    assert best == [float("-inf")] * 3                                 # no mAP in any step
    save_dir = build_args("THUMOS", argv).save_dir
    out = capsys.readouterr().out
    log = open(os.path.join(save_dir, "log.txt")).read()
    for text in (out, log):
        assert "8 listed videos have no segment in gt.json (labels only, or no annotations): " \
               "predicted, not scored" in text
        assert "no video has a segment: detections are written at every evaluation" in text
        assert "mAP@tIoU" not in text
        evaluations = [line for line in text.splitlines() if line.startswith("step ")
                       and "| detections result_step" in line]
        assert len(evaluations) == 6 and all(line.endswith("| not scored (no segment)")
                                             for line in evaluations)
        assert "not scored: no video of the test split has a segment in gt.json" in text
    results = json.load(open(os.path.join(save_dir, "results.json")))
    assert results["scored"] is False and results["note"].startswith("not scored: ")
    assert results["protocol"]["unscored_videos"] == 8 and results["dataset"] == "THUMOS"
    for step, entry in results["steps"].items():
        assert entry["best"] == entry["last"] and entry["best"]["average_mAP"] is None
        detections = json.load(open(os.path.join(save_dir, f"result_step{step}.json")))
        assert list(detections["results"]) == test_list
    # the best-epoch checkpoint is the step's last evaluated epoch
    assert torch.load(os.path.join(save_dir, "model_step2_best_epoch.pth"),
                      weights_only=False)["epoch"] == 6
    detectors = runner.run("THUMOS", argv + ["--test", "--checkpoint", save_dir])
    assert [d.scored for d in detectors] == [False] * 3
    test_log = open(os.path.join(save_dir, "test", "log.txt")).read()
    assert "test step 2 (model_step2_best_epoch.pth) | detections test_result_step2.json | " \
           "not scored (no segment)" in test_log
    final = json.load(open(os.path.join(save_dir, "test", "test_result_step2.json")))["results"]
    assert list(final) == test_list
    predicted = tmp_path / "predicted.json"
    predict.main(["--checkpoint", save_dir, "--features", str(data / "test"), "--out",
                  str(predicted), "--device", "cpu"])
    assert json.load(open(predicted))["results"] == final


def test_a_wrong_evaluation_subset_stops_before_training(tiny_data, tiny_argv, tmp_path):
    argv = tiny_argv(tiny_data, tmp_path, "--eval_subset", "val")
    with pytest.raises(UserError, match=r"gt.json has no video in subset 'val' .* the videos of "
                                        r"split_test.txt are in subset 'test': pass "
                                        r"--eval_subset test"):
        runner.run("THUMOS", argv)
    assert not os.path.exists(os.path.join(build_args("THUMOS", argv).save_dir,
                                           "model_latest.pth"))


# ----------------------------------------------------------------------------- from videos
CLASSES = ("Bounce", "Slide")


@pytest.fixture(scope="module")
def videos_to_detections(tmp_path_factory):
    """The path of docs/custom_data.md on 7 generated clips of 1.28 s (2 snippets): 2 training
    clips per class, 1 test clip per class and an unlabelled one; slide_test_0 keeps its label,
    not its segment. I3D at 112 x 112 crops (the networks' cost / 4) with random weights and
    TV-L1 of one scale and warp: every setting recorded in extract_config.json."""
    cv2 = pytest.importorskip("cv2")
    if not hasattr(cv2, "optflow"):
        pytest.skip("OpenCV without the contrib modules (pip install -r requirements-extract.txt)")
    import extract_features
    from features import extract
    from features import frames as video_frames
    from features.toy_videos import write_random_weights, write_toy_videos
    root = tmp_path_factory.mktemp("custom")
    videos, labels = write_toy_videos(str(root / "toy"), seconds=1.28, classes=CLASSES)
    rows = open(labels).read().splitlines()
    rows = [",".join(row.split(",")[:3] + ["", ""]) if row.startswith("slide_test_0") else row
            for row in rows]
    with open(labels, "w") as handle:
        handle.write("\n".join(rows) + "\n")
    rgb, flow = write_random_weights(str(root))
    cheap = {**video_frames.TVL1_DEFAULTS, "nscales": 1, "warps": 1, "innerIterations": 2,
             "outerIterations": 1}
    data = root / "toydata"
    build = ["--videos", videos, "--labels", labels, "--out", str(data), "--rgb_weights", rgb,
             "--flow_weights", flow]
    train = ["--data_dir", str(data), "--epochs", "2", "--epochs_per_step", "1", "--num_steps",
             "1", "--eval_freq", "1", "--sample_segments_num", "8", "--max_segments_num", "4",
             "--batch_size", "2", "--lr", "0.001", "--device", "cpu"]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(extract, "CROP", 112)
        patch.setattr(extract, "SHORT_SIDE", 128)
        patch.setattr(video_frames, "TVL1_DEFAULTS", cheap)
        patch.chdir(root)
        extract_features.main(build)
        mtimes = {p: os.stat(p).st_mtime_ns for p in data.rglob("*.npy")}
        extract_features.main(build)                                # a rerun: nothing again
        assert mtimes == {p: os.stat(p).st_mtime_ns for p in data.rglob("*.npy")}
        best = runner.run("THUMOS", train)
        save_dir = build_args("THUMOS", train).save_dir
        detectors = runner.run("THUMOS", ["--test", "--checkpoint", save_dir, "--device", "cpu"])
        predict.main(["--checkpoint", save_dir, "--features", str(data / "test"), "--out",
                      "features.json", "--device", "cpu"])
        predict.main(["--checkpoint", save_dir, "--videos",
                      os.path.join(videos, "bounce_test_0.avi"), "--rgb_weights", rgb,
                      "--flow_weights", flow, "--out", "videos.csv", "--format", "csv",
                      "--device", "cpu"])
    return {"root": root, "data": data, "save_dir": save_dir, "best": best,
            "detectors": detectors}


def test_the_data_folder(videos_to_detections):
    data = videos_to_detections["data"]
    assert (data / "classes.txt").read_text() == "Bounce\nSlide\n"
    assert (data / "split_train.txt").read_text().split() == [
        "bounce_train_0", "bounce_train_1", "slide_train_0", "slide_train_1"]
    assert (data / "split_test.txt").read_text().split() == [
        "bounce_test_0", "slide_test_0", "unlabelled_test_0"]
    gt = json.loads((data / "gt.json").read_text())["database"]
    assert gt["bounce_train_0"]["annotations"] == [{"label": "Bounce"}]
    (instance,) = gt["bounce_test_0"]["annotations"]
    assert instance["label"] == "Bounce" and 0 <= instance["segment"][0] < instance["segment"][1]
    assert gt["slide_test_0"]["annotations"] == [{"label": "Slide"}]
    assert "annotations" not in gt["unlabelled_test_0"]
    assert all(info["duration"] == pytest.approx(1.28, abs=0.05) for info in gt.values())
    for split, count in (("train", 4), ("test", 3)):
        files = sorted((data / split).glob("*.npy"))
        assert len(files) == count
        for path in files:
            x = np.load(path)
            assert x.shape == (2, 2048) and x.dtype == np.float32 and np.isfinite(x).all()
        settings = json.loads((data / split / "extract_config.json").read_text())
        assert (settings["crop"], settings["tvl1"]["nscales"]) == (112, 1)


def test_the_run_is_named_after_the_data_folder(videos_to_detections):
    root, save_dir = videos_to_detections["root"], videos_to_detections["save_dir"]
    assert save_dir == os.path.join("checkpoints", "toydata", "default",
                                    "t8_step1_e1_gamma6_alpha0.7_delta0.5")
    run = root / save_dir
    stored = json.loads((run / "config.json").read_text())
    assert stored["class_names"] == list(CLASSES) and stored["dataset_name"] == "toydata"
    assert stored["dataset"] == "THUMOS"
    results = json.loads((run / "results.json").read_text())
    assert (results["dataset"], results["preset"], results["scored"]) == ("toydata", "THUMOS",
                                                                          True)
    assert results["protocol"]["evaluated_videos"] == 1
    assert results["protocol"]["unscored_videos"] == 2
    log = (run / "log.txt").read_text()
    data = videos_to_detections["data"]
    assert f"dataset toydata: preset THUMOS, 2 classes from {data / 'classes.txt'}, data {data}" \
        in log
    assert "3 videos, 1 evaluated" in log and "2 listed videos have no segment" in log
    for step in (0, 1):
        assert (run / f"model_step{step}_{'last' if step == 0 else 'best'}_epoch.pth").is_file()


def test_test_mode_and_predict_detect_with_the_runs_classes(videos_to_detections):
    root, detectors = videos_to_detections["root"], videos_to_detections["detectors"]
    run = root / videos_to_detections["save_dir"]
    assert len(detectors) == 2 and detectors[-1].scored
    assert detectors[-1].unscored == {"slide_test_0", "unlabelled_test_0"}
    assert detectors[-1].average_mAP == pytest.approx(videos_to_detections["best"][-1],
                                                      abs=1e-12)
    final = json.loads((run / "test" / "test_result_step1.json").read_text())["results"]
    assert list(final) == ["bounce_test_0", "slide_test_0", "unlabelled_test_0"]
    labels = {det["label"] for dets in final.values() for det in dets}
    assert labels and labels <= set(CLASSES)
    assert all(0 <= det["segment"][0] <= det["segment"][1] <= 1.28 + 1e-9
               for dets in final.values() for det in dets)
    assert json.loads((root / "features.json").read_text())["results"] == final
    rows = (root / "videos.csv").read_text().splitlines()
    assert rows[0] == "video,label,score,start,end" and len(rows) > 1
    assert {row.split(",")[0] for row in rows[1:]} == {"bounce_test_0"}
    assert {row.split(",")[1] for row in rows[1:]} <= set(CLASSES)
    assert np.array_equal(np.load(root / "videos_features" / "bounce_test_0.npy"),
                          np.load(videos_to_detections["data"] / "test" / "bounce_test_0.npy"))
