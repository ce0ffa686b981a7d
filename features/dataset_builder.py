"""A dataset from a folder of videos and a CSV of labels (`extract_features.py --labels`): gt.json,
the split files, classes.txt and the I3D features of every video, in the layout of the public
feature releases (docs/method.md §1), ready for `python main_THUMOS.py --data_dir OUT`.

The CSV is UTF-8 and comma-separated; its first line names the columns, in any order:

    video,split,label,start,end
    jump_01.mp4,train,Jump,,            a training video and its video-level label
    mixed_02.mp4,train,Jump;Wave,,      several labels: ';' between them (or one row per label)
    clip_07.mp4,test,Jump,2.5,4.0       a test video's action instance, in seconds
    clip_07.mp4,test,Wave,6.0,7.2       another instance of the same video
    clip_09.mp4,test,,,                 a test video without segments: predicted, not scored

- video (required): a file of the videos folder, by its name or its name without the extension
  (the video's id, VID); a video may have several rows, all of one split.
- split (required): train or test.
- label (required column): class names separated by ';'; exactly one on a row with a segment.
  A training video needs a label; a test video may have none.
- start, end (optional columns, both or neither; seconds): one action instance,
  0 <= start < end <= the video's duration. Training reads only labels (segments of training
  videos are kept in gt.json for --val_videos). A test video with segments is scored, and every
  label of it must come with a segment; a test video without any is predicted, not scored.

Everything is checked before any extraction, each problem one line `CSV:LINE: what`: an unknown,
missing or repeated column, an unknown split, a video without a file, a video file without a row,
a training video without a label, a start or end that is no number, only one of them, start < 0,
end <= start, an end past the video's duration (from its container), a segment with several
labels, a repeated row, a video in two splits, a test video with a segment for one label and none
for another, a label outside `--classes`, a class without a training video, an empty split,
unreadable or too-short videos.

OUT gets classes.txt (the labels sorted by name, or the order of `--classes FILE`), gt.json
(subsets "train" and "test"; durations from the containers; a label without a segment is
{"label"}, a video without a label has no "annotations"), split_train.txt, split_test.txt,
build_config.json (the CSV's sha256 and the videos folder) and train/VID.npy, test/VID.npy
(features/extract.py: a video whose VID.npy exists is skipped, so a rerun resumes). The annotation
files are written after the features, atomically, from the CSV of that run. A folder with a gt.json
that this command did not write is refused.
"""
import csv
import hashlib
import math
import os
from dataclasses import dataclass, field
from typing import Optional

from config import DATA_CLASS_LIST, ConfigError, load_class_names
from eval.files import write_gt, write_split
from features.extract import ExtractError, check_videos, extract_videos
from utils import RunFolderLock, UserError, atomic_write_json

COLUMNS = ("video", "split", "label", "start", "end")
REQUIRED = ("video", "split", "label")
SPLITS = ("train", "test")
SEPARATOR = ";"
BUILD_FILE = "build_config.json"
MAX_LINES = 30                  # problems listed in one error (then a count)


class LabelFileError(UserError):
    """The label CSV (or the videos it names) cannot make a dataset; one line per problem."""


@dataclass
class Row:
    line: int                   # line of the CSV (1 = the header)
    video: str
    split: str
    labels: list
    segment: Optional[tuple]    # (start, end) seconds


@dataclass
class Video:
    vid: str
    path: str
    split: str
    line: int                   # its first row
    labels: list = field(default_factory=list)         # in order of first appearance
    segments: list = field(default_factory=list)       # [(label, start, end)]
    duration: Optional[float] = None


def fail(problems):
    """Raise one LabelFileError listing the problems (at most MAX_LINES, then a count)."""
    shown = problems[:MAX_LINES]
    more = len(problems) - len(shown)
    raise LabelFileError("\n".join(shown + ([f"... and {more} more"] if more else [])))


# ----------------------------------------------------------------------------- the CSV
def parse_number(text, name, where, problems):
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        problems.append(f"{where}: {name} {text!r} is not a number of seconds")
        return None
    return value


def parse_row(cells, columns, where, problems):
    """A Row from one CSV line's cells, or None (its problems appended)."""
    if len(cells) > len(columns):
        problems.append(f"{where}: {len(cells)} values, but the header names {len(columns)} "
                        f"columns")
        return None
    value = dict(zip(columns, [cell.strip() for cell in cells] + [""] * len(columns)))
    count = len(problems)
    video, split = value["video"], value["split"].lower()
    labels = [name.strip() for name in value["label"].split(SEPARATOR) if name.strip()]
    if not video:
        problems.append(f"{where}: no video")
    if split not in SPLITS:
        problems.append(f"{where}: unknown split {value['split']!r}; use train or test")
    segment = None
    start, end = value.get("start", ""), value.get("end", "")
    if bool(start) != bool(end):
        problems.append(f"{where}: a segment needs both start and end (seconds)")
    elif start:
        start = parse_number(start, "start", where, problems)
        end = parse_number(end, "end", where, problems)
        if start is not None and end is not None:
            if start < 0:
                problems.append(f"{where}: start {start:g} is before the video's start")
            elif end <= start:
                problems.append(f"{where}: end {end:g} is not after start {start:g}")
            segment = (start, end)
        if len(labels) != 1:
            problems.append(f"{where}: a row with a segment needs exactly one label "
                            f"(got {len(labels)})")
    return Row(0, video, split, labels, segment) if len(problems) == count else None


def read_label_csv(path):
    """The rows of a label CSV (blank lines skipped); every problem of every line in one error."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise LabelFileError(f"label file {path} not found (--labels CSV)")
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            lines = [(reader.line_num, cells) for cells in reader if any(c.strip() for c in cells)]
    except (UnicodeDecodeError, csv.Error) as err:
        raise LabelFileError(f"{path} is not a UTF-8 CSV file ({err})") from None
    if not lines:
        raise LabelFileError(f"{path} is empty; its first line names the columns "
                             f"({','.join(COLUMNS)})")
    header_line, header = lines[0]
    columns = [name.strip().lower() for name in header]
    where = f"{path}:{header_line}"
    problems = [f"{where}: unknown column {name!r}; the columns are {', '.join(COLUMNS)}"
                for name in columns if name not in COLUMNS]
    problems += [f"{where}: column {name!r} appears twice" for name in sorted(set(columns))
                 if columns.count(name) > 1]
    problems += [f"{where}: no column {name!r} (the header names the columns: "
                 f"{','.join(COLUMNS)})" for name in REQUIRED if name not in columns]
    if ("start" in columns) != ("end" in columns):
        problems.append(f"{where}: columns start and end go together")
    if problems:
        fail(problems)
    rows = []
    for number, cells in lines[1:]:
        row = parse_row(cells, columns, f"{path}:{number}", problems)
        if row is not None:
            row.line = number
            rows.append(row)
    if problems:
        fail(problems)
    if not rows:
        raise LabelFileError(f"{path} has a header but no rows")
    return rows


# ----------------------------------------------------------------------------- the plan
def frames_module():
    """features/frames.py, which needs OpenCV's contrib build."""
    try:
        from features import frames
    except ImportError:
        raise ExtractError("building a dataset from videos needs OpenCV's contrib build: pip "
                           "install -r requirements-extract.txt") from None
    return frames


def video_files(videos_dir):
    """{VID: path} of the videos folder (features/frames.py's suffixes)."""
    video_frames = frames_module()
    try:
        return video_frames.list_videos(videos_dir)
    except video_frames.VideoError as err:
        raise ExtractError(str(err)) from None


def group_rows(rows, csv_path, files, problems):
    """{VID: Video} from the rows, in order of first appearance (problems appended)."""
    by_name = {os.path.basename(path): vid for vid, path in files.items()}
    videos, seen = {}, {}
    for row in rows:
        where = f"{csv_path}:{row.line}"
        vid = by_name.get(row.video, row.video if row.video in files else None)
        if vid is None:
            problems.append(f"{where}: video {row.video!r} has no file in the videos folder "
                            f"({len(files)} videos there)")
            continue
        key = (vid, tuple(row.labels), row.segment)
        if key in seen:
            problems.append(f"{where}: repeats line {seen[key]}")
            continue
        seen[key] = row.line
        video = videos.setdefault(vid, Video(vid, files[vid], row.split, row.line))
        if row.split != video.split:
            problems.append(f"{where}: video {vid} is in split {row.split} here, but in "
                            f"{video.split} on line {video.line}")
            continue
        video.labels += [name for name in row.labels if name not in video.labels]
        if row.segment is not None:
            video.segments.append((row.labels[0], *row.segment))
    return videos


def check_videos_rows(videos, csv_path, problems):
    """Per video: a training label, segments for every label of a scored test video."""
    for video in videos.values():
        where = f"{csv_path}:{video.line}"
        if video.split == "train" and not video.labels:
            problems.append(f"{where}: training video {video.vid} has no label; training needs "
                            f"one (video-level) label or more")
        with_segment = {label for label, _, _ in video.segments}
        bare = [name for name in video.labels if name not in with_segment]
        if video.split == "test" and video.segments and bare:
            problems.append(f"{where}: test video {video.vid} has segments, but none for "
                            f"{bare[0]!r}: a scored video needs every instance as a segment "
                            f"(give its segments, or drop its segments to predict it unscored)")


def class_names(videos, csv_path, classes_file, problems):
    """The class list: --classes FILE's order, else every label sorted; each class needs a
    training video."""
    first = {}
    for video in videos.values():
        for name in video.labels:
            first.setdefault(name, video.line)
    if classes_file:
        try:
            names = load_class_names(classes_file)
        except ConfigError as err:
            raise LabelFileError(f"--classes: {err}") from None
        problems += [f"{csv_path}:{line}: label {name!r} is not in {classes_file} (--classes)"
                     for name, line in first.items() if name not in names]
    else:
        names = sorted(first)
    trained = {name for video in videos.values() if video.split == "train"
               for name in video.labels}
    for name in names:
        if name not in trained:
            where = f"{csv_path}:{first[name]}" if name in first else f"{classes_file}"
            problems.append(f"{where}: class {name!r} has no training video; the model cannot "
                            f"learn it: add training videos of it, or drop it")
    return names


def plan_dataset(rows, csv_path, videos_dir, classes_file=None, fps=25.0, snippet_frames=16):
    """The dataset the rows describe: ({VID: Video}, class names), every check of the module
    docstring done (nothing extracted yet)."""
    video_frames = frames_module()
    files = video_files(videos_dir)
    problems = []
    videos = group_rows(rows, csv_path, files, problems)
    problems += [f"{csv_path}: video file {path} has no row; add one (split test without a label "
                 f"predicts it unscored) or move it out of {videos_dir}"
                 for vid, path in files.items() if vid not in videos]
    check_videos_rows(videos, csv_path, problems)
    names = class_names(videos, csv_path, classes_file, problems)
    for split in SPLITS:
        if not any(video.split == split for video in videos.values()):
            problems.append(f"{csv_path}: no {split} video; the dataset needs both splits")
    if problems:
        fail(problems)
    check_videos([video.path for video in videos.values()], fps, snippet_frames)
    for video in videos.values():
        video.duration = video_frames.container_duration(video.path)
        late = [end for _, _, end in video.segments
                if video.duration is not None and end > video.duration + 1.0 / fps]
        if late:
            problems.append(f"{csv_path}:{video.line}: video {video.vid} lasts "
                            f"{video.duration:.2f} s, its segment ends at {max(late):g} s")
    if problems:
        fail(problems)
    return videos, names


# ----------------------------------------------------------------------------- the folder
def file_sha256(path):
    with open(path, "rb") as handle:
        return hashlib.sha256(handle.read()).hexdigest()


def claim_data_folder(out):
    """OUT may be new, empty, or built by this command before; never another dataset's."""
    if os.path.exists(out) and not os.path.isdir(out):
        raise ExtractError(f"--out {out} is a file; pass a folder")
    if os.path.isfile(os.path.join(out, "gt.json")) and not os.path.isfile(
            os.path.join(out, BUILD_FILE)):
        raise ExtractError(f"--out {out} holds a gt.json that extract_features.py --labels did "
                           f"not write (no {BUILD_FILE}); choose another --out")
    os.makedirs(out, exist_ok=True)


def annotations(video):
    """gt.json annotations: each segment, then each label without one (video-level)."""
    with_segment = {label for label, _, _ in video.segments}
    return ([{"segment": [start, end], "label": label} for label, start, end in video.segments]
            + [{"label": name} for name in video.labels if name not in with_segment])


def write_annotation_files(out, videos, names, features, csv_path, videos_dir, snippet_s):
    """gt.json, the split files, classes.txt and build_config.json (atomic each)."""
    database = {}
    for vid, video in videos.items():
        duration = video.duration
        if duration is None:                  # no container metadata: the featured time
            import numpy as np
            duration = np.load(features[vid], mmap_mode="r").shape[0] * snippet_s
        database[vid] = {"duration": round(float(duration), 3), "subset": video.split}
        if video.labels:                      # without: not annotated (predicted, not scored)
            database[vid]["annotations"] = annotations(video)
    write_gt(os.path.join(out, "gt.json"), database)
    for split in SPLITS:
        write_split(os.path.join(out, f"split_{split}.txt"),
                    [vid for vid, video in videos.items() if video.split == split])
    write_split(os.path.join(out, DATA_CLASS_LIST), names)
    atomic_write_json(os.path.join(out, BUILD_FILE), {
        "labels_csv": os.path.abspath(csv_path), "labels_sha256": file_sha256(csv_path),
        "videos": os.path.abspath(videos_dir), "classes": len(names),
        "videos_per_split": {split: sum(v.split == split for v in videos.values())
                             for split in SPLITS}}, indent=2)


def build_dataset(videos_dir, labels_csv, out, rgb_weights, flow_weights, fps=25.0,
                  snippet_frames=16, device="cpu", batch=8, workers=None, classes_file=None,
                  tvl1_params=None, log=print):
    """The data folder OUT from a videos folder and a label CSV (the module docstring); returns
    the summary line. Interrupted, the same command resumes."""
    rows = read_label_csv(labels_csv)
    videos, names = plan_dataset(rows, labels_csv, videos_dir, classes_file, fps, snippet_frames)
    claim_data_folder(out)
    features = {}
    with RunFolderLock(out):
        for split in SPLITS:
            chosen = {vid: video.path for vid, video in videos.items() if video.split == split}
            features.update(extract_videos(
                chosen, os.path.join(out, split), rgb_weights, flow_weights, fps=fps,
                snippet_frames=snippet_frames, device=device, batch=batch, workers=workers,
                tvl1_params=tvl1_params, log=log))
        write_annotation_files(out, videos, names, features, labels_csv, videos_dir,
                               snippet_frames / fps)
    tests = [video for video in videos.values() if video.split == "test"]
    scored = sum(bool(video.segments) for video in tests)
    line = (f"{out}: {len(videos) - len(tests)} training videos, {len(tests)} test videos "
            f"({scored} with segments, scored; {len(tests) - scored} predicted, not scored), "
            f"{len(names)} classes ({os.path.join(out, DATA_CLASS_LIST)}); train with "
            f"python main_THUMOS.py --data_dir {out} (main_ActivityNet.py: add --eval_subset "
            f"test), see docs/custom_data.md")
    log(line)
    return line

