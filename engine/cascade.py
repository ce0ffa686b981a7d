"""The trained cascade as a function (docs/method.md §10 test mode, §11, §9), shared by test mode
and predict.py.

Step k runs model k (model_step{k}_last_epoch.pth for k < num_steps,
model_step{num_steps}_best_epoch.pth last) once per video: uniform sampling at step 0,
uniform(dynamic(x)) with the previous step's pseudo proposals after that. One forward pass gives the
step's detections (evaluation thresholds) and, for k < num_steps, its pseudo proposals and dynamic
weights for step k+1. A test video's inputs at every step depend only on its own proposals (its
label set is the labels in them, docs/method.md §8, §9), so the cascade of one video, or of a folder
of new videos, is replayed alone as test mode does (up to float32 rounding: which videos share a
forward changes the last bits of the outputs, engine/passes.py inference_pass).

Used by test mode (engine/run.py), predict.py and users (`localize`).
"""
import argparse
import os
from pathlib import Path

import numpy as np
import torch

from dataset import VideoDataset
from engine import passes, reports
from engine.checkpoint_files import verify_checkpoint
from engine.checkpoints import cascade_paths, load_step_model
from engine.record import run_protocol
from engine.store import FeatureStore, store_of
from eval.protocol import protocol_line
from utils import UserError


class InputError(UserError):
    """Feature files or arrays handed to predict.py / localize() are unusable; one line naming the
    input."""


# ----------------------------------------------------------------------------- the cascade
def load_cascade(checkpoint_dir, args, needed_by="--test", mmap=True):
    """Every step's model, loaded once (every file checked before any is loaded):
    [model_0, ..., model_num_steps]."""
    paths = cascade_paths(checkpoint_dir, args, needed_by)
    for path in paths:
        verify_checkpoint(path)
    return [load_step_model(path, step, args, mmap) for step, path in enumerate(paths)]


def run_cascade(models, dataset, args, on_step=None, keep_outputs=False):
    """Replay the cascade on every video of `dataset` (test videos: label sets from their own
    proposals).

    models: per step an nn.Module or a checkpoint path (loaded at its step and freed after it).
    on_step(step, detections, outputs) is called after each step's pass, while `dataset` still holds
    that step's dynamic weights; without it only the final step's detections are computed (the
    earlier steps only hand on pseudo proposals). Returns the final step's (detections, outputs).
    """
    results = weights = None
    detections, outputs = {}, {}
    if store_of(dataset) is None:               # the features once, where the model runs
        FeatureStore.build([dataset], args)
    for step, model in enumerate(models):
        dataset.set_proposals(results, weights)
        if not isinstance(model, torch.nn.Module):
            model = load_step_model(model, step, args)
        last = step == len(models) - 1
        detections, results, outputs = passes.inference_pass(
            model, dataset, args, step, detect=last or on_step is not None, pseudo=not last,
            keep_outputs=keep_outputs and (last or on_step is not None))
        if on_step is not None:
            on_step(step, detections, outputs)
        if not last:
            weights = (dataset.compute_dynamic_weights(results, args) if args.use_dynamic_sampling
                       else None)
    return detections, outputs


def test_inputs(args):
    """What test mode reads, checked before it writes anything: (the cascade's checkpoint paths,
    the test set)."""
    paths = cascade_paths(args.checkpoint, args, "--test")
    for path in paths:                  # every step's file, before any step is evaluated
        verify_checkpoint(path)
    return paths, VideoDataset(args, "test", "uniform")


def test_cascade(args, inputs=None):
    """Test mode (--test --checkpoint DIR): the cascade on the test split, scored at every step.
    inputs: test_inputs(args), when checked already."""
    log = reports.Logger(args.log_path, enabled=args.is_main)
    paths, test_set = inputs or test_inputs(args)
    log(protocol_line(run_protocol(args, test_set)))
    detectors = []

    def score(step, detections, outputs):
        path = os.path.join(args.save_dir, f"test_result_step{step}.json")
        detector = passes.score_results(detections, outputs, args, path)
        prefix = f"test step {step} ({os.path.basename(paths[step])})"
        if args.is_main and not detector.scored:          # no segment in the test split
            log(reports.unscored_line(prefix, path))
        elif args.is_main:
            log(reports.format_map_line(detector, prefix))
            reports.report_evaluation(detector, args, step, test_set, "test_", log)
        detectors.append(detector)

    run_cascade(paths, test_set, args, on_step=score, keep_outputs=args.visualize)
    return detectors


# ----------------------------------------------------------------------------- new videos
def list_feature_files(path):
    """{VID: path} for one .npy file or a folder of them (sorted by name)."""
    path = Path(path)
    if path.is_file():
        if path.suffix != ".npy":
            raise InputError(f"features {path} is not a .npy file; expected a (T, D) float32 .npy "
                             f"or a folder of them")
        return {path.stem: path}
    if not path.is_dir():
        raise InputError(f"features {path} not found; pass a (T, D) .npy file or a folder of them")
    files = sorted(p for p in path.iterdir() if p.suffix == ".npy" and p.is_file())
    if not files:
        raise InputError(f"feature folder {path} holds no .npy files; expected one (T, D) float32 "
                         f"file per video")
    return {p.stem: p for p in files}


def check_features(array, feature_dim, source):
    """The checks a video's features must pass (rank, dtype, dimension, finite, non-empty)."""
    if not isinstance(array, np.ndarray):
        raise InputError(f"features {source} are a {type(array).__name__}; expected a numpy array "
                         f"(T, {feature_dim})")
    if array.ndim != 2:
        raise InputError(f"features {source} have shape {array.shape}; expected a 2-D "
                         f"(T, {feature_dim}) array (one row per snippet)")
    if not np.issubdtype(array.dtype, np.floating):
        raise InputError(f"features {source} have dtype {array.dtype}; expected floating point "
                         f"(float32; float16 and float64 are read as float32)")
    if array.shape[1] != feature_dim:
        kind = " (I3D RGB || flow)" if feature_dim == 2048 else ""
        raise InputError(f"features {source} have dimension {array.shape[1]}, but the model was "
                         f"trained on {feature_dim}-d features{kind}; extract features the way "
                         f"the model was trained")
    if array.shape[0] == 0:
        raise InputError(f"features {source} have no snippets (shape {array.shape})")
    if array.dtype != np.float32:
        # float64 beyond float32's range becomes inf: refused below
        with np.errstate(over="ignore"):
            array = np.asarray(array, dtype=np.float32)
    if not np.isfinite(array.sum(dtype=np.float64)):
        raise InputError(f"features {source} contain NaN or inf values (as float32); "
                         f"re-extract them")
    return array


def read_feature_file(path, feature_dim):
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise InputError(f"features {path} are not a readable .npy array ({err})") from None
    return check_features(array, feature_dim, path)


def new_video_dataset(videos, args):
    """VideoDataset of new videos {VID: .npy path or (T, D) array}, every input checked (one-line
    errors)."""
    videos = dict(videos)
    for vid, source in videos.items():
        if isinstance(source, (str, os.PathLike)):
            # the dataset casts files itself when it reads them
            read_feature_file(source, args.feature_dim)
        else:
            videos[vid] = check_features(source, args.feature_dim, f"of video {vid}")    # float32
    # checked above, with these messages
    checked = argparse.Namespace(**{**vars(args), "skip_data_checks": True})
    return VideoDataset(checked, "predict", "uniform", videos=videos)


def localize_videos(videos, checkpoint, args):
    """Detections of the cascade for new videos: {VID: [{label, score, segment: [s, e] seconds}]}.

    videos: {VID: .npy path or (T, D) float32 array}, or a .npy file / folder path;
    checkpoint: a run folder, or the models of load_cascade (load once, call many times).
    """
    if isinstance(videos, (str, os.PathLike)):
        videos = list_feature_files(videos)
    models = (checkpoint if isinstance(checkpoint, (list, tuple))
              else load_cascade(checkpoint, args, "predict"))
    if len(models) != args.num_steps + 1:
        raise UserError(f"{len(models)} models given, but the cascade has num_steps + 1 = "
                        f"{args.num_steps + 1}")
    return run_cascade(models, new_video_dataset(videos, args), args)[0]


def localize(features, checkpoint, args):
    """Detections of the cascade for one video's features (T, D) float32 (array or .npy path)."""
    if isinstance(features, (str, os.PathLike)):
        return next(iter(
            localize_videos({Path(features).stem: features}, checkpoint, args).values()))
    return localize_videos({"video": features}, checkpoint, args)["video"]
