"""Held-out validation videos (--val_videos): model selection without looking at the test set.

--val_videos is a count (20), a fraction of the training videos (0.2) or a file of video ids (one a
line). A count or fraction is drawn stratified by class and seeded by --seed: each training video
belongs to the stratum of its rarest label (the label fewest training videos carry; ties by class
list order), so a multi-label video counts once and rare classes keep their share; each stratum
gives its share of the total (largest remainder), and keeps at least one training video. The
held-out videos are never trained on; they are scored like test videos (predicted label sets, pseudo
proposals from the full set, uniform sampling) against their own temporal GT in gt.json (THUMOS
subset "validation", ActivityNet "train").
"""
import os
from pathlib import Path

import numpy as np

from eval.files import read_gt, read_split
from utils import UserError, atomic_write_json, atomic_write_text

LIST_FILE = "val_videos.txt"             # the held-out videos, in the run folder
GT_FILE = "val_gt.json"                  # their gt.json entries: the validation evaluator's GT
GT_SUBSET = "held_out"                   # the subset name of every entry of GT_FILE
SEED_SALT = 0x7A1                        # keeps this draw apart from every other use of --seed


def parse_amount(spec, num_train):
    """--val_videos text -> ("count", n) | ("file", path) | None (off: "", "0")."""
    text = str(spec or "").strip()
    if text in ("", "0"):
        return None
    if os.path.isfile(text):
        return "file", text
    try:
        value = float(text)
    except ValueError:
        raise UserError(f"--val_videos {text!r}: expected a count (20), a fraction (0.2) or an "
                        f"existing file of video ids") from None
    if value.is_integer() and "." not in text:
        count = int(value)
    elif 0 < value < 1:
        count = int(round(value * num_train))
    else:
        raise UserError(f"--val_videos {text!r}: a fraction must be between 0 and 1 (exclusive)")
    if not 1 <= count < num_train:
        raise UserError(f"--val_videos {text!r} holds out {count} of {num_train} training videos; "
                        f"choose between 1 and {num_train - 1}")
    return "count", count


def strata(video_labels, class_names):
    """Stratum (class index, or len(class_names) for videos without labels) of each video:
    its rarest label by training-video count, ties by class list order."""
    index = {name: i for i, name in enumerate(class_names)}
    counts = np.zeros(len(class_names), dtype=np.int64)
    for labels in video_labels:
        counts[[index[name] for name in set(labels)]] += 1
    out = []
    for labels in video_labels:
        ids = sorted(index[name] for name in set(labels))
        out.append(min(ids, key=lambda c: (counts[c], c)) if ids else len(class_names))
    return np.asarray(out, dtype=np.int64)


def stratum_quotas(sizes, total):
    """Videos to hold out per stratum: the largest-remainder share of `total`, at most size - 1
    each."""
    sizes = np.asarray(sizes, dtype=np.int64)
    capacity = np.maximum(sizes - 1, 0)
    if total > capacity.sum():
        raise UserError(f"--val_videos: cannot hold out {total} videos and keep one training video "
                        f"per class stratum (at most {int(capacity.sum())})")
    exact = total * sizes / sizes.sum()
    quotas = np.minimum(np.floor(exact).astype(np.int64), capacity)
    while quotas.sum() < total:
        remainder = np.where(quotas < capacity, exact - quotas, -np.inf)
        quotas[int(np.argmax(remainder))] += 1                  # argmax: first of equal remainders
    return quotas


def choose_held_out(video_names, video_labels, class_names, count, seed):
    """`count` of `video_names` (training list order), stratified by rarest label and seeded."""
    group = strata(video_labels, class_names)
    present = np.unique(group)
    quotas = stratum_quotas([int((group == g).sum()) for g in present], count)
    rng = np.random.default_rng([int(seed), SEED_SALT])
    chosen = set()
    for g, quota in zip(present, quotas):
        members = np.flatnonzero(group == g)
        chosen.update(members[rng.permutation(len(members))[:quota]].tolist())
    return [video_names[i] for i in sorted(chosen)]


def read_id_file(path, train_videos):
    names = [line.strip() for line in open(path).read().splitlines() if line.strip()]
    unknown = [vid for vid in names if vid not in train_videos]
    if unknown:
        raise UserError(f"--val_videos file {path}: {unknown[0]} is not a video of split_train.txt "
                        f"({len(unknown)} such ids); list training videos only")
    if not names or len(set(names)) == len(train_videos):
        raise UserError(f"--val_videos file {path} must list between 1 and "
                        f"{len(train_videos) - 1} training videos")
    return [vid for vid in train_videos if vid in set(names)]


def held_out_videos(args, database, train_list):
    """The held-out videos of this run ([] when --val_videos is off), in training list order."""
    amount = parse_amount(getattr(args, "val_videos", ""), len(train_list))
    if amount is None:
        return []
    if amount[0] == "file":
        return read_id_file(amount[1], train_list)
    labels = [[ann["label"] for ann in database[vid].get("annotations", [])] for vid in train_list]
    return choose_held_out(train_list, labels, args.class_name_lst, amount[1], args.seed)


def write_held_out(save_dir, names, database, resuming):
    """The list (val_videos.txt) and the validation GT (val_gt.json: those videos' gt.json entries).

    A run folder keeps one held-out list: resuming under another list would mix two runs.
    """
    path = os.path.join(save_dir, LIST_FILE)
    text = "".join(f"{vid}\n" for vid in names)
    if resuming and os.path.isfile(path):
        with open(path) as handle:
            if handle.read() != text:
                raise UserError(f"run folder {save_dir} was trained with other held-out videos "
                                f"({path}); use another --suffix, or --no_resume to start this "
                                f"folder over")
    atomic_write_text(path, text)
    entries = {vid: {**database[vid], "subset": GT_SUBSET} for vid in names}
    atomic_write_json(os.path.join(save_dir, GT_FILE), {"database": entries})
    return path



def held_out_for_run(args):
    """The run's held-out videos ([] without --val_videos); save_held_out writes them down."""
    if not getattr(args, "val_videos", ""):
        return []
    root = Path(args.data_dir)
    database = read_gt(root / "gt.json")
    names = held_out_videos(args, database, read_split(root / "split_train.txt"))
    if names and not any("segment" in ann for vid in names
                         for ann in database[vid].get("annotations", [])):
        raise UserError(f"--val_videos {args.val_videos}: the held-out training videos have no "
                        f"segment in {root / 'gt.json'}, so they cannot be scored; validation "
                        f"needs segments (training needs only labels): drop --val_videos")
    return names


def save_held_out(args, names):
    """The held-out list and GT of a run, in its folder (main process)."""
    if names and args.is_main:
        resuming = not (args.no_resume or args.checkpoint) and os.path.exists(
            os.path.join(args.save_dir, "model_latest.pth"))
        write_held_out(args.save_dir, names, read_gt(Path(args.data_dir) / "gt.json"), resuming)
