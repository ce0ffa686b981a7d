"""The video dataset (docs/method.md §1, §8): features on disk, validation, cache, items and
collate.

The array functions it uses (sampling, targets, dynamic weights) live in sampling.py; gt.json and
the split lists are read by eval/files.py. Random sampling draws from a per-item generator when
the key carries a seed (training, see engine/distributed.py GlobalBatchSampler), else numpy's
global RNG.
"""
import os
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from eval.files import DataError, read_gt, read_split
from features.provenance import warn_extraction_mismatch
from sampling import (R, apply_plan, attention_proposal_bbox, dynamic_positions, dynamic_sample,
                      dynamic_segment_weights, lerp_rows, proposal_arrays, pseudo_instance_label,
                      random_plan, select_labels, uniform_plan)
EXPECTED_TREE = """\
  {root}/gt.json            {{"database": {{VID: {{"duration", "subset", "annotations"}}}}}}
  {root}/split_train.txt    one training VID per line
  {root}/split_test.txt     one test VID per line
  {root}/train/VID.npy      float32 (T_vid, {dim}) = I3D RGB || flow
  {root}/test/VID.npy"""


# ----------------------------------------------------------------------------- feature files
# path -> float32 array, shared by all datasets of the process (forked workers share it)
_CACHE = {}
_CACHE_BYTES = [0]
_CHECKED = set()     # (path, size, mtime) of files that passed the full check in this process


def clear_feature_cache():
    _CACHE.clear()
    _CACHE_BYTES[0] = 0
    _CHECKED.clear()


def replace_cached(arrays):
    """Swap cached arrays {path: array} for the given equal ones (views of a feature store, so
    that the features are held once); paths not in the cache are left out."""
    for path, array in arrays.items():
        if path in _CACHE:
            _CACHE[path] = array


def _cache_put(path, array, budget_gb):
    if budget_gb > 0 and _CACHE_BYTES[0] + array.nbytes <= budget_gb * 2**30:
        _CACHE[path] = array
        _CACHE_BYTES[0] += array.nbytes


def check_feature_file(path, feature_dim, full=True, load=False):
    """Open VID.npy (header + mmap) and check it; returns the array (mmap, or in memory if `load`
    or not float32: float16 / float64 files are cast to float32 once, here)."""
    try:
        array = np.load(path, mmap_mode=None if load else "r", allow_pickle=False)
    except FileNotFoundError:
        raise DataError(f"feature file {path} is missing; the split lists this video, so add the "
                        f"file or remove the video from the split file") from None
    except (ValueError, OSError, EOFError) as err:
        raise DataError(f"feature file {path} is not a readable .npy array (truncated or another "
                        f"format: {err}); re-extract or re-download it") from None
    if not isinstance(array, np.ndarray) or array.ndim != 2:
        raise DataError(f"feature file {path} has shape {getattr(array, 'shape', '?')}; expected a "
                        f"2-D (T_vid, {feature_dim}) array; re-extract it")
    if array.shape[1] != feature_dim:
        raise DataError(f"feature file {path} has dimension {array.shape[1]}, but feature_dim is "
                        f"{feature_dim}; use matching features or set --feature_dim "
                        f"{array.shape[1]}")
    if not np.issubdtype(array.dtype, np.floating):
        raise DataError(f"feature file {path} has dtype {array.dtype}; expected floating point "
                        f"(float32, or float16 / float64, which are read as float32); "
                        f"re-extract it")
    if array.shape[0] == 0:
        raise DataError(f"feature file {path} has no snippets (shape {array.shape}); re-extract it")
    if array.dtype != np.float32:    # read whole and cast, as the released code's astype(float32)
        # float64 beyond float32's range becomes inf: refused below
        with np.errstate(over="ignore"):
            array = np.asarray(array, dtype=np.float32)
    if full and not np.isfinite(array.sum(dtype=np.float64)):
        raise DataError(f"feature file {path} contains NaN or inf values (as float32); "
                        f"re-extract it")
    return array


# ----------------------------------------------------------------------------- the dataset
class VideoDataset(Dataset):
    """Videos of one phase ("train", "test", "full" = test list then train list, "val" = the
    held-out training videos) with docs/method.md §8 items.

    sampling: "random" (train) or "uniform" (test); after `set_proposals(results, weights)` with
    weights, the dynamic versions are used and `cum` is returned with each item.
    """

    def __init__(self, args, phase="train", sampling="random", videos=None, held_out=()):
        """videos: phase "predict" only (predict.py): {VID: .npy path or (T_vid, D) array} of new
        videos; no gt.json or split file is read and every video is a test video (docs/method.md
        §8).
        held_out: training videos kept for validation (--val_videos): phase "train" leaves them
        out, phase "val" has only them, and every phase treats them as test videos (predicted label
        sets)."""
        if phase not in ("train", "test", "full", "val", "predict") \
                or sampling not in ("random", "uniform"):
            raise ValueError(f"phase {phase!r} / sampling {sampling!r}: expected "
                             f"train|test|full|val|predict, random|uniform")
        new_videos = dict(videos or {}) if phase == "predict" else {}
        self.phase, self.sampling = phase, sampling
        self.root = Path(args.data_dir)
        self.class_names = list(args.class_name_lst)
        self.num_samples, self.max_proposals = args.sample_segments_num, args.max_segments_num
        self.feature_dim, self.delta = args.feature_dim, args.delta
        self.r = getattr(args, "snippets_per_sec", R)
        self.cache_gb = float(getattr(args, "feature_cache_gb", 0) or 0)
        if phase != "predict" and not self.root.is_dir():
            raise DataError(f"data folder {self.root} not found: download the I3D features of the "
                            f"public THUMOS-14 / ActivityNet-1.3 release used by ACM-Net and "
                            f"ASM-Loc and unpack them there (or pass --data_dir, or run --demo for "
                            f"synthetic data); expected layout:\n"
                            + EXPECTED_TREE.format(root=self.root, dim=self.feature_dim))
        database = read_gt(self.root / "gt.json") if phase != "predict" \
            else {vid: {} for vid in new_videos}
        train_list = read_split(self.root / "split_train.txt") if phase != "predict" else []
        test_list = read_split(self.root / "split_test.txt") if phase != "predict" else []
        held_out = set(held_out)
        self.train_videos = set(train_list) - held_out
        lists = {"train": [("train", [vid for vid in train_list if vid not in held_out])],
                 "val": [("train", [vid for vid in train_list if vid in held_out])],
                 "test": [("test", test_list)],
                 "full": [("test", test_list), ("train", train_list)], "predict": []}[phase]
        self.video_names, self.paths = [], {}
        for folder, names in lists:
            split_file = self.root / f"split_{folder}.txt"
            for vid in names:
                if vid not in database:
                    raise DataError(f"{split_file} lists video {vid}, which has no entry in "
                                    f"{self.root / 'gt.json'}; add its annotations or remove it "
                                    f"from the split")
                self.video_names.append(vid)
                self.paths[vid] = str(self.root / folder / f"{vid}.npy")
        # in memory
        self.arrays = {vid: x for vid, x in new_videos.items() if isinstance(x, np.ndarray)}
        for vid, source in new_videos.items():
            self.video_names.append(vid)
            self.paths[vid] = f"<array {vid}>" if vid in self.arrays else str(source)
        index = {name: i for i, name in enumerate(self.class_names)}
        self.gt_labels, self.video_labels, self.gt_segments = {}, {}, {}
        for vid in self.video_names:
            # training reads the labels only: an annotation may lack a segment (docs/method.md §1)
            annotations = database[vid].get("annotations", [])
            if not all(isinstance(ann, dict) and "label" in ann for ann in annotations):
                raise DataError(f"{self.root / 'gt.json'}: video {vid} has an annotation without "
                                f"a \"label\"; every annotation needs one")
            self.gt_segments[vid] = [ann for ann in annotations if "segment" in ann]
            labels = {ann["label"] for ann in annotations}
            unknown = sorted(labels - set(index))
            if unknown:
                source = getattr(args, "class_list_file", None) or "the class list"
                raise DataError(f"{self.root / 'gt.json'}: video {vid} has label {unknown[0]!r}, "
                                f"which is not in the class list {source} ({len(index)} classes); "
                                f"fix the annotation, or pass the right list with --class_list "
                                f"FILE")
            self.gt_labels[vid] = labels
            self.video_labels[vid] = np.zeros(len(index), dtype=np.float32)
            self.video_labels[vid][[index[name] for name in labels]] = 1.0
        warn_extraction_mismatch([os.path.dirname(path) for vid, path in self.paths.items()
                                  if vid not in self.arrays],
                                 getattr(args, "frames_per_sec", 25),
                                 getattr(args, "segment_frames_num", 16))
        self._lens = {}
        if not getattr(args, "skip_data_checks", False):
            for vid in self.video_names:
                self._open(vid, check=True)
        self.set_proposals(None, None)

    # -- features
    def _open(self, vid, check=False):
        """Cached array, or a memmap (header read; with `check` also the finite scan)."""
        path = self.paths[vid]
        array = self.arrays.get(vid, _CACHE.get(path))
        if array is None:
            stat = os.stat(path) if os.path.isfile(path) else None
            key = (path, stat.st_size, stat.st_mtime_ns) if stat else None
            check = check and key not in _CHECKED  # train/test/full share files: scan each once
            load = self.cache_gb > 0 and stat is not None and \
                _CACHE_BYTES[0] + stat.st_size <= self.cache_gb * 2**30   # fits: read it whole once
            array = check_feature_file(path, self.feature_dim, full=check, load=load)
            if check:
                _CHECKED.add(key)
            if load:
                _cache_put(path, array, self.cache_gb)
        self._lens[vid] = array.shape[0]
        return array

    def vid_len(self, vid):
        return self._lens[vid] if vid in self._lens else self._open(vid).shape[0]

    def features(self, vid):
        """The video's (T_vid, D) float32 features: the cached array, or a memmap."""
        return self._open(vid)

    @property
    def vid_lens(self):
        """vid → T_vid for every video of the phase (headers are read on first use with
        skip_data_checks)."""
        return {vid: self.vid_len(vid) for vid in self.video_names}

    def is_train_video(self, vid):
        """Training video = listed in split_train.txt (docs/method.md §14: not a name pattern)."""
        return vid in self.train_videos

    # -- proposals
    def label_set(self, vid, proposals):
        """docs/method.md §8: GT labels for training videos, labels present in the proposals
        otherwise."""
        if self.is_train_video(vid):
            return set(self.gt_labels[vid])
        return set(proposal_arrays(proposals)[1].tolist())

    def set_proposals(self, pseudo_results, weights):
        """Hand over the previous step's pseudo proposals {vid: [...]} and dynamic weights {vid: w}
        (or None)."""
        results = dict(pseudo_results or {})
        if isinstance(results.get("results"), dict):
            results = results["results"]
        self.pseudo_results = results
        self.weights = dict(weights) if weights else None
        self._proposals = {vid: proposal_arrays(results[vid]) for vid in self.video_names
                           if results.get(vid)}

    def compute_dynamic_weights(self, pseudo_results, args):
        """docs/method.md §9 weights for every video of the phase: {vid: float64 (T_vid,)}."""
        out = {}
        for vid in self.video_names:
            proposals = proposal_arrays((pseudo_results or {}).get(vid, []))
            out[vid] = dynamic_segment_weights(proposals, self.vid_len(vid),
                                               self.label_set(vid, proposals), args.alpha,
                                               args.delta, args.gamma, r=args.snippets_per_sec)
        return out

    def dynamic_weights(self, vid):
        """The dynamic sampling weights in use for `vid` (None at step 0)."""
        return None if self.weights is None else self.weights.get(vid)

    # -- items
    def __len__(self):
        return len(self.video_names)

    def weights_of(self, vid, T):
        """The dynamic sampling weights (T,) float64 of video `vid` (ones where none were
        computed), checked against its length T; None without dynamic sampling."""
        if self.weights is None:
            return None
        w = self.weights.get(vid)
        w = np.ones(T) if w is None else np.asarray(w, dtype=np.float64)
        if len(w) != T:
            raise DataError(f"dynamic weights of video {vid} have length {len(w)} but "
                            f"{self.paths[vid]} has {T} snippets; the weights belong to another "
                            f"dataset (regenerate them)")
        return w

    def _sample(self, vid, x, rng=None):
        """(features (out_len, D) float32, cum or None, timeline length for the scale)."""
        T = x.shape[0]
        plan_fn = (lambda n: random_plan(n, self.num_samples, rng)) if self.sampling == "random" \
            else (lambda n: uniform_plan(n, self.num_samples))
        w = self.weights_of(vid, T)
        if w is None:
            return apply_plan(x, plan_fn(T)), None, T
        if T == 1:
            rows, cum = dynamic_sample(x, w)
            return apply_plan(rows, plan_fn(2)), cum, 1
        cum, pos = dynamic_positions(w)                                     # pos (M,)
        plan = plan_fn(len(pos))
        if np.issubdtype(plan.dtype, np.integer):                           # only the rows sampled
            feats = lerp_rows(x, pos[plan] - 1)
        else:
            feats = lerp_rows(lerp_rows(x, pos - 1), plan)
        return feats, cum, len(pos)

    def __getitem__(self, key):
        """key: an index, or (index, seed) to draw the random sampling from its own generator
        (so an item does not depend on which process or worker loads it)."""
        idx, seed = key if isinstance(key, tuple) else (key, None)
        rng = None if seed is None else np.random.default_rng(seed)
        vid = self.video_names[idx]
        x = self._open(vid)
        feats, cum, timeline = self._sample(vid, x, rng)
        bbox, count, pil = self.item_targets(vid, feats.shape[0], timeline, cum)
        return {"vid_name": vid,
                "features": torch.from_numpy(np.ascontiguousarray(feats, dtype=np.float32)),
                "video_label": torch.from_numpy(self.video_labels[vid]), "vid_len": x.shape[0],
                "proposal_bbox": torch.from_numpy(bbox),
                "proposal_count": torch.tensor(count, dtype=torch.int64),
                "pseudo_instance_label": torch.from_numpy(pil), "cum": cum}

    def item_targets(self, vid, out_len, timeline, cum, labels=True):
        """The targets of an item of `out_len` sampled rows whose timeline has `timeline` rows
        (T_vid, or the dynamic timeline's length): (attention proposal bbox (K, 2) int64, their
        count, pseudo instance label (out_len, C+1) float32, None without `labels`). They depend
        on the video, out_len and the dynamic weights only, not on the random draw."""
        scale = self.r * out_len / timeline
        props = self._proposals.get(vid)
        C, K, T = len(self.class_names), self.max_proposals, self.vid_len(vid)
        bbox, count, pil = np.zeros((K, 2), dtype=np.int64), 0, None
        if labels:
            pil = np.zeros((out_len, C + 1), dtype=np.float32)
            pil[:, C] = 1.0
        if props is not None:
            label_set = self.label_set(vid, props)
            chosen = select_labels(props, label_set)
            if len(chosen[0]):
                # class-list order where the released code iterates a Python set (docs/method.md §8)
                ordered = [name for name in self.class_names if name in label_set]
                bbox, count = attention_proposal_bbox(chosen, scale, out_len, self.delta, K, cum,
                                                      T, self.r, labels=ordered)
            if labels:
                pil = pseudo_instance_label(props, self.gt_labels[vid], self.class_names, scale,
                                            out_len, cum, T, self.r)
        return bbox, count, pil


def stack(tensors):
    """torch.stack; in a DataLoader worker straight into shared memory (the batch then crosses
    to the main process without another copy), as torch's default collate does."""
    out = None
    if torch.utils.data.get_worker_info() is not None:
        first = tensors[0]
        storage = first._typed_storage()._new_shared(sum(t.numel() for t in tensors),
                                                      device=first.device)
        out = first.new(storage).resize_(len(tensors), *first.shape)
    return torch.stack(tensors, out=out)


def collate_fn(items):
    """Stack a list of items into a batch dict (vid_name and cum stay lists)."""
    lengths = {item["features"].shape[0] for item in items}
    if len(lengths) > 1:
        raise ValueError(f"cannot batch videos of different sampled lengths {sorted(lengths)}; "
                         f"use batch_size 1")
    batch = {key: stack([item[key] for item in items]) for key in
             ("features", "video_label", "proposal_bbox", "proposal_count",
              "pseudo_instance_label")}
    batch["vid_len"] = torch.tensor([item["vid_len"] for item in items], dtype=torch.int64)
    batch["vid_name"] = [item["vid_name"] for item in items]
    batch["cum"] = [item["cum"] for item in items]
    return batch
