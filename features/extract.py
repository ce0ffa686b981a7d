"""Two-stream I3D features of videos, in the convention of the public THUMOS-14 / ActivityNet-1.3
features (the library behind extract_features.py and predict.py --videos).

Per video: frames resampled to --fps by presentation time; non-overlapping snippets of
--snippet_frames frames (T = floor(frames / snippet_frames), the frames after the last whole
snippet dropped); per snippet the RGB stream's and the flow stream's Mixed_5c output,
average-pooled, concatenated: OUT/VID.npy, (T, 2048) float32, RGB || flow. n frames have n - 1
flows (frame k -> k + 1); a snippet ending on the video's last frame has no flow after it, and
that one missing flow repeats the flow before it.
Settings and weight checksums go to OUT/extract_config.json; a folder extracted with other
settings is refused. A video whose VID.npy exists is skipped, so an interrupted run resumes.
Weights are never downloaded: pass the PyTorch port's models/rgb_imagenet.pt and
models/flow_imagenet.pt.
Needs OpenCV's contrib build (pip install -r requirements-extract.txt).
"""
import argparse
import contextlib
import hashlib
import io
import json
import multiprocessing
import os
import signal
import sys
import threading
import time

import numpy as np
import torch
from tqdm import tqdm

from features.i3d import FEATURE_DIM as STREAM_DIM
from features.i3d import InceptionI3d
from features.provenance import CONFIG_NAME
from utils import RunFolderLock, UserError, atomic_write_bytes, atomic_write_json

CROP = 224
SHORT_SIDE = 256            # crop + a 32-pixel margin: the Kinetics / I3D test-time convention
# settings that change the numbers: a folder only ever holds features of one value of each
IDENTITY_KEYS = ("fps", "snippet_frames", "short_side", "crop", "resampling", "rgb", "flow", "tvl1",
                 "feature", "rgb_weights_sha256", "flow_weights_sha256", "opencv")
STREAMS = (("rgb", 3), ("flow", 2))     # (name, input channels), in the order of the 2048-d feature
FEATURE_DIM = len(STREAMS) * STREAM_DIM
PROGRESS_EVERY_S = 30.0     # without a terminal (no tqdm bar): a progress line at least this often


class ExtractError(UserError):
    """A video, weight file or output folder that extraction cannot use; one line naming it."""


# ----------------------------------------------------------------------------- weights
def sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_i3d(path, stream, device="cpu"):
    """InceptionI3d of `stream` ("rgb" / "flow") with the weights of `path` (strict), in eval
    mode."""
    in_channels = dict(STREAMS)[stream]
    flag, published = f"--{stream}_weights", f"{stream}_imagenet.pt"
    if not path:
        raise ExtractError(f"{flag} is required: the PyTorch I3D port's models/{published} "
                           f"(never downloaded here)")
    if not os.path.isfile(path):
        raise ExtractError(f"{flag} {path} not found; pass the PyTorch I3D port's "
                           f"models/{published}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:        # zip / pickle / EOF errors of a truncated or foreign file
        raise ExtractError(
            f"{flag} {path} is not a readable PyTorch weight file (truncated or another format: "
            f"{str(err).splitlines()[0] if str(err) else type(err).__name__})") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ExtractError(f"{flag} {path} is not a state dict of tensors; expected the port's "
                           f"{published}")
    first = state.get("Conv3d_1a_7x7.conv3d.weight")
    if first is not None and first.ndim == 5 and first.shape[1] != in_channels:
        other = {3: "RGB", 2: "flow"}.get(first.shape[1], f"{first.shape[1]}-channel")
        raise ExtractError(f"{flag} {path} holds {other} weights ({first.shape[1]} input "
                           f"channels); the {stream} stream needs {published} ({in_channels} "
                           f"channels): are the two files swapped?")
    model = InceptionI3d(in_channels)
    expected = model.state_dict()
    state = dict(state)
    # files saved before BatchNorm counted batches lack these (unused in eval)
    for name in expected:
        if name.endswith("num_batches_tracked") and name not in state:
            state[name] = expected[name]
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ExtractError(f"{flag} {path} does not match the I3D layout: {len(missing)} keys "
                           f"missing (e.g. {missing[:1]}), {len(unexpected)} unexpected (e.g. "
                           f"{unexpected[:1]}); expected the port's {published}")
    for name, tensor in expected.items():
        if state[name].shape != tensor.shape:
            raise ExtractError(f"{flag} {path}: {name} has shape {tuple(state[name].shape)}, "
                               f"expected {tuple(tensor.shape)}; expected the port's {published} "
                               f"(Kinetics-400 logits)")
    model.load_state_dict(state, strict=True)
    return model.to(device).eval()


# ----------------------------------------------------------------------------- settings
def extraction_settings(args, rgb_sha, flow_sha, tvl1_params=None):
    """Everything that made the features (IDENTITY_KEYS) and how this run ran (the rest)."""
    import cv2
    from features import frames as video_frames
    return {
        "fps": float(args.fps), "snippet_frames": int(args.snippet_frames),
        "short_side": SHORT_SIDE, "crop": CROP,
        "resampling": "each output time j / fps takes the source frame on screen then "
                      "(presentation times)",
        "rgb": "shorter side scaled (bilinear), centre crop, RGB, x / 127.5 - 1 in [-1, 1]",
        "flow": "TV-L1 on consecutive grayscale frames at the scaled size, centre crop, (dx, dy) "
                f"clipped to [-{video_frames.FLOW_CLIP:g}, {video_frames.FLOW_CLIP:g}] px / "
                f"{video_frames.FLOW_CLIP:g}; "
                "a snippet ending on the last frame repeats the flow before it",
        "tvl1": dict(tvl1_params or video_frames.TVL1_DEFAULTS),
        "feature": "Mixed_5c average-pooled, 1024 RGB || 1024 flow",
        "rgb_weights_sha256": rgb_sha, "flow_weights_sha256": flow_sha,
        "opencv": cv2.__version__,
        "rgb_weights": os.path.abspath(args.rgb_weights),
        "flow_weights": os.path.abspath(args.flow_weights),
        "device": str(args.device), "batch": int(args.batch), "workers": int(args.workers),
        "torch": torch.__version__,
    }


def claim_folder(out, settings):
    """Write OUT/extract_config.json, or check that the one there has the same IDENTITY_KEYS."""
    path = os.path.join(out, CONFIG_NAME)
    if os.path.isfile(path):
        try:
            with open(path) as handle:
                stored = json.load(handle)
        except ValueError as err:
            raise ExtractError(f"{path} is not valid JSON ({err}); remove the folder or choose "
                               f"another --out") from None
        differ = [k for k in IDENTITY_KEYS if stored.get(k) != settings[k]]
        if differ:
            key = differ[0]
            raise ExtractError(f"{out} holds features extracted with other settings "
                               f"({', '.join(differ)}: {stored.get(key)!r} there, "
                               f"{settings[key]!r} now); choose another --out")
        return
    if any(name.endswith(".npy") for name in os.listdir(out)):
        raise ExtractError(f"{out} holds .npy files but no {CONFIG_NAME}: their settings are "
                           f"unknown; choose another --out")
    atomic_write_json(path, settings, indent=2)


# ----------------------------------------------------------------------------- one video
def run_streams(nets, rgb, flow, snippet_frames, device):
    """rgb (L, 3, S, S), flow (L, 2, S, S) frames of L / snippet_frames snippets ->
    (L / snippet_frames, 2048)."""
    out = []
    for net, frames in zip(nets, (rgb, flow)):
        x = torch.from_numpy(frames).to(device)
        # (B, C, snippet_frames, S, S)
        x = x.reshape(-1, snippet_frames, *x.shape[1:]).transpose(1, 2)
        out.append(net.snippet_features(x).float().cpu())                      # (B, 1024)
    return torch.cat(out, dim=1).numpy()                                        # (B, 2048)


def chunk_features(frames, following, nets, settings, pool):
    """Features of whole snippets `frames` (scaled BGR); `following` is the next frame or None
    (video end)."""
    from features import frames as video_frames
    crop, sf = settings["crop"], settings["snippet_frames"]
    grays = [video_frames.to_gray(f)
             for f in frames + ([following] if following is not None else [])]
    pieces = max(1, min(settings["workers"] if pool is not None else 1, len(grays) - 1))
    bounds = np.linspace(0, len(grays) - 1, pieces + 1).round().astype(int)
    jobs = [(grays[a:b + 1], crop, settings["tvl1"])
            for a, b in zip(bounds[:-1], bounds[1:]) if b > a]
    pending = pool.starmap_async(video_frames.flow_inputs, jobs) if pool is not None else None
    rgb = video_frames.rgb_inputs(frames, crop)                     # (L, 3, crop, crop)
    parts = (pending.get() if pending is not None
             else [video_frames.flow_inputs(*job) for job in jobs])
    flow = np.concatenate(parts)                                    # (L or L - 1, 2, crop, crop)
    if len(flow) < len(frames):         # the video's last frame has no successor: repeat its flow
        flow = np.concatenate([flow, flow[-1:]])
    return run_streams(nets, rgb, flow, sf, settings["device"])


class ProgressLines:
    """Where stderr is no terminal (tqdm draws no bar there), a line on stderr at least every
    PROGRESS_EVERY_S seconds while a video is extracted: the video, the seconds of it done, the
    rate. A thread, so that a slow batch (minutes of TV-L1) does not silence it."""

    def __init__(self, vid, total_s, enabled):
        self.vid, self.total_s, self.done_s = vid, total_s, 0.0
        self.started, self.stopped = time.monotonic(), threading.Event()
        self.thread = threading.Thread(target=self.loop, daemon=True) if enabled else None
        if self.thread is not None:
            self.thread.start()

    def line(self):
        elapsed = max(time.monotonic() - self.started, 1e-9)
        total = f" of {self.total_s:.1f} s" if self.total_s else ""
        return (f"{self.vid}: {self.done_s:.1f} s{total} of video done in {elapsed:.0f} s "
                f"({self.done_s / elapsed:.3f} s of video per second)")

    def loop(self):
        while not self.stopped.wait(PROGRESS_EVERY_S):
            print(self.line(), file=sys.stderr, flush=True)

    def close(self):
        self.stopped.set()
        if self.thread is not None:
            self.thread.join()


def extract_video(path, vid, nets, settings, pool=None, log=print):
    """(T, 2048) float32 features of one video; streams the frames batch by batch."""
    from features import frames as video_frames
    fps, sf = settings["fps"], settings["snippet_frames"]
    chunk = settings["batch"] * sf
    estimate = video_frames.estimated_frames(path, fps)
    bar = tqdm(total=estimate // sf if estimate else None, desc=vid, unit="snippet", leave=False,
               disable=None)                                  # off where stderr is no terminal
    lines = ProgressLines(vid, estimate / fps if estimate else None,
                          enabled=not getattr(sys.stderr, "isatty", lambda: False)())
    features, buffer, count = [], [], 0
    try:
        with torch.inference_mode():
            for frame in video_frames.resampled_frames(path, fps):
                buffer.append(video_frames.resize_short_side(frame, settings["short_side"]))
                count += 1
                if len(buffer) == chunk + 1:      # a batch of snippets and the frame after it
                    features.append(chunk_features(buffer[:chunk], buffer[chunk], nets,
                                                   settings, pool))
                    bar.update(settings["batch"])
                    lines.done_s += chunk / fps
                    buffer = buffer[chunk:]
            whole = len(buffer) // sf * sf
            if whole:
                following = buffer[whole] if len(buffer) > whole else None
                features.append(chunk_features(buffer[:whole], following, nets, settings, pool))
                bar.update(whole // sf)
    except video_frames.VideoError as err:
        raise ExtractError(str(err)) from None
    finally:
        lines.close()
        bar.close()
    if not features:
        raise ExtractError(f"video {path} is too short: {count} frames at {fps:g} fps, one snippet "
                           f"needs {sf} ({sf / fps:.2f} s)")
    if estimate and count < 0.95 * estimate - 2:     # decoding stopped early: a damaged stream?
        log(f"warning: {path}: decoded {count / fps:.1f} s of the {estimate / fps:.1f} s its "
            f"container announces (damaged or truncated?); features cover the decoded part")
    return np.concatenate(features).astype(np.float32)                  # (T, 2048)


def save_npy(path, array):
    buffer = io.BytesIO()
    np.save(buffer, array)
    atomic_write_bytes(path, buffer.getvalue())


# ----------------------------------------------------------------------------- many videos
@contextlib.contextmanager
def sigint_ignored():
    """SIGINT ignored while processes are started (they inherit it: Ctrl-C then reaches the main
    process alone, which stops them and prints one line); a no-op outside the main thread."""
    try:
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def check_videos(paths, fps, snippet_frames):
    """Every video opens and, by its container's metadata, holds a snippet; else one line naming
    it (OpenCV's contrib build imported by the caller)."""
    from features import frames as video_frames
    for path in paths:
        try:
            video_frames.open_video(path).release()
        except video_frames.VideoError as err:
            raise ExtractError(str(err)) from None
        estimate = video_frames.estimated_frames(path, fps)
        # container metadata: a frame of slack
        if estimate is not None and estimate + 1 < snippet_frames:
            raise ExtractError(f"video {path} is too short: about {estimate} frames at {fps:g} "
                               f"fps, one snippet needs {snippet_frames} "
                               f"({snippet_frames / fps:.2f} s)")


def extract_videos(videos, out, rgb_weights, flow_weights, fps=25.0, snippet_frames=16,
                   device="cpu", batch=8, workers=None, tvl1_params=None, log=print):
    """Features of {VID: video path} (or a file / folder path) into OUT/VID.npy; returns
    {VID: .npy path}.

    tvl1_params: TV-L1 settings other than OpenCV's defaults (recorded in extract_config.json).
    With workers > 1 the flow runs in a "spawn" process pool, which imports the calling script
    again: call this from under `if __name__ == "__main__":` (or pass workers=1)."""
    try:
        from features import frames as video_frames
    except ImportError:
        raise ExtractError("feature extraction needs OpenCV's contrib build: pip install -r "
                           "requirements-extract.txt") from None
    try:
        videos = (video_frames.list_videos(videos) if isinstance(videos, (str, os.PathLike))
                  else dict(videos))
    except video_frames.VideoError as err:
        raise ExtractError(str(err)) from None
    if fps <= 0 or snippet_frames < 1 or batch < 1:
        raise ExtractError(f"--fps ({fps}), --snippet_frames ({snippet_frames}) and --batch "
                           f"({batch}) must be positive")
    check_videos(videos.values(), fps, snippet_frames)   # fail before hours of work
    workers = workers or os.cpu_count() or 1
    nets = [load_i3d(rgb_weights, "rgb", device), load_i3d(flow_weights, "flow", device)]
    args = argparse.Namespace(fps=fps, snippet_frames=snippet_frames, rgb_weights=rgb_weights,
                              flow_weights=flow_weights, device=device, batch=batch,
                              workers=workers)
    settings = extraction_settings(args, sha256(rgb_weights), sha256(flow_weights), tvl1_params)
    if os.path.exists(out) and not os.path.isdir(out):
        raise ExtractError(f"--out {out} is a file; pass a folder")
    os.makedirs(out, exist_ok=True)
    written = {}
    tf32 = torch.backends.cudnn.allow_tf32
    # float32 convolutions on GPUs too, as the weights were made
    torch.backends.cudnn.allow_tf32 = False
    pool = None
    try:
        with RunFolderLock(out):
            claim_folder(out, settings)
            todo = {vid: p for vid, p in videos.items()
                    if not os.path.isfile(os.path.join(out, f"{vid}.npy"))}
            for vid in videos:
                if vid not in todo:
                    log(f"skip {vid}: {os.path.join(out, vid + '.npy')} exists")
            # spawn: workers start clean (no copy of torch's threads), needing only numpy and OpenCV
            if workers > 1 and todo:
                with sigint_ignored():       # workers start with Ctrl-C ignored (and keep it so)
                    pool = multiprocessing.get_context("spawn").Pool(
                        workers, video_frames.init_flow_worker)
            for vid, path in tqdm(todo.items(), desc="videos", unit="video",
                                  disable=None if len(todo) > 1 else True):
                features = extract_video(path, vid, nets, settings, pool, log)
                save_npy(os.path.join(out, f"{vid}.npy"), features)
                count = features.shape[0]
                log(f"{vid}: {count} snippet{'s' if count != 1 else ''} -> "
                    f"{os.path.join(out, vid + '.npy')}")
    finally:
        torch.backends.cudnn.allow_tf32 = tf32
        if pool is not None:
            pool.terminate()
    for vid in videos:
        written[vid] = os.path.join(out, f"{vid}.npy")
    return written
