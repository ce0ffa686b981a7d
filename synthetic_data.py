"""Synthetic datasets in the real on-disk layout (docs/method.md §1), for tests and the --demo
run, and the --demo data folder.

The features of each video come from features/synthetic.py; the timelines (durations,
instances, subsets, names) from a profile of PROFILES, measured on a real dataset; a config
preset names its profile (synthetic_profile).

The --demo folder (`ensure_demo_dataset`): SYNTHETIC.json, written last, records the generation
parameters and the sha256 of every generated file. The set is generated where the folder is
missing or empty (into a temporary sibling renamed into place); again only in the default demo
folder (`config.demo_data_dir`) when every file there is its own and unchanged (exactly those are
removed); anything else is refused with one line naming the difference, the folder untouched.

CLI: python synthetic_data.py --out DIR --profile THUMOS14 --num_train 40 --num_test 40 --seed 0
"""
import argparse
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path, PurePosixPath

import numpy as np

from config import demo_data_dir
from features.synthetic import feature_bank, video_features
from sampling import R
from utils import UserError, atomic_write_json, atomic_write_text

MARKER = "SYNTHETIC.json"  # the demo set's record, written last
GENERATOR_VERSION = 3      # in the demo marker: a demo set from an older generator is rebuilt


def default_classes(profile):
    """The class list of a profile's dataset (classes/), or made-up names of as many classes."""
    profile = PROFILES[profile]
    path = Path(__file__).resolve().parent / "classes" / profile["class_list"]
    if path.is_file():
        return [line.strip() for line in path.read_text().splitlines() if line.strip()]
    return [f"class_{i:03d}" for i in range(profile["num_classes"])]


# ---------------------------------------------------------------------------------------------
# Timeline statistics measured on the real annotations (../shared/data, see README there) with
# bench/annotation_stats.py: quantiles at p = 0, 0.05, ..., 1 of the training subset
# (THUMOS14/gt.json subset "validation", 200 videos; ActivityNet13/gt.json subset "train",
# 9019 videos). The generator draws from them by inverse CDF (linear between quantiles).
# ---------------------------------------------------------------------------------------------
QUANTILE_P = np.linspace(0, 1, 21)
REAL_STATS = {
    "THUMOS14": {
        # video duration (s)
        "duration_s": [8.8, 30.7, 36.9, 51.3, 67.3, 81.1, 100.3, 112.3, 128.4, 135.6, 150.4, 168.3,
                       180.6, 191.1, 210.2, 228.6, 275.9, 311.0, 450.4, 600.8, 1174.4],
        # per video: fraction of snippets whose centre lies inside an annotated instance
        "inside_frac": [0.004, 0.059, 0.084, 0.118, 0.136, 0.158, 0.173, 0.186, 0.196, 0.208, 0.229,
                        0.247, 0.28, 0.313, 0.345, 0.372, 0.419, 0.482, 0.583, 0.751, 0.994],
        # instance length (s)
        "length_s": [0.2, 0.7, 0.9, 1.1, 1.3, 1.5, 1.8, 2.0, 2.3, 2.6, 2.9, 3.3, 3.7, 4.4, 5.0, 5.5,
                     6.2, 7.0, 8.0, 9.7, 118.1],
        # distinct classes per video: probability of 1, 2
        "classes_p": [0.865, 0.135],
    },
    "ActivityNet13": {
        "duration_s": [1.6, 18.2, 30.2, 40.5, 52.0, 61.6, 70.6, 80.7, 91.5, 102.6, 114.4, 125.2,
                       136.4, 148.4, 160.6, 172.7, 184.6, 197.1, 210.7, 224.3, 755.1],
        "inside_frac": [0.0, 0.119, 0.209, 0.292, 0.362, 0.439, 0.506, 0.567, 0.622, 0.672, 0.718,
                        0.763, 0.802, 0.839, 0.872, 0.901, 0.929, 0.958, 0.992, 1.0, 1.0],
        # instances per video: probability of 1, 2, 3, 4, 5, >= 6 (the last folded into 6)
        "instances_p": [0.7551, 0.1302, 0.0473, 0.0265, 0.0159, 0.0250],
        "classes_p": [1.0],                 # 99.96 % of the videos have one class
    },
}
# Profiles: a dataset's shape, scaled to the demo's time budget. Every video duration is multiplied
# by time_scale and clipped to durations (so videos fit the demo's S snippets). "lengths": instance
# lengths in seconds are kept (short actions are the point of THUMOS) and the per-video action
# fraction, so the number of instances per video shrinks with the duration. "per_video": the
# per-video structure is kept (instances per video, action fraction, hence instance length as a
# fraction of the video), as for ActivityNet. subsets: gt.json subsets of (train, test) videos;
# video_name: a format of the subset, the index in its split (i) and overall (number);
# time_step: annotations are rounded to 1 / time_step s; demo_videos: (train, test) of --demo.
PROFILES = {
    "THUMOS14": dict(stats=REAL_STATS["THUMOS14"], instances="lengths", time_scale=0.35,
                     durations=(20.0, 160.0), demo_videos=(100, 60), subsets=("validation", "test"),
                     video_name="video_{subset}_{i:07d}", time_step=10, class_list="THUMOS14.txt",
                     num_classes=20),
    "ActivityNet13": dict(stats=REAL_STATS["ActivityNet13"], instances="per_video", time_scale=0.5,
                          durations=(10.0, 150.0), demo_videos=(160, 80), subsets=("train", "val"),
                          video_name="v_synth{number:06d}", time_step=100,
                          class_list="ActivityNet13.txt", num_classes=200),
}
MAX_INSTANCE_S = 30.0        # "lengths": longest drawn instance (0.5 % are longer in real THUMOS)
# mean of the THUMOS instance length table after that cap (by integration of the inverse CDF)
MEAN_INSTANCE_S = float(np.mean(np.minimum(np.interp(np.linspace(0, 1, 100001), QUANTILE_P,
                                                     REAL_STATS["THUMOS14"]["length_s"]),
                                           MAX_INSTANCE_S)))


def draw_quantiles(quantiles, rng, size=None):
    """Inverse-CDF draw from a quantile table at QUANTILE_P (linear between quantiles)."""
    return np.interp(rng.uniform(0, 1, size), QUANTILE_P, quantiles)


def sample_timeline(profile, rng, time_scale=None, durations=None):
    """(duration, starts, ends, n_classes) of one demo video, from the measured statistics."""
    profile = PROFILES[profile]
    stats = profile["stats"]
    scale = profile["time_scale"] if time_scale is None else time_scale
    low, high = profile["durations"] if durations is None else durations
    d = float(np.clip(scale * draw_quantiles(stats["duration_s"], rng), low, high))
    coverage = float(np.clip(draw_quantiles(stats["inside_frac"], rng), 0.02, 0.98))
    n_cls = 1 + int(rng.choice(len(stats["classes_p"]), p=stats["classes_p"]))
    if profile["instances"] == "lengths":
        # iid lengths (never rejected, so their distribution stays the measured one); their number
        # gives the video's action fraction on average
        n = max(1, int(round(coverage * d / MEAN_INSTANCE_S)))
        lengths = np.minimum(draw_quantiles(stats["length_s"], rng, n), MAX_INSTANCE_S)
        if lengths.sum() > 0.95 * d:
            lengths *= 0.95 * d / lengths.sum()
    else:
        n = 1 + int(rng.choice(len(stats["instances_p"]), p=stats["instances_p"]))
        lengths = rng.dirichlet(np.ones(n)) * coverage * d
    n_cls = min(n_cls, len(lengths))
    gaps = rng.dirichlet(np.ones(len(lengths) + 1)) * max(d - lengths.sum(), 0.0)
    starts = np.cumsum(gaps[:-1]) + np.concatenate([[0], np.cumsum(lengths[:-1])])
    return d, starts, starts + lengths, n_cls


def generate_synthetic_dataset(out_dir, profile="THUMOS14", num_train=40, num_test=40,
                               feature_dim=2048, seed=0, class_names=None, timeline_gt=None,
                               durations=None):
    """Write gt.json, split_{train,test}.txt and {train,test}/VID.npy under out_dir; returns the
    database."""
    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {sorted(PROFILES)}, got {profile!r}")
    class_names = list(class_names or default_classes(profile))
    index = {name: i for i, name in enumerate(class_names)}
    bank = feature_bank(class_names, feature_dim, seed)
    out = Path(out_dir)
    database, splits = {}, {"train": [], "test": []}
    videos = (_real_timeline(timeline_gt, profile, num_train, num_test, index)
              if timeline_gt is not None
              else _generated_videos(profile, num_train, num_test, seed, class_names, durations))
    for number, (vid, folder, duration, anns) in enumerate(videos):
        rng = np.random.default_rng([seed, number])
        T = max(int(round(duration * R)), 1)
        feats = video_features(T, [(s, e, index[c]) for s, e, c in anns], bank, rng)
        (out / folder).mkdir(parents=True, exist_ok=True)
        np.save(out / folder / f"{vid}.npy", feats)
        subset = PROFILES[profile]["subsets"][folder == "test"]
        database[vid] = {"duration": duration, "subset": subset,
                         "annotations": [{"segment": [s, e], "label": c} for s, e, c in anns]}
        splits[folder].append(vid)
    for folder, names in splits.items():
        atomic_write_text(out / f"split_{folder}.txt", "".join(f"{vid}\n" for vid in names))
    atomic_write_json(out / "gt.json", {"version": f"synthetic-{profile} (seed {seed})",
                                        "taxonomy": [], "database": database})
    return database


def _generated_videos(profile, num_train, num_test, seed, class_names, durations):
    C = len(class_names)
    rng = np.random.default_rng([seed, 104729])
    for number in range(num_train + num_test):
        folder = "train" if number < num_train else "test"
        i = number if folder == "train" else number - num_train
        shape = PROFILES[profile]
        vid = shape["video_name"].format(subset=shape["subsets"][folder == "test"], i=i,
                                         number=number)
        d, starts, ends, n_cls = sample_timeline(profile, rng, durations=durations)
        classes = rng.choice(C, n_cls, replace=False)
        labels = classes[rng.permutation(np.r_[np.arange(n_cls),
                                               rng.integers(0, n_cls, len(starts) - n_cls)])]
        T = max(int(round(d * R)), 1)
        duration = T / R                           # the features cover exactly the annotated time
        step = shape["time_step"]
        anns = [(round(s * step) / step, max(round(e * step), round(s * step) + 1) / step,
                 class_names[c])
                for s, e, c in zip(starts, ends, labels)]
        yield vid, folder, duration, anns


def _real_timeline(gt, profile, num_train, num_test, index):
    """Videos (names, durations, annotations) from a real gt.json (path or dict)."""
    if not isinstance(gt, dict):
        with open(gt) as handle:
            gt = json.load(handle)
    database = gt["database"]
    names = {v: sorted(n for n, e in database.items() if e.get("subset") == s)
             for v, s in zip(("train", "test"), PROFILES[profile]["subsets"])}
    for folder, count in (("train", num_train), ("test", num_test)):
        for vid in names[folder][:count]:
            entry = database[vid]
            anns = [(float(a["segment"][0]), float(a["segment"][1]), a["label"])
                    for a in entry["annotations"] if a["label"] in index]
            yield vid, folder, float(entry["duration"]), anns


def files_manifest(root):
    """{relative path: sha256} of every file under root (the marker excluded)."""
    root = Path(root)
    return {path.relative_to(root).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(root.rglob("*")) if path.is_file() and path.name != MARKER}


def files_sha256(root, manifest=None):
    """sha256 of a generated set: each file's relative path and sha256, in path order (the marker
    excluded); from `manifest` (files_manifest) when given, without reading the files again."""
    manifest = files_manifest(root) if manifest is None else manifest
    digest = hashlib.sha256()
    for name in sorted(manifest, key=PurePosixPath):
        digest.update(name.encode() + b"\0" + bytes.fromhex(manifest[name]))
    return digest.hexdigest()


# ----------------------------------------------------------------------------- the --demo folder
class DemoDataError(UserError):
    """A --demo data folder that is not the demo set this run needs and is not ours to replace."""


def demo_params(args):
    """The generation parameters of the demo set a config needs (recorded in SYNTHETIC.json)."""
    profile = args.synthetic_profile
    num_train, num_test = PROFILES[profile]["demo_videos"]
    return {"profile": profile, "num_train": num_train, "num_test": num_test,
            "feature_dim": int(args.feature_dim), "seed": 0,
            "class_names": list(args.class_name_lst),
            "durations": list(PROFILES[profile]["durations"]), "generator": GENERATOR_VERSION}


def entries(root):
    """Every path under root (files, folders, links) relative to it, as posix text, the marker
    left out."""
    root = Path(root)
    return {path.relative_to(root).as_posix() for path in root.rglob("*")} - {MARKER}


def show(value):
    return f"[{len(value)} values]" if isinstance(value, list) and len(value) > 4 \
        else json.dumps(value)


def listed(names, limit=3):
    names = sorted(names)
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" * (len(names) > limit))


def compare(target, stored, params):
    """How the set at target differs from the one `params` describe: (parameter changes
    [(key, recorded, needed)], {"changed" / "missing" / "extra" / "unverified": [relative
    paths]}, the manifest of the set's own files). A record without a manifest (an older demo
    set) vouches for every file there while the set's checksum matches; else "unverified"."""
    changes = [(key, stored.get(key), value) for key, value in params.items()
               if stored.get(key) != value]
    current = files_manifest(target)
    own = stored.get("files")
    unverified = not isinstance(own, dict) and files_sha256(target, current) != stored.get("sha256")
    if not isinstance(own, dict):
        own = {} if unverified else current
    folders = {str(parent) for name in own for parent in PurePosixPath(name).parents} - {"."}
    files = {"changed": [name for name in own if name in current and current[name] != own[name]],
             "missing": [name for name in own if name not in current],
             "extra": [] if unverified else sorted(entries(target) - set(own) - folders),
             "unverified": [MARKER] if unverified else []}
    return changes, files, own


def difference_text(changes, files):
    changed = files["changed"]
    parts = [", ".join(f"{key}: {show(old)} → {show(new)}" for key, old, new in changes),
             f"{listed(changed)} differ{'s' if len(changed) == 1 else ''} from the checksum in "
             f"{MARKER}" if changed else "",
             f"missing: {listed(files['missing'])}" if files["missing"] else "",
             f"files it did not generate: {listed(files['extra'])}" if files["extra"] else "",
             f"its files differ from the checksum in its {MARKER}" if files["unverified"] else ""]
    return "; ".join(part for part in parts if part)


def read_record(target):
    """SYNTHETIC.json of the set at target, or None when it is unreadable."""
    try:
        stored = json.loads((target / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return stored if isinstance(stored, dict) else None


def ensure_demo_dataset(args):
    """The demo set at args.data_dir, generated when needed (module docstring); returns the
    sha256 of its files (config.json records it). Raises DemoDataError (one line) instead of
    touching a folder that is not the demo set's own."""
    target = Path(args.data_dir)
    params = demo_params(args)
    default = os.path.abspath(target) == os.path.abspath(demo_data_dir(args.dataset))
    script = f"main_{args.dataset}.py"
    marker = target / MARKER
    if marker.is_file():
        stored = read_record(target)
        if stored is None:
            raise DemoDataError(f"demo data {target}: its {MARKER} is unreadable, so its files "
                                f"cannot be checked; it was left untouched: delete the folder to "
                                f"have it generated again, or pass another --data_dir")
        changes, files, own = compare(target, stored, params)
        if not changes and not any(files.values()):
            return stored.get("sha256") or files_sha256(target, own)
        what = difference_text(changes, files)
        if not default or files["changed"] or files["extra"] or files["unverified"]:
            where = ("delete the folder to have it generated again, or pass another --data_dir"
                     if default else
                     f"--demo writes only into a new or empty --data_dir, or over its own "
                     f"unchanged {demo_data_dir(args.dataset)}: pass a new --data_dir, or drop "
                     f"--data_dir")
            raise DemoDataError(f"demo data {target} is not the demo set this run needs ({what}); "
                                f"it was left untouched: {where}")
        print(f"demo data {target}: {what}; generating it again", flush=True)
        generate(target, params, own)
    elif target.exists() and not (target.is_dir() and not any(target.iterdir())):
        if (target / "gt.json").is_file() or (target / "split_train.txt").is_file():
            raise DemoDataError(f"--demo trains the small demo schedule on generated data, but "
                                f"--data_dir {target} holds a dataset of its own (no {MARKER}); "
                                f"it was left untouched: to train on it, drop --demo (python "
                                f"{script} --data_dir {target}), or give --demo a new or empty "
                                f"--data_dir")
        raise DemoDataError(f"--demo generates its data into --data_dir {target}, which is not "
                            f"empty and holds no {MARKER} (not a demo set); it was left "
                            f"untouched: pass a new or empty --data_dir")
    else:
        generate(target, params)
    return json.loads(marker.read_text())["sha256"]


def generate(target, params, own=None):
    """Write the set into a temporary sibling folder, then put it in place of target: an empty
    folder (renamed over), or a set whose own files `own` (a manifest) are removed first, the
    marker last."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        generate_synthetic_dataset(tmp, **{key: val for key, val in params.items()
                                           if key != "generator"})
        files = files_manifest(tmp)
        atomic_write_json(tmp / MARKER, {**params, "sha256": files_sha256(tmp, files),
                                         "files": files})
        if own is not None:
            remove_own(target, own)
        os.replace(tmp, target)                   # over an empty folder: one atomic rename
    except OSError:                               # another process may have finished first
        stored = read_record(target)
        if stored is None or any(compare(target, stored, params)[1].values()) \
                or compare(target, stored, params)[0]:
            raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)                    # this call's own temporary folder
    return target


def remove_own(target, own):
    """Delete the set's own files (manifest `own`), then the folders they leave empty, then the
    marker: an interruption leaves the marker and some of its files, which the next run
    regenerates."""
    for name in own:
        path = target / name
        if path.is_file():
            path.unlink()
    folders = {parent for name in own for parent in PurePosixPath(name).parents}
    for folder in sorted(folders, key=lambda path: -len(path.parts)):       # deepest first
        if folder.parts and (target / folder).is_dir() and not any((target / folder).iterdir()):
            (target / folder).rmdir()
    (target / MARKER).unlink()


def main(argv=None):
    parser = argparse.ArgumentParser(
        description="Write a synthetic THUMOS-/ActivityNet-like feature dataset.")
    parser.add_argument("--out", required=True, help="output folder (the data_dir)")
    parser.add_argument("--profile", default="THUMOS14", choices=sorted(PROFILES))
    parser.add_argument("--num_train", type=int, default=40)
    parser.add_argument("--num_test", type=int, default=40)
    parser.add_argument("--feature_dim", type=int, default=2048)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--min_duration", type=float, default=None,
                        help="seconds (default: the profile's)")
    parser.add_argument("--max_duration", type=float, default=None,
                        help="seconds (default: the profile's)")
    parser.add_argument("--timeline_gt", default=None,
                        help="take videos and annotations from this real gt.json")
    opts = parser.parse_args(argv)
    database = generate_synthetic_dataset(
        opts.out, opts.profile, opts.num_train, opts.num_test, opts.feature_dim, opts.seed,
        timeline_gt=opts.timeline_gt,
        durations=None if opts.min_duration is None and opts.max_duration is None
        else (opts.min_duration or 0.0, opts.max_duration or float("inf")))
    print(f"wrote {len(database)} videos to {opts.out} (files sha256 {files_sha256(opts.out)})")


if __name__ == "__main__":
    main()
