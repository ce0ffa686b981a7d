"""A dataset is a preset of config.py and nothing else: a third preset, defined only in this test
(its own class list of 3 classes, its own tiny dataset), trains and tests end to end through
engine/run.py while the THUMOS and ActivityNet presets are gone from config.PRESETS, so nothing on
the way can need their names."""
import json
import math
import os

import pytest

import config
from engine import run as runner
from synthetic_data import generate_synthetic_dataset

CLASSES = ["Abseiling", "Bouldering", "Canoeing"]
OTHER_NAMES = ("THUMOS", "ActivityNet")


@pytest.fixture
def tiny_preset(tmp_path):
    """The "Tiny" preset (the THUMOS preset's values, its own class list, data and names) as the
    only preset of config.PRESETS; config.PRESETS is restored, in its order, afterwards."""
    class_list = tmp_path / "tiny_classes.txt"
    class_list.write_text("".join(f"{name}\n" for name in CLASSES))
    data_dir = tmp_path / "tiny_set"
    generate_synthetic_dataset(data_dir, profile="THUMOS14", num_train=12, num_test=8,
                               feature_dim=32, seed=0, class_names=CLASSES, durations=(20.0, 60.0))
    preset = {**config.PRESETS["THUMOS"], "data_dir": "data/Tiny", "class_list": str(class_list),
              "synthetic_profile": "THUMOS14", "diagnosis_bins": "THUMOS14-test"}
    saved, saved_demo = dict(config.PRESETS), dict(config.DEMO_PRESETS)
    config.PRESETS.clear()
    config.DEMO_PRESETS.clear()
    config.PRESETS["Tiny"] = preset
    try:
        yield data_dir
    finally:
        config.PRESETS.clear()
        config.PRESETS.update(saved)
        config.DEMO_PRESETS.clear()
        config.DEMO_PRESETS.update(saved_demo)


def test_a_third_preset_trains_and_tests_end_to_end(tiny_preset, tiny_argv, tmp_path):
    root = tmp_path / "runs"
    argv = tiny_argv(tiny_preset, root)
    assert set(config.PRESETS) == {"Tiny"}                  # nothing can reach the other presets
    best = runner.run("Tiny", argv)
    args = config.build_args("Tiny", argv)
    assert args.class_name_lst == CLASSES and args.action_cls_num == 3
    save_dir = args.save_dir
    assert save_dir.startswith(os.path.join(str(root), "Tiny", "default") + os.sep)
    assert os.path.isfile(os.path.join(save_dir, "model_step2_best_epoch.pth"))
    with open(os.path.join(save_dir, "results.json")) as handle:
        results = json.load(handle)
    assert sorted(results["steps"]) == ["0", "1", "2"] and len(best) == 3
    assert [results["steps"][str(k)]["best"]["average_mAP"] for k in range(3)] == [
        100 * value for value in best]
    with open(os.path.join(save_dir, "config.json")) as handle:
        stored = json.load(handle)
    assert stored["dataset"] == "Tiny" and stored["action_cls_num"] == 3
    named = {key: value for key, value in stored.items()
             if any(name in str(value) for name in OTHER_NAMES)}
    # only the shapes it borrows: the synthetic profile and the diagnosis bins (not preset names)
    assert set(named) <= {"synthetic_profile", "diagnosis_bins"}, named

    detectors = runner.run("Tiny", argv + ["--test", "--checkpoint", save_dir, "--diagnose"])
    assert len(detectors) == 3
    assert all(math.isfinite(detector.average_mAP) for detector in detectors)
    assert detectors[-1].average_mAP == pytest.approx(best[-1], abs=1e-12)
    assert set(detectors[-1].activity_index) <= set(CLASSES)
    test_dir = os.path.join(save_dir, "test")
    for name in ("test_result_step2.json", "test_summary.json", "test_per_class_ap_step2.csv",
                 os.path.join("diagnosis", "test_step2_diagnosis.json")):
        assert os.path.isfile(os.path.join(test_dir, name)), name
