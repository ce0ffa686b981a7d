"""The annotation and result files: the one reader and writer of gt.json and of the split lists,
and the one writer of ActivityNet-format result files. Every problem is one line naming the
file."""
import json
import os

from utils import UserError, atomic_write_json, atomic_write_text


class DataError(UserError):
    """The dataset on disk is missing or malformed; the message names the file and the fix."""


class EvaluationInputError(DataError):
    """A ground-truth or prediction file that cannot be evaluated (missing, malformed)."""


def read_json(path, what, error=EvaluationInputError):
    """The JSON value in `path`; `what` names the file in the one-line error."""
    if not os.path.isfile(path):
        raise error(f"{what} file {path} not found")
    try:
        with open(path) as handle:
            return json.load(handle)
    except (ValueError, UnicodeDecodeError) as err:
        raise error(f"{what} file {path} is not valid JSON ({err})") from None


def read_gt(path):
    """gt.json's {VID: {"duration", "subset", "annotations": [...]}} ("database")."""
    if not os.path.isfile(path):
        raise DataError(f"annotation file {path} is missing; it comes with the feature release")
    try:
        with open(path) as handle:
            gt = json.load(handle)
    except (ValueError, UnicodeDecodeError) as err:
        raise DataError(f"annotation file {path} is not valid JSON ({err}); "
                        f"re-download it") from None
    if not isinstance(gt, dict) or not isinstance(gt.get("database"), dict):
        raise DataError(f"annotation file {path} has no \"database\" object; expected the "
                        f"ActivityNet gt.json layout {{\"database\": {{VID: {{\"annotations\": "
                        f"[...]}}}}}}")
    return gt["database"]


def gt_segments(info):
    """(the annotations with a segment, scored) of a gt.json entry (docs/method.md §12).

    A video is scored when it has a segment, or an empty "annotations" list (no action in it:
    its detections are false positives, as in the official evaluator). One without "annotations",
    or with labels but no segment (video-level labels), is predicted, not scored."""
    annotations = info.get("annotations")
    segments = [ann for ann in annotations or [] if "segment" in ann]
    return segments, bool(segments) or annotations == []


def read_split(path):
    """The video names of a split file, one per line (blank lines skipped); a name listed twice
    is an error (it would be trained on, or counted, twice)."""
    if not path.is_file():
        raise DataError(f"split file {path} is missing; it must list one video name per line")
    first_line = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        name = line.strip()
        if name and name in first_line:
            raise DataError(f"split file {path} line {number}: video {name} is listed again "
                            f"(first on line {first_line[name]}); list each video once")
        if name:
            first_line[name] = number
    if not first_line:
        raise DataError(f"split file {path} is empty; it must list one video name per line")
    return list(first_line)


def write_gt(path, database):
    """gt.json of {VID: {"duration", "subset", "annotations": [{"label"[, "segment"]}]}}
    (atomic)."""
    atomic_write_json(path, {"database": database}, indent=1)


def write_split(path, names):
    """A split file: one video name a line (atomic)."""
    atomic_write_text(path, "".join(f"{name}\n" for name in names))


def write_results_json(path, results_by_video, version="VERSION 1.3", external_data=None):
    """Write {"version", "results": {VID: [...]}, "external_data"} atomically (evaluator input)."""
    if external_data is None:
        external_data = {"used": True, "details": "I3D RGB + flow features pretrained on Kinetics"}
    atomic_write_json(path, {"version": version, "results": results_by_video,
                             "external_data": external_data})
