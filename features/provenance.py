"""How a folder of features was made: extract_features.py writes extract_config.json beside the
.npy files; training and prediction read it to warn when their time base differs."""
import json
import os
import warnings

CONFIG_NAME = "extract_config.json"


def extraction_mismatch(folder, fps, snippet_frames):
    """A warning line when folder/extract_config.json says other fps / snippet frames than a
    run's, else None."""
    path = os.path.join(folder, CONFIG_NAME)
    try:
        with open(path) as handle:
            stored = json.load(handle)
        made = float(stored["fps"]), int(stored["snippet_frames"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if made == (float(fps), int(snippet_frames)):
        return None
    return (f"features in {folder} were extracted at {made[0]:g} fps with {made[1]}-frame "
            f"snippets ({CONFIG_NAME}), "
            f"but this run uses frames_per_sec {float(fps):g} and segment_frames_num "
            f"{int(snippet_frames)}: "
            f"detection times will be wrong (pass --fps {made[0]:g} --snippet_frames {made[1]} "
            f"to predict.py, or "
            f"--frames_per_sec / --segment_frames_num to training)")


def warn_extraction_mismatch(folders, fps, snippet_frames):
    for folder in sorted(set(folders)):
        message = extraction_mismatch(folder, fps, snippet_frames)
        if message:
            warnings.warn(message, stacklevel=3)


