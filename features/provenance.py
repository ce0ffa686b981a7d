"""How a folder of features was made: extract_features.py writes extract_config.json beside the
.npy files; training and prediction read it to warn when their time base differs."""
import json
import math
import os
import warnings

from options import format_rate

CONFIG_NAME = "extract_config.json"
MISMATCH_START = "features in .* were extracted at"     # how extraction_mismatch's line starts


def extraction_time_base(path):
    """(fps, snippet_frames) that extract_config.json records for a feature folder (or the folder
    of one .npy file), or None where there is none."""
    folder = path if os.path.isdir(path) else os.path.dirname(os.path.abspath(path))
    try:
        with open(os.path.join(folder, CONFIG_NAME)) as handle:
            stored = json.load(handle)
        return float(stored["fps"]), int(stored["snippet_frames"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def same_time_base(one, other):
    """Two (fps, snippet frames) pairs agree (29.97002997 and 30000/1001 do)."""
    return math.isclose(float(one[0]), float(other[0]), rel_tol=1e-9) and \
        int(one[1]) == int(other[1])


def extraction_mismatch(folder, fps, snippet_frames):
    """A warning line when folder/extract_config.json says other fps / snippet frames than a
    run's, else None."""
    made = extraction_time_base(folder)
    if made is None or same_time_base(made, (fps, snippet_frames)):
        return None
    return (f"features in {folder} were extracted at {format_rate(made[0])} fps with "
            f"{made[1]}-frame snippets ({CONFIG_NAME}), but this run uses frames_per_sec "
            f"{format_rate(fps)} and segment_frames_num {int(snippet_frames)}: detection times "
            f"will be wrong (pass --fps {format_rate(made[0])} --snippet_frames {made[1]} to "
            f"predict.py, or --frames_per_sec / --segment_frames_num to training)")


def warn_extraction_mismatch(folders, fps, snippet_frames):
    for folder in sorted(set(folders)):
        message = extraction_mismatch(folder, fps, snippet_frames)
        if message:
            warnings.warn(message, stacklevel=3)


def snippet_time_warning(features, trained, now, folder=None):
    """One line when the features' snippets, (fps, frames) from extract_config.json in `folder` or
    from the flags, span another time than the snippets the model was trained on (`trained`);
    `now` is the time base detections are computed in. None when the durations agree."""
    feature_s, trained_s = features[1] / features[0], trained[1] / trained[0]
    if math.isclose(feature_s, trained_s, rel_tol=1e-9):
        return None
    where = f", {CONFIG_NAME} in {folder}" if folder else ""
    line = (f"the features' snippets span {feature_s:.4f} s ({features[1]} frames at "
            f"{format_rate(features[0])} fps{where}), the model was trained on snippets of "
            f"{trained_s:.4f} s ({trained[1]} frames at {format_rate(trained[0])} fps): snippets "
            f"now span a different time than in training (an action covers "
            f"{trained_s / feature_s:.3g} times as many of them), which can lower the scores")
    if not same_time_base(features, now):
        return line + (f"; detections are timed at {format_rate(now[0])} fps with {now[1]}-frame "
                       f"snippets and will be off: pass --fps {format_rate(features[0])} "
                       f"--snippet_frames {features[1]}")
    return line + "; detection times follow the features' time base"
