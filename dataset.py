"""Video features, temporal sampling, pseudo targets and dynamic segment weights (SPEC.md §1, §3, §4, §9).

Pure array functions first (the seams tests use), then `VideoDataset`. Shapes: T_vid snippets on
disk, S rows fed to the model, D feature dim, C classes (+1 background), K proposals.
Random sampling draws from numpy's global RNG (seeded by the engine: `set_seed` in the main process,
`seed_worker` in DataLoader workers), so a run is reproducible for a given seed.
"""
import json
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from utils import UserError, atomic_write_json

R = 25 / 16  # snippets per second (I3D: 16-frame snippets at 25 fps)
EXPECTED_TREE = """  {root}/gt.json            {{"database": {{VID: {{"duration", "subset", "annotations"}}}}}}
  {root}/split_train.txt    one training VID per line
  {root}/split_test.txt     one test VID per line
  {root}/train/VID.npy      float32 (T_vid, {dim}) = I3D RGB || flow
  {root}/test/VID.npy"""


class DataError(UserError):
    """The dataset on disk is missing or malformed; the message names the file and the fix."""


# ----------------------------------------------------------------------------- temporal sampling
def _lerp_rows(x, pos):
    """Rows of x (T, D) linearly interpolated at float positions `pos` on the grid 0..T-1, extrapolating.

    Positions on grid nodes are plain row copies (exact; most rows under dynamic sampling).
    """
    T = x.shape[0]
    pos = np.asarray(pos, dtype=np.float64)
    if T == 1:
        return np.repeat(np.asarray(x[:1]), len(pos), axis=0)
    dtype = x.dtype if np.issubdtype(x.dtype, np.floating) else np.float64
    node = np.rint(pos)
    on_node = (np.abs(pos - node) < 1e-9) & (node >= 0) & (node <= T - 1)  # 1e-9: cumsum round-off
    i0 = np.clip(np.floor(pos), 0, T - 2).astype(np.int64)
    i0[on_node] = node[on_node]
    out = np.asarray(x[i0], dtype=dtype)                                 # (N, D)
    between = np.flatnonzero(~on_node)
    if len(between):
        frac = (pos[between] - i0[between]).astype(dtype)[:, None]       # (n, 1)
        out[between] = out[between] * (1 - frac) + np.asarray(x[i0[between] + 1], dtype=dtype) * frac
    return out


def _uniform_plan(T, S):
    """Row indices of uniform(x, S) (SPEC §3): T/S in float64 first, then floor(i*(T/S))."""
    if T == 1:
        return np.zeros(2, dtype=np.int64)
    if T <= S:
        return np.arange(T, dtype=np.int64)
    return np.floor(np.arange(S) * (T / S)).astype(np.int64)


def _randint(rng, low, high):
    if rng is None:
        return np.random.randint(low, high)
    if isinstance(rng, np.random.Generator):
        return rng.integers(low, high)
    return rng.randint(low, high)


def _random_plan(T, S, rng=None):
    """random(x, S) as int row indices or float interpolation positions (SPEC §3, §13 for T == 1)."""
    if T == 1:
        return np.zeros(S, dtype=np.int64)
    if T < S:
        return np.linspace(0, T - 1, S)
    if T == S:
        return np.arange(T, dtype=np.int64)
    bounds = np.rint(np.linspace(0, T - 1, S + 1)).astype(np.int64)
    return np.asarray(_randint(rng, bounds[:-1], bounds[1:]), dtype=np.int64)


def _apply_plan(x, plan):
    if np.issubdtype(plan.dtype, np.integer):
        return np.asarray(x[plan])
    return _lerp_rows(x, plan)


def uniform_sample(x, S):
    """SPEC §3 uniform sampling of x (T_vid, D) to at most S rows (2 rows when T_vid == 1)."""
    return _apply_plan(x, _uniform_plan(x.shape[0], S))


def random_sample(x, S, rng=None):
    """SPEC §3 random sampling to S rows; rng: np.random.Generator/RandomState, None = np.random."""
    return _apply_plan(x, _random_plan(x.shape[0], S, rng))


def _interp_extrap(v, xp, fp):
    """np.interp with linear extrapolation on both sides (xp increasing, len >= 2)."""
    k = np.clip(np.searchsorted(xp, v, side="right") - 1, 0, len(xp) - 2)
    return fp[k] + (v - xp[k]) * (fp[k + 1] - fp[k]) / (xp[k + 1] - xp[k])


def dynamic_positions(weights):
    """(cum, p): cum = [0, cumsum(w)] and the positions p_j, j = 1..round(cum[-1]), on the grid 0..T_vid."""
    w = np.asarray(weights, dtype=np.float64)
    cum = np.concatenate([[0.0], np.cumsum(w)])
    M = int(round(float(cum[-1])))
    if M < 1:
        raise ValueError(f"dynamic weights sum to {cum[-1]}; they must sum to at least 0.5")
    return cum, _interp_extrap(np.arange(1, M + 1, dtype=np.float64), cum, np.arange(len(w) + 1.0))


def dynamic_sample(x, weights):
    """SPEC §3 dynamic sampling: (features (M, D), cum); row j = x interpolated at p_j on the grid 1..T_vid."""
    if x.shape[0] == 1:
        return np.asarray(x[[0, 0]]), np.array([0.0, 0.5, 1.0])
    cum, pos = dynamic_positions(weights)
    return _lerp_rows(x, pos - 1), cum


def warp_times(t, cum, vid_len, r=R):
    """Seconds → seconds on the dynamic timeline: (interp(t*r + 1; 0..T_vid → cum) − 1)/r (extrapolating)."""
    t = np.asarray(t, dtype=np.float64)
    if cum is None:
        return t
    grid = np.linspace(0, vid_len, len(cum))  # 0..T_vid; [0, 0.5, 1] for one-snippet videos (identity)
    return (_interp_extrap(t * r + 1, grid, np.asarray(cum, dtype=np.float64)) - 1) / r


# ----------------------------------------------------------------------------- proposals → targets
def proposal_arrays(proposals):
    """List of {label, score, segment} → (segments (P, 2) float64, labels (P,) str, scores (P,) float64)."""
    if isinstance(proposals, tuple):
        return proposals
    seg = np.array([p["segment"] for p in proposals], dtype=np.float64).reshape(-1, 2)
    labels = np.array([p["label"] for p in proposals], dtype=str)
    scores = np.array([p.get("score", 0.0) for p in proposals], dtype=np.float64)
    return seg, labels, scores


def select_labels(proposals, labels):
    """The proposals whose label is in `labels` (array form)."""
    seg, names, scores = proposal_arrays(proposals)
    keep = np.isin(names, np.array(sorted(labels), dtype=str))
    return seg[keep], names[keep], scores[keep]


def attention_proposal_bbox(proposals, scale, out_len, delta, K, warp=None, vid_len=None, r=R):
    """SPEC §4 attention proposals → (bbox (K, 2) int64, count). `warp` = cum of dynamic sampling or None."""
    seg = np.unique(proposal_arrays(proposals)[0], axis=0)              # distinct [s, e]
    seg = seg[np.lexsort((-seg[:, 1], seg[:, 0]))]                      # start asc, equal start: end desc
    prev_max = np.maximum.accumulate(np.concatenate([[-np.inf], seg[:-1, 1]]))
    seg = seg[seg[:, 1] > prev_max]                                     # drop nested pairs
    s, e = warp_times(seg[:, 0], warp, vid_len, r), warp_times(seg[:, 1], warp, vid_len, r)
    mid, dur = (s + e) / 2, e - s
    start = np.maximum(np.rint((mid - (delta + 0.5) * dur) * scale), 0).astype(np.int64)
    end = np.minimum(np.rint((mid + (delta + 0.5) * dur) * scale), out_len - 1).astype(np.int64)
    order = np.argsort(-start, kind="stable")                           # start descending, ties keep order
    if len(order) > K:
        warnings.warn(f"a video has more attention proposals than max_segments_num = {K}; "
                      f"keeping the first {K} sorted by start (SPEC section 13)", stacklevel=2)
        order = order[:K]
    bbox = np.zeros((K, 2), dtype=np.int64)
    bbox[:len(order)] = np.stack([start[order], end[order]], axis=1)
    return bbox, len(order)


def pseudo_instance_label(proposals, gt_labels, class_names, scale, out_len, warp=None, vid_len=None, r=R):
    """SPEC §4 pseudo instance label (out_len, C+1) float32 from proposals with a label in `gt_labels`."""
    C = len(class_names)
    seg, names, _ = select_labels(proposals, set(gt_labels) & set(class_names))
    index = {name: i for i, name in enumerate(class_names)}
    cls = np.array([index[n] for n in names], dtype=np.int64)
    lo = np.maximum(np.rint(warp_times(seg[:, 0], warp, vid_len, r) * scale), 0)
    hi = np.minimum(np.rint(warp_times(seg[:, 1], warp, vid_len, r) * scale), out_len - 1)
    t = np.arange(out_len)
    inside = ((t >= lo[:, None]) & (t <= hi[:, None])).astype(np.float32)  # (P, out_len)
    onehot = np.eye(C, dtype=np.float32)[cls]                               # (P, C)
    fg = (inside.T @ onehot) > 0                                            # (out_len, C)
    label = np.concatenate([fg, ~fg.any(axis=1, keepdims=True)], axis=1).astype(np.float32)
    return label / np.maximum(label.sum(axis=1, keepdims=True), 1e-6)


def dynamic_segment_weights(proposals, vid_len, labels, alpha, delta, gamma, r=R):
    """SPEC §9 per-snippet sampling weights (vid_len,) float64 from one video's pseudo proposals."""
    seg, names, scores = proposal_arrays(proposals)
    kept = []
    for label in sorted(set(labels)):                                   # a video has few labels
        sel = np.flatnonzero(names == label)
        if len(sel) == 0:
            continue
        sel = sel[np.argsort(-scores[sel], kind="stable")]
        c = np.cumsum(scores[sel])
        kept.append(sel[:np.count_nonzero(c <= alpha * c.max())])
    w = np.ones(vid_len, dtype=np.float64)
    if not kept:
        return w
    s, e = seg[np.concatenate(kept)].T
    mid, dur = (s + e) / 2, e - s
    i_s = np.maximum(np.rint((mid - (delta + 0.5) * dur) * r), 0).astype(np.int64)
    i_e = np.minimum(np.rint((mid + (delta + 0.5) * dur) * r), vid_len - 1).astype(np.int64)
    U = gamma * (2 * delta + 1)
    n = i_e - i_s + 1
    use = (i_s < i_e) & (n <= U)
    if use.any():
        t = np.arange(vid_len)
        inside = (t >= i_s[use, None]) & (t <= i_e[use, None])             # (P, vid_len)
        value = np.minimum(U / n[use], U)[:, None]
        w = np.maximum(w, np.where(inside, value, 1.0).max(axis=0))
    big = w > 1
    if big.any():
        run = np.cumsum(np.diff(np.concatenate([[False], big]).astype(np.int8)) == 1) - 1  # run id per snippet
        sums = np.bincount(run[big], weights=w[big])
        w[big] *= (np.round(sums) / sums)[run[big]]
    return w


# ----------------------------------------------------------------------------- feature files
_CACHE = {}          # path -> float32 array, shared by all datasets of the process (forked workers share it)
_CACHE_BYTES = [0]


def clear_feature_cache():
    _CACHE.clear()
    _CACHE_BYTES[0] = 0


def _cache_put(path, array, budget_gb):
    if budget_gb > 0 and _CACHE_BYTES[0] + array.nbytes <= budget_gb * 2**30:
        _CACHE[path] = array
        _CACHE_BYTES[0] += array.nbytes


def check_feature_file(path, feature_dim, full=True, load=False):
    """Open VID.npy (header + mmap) and check it; returns the array (mmap, or in memory if `load`)."""
    try:
        array = np.load(path, mmap_mode=None if load else "r", allow_pickle=False)
    except FileNotFoundError:
        raise DataError(f"feature file {path} is missing; the split lists this video, so add the file "
                        f"or remove the video from the split file") from None
    except (ValueError, OSError, EOFError) as err:
        raise DataError(f"feature file {path} is not a readable .npy array (truncated or another format: "
                        f"{err}); re-extract or re-download it") from None
    if not isinstance(array, np.ndarray) or array.ndim != 2:
        raise DataError(f"feature file {path} has shape {getattr(array, 'shape', '?')}; expected a 2-D "
                        f"(T_vid, {feature_dim}) array; re-extract it")
    if array.shape[1] != feature_dim:
        raise DataError(f"feature file {path} has dimension {array.shape[1]}, but feature_dim is {feature_dim}; "
                        f"use matching features or set --feature_dim {array.shape[1]}")
    if array.dtype != np.float32:
        raise DataError(f"feature file {path} has dtype {array.dtype}; expected float32; convert it "
                        f"with np.save(path, np.load(path).astype(np.float32))")
    if array.shape[0] == 0:
        raise DataError(f"feature file {path} has no snippets (shape {array.shape}); re-extract it")
    if full and not np.isfinite(array.sum(dtype=np.float64)):
        raise DataError(f"feature file {path} contains NaN or inf values; re-extract it")
    return array


def _read_split(path):
    if not path.is_file():
        raise DataError(f"split file {path} is missing; it must list one video name per line")
    names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not names:
        raise DataError(f"split file {path} is empty; it must list one video name per line")
    return names


def _read_gt(path):
    try:
        with open(path) as handle:
            gt = json.load(handle)
    except FileNotFoundError:
        raise DataError(f"annotation file {path} is missing; it comes with the feature release") from None
    except (ValueError, UnicodeDecodeError) as err:
        raise DataError(f"annotation file {path} is not valid JSON ({err}); re-download it") from None
    if not isinstance(gt, dict) or not isinstance(gt.get("database"), dict):
        raise DataError(f"annotation file {path} has no \"database\" object; expected the ActivityNet "
                        f"gt.json layout {{\"database\": {{VID: {{\"annotations\": [...]}}}}}}")
    return gt["database"]


def save_proposals(path, pseudo_results, weights):
    """Store one step's proposals and dynamic weights as ONE JSON file (weights sparse: entries != 1)."""
    sparse = None
    if weights:
        sparse = {}
        for vid, w in weights.items():
            w = np.asarray(w, dtype=np.float64)
            idx = np.flatnonzero(w != 1.0)
            sparse[vid] = {"length": len(w), "index": idx.tolist(), "value": w[idx].tolist()}
    atomic_write_json(path, {"proposals": pseudo_results or {}, "weights": sparse})


def load_proposals(path):
    """Inverse of `save_proposals`: (pseudo_results, weights or None)."""
    with open(path) as handle:
        stored = json.load(handle)
    weights = None
    if stored.get("weights") is not None:
        weights = {}
        for vid, entry in stored["weights"].items():
            w = np.ones(entry["length"], dtype=np.float64)
            w[np.asarray(entry["index"], dtype=np.int64)] = entry["value"]
            weights[vid] = w
    return stored["proposals"], weights


# ----------------------------------------------------------------------------- the dataset
class VideoDataset(Dataset):
    """Videos of one phase ("train", "test", "full" = test list then train list) with SPEC §4 items.

    sampling: "random" (train) or "uniform" (test); after `set_proposals(results, weights)` with
    weights, the dynamic versions are used and `cum` is returned with each item.
    """

    def __init__(self, args, phase="train", sampling="random"):
        if phase not in ("train", "test", "full") or sampling not in ("random", "uniform"):
            raise ValueError(f"phase {phase!r} / sampling {sampling!r}: expected train|test|full, random|uniform")
        self.phase, self.sampling = phase, sampling
        self.root = Path(args.data_dir)
        self.class_names = list(args.class_name_lst)
        self.num_samples, self.max_proposals = args.sample_segments_num, args.max_segments_num
        self.feature_dim, self.delta = args.feature_dim, args.delta
        self.r = getattr(args, "snippets_per_sec", R)
        self.cache_gb = float(getattr(args, "feature_cache_gb", 0) or 0)
        if not self.root.is_dir():
            raise DataError(f"data folder {self.root} not found: download the I3D features of the public "
                            f"THUMOS-14 / ActivityNet-1.3 release used by ACM-Net and ASM-Loc and unpack them "
                            f"there (or pass --data_dir, or run --demo for synthetic data); expected layout:\n"
                            + EXPECTED_TREE.format(root=self.root, dim=self.feature_dim))
        database = _read_gt(self.root / "gt.json")
        train_list = _read_split(self.root / "split_train.txt")
        test_list = _read_split(self.root / "split_test.txt")
        self.train_videos = set(train_list)
        lists = {"train": [("train", train_list)], "test": [("test", test_list)],
                 "full": [("test", test_list), ("train", train_list)]}[phase]
        self.video_names, self.paths = [], {}
        for folder, names in lists:
            split_file = self.root / f"split_{folder}.txt"
            for vid in names:
                if vid not in database:
                    raise DataError(f"{split_file} lists video {vid}, which has no entry in "
                                    f"{self.root / 'gt.json'}; add its annotations or remove it from the split")
                self.video_names.append(vid)
                self.paths[vid] = str(self.root / folder / f"{vid}.npy")
        index = {name: i for i, name in enumerate(self.class_names)}
        self.gt_labels, self.video_labels, self.gt_segments = {}, {}, {}
        for vid in self.video_names:
            self.gt_segments[vid] = database[vid].get("annotations", [])
            labels = {ann["label"] for ann in self.gt_segments[vid]}
            unknown = sorted(labels - set(index))
            if unknown:
                raise DataError(f"{self.root / 'gt.json'}: video {vid} has label {unknown[0]!r}, which is not in "
                                f"the class list ({len(index)} classes); fix the annotation or the class list")
            self.gt_labels[vid] = labels
            self.video_labels[vid] = np.zeros(len(index), dtype=np.float32)
            self.video_labels[vid][[index[name] for name in labels]] = 1.0
        self._lens = {}
        if not getattr(args, "skip_data_checks", False):
            for vid in self.video_names:
                self._open(vid, check=True)
        self.set_proposals(None, None)

    # -- features
    def _open(self, vid, check=False):
        """Cached array, or a memmap (header read; with `check` also the finite scan)."""
        path = self.paths[vid]
        array = _CACHE.get(path)
        if array is None:
            load = self.cache_gb > 0 and os.path.isfile(path) and \
                _CACHE_BYTES[0] + os.path.getsize(path) <= self.cache_gb * 2**30   # fits: read it whole once
            array = check_feature_file(path, self.feature_dim, full=check, load=load)
            if load:
                _cache_put(path, array, self.cache_gb)
        self._lens[vid] = array.shape[0]
        return array

    def vid_len(self, vid):
        return self._lens[vid] if vid in self._lens else self._open(vid).shape[0]

    @property
    def vid_lens(self):
        """vid → T_vid for every video of the phase (headers are read on first use with skip_data_checks)."""
        return {vid: self.vid_len(vid) for vid in self.video_names}

    def is_train_video(self, vid):
        """Training video = listed in split_train.txt (SPEC §13: not a name pattern)."""
        return vid in self.train_videos

    # -- proposals
    def label_set(self, vid, proposals):
        """SPEC §4: GT labels for training videos, labels present in the proposals otherwise."""
        if self.is_train_video(vid):
            return set(self.gt_labels[vid])
        return set(proposal_arrays(proposals)[1].tolist())

    def set_proposals(self, pseudo_results, weights):
        """Hand over the previous step's pseudo proposals {vid: [...]} and dynamic weights {vid: w} (or None)."""
        results = dict(pseudo_results or {})
        if isinstance(results.get("results"), dict):
            results = results["results"]
        self.pseudo_results = results
        self.weights = dict(weights) if weights else None
        self._proposals = {vid: proposal_arrays(results[vid]) for vid in self.video_names if results.get(vid)}

    def compute_dynamic_weights(self, pseudo_results, args):
        """SPEC §9 weights for every video of the phase: {vid: float64 (T_vid,)}."""
        out = {}
        for vid in self.video_names:
            proposals = proposal_arrays((pseudo_results or {}).get(vid, []))
            out[vid] = dynamic_segment_weights(proposals, self.vid_len(vid), self.label_set(vid, proposals),
                                               args.alpha, args.delta, args.gamma, r=getattr(args, "snippets_per_sec", R))
        return out

    def save_proposals(self, path):
        save_proposals(path, self.pseudo_results, self.weights)

    def dynamic_weights(self, vid):
        """The dynamic sampling weights in use for `vid` (None at step 0)."""
        return None if self.weights is None else self.weights.get(vid)

    # -- items
    def __len__(self):
        return len(self.video_names)

    def _sample(self, vid, x, rng=None):
        """(features (out_len, D) float32, cum or None, timeline length for the scale)."""
        T = x.shape[0]
        plan_fn = (lambda n: _random_plan(n, self.num_samples, rng)) if self.sampling == "random" \
            else (lambda n: _uniform_plan(n, self.num_samples))
        if self.weights is None:
            return _apply_plan(x, plan_fn(T)), None, T
        w = self.weights.get(vid)
        w = np.ones(T) if w is None else np.asarray(w, dtype=np.float64)
        if len(w) != T:
            raise DataError(f"dynamic weights of video {vid} have length {len(w)} but {self.paths[vid]} has "
                            f"{T} snippets; the weights belong to another dataset (regenerate them)")
        if T == 1:
            rows, cum = dynamic_sample(x, w)
            return _apply_plan(rows, plan_fn(2)), cum, 1
        cum, pos = dynamic_positions(w)                                     # pos (M,)
        plan = plan_fn(len(pos))
        if np.issubdtype(plan.dtype, np.integer):                           # only the rows sampled
            feats = _lerp_rows(x, pos[plan] - 1)
        else:
            feats = _lerp_rows(_lerp_rows(x, pos - 1), plan)
        return feats, cum, len(pos)

    def __getitem__(self, key):
        """key: an index, or (index, seed) to draw the random sampling from its own generator
        (so an item does not depend on which process or worker loads it)."""
        idx, seed = key if isinstance(key, tuple) else (key, None)
        rng = None if seed is None else np.random.default_rng(seed)
        vid = self.video_names[idx]
        x = self._open(vid)
        feats, cum, timeline = self._sample(vid, x, rng)
        out_len = feats.shape[0]
        scale = self.r * out_len / timeline
        props = self._proposals.get(vid)
        C, K = len(self.class_names), self.max_proposals
        bbox, count = np.zeros((K, 2), dtype=np.int64), 0
        pil = np.zeros((out_len, C + 1), dtype=np.float32)
        pil[:, C] = 1.0
        if props is not None:
            chosen = select_labels(props, self.label_set(vid, props))
            if len(chosen[0]):
                bbox, count = attention_proposal_bbox(chosen, scale, out_len, self.delta, K, cum, x.shape[0], self.r)
            pil = pseudo_instance_label(props, self.gt_labels[vid], self.class_names, scale, out_len,
                                        cum, x.shape[0], self.r)
        return {"vid_name": vid, "features": torch.from_numpy(np.ascontiguousarray(feats, dtype=np.float32)),
                "video_label": torch.from_numpy(self.video_labels[vid]), "vid_len": x.shape[0],
                "proposal_bbox": torch.from_numpy(bbox), "proposal_count": torch.tensor(count, dtype=torch.int64),
                "pseudo_instance_label": torch.from_numpy(pil), "cum": cum}


def collate_fn(items):
    """Stack a list of items into a batch dict (vid_name and cum stay lists)."""
    lengths = {item["features"].shape[0] for item in items}
    if len(lengths) > 1:
        raise ValueError(f"cannot batch videos of different sampled lengths {sorted(lengths)}; use batch_size 1")
    batch = {key: torch.stack([item[key] for item in items]) for key in
             ("features", "video_label", "proposal_bbox", "proposal_count", "pseudo_instance_label")}
    batch["vid_len"] = torch.tensor([item["vid_len"] for item in items], dtype=torch.int64)
    batch["vid_name"] = [item["vid_name"] for item in items]
    batch["cum"] = [item["cum"] for item in items]
    return batch
