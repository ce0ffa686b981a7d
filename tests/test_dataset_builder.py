"""features/dataset_builder.py: the label CSV and its checks (each problem one line naming the CSV
and its line, all before any extraction), the data folder it may write into, and the annotation
files it writes. The whole path with extraction and training is tests/test_custom_data.py."""
import json
import os

import numpy as np
import pytest

from features import dataset_builder as builder

HEADER = "video,split,label,start,end\n"


def write_csv(tmp_path, text, name="labels.csv"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def problems_of(error):
    return str(error.value).splitlines()


# ----------------------------------------------------------------------------- the CSV alone
def test_rows_are_read_with_labels_and_segments(tmp_path):
    path = write_csv(tmp_path, "\ufeffVideo, Split ,label,start,end\n"     # BOM, case, spaces
                     "a.avi,train,Jump ; Wave,,\n\n"
                     "b,test,Jump,1.5,3\n"
                     "c.avi,TEST,,,\n")
    rows = builder.read_label_csv(path)
    assert [(r.line, r.video, r.split, r.labels, r.segment) for r in rows] == [
        (2, "a.avi", "train", ["Jump", "Wave"], None),
        (4, "b", "test", ["Jump"], (1.5, 3.0)),
        (5, "c.avi", "test", [], None)]


def test_columns_in_any_order_and_without_segments(tmp_path):
    rows = builder.read_label_csv(write_csv(tmp_path, "label,video,split\nJump,a,train\n"))
    assert [(r.video, r.split, r.labels, r.segment) for r in rows] == [
        ("a", "train", ["Jump"], None)]


@pytest.mark.parametrize("header, message", [
    ("video,split,label,start,end,comment", "unknown column 'comment'"),
    ("video,label,start,end", "no column 'split'"),
    ("video,split,label,start", "columns start and end go together"),
    ("video,split,label,label", "column 'label' appears twice"),
])
def test_bad_header_is_refused_naming_line_one(tmp_path, header, message):
    path = write_csv(tmp_path, header + "\na,train,Jump,,,\n")
    with pytest.raises(builder.LabelFileError) as error:
        builder.read_label_csv(path)
    assert any(line.startswith(f"{path}:1: ") and message in line
               for line in problems_of(error)), str(error.value)


def test_every_bad_row_is_one_line_naming_its_line(tmp_path):
    path = write_csv(tmp_path, HEADER
                     + "a,train,Jump,,\n"                 # 2: fine
                     + "b,validation,Jump,,\n"            # 3: unknown split
                     + "c,test,Jump,4,3\n"                # 4: end before start
                     + "d,test,Jump,x,3\n"                # 5: not a number
                     + "e,test,Jump,2,\n"                 # 6: only start
                     + "f,test,Jump;Wave,1,2\n"           # 7: a segment with two labels
                     + ",train,Jump,,\n"                  # 8: no video
                     + "g,test,Jump,-1,2\n"               # 9: before the start
                     + "h,train,Jump,,,,\n")              # 10: too many values
    with pytest.raises(builder.LabelFileError) as error:
        builder.read_label_csv(path)
    lines = problems_of(error)
    expected = {3: "unknown split 'validation'", 4: "end 3 is not after start 4",
                5: "start 'x' is not a number", 6: "needs both start and end",
                7: "exactly one label (got 2)", 8: "no video", 9: "start -1 is before",
                10: "7 values, but the header names 5 columns"}
    assert len(lines) == len(expected)
    for (number, message), line in zip(sorted(expected.items()), lines):
        assert line.startswith(f"{path}:{number}: ") and message in line, line


def test_missing_and_empty_csv(tmp_path):
    with pytest.raises(builder.LabelFileError, match="not found .--labels CSV"):
        builder.read_label_csv(str(tmp_path / "none.csv"))
    with pytest.raises(builder.LabelFileError, match="is empty"):
        builder.read_label_csv(write_csv(tmp_path, "\n"))
    with pytest.raises(builder.LabelFileError, match="header but no rows"):
        builder.read_label_csv(write_csv(tmp_path, HEADER))


# ----------------------------------------------------------------------------- against the videos
@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """Videos of the toy folder (2 classes, 2 training and 1 test video each, one unlabelled
    test video; 1.28 s each)."""
    pytest.importorskip("cv2")
    from features.toy_videos import write_toy_videos
    root = tmp_path_factory.mktemp("toy")
    videos, labels = write_toy_videos(str(root), seconds=1.28, classes=("Bounce", "Slide"))
    return {"videos": videos, "labels": labels, "root": root}


def plan(toy, tmp_path, text, classes=None):
    path = write_csv(tmp_path, text)
    return path, builder.plan_dataset(builder.read_label_csv(path), path, toy["videos"], classes)


def test_the_toy_csv_plans_a_dataset(toy):
    videos, names = builder.plan_dataset(builder.read_label_csv(toy["labels"]), toy["labels"],
                                         toy["videos"])
    assert names == ["Bounce", "Slide"]
    assert sorted(v.split for v in videos.values()) == ["test"] * 3 + ["train"] * 4
    assert videos["unlabelled_test_0"].labels == [] and videos["bounce_train_0"].segments == []
    assert all(v.duration == pytest.approx(1.28, abs=0.05) for v in videos.values())
    (label, start, end), = videos["slide_test_0"].segments
    assert label == "Slide" and 0 <= start < end <= 1.28


def test_csv_against_the_videos_folder(toy, tmp_path):
    text = ("video,split,label,start,end\n"
            "bounce_train_0.avi,train,Bounce,,\n"          # 2
            "bounce_train_1,train,,,\n"                    # 3: a training video without label
            "slide_train_0,train,Slide,,\n"                # 4
            "slide_train_0,test,Slide,0.1,0.5\n"           # 5: the same video in another split
            "nothing.avi,train,Slide,,\n"                  # 6: no such file
            "bounce_test_0,test,Bounce,0.2,0.6\n"          # 7
            "bounce_test_0,test,Slide,,\n"                 # 8: a scored video, a bare label
            "slide_test_0,test,Slide,0.5,9.5\n"            # 9: ends after the video
            "slide_test_0,test,Slide,0.5,9.5\n"            # 10: a repeated row
            "unlabelled_test_0,test,Jump,,\n")             # 11: Jump has no training video
    with pytest.raises(builder.LabelFileError) as error:
        plan(toy, tmp_path, text)
    path = str(tmp_path / "labels.csv")
    lines = problems_of(error)
    for where, message in [
            (6, "video 'nothing.avi' has no file"), (10, "repeats line 9"),
            (5, "in split test here, but in train on line 4"),
            (3, "training video bounce_train_1 has no label"),
            (7, "has segments, but none for 'Slide'"), (11, "class 'Jump' has no training video"),
            (None, "slide_train_1.avi has no row")]:
        prefix = f"{path}:{where}: " if where else f"{path}: "
        assert any(line.startswith(prefix) and message in line for line in lines), (where, lines)
    assert all(line.startswith(path) for line in lines)
    # a segment past the video's end is checked with the durations, once the rest is right
    late = (HEADER + "bounce_train_0,train,Bounce,,\nbounce_train_1,train,Bounce,,\n"
            "slide_train_0,train,Slide,,\nslide_train_1,train,Slide,,\n"
            "bounce_test_0,test,Bounce,0.2,0.6\nslide_test_0,test,Slide,0.5,9.5\n"
            "unlabelled_test_0,test,,,\n")
    with pytest.raises(builder.LabelFileError) as error:
        plan(toy, tmp_path, late)
    line, = problems_of(error)
    assert line.startswith(f"{path}:7: ") and "lasts 1.28 s, its segment ends at 9.5 s" in line


def test_classes_file_gives_the_order_and_refuses_other_labels(toy, tmp_path):
    order = tmp_path / "order.txt"
    order.write_text("Slide\nBounce\n")
    with open(toy["labels"]) as handle:
        text = handle.read()
    assert plan(toy, tmp_path, text, str(order))[1][1] == ["Slide", "Bounce"]
    order.write_text("Slide\n")
    with pytest.raises(builder.LabelFileError, match=r"label 'Bounce' is not in .*order.txt "
                                                     r"\(--classes\)"):
        plan(toy, tmp_path, text, str(order))


def test_a_split_without_videos_is_refused(toy, tmp_path):
    rows = "".join(f"{name}.avi,train,{name.split('_')[0].title()},,\n" for name in
                   sorted(os.path.splitext(f)[0] for f in os.listdir(toy["videos"])))
    with pytest.raises(builder.LabelFileError, match="no test video; the dataset needs both"):
        plan(toy, tmp_path, HEADER + rows)


def test_a_foreign_data_folder_is_refused(tmp_path):
    out = tmp_path / "THUMOS14"
    out.mkdir()
    (out / "gt.json").write_text("{}")
    with pytest.raises(builder.ExtractError, match="holds a gt.json that extract_features.py "
                                                   "--labels did not write"):
        builder.claim_data_folder(str(out))
    (out / builder.BUILD_FILE).write_text("{}")
    builder.claim_data_folder(str(out))                       # ours: written over


def test_annotation_files(tmp_path):
    videos = {"a": builder.Video("a", "a.avi", "train", 2, ["Jump", "Wave"], [], 4.0),
              "b": builder.Video("b", "b.avi", "test", 3, ["Jump"], [("Jump", 1.0, 2.0)], 5.0),
              "c": builder.Video("c", "c.avi", "test", 4, [], [], None)}
    np.save(tmp_path / "c.npy", np.zeros((5, 8), np.float32))
    csv_path = write_csv(tmp_path, HEADER + "a,train,Jump,,\n")
    builder.write_annotation_files(str(tmp_path), videos, ["Jump", "Wave"],
                                   {"c": str(tmp_path / "c.npy")}, csv_path, str(tmp_path), 0.64)
    database = json.loads((tmp_path / "gt.json").read_text())["database"]
    assert database == {
        "a": {"duration": 4.0, "subset": "train",
              "annotations": [{"label": "Jump"}, {"label": "Wave"}]},
        "b": {"duration": 5.0, "subset": "test",
              "annotations": [{"segment": [1.0, 2.0], "label": "Jump"}]},
        "c": {"duration": 3.2, "subset": "test"}}         # 5 snippets of 0.64 s; not annotated
    assert (tmp_path / "split_train.txt").read_text() == "a\n"
    assert (tmp_path / "split_test.txt").read_text() == "b\nc\n"
    assert (tmp_path / "classes.txt").read_text() == "Jump\nWave\n"
    built = json.loads((tmp_path / builder.BUILD_FILE).read_text())
    assert built["videos_per_split"] == {"train": 1, "test": 2} and built["classes"] == 2
