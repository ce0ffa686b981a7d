"""Synthetic I3D-like features in the real on-disk layout (docs/method.md §1), for tests and the
--demo run.

Each video mixes, in a low-rank latent space projected to D dims and passed through a ReLU:
a class scene context present through the whole video (confusable classes share part of it),
a two-phase action signal inside each instance with soft (sigmoid) boundaries, a slowly drifting
background, temporally smooth noise and white noise. RGB (first half) carries more scene,
flow (second half) more motion. Deterministic for a seed (per-video generators), and
bit-identical on every generation: the arithmetic is float64 in a fixed summation order (no BLAS,
whose float32 products change with its thread count and memory alignment), cast to float32 once.

The shape of a set (durations, instances, subsets, names) is a profile of PROFILES, measured on a
real dataset; a config preset names its profile (synthetic_profile).

CLI: python synthetic_data.py --out DIR --profile THUMOS14 --num_train 40 --num_test 40 --seed 0
"""
import argparse
import hashlib
import json
from pathlib import Path, PurePosixPath

import numpy as np

from utils import atomic_write_json, atomic_write_text

R = 25 / 16
MARKER = "SYNTHETIC.json"  # the demo set's record (demo_data.py), written last
GENERATOR_VERSION = 3      # in the demo marker: a demo set from an older generator is rebuilt
KNOWN_PAIRS = [("CliffDiving", "Diving"), ("CricketBowling", "CricketShot"),
               ("HammerThrow", "ThrowDiscus"), ("HighJump", "LongJump"),
               ("JavelinThrow", "Shotput"), ("BasketballDunk", "VolleyballSpiking"),
               ("GolfSwing", "TennisSwing"), ("BaseballPitch", "SoccerPenalty")]


def default_classes(profile):
    """The class list of a profile's dataset (classes/), or made-up names of as many classes."""
    profile = PROFILES[profile]
    path = Path(__file__).resolve().parent / "classes" / profile["class_list"]
    if path.is_file():
        return [line.strip() for line in path.read_text().splitlines() if line.strip()]
    return [f"class_{i:03d}" for i in range(profile["num_classes"])]


def _partners(class_names):
    """Confusable partner of each class (known pairs, then neighbours in list order)."""
    index = {name: i for i, name in enumerate(class_names)}
    partner = np.full(len(class_names), -1)
    for a, b in KNOWN_PAIRS:
        if a in index and b in index:
            partner[index[a]], partner[index[b]] = index[b], index[a]
    free = np.flatnonzero(partner < 0)
    for a, b in zip(free[0::2], free[1::2]):
        partner[a], partner[b] = b, a
    return partner


def _bank(class_names, D, seed, n_bg=8, n_noise=24):
    """Projection rows (latent → D): action phases A/B, scene context, background, smooth noise."""
    rng = np.random.default_rng([seed, 7919])
    C = len(class_names)
    partner = _partners(class_names)
    group = np.where(partner >= 0, np.minimum(np.arange(C), partner), np.arange(C))   # pair id
    rgb = np.r_[np.ones(D // 2), np.zeros(D - D // 2)]

    def mixed(shared_frac):
        shared, own = rng.standard_normal((C, D)), rng.standard_normal((C, D))
        return np.sqrt(shared_frac) * shared[group] + np.sqrt(1 - shared_frac) * own

    act_a, act_b, ctx = mixed(0.5), mixed(0.5), mixed(0.6)
    motion, scene = 0.55 + 0.45 * (1 - rgb), 0.35 + 0.65 * rgb      # flow carries motion, RGB scene
    rows = [0.6 * act_a * motion, 0.6 * act_b * motion, 0.35 * ctx * scene,
            0.35 * rng.standard_normal((n_bg, D)) * (0.5 + 0.5 * rgb),
            0.25 * rng.standard_normal((n_noise, D))]
    bias = -0.3 + 0.1 * rng.standard_normal(D)
    return np.concatenate(rows).astype(np.float32), bias.astype(np.float32), partner


def _smooth(x, sigma):
    """Gaussian smoothing along time (axis 0) by convolution with a short kernel, tap by tap."""
    half = max(int(3 * sigma), 1)
    k = np.exp(-0.5 * (np.arange(-half, half + 1) / sigma) ** 2)
    k /= k.sum()
    padded = np.pad(x, ((half, half), (0, 0)), mode="edge")
    out = np.zeros(x.shape)
    for j, weight in enumerate(k):      # fixed summation order (see the module docstring)
        out += weight * padded[j:j + len(x)]
    return out


def _project(latent, W, bias):
    """bias + latent @ W in float64, one latent column after another; all-zero columns add nothing.
    latent (T, L), W (L, D), bias (D,) -> (T, D)."""
    out = np.repeat(np.asarray(bias, dtype=np.float64)[None, :], latent.shape[0], axis=0)   # (T, D)
    for col in np.flatnonzero(latent.any(axis=0)):
        out += latent[:, col:col + 1] * W[col].astype(np.float64)
    return out


def _features(T, annotations, bank, rng):
    """(T, D) float32 features of one video from its annotations [(start_s, end_s, class_id)]."""
    W, bias, partner = bank
    C, D = len(partner), W.shape[1]
    t = np.arange(T, dtype=np.float64)[None, :] + 0.5                   # snippet centres
    env_a, env_b = np.zeros((T, C)), np.zeros((T, C))
    if annotations:
        s, e, cls = (np.array(v) for v in zip(*annotations))
        s, e = s[:, None] * R, e[:, None] * R
        tau = rng.uniform(0.4, 1.2, (len(cls), 1))
        # (N, T) soft sigmoid edges
        box = (1 + np.tanh((t - s) / (2 * tau))) * (1 + np.tanh((e - t) / (2 * tau))) / 4
        box *= rng.uniform(0.5, 1.5, (len(cls), 1))                     # weak and strong instances
        phase = np.clip((t - s) / np.maximum(e - s, 1e-3), 0, 1)
        for n, c in enumerate(cls):                                     # instance by instance
            env_a[:, c] += box[n] * (1 - phase[n])                      # (T,)
            env_b[:, c] += box[n] * phase[n]
    ctx = np.zeros(C)
    present = sorted({c for _, _, c in annotations})
    ctx[present] = rng.uniform(0.6, 1.2, len(present))
    for c in present:                                   # scenes of confusable classes look alike
        if partner[c] >= 0 and rng.random() < 0.3:
            ctx[partner[c]] = max(ctx[partner[c]], rng.uniform(0.2, 0.5))
    ctx = ctx[None, :] * (1 + 0.3 * _smooth(rng.standard_normal((T, 1)), 6.0))
    n_bg, n_noise = W.shape[0] - 3 * C - 24, 24
    bg = np.maximum(_smooth(rng.standard_normal((T, n_bg)), 8.0) * 3 + 0.3, 0)
    noise = _smooth(rng.standard_normal((T, n_noise)), 1.5) * 1.5
    latent = np.concatenate([env_a, env_b, ctx, bg, noise], axis=1)     # (T, L)
    pre = (_project(latent, W, bias)
           + rng.standard_normal((T, D), dtype=np.float32) * np.float32(0.45))
    pre[1:-1] = 0.5 * pre[1:-1] + 0.25 * (pre[:-2] + pre[2:])           # overlapping snippets
    return np.where(pre > 0, pre, 0.0).astype(np.float32)               # ReLU, one cast


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
    bank = _bank(class_names, feature_dim, seed)
    out = Path(out_dir)
    database, splits = {}, {"train": [], "test": []}
    videos = (_real_timeline(timeline_gt, profile, num_train, num_test, index)
              if timeline_gt is not None
              else _generated_videos(profile, num_train, num_test, seed, class_names, durations))
    for number, (vid, folder, duration, anns) in enumerate(videos):
        rng = np.random.default_rng([seed, number])
        T = max(int(round(duration * R)), 1)
        feats = _features(T, [(s, e, index[c]) for s, e, c in anns], bank, rng)
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
