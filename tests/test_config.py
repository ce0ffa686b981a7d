"""Config presets, command-line overrides and their errors."""
import json
import os

import numpy as np
import pytest

import config
from config import ConfigError, build_args


def test_presets_match_spec_table():
    thumos = build_args("THUMOS")
    assert (thumos.epochs, thumos.epochs_per_step, thumos.num_steps) == (800, 100, 3)
    assert (thumos.sample_segments_num, thumos.max_segments_num) == (750, 200)
    assert (thumos.fg_topk_seg, thumos.bg_topk_seg, thumos.nms_thresh) == (8, 3, 0.45)
    assert (thumos.delta, thumos.alpha, thumos.gamma, thumos.beta) == (0.5, 0.7, 6, 0.2)
    assert thumos.action_cls_num == 20 and thumos.snippets_per_sec == 25 / 16
    np.testing.assert_array_equal(thumos.tiou_thresholds, np.arange(0.1, 1.0, 0.1))
    np.testing.assert_array_equal(thumos.att_thresh, np.arange(0.1, 0.925, 0.025))
    anet = build_args("ActivityNet")
    assert (anet.epochs, anet.epochs_per_step, anet.num_steps) == (100, 50, 1)
    assert (anet.lamb_fg, anet.weight_decay, anet.cls_threshold) == (5.0, 1e-3, 0.10)
    assert anet.action_cls_num == 200 and anet.embed_dropout and not thumos.embed_dropout
    np.testing.assert_array_equal(anet.pseudo_cas_thresh, np.arange(0.1, 0.305, 0.005))
    assert anet.save_dir.endswith("t150_step1_e50_gamma10_alpha0.3_delta0")
    assert thumos.save_dir.endswith("t750_step3_e100_gamma6_alpha0.7_delta0.5")


def test_overrides_released_flags_and_any_key():
    args = build_args("THUMOS", ["-b", "4", "-j", "2", "--lr", "0.001", "--epochs", "20",
                                 "--feature_dim", "256", "--use_inter_attention", "false",
                                 "--tiou_thresholds", "0.3", "0.5", "--suffix", "abl", "--test",
                                 "--checkpoint", "some/dir"])
    assert (args.batch_size, args.num_workers, args.lr, args.epochs, args.feature_dim) == (
        4, 2, 1e-3, 20, 256)
    assert args.use_inter_attention is False and args.test and args.checkpoint == "some/dir"
    np.testing.assert_array_equal(args.tiou_thresholds, [0.3, 0.5])
    assert args.save_dir.endswith("_abl")


def test_demo_preset_then_cli_wins():
    args = build_args("THUMOS", ["--demo", "--epochs", "3"])
    assert args.data_dir == os.path.join("data", "synthetic_THUMOS14")
    assert args.feature_dim == config.DEMO["feature_dim"]
    assert build_args("ActivityNet", ["--demo"]).data_dir == os.path.join(
        "data", "synthetic_ActivityNet13")
    assert args.epochs == 3


@pytest.mark.parametrize("argv", [["--no_such_key", "1"], ["--epochs", "ten"],
                                  ["--use_uncertainty", "maybe"], ["--epoch", "3"]])
def test_unknown_key_or_wrong_type_is_an_error(argv):
    with pytest.raises(ConfigError, match=argv[0]):
        build_args("THUMOS", argv)


@pytest.mark.parametrize("argv, message", [(["-b", "0"], "--batch_size must be at least 1"),
                                           (["--epochs", "0"], "--epochs must be at least 1"),
                                           (["--test"], "--test needs --checkpoint"),
                                           (["--feature_dim", "30"], "divisible by --num_heads")])
def test_invalid_values_raise_config_error(argv, message):
    with pytest.raises(ConfigError, match=message):
        build_args("THUMOS", argv)


def test_unknown_dataset():
    with pytest.raises(ConfigError, match="unknown dataset"):
        build_args("Charades")


def test_resolved_config_is_saved_as_json(tmp_path):
    args = build_args("THUMOS", ["--epochs", "7"])
    config.save_config(args, tmp_path / "config.json")
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["epochs"] == 7 and saved["tiou_thresholds"] == list(np.arange(0.1, 1.0, 0.1))
    assert saved["class_names"] == args.class_name_lst                # the contents, in order
    assert "class_name_lst" not in saved


# ----------------------------------------------------------------------------- a user's dataset
def test_class_list_resolves_from_the_current_directory_then_classes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "classes.txt").write_text("Wave\nJump\n")
    args = build_args("THUMOS", ["--class_list", "mine/classes.txt"])
    assert args.class_name_lst == ["Wave", "Jump"] and args.action_cls_num == 2
    assert args.class_list_file == "mine/classes.txt"
    assert build_args("THUMOS", ["--class_list", "THUMOS14.txt"]).class_list_file == str(
        config.CLASS_LIST_DIR / "THUMOS14.txt")                         # not here: classes/
    with pytest.raises(ConfigError, match=r"class list ../none.txt not found .* pass "
                                          r"--class_list FILE"):
        build_args("THUMOS", ["--class_list", "../none.txt"])
    (tmp_path / "empty.txt").write_text("\n")
    with pytest.raises(ConfigError, match="empty.txt is empty"):
        build_args("THUMOS", ["--class_list", "empty.txt"])


def test_a_data_folder_with_classes_txt_is_a_dataset_of_its_own(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = tmp_path / "data" / "mydata"
    data.mkdir(parents=True)
    (data / "classes.txt").write_text("Slide\nBounce\n")
    args = build_args("THUMOS", ["--data_dir", "data/mydata"])
    assert args.class_name_lst == ["Slide", "Bounce"] and args.dataset == "THUMOS"
    assert args.dataset_name == "mydata" and args.class_list_file == os.path.join(
        "data", "mydata", "classes.txt")
    assert args.save_dir.startswith(os.path.join("checkpoints", "mydata", "default") + os.sep)
    named = build_args("THUMOS", ["--data_dir", "data/mydata", "--dataset_name", "Toys"])
    assert named.save_dir.startswith(os.path.join("checkpoints", "Toys") + os.sep)
    chosen = build_args("THUMOS", ["--data_dir", "data/mydata", "--class_list", "THUMOS14.txt"])
    assert chosen.action_cls_num == 20 and chosen.dataset_name == "THUMOS"
    # the preset's own folder keeps the preset's name (a benchmark folder with its class list)
    (tmp_path / "data" / "THUMOS14").mkdir()
    (tmp_path / "data" / "THUMOS14" / "classes.txt").write_text("A\nB\n")
    own = build_args("THUMOS")
    assert own.dataset_name == "THUMOS" and own.class_name_lst == ["A", "B"]
    assert build_args("THUMOS", ["--data_dir", "elsewhere"]).dataset_name == "THUMOS"
    with pytest.raises(ConfigError, match="--dataset_name 'a/b' must be a folder name"):
        build_args("THUMOS", ["--dataset_name", "a/b"])
