"""Video in, network inputs out (OpenCV): decoding, resampling to a fixed frame rate, the RGB frames
and the TV-L1 flow of the public I3D features' convention.

- Decoding: any container and codec of OpenCV's FFmpeg build; each frame's presentation time is read
  from the stream (frame index / nominal rate where the stream has none).
- Resampling by time: output frame j (time j / fps) is the source frame on screen at that time, for
  every j / fps in [0, duration); a 30 fps source gives 25 fps output with 5 of every 30 frames
  dropped, a 12 fps one repeats frames.
- RGB: shorter side scaled to `short_side` (bilinear), centre crop, RGB order, values to [-1, 1].
- Flow: TV-L1 on consecutive grayscale frames at the scaled size, then the same centre crop;
  (dx, dy) clipped to [-20, 20] pixels and divided by 20.
"""
import os
import signal

import cv2
import numpy as np

VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".mpg", ".mpeg", ".m4v", ".flv", ".wmv",
                  ".ts", ".3gp", ".ogv")
TIME_TOLERANCE = 1e-4   # seconds: timestamps are in ms or ticks; a frame due at t is shown at t
FLOW_CLIP = 20.0        # pixels
# OpenCV's DualTVL1 defaults (Zach, Pock and Bischof 2007 / Wedel et al. 2009): every value is
# recorded in extract_config.json; a run may pass others (tests use a cheap setting) and they are
# recorded too
TVL1_DEFAULTS = dict(tau=0.25, lambda_=0.15, theta=0.3, nscales=5, warps=5, epsilon=0.01,
                     innerIterations=30, outerIterations=10, scaleStep=0.8, gamma=0.0,
                     medianFiltering=5)


class VideoError(ValueError):
    """A video that cannot give features; the message names the file (becomes one `error:` line)."""


def list_videos(path):
    """{VID: path} for one video file (any suffix) or a folder of them (known suffixes, sorted by
    name)."""
    path = os.fspath(path)
    if os.path.isfile(path):
        return {os.path.splitext(os.path.basename(path))[0]: path}
    if not os.path.isdir(path):
        raise VideoError(f"videos {path} not found; pass a video file or a folder of them")
    names = sorted(n for n in os.listdir(path)
                   if n.lower().endswith(VIDEO_SUFFIXES) and not n.startswith("."))
    if not names:
        raise VideoError(f"video folder {path} holds no video files ({', '.join(VIDEO_SUFFIXES)})")
    videos = {}
    for name in names:
        vid = os.path.splitext(name)[0]
        if vid in videos:
            raise VideoError(f"video folder {path} holds two videos named {vid} "
                             f"({os.path.basename(videos[vid])}, "
                             f"{name}); their features would share {vid}.npy: rename one")
        videos[vid] = os.path.join(path, name)
    return videos


def open_video(path):
    """cv2.VideoCapture of `path`, or a VideoError saying why not (missing, empty, not
    decodable)."""
    if not os.path.isfile(path):
        raise VideoError(f"video {path} not found")
    if os.path.getsize(path) == 0:
        raise VideoError(f"video {path} is empty (0 bytes); re-copy or remove it")
    capture = cv2.VideoCapture(path)
    if not capture.isOpened():
        raise VideoError(f"video {path} could not be opened: not a video, or a codec this OpenCV "
                         f"build cannot decode; re-encode it (e.g. ffmpeg -i IN -c:v libx264 "
                         f"OUT.mp4) or remove it")
    return capture


def timed_frames(capture, path):
    """(seconds from the first frame, BGR uint8 frame) of every decodable frame, in display
    order."""
    nominal = capture.get(cv2.CAP_PROP_FPS)
    nominal = nominal if np.isfinite(nominal) and 0 < nominal < 1000 else 0.0
    start = last = None
    index = 0
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        stamp = capture.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
        if index > 0 and not stamp > last:      # no (or non-increasing) timestamps: use the index
            if nominal <= 0:
                raise VideoError(f"video {path} has neither frame timestamps nor a frame rate; "
                                 f"re-encode it")
            stamp = last + 1.0 / nominal
        start = stamp if start is None else start
        last = stamp
        index += 1
        yield stamp - start, frame


def resampled_frames(path, fps):
    """BGR frames of `path` at `fps` (by presentation time, see the module docstring); a
    generator."""
    capture = open_video(path)
    try:
        nominal = capture.get(cv2.CAP_PROP_FPS)
        held, held_time, gaps = None, 0.0, []
        j = 0
        for stamp, frame in timed_frames(capture, path):
            if held is not None:
                gaps.append(stamp - held_time)
                # output times before this frame: the held one
                while j / fps < stamp - TIME_TOLERANCE:
                    yield held
                    j += 1
            held, held_time = frame, stamp
        if held is None:
            raise VideoError(f"video {path} has no decodable frame (broken or truncated); "
                             f"re-encode or remove it")
        last_duration = 1.0 / nominal if np.isfinite(nominal) and 0 < nominal < 1000 else \
            (float(np.median(gaps)) if gaps else 1.0 / fps)
        while j / fps < held_time + last_duration - TIME_TOLERANCE:
            yield held
            j += 1
    finally:
        capture.release()


def estimated_frames(path, fps):
    """Frames at `fps` from the container's frame count and rate (for progress bars only), or
    None."""
    capture = cv2.VideoCapture(path)
    count, rate = capture.get(cv2.CAP_PROP_FRAME_COUNT), capture.get(cv2.CAP_PROP_FPS)
    capture.release()
    return int(count * fps / rate) if count > 0 and rate > 0 else None


def container_duration(path):
    """Seconds of video the container announces (frame count / frame rate), or None."""
    capture = cv2.VideoCapture(path)
    count, rate = capture.get(cv2.CAP_PROP_FRAME_COUNT), capture.get(cv2.CAP_PROP_FPS)
    capture.release()
    return float(count / rate) if count > 0 and 0 < rate < 1000 else None


def resize_short_side(frame, short_side):
    """Scale so that the shorter side is `short_side` pixels (bilinear), aspect ratio kept."""
    height, width = frame.shape[:2]
    scale = short_side / min(height, width)
    size = (max(short_side, round(width * scale)), max(short_side, round(height * scale)))  # (w, h)
    return cv2.resize(frame, size, interpolation=cv2.INTER_LINEAR)


def center_crop(image, size):
    """The centre size x size window of an (H, W, ...) image."""
    top, left = (image.shape[0] - size) // 2, (image.shape[1] - size) // 2
    return image[top:top + size, left:left + size]


def rgb_inputs(frames, crop):
    """Scaled BGR uint8 frames -> (T, 3, crop, crop) float32 RGB in [-1, 1]."""
    stack = np.stack([center_crop(f, crop) for f in frames])[..., ::-1]     # (T, crop, crop, 3) RGB
    # (T, 3, crop, crop)
    return (stack.astype(np.float32) * (2.0 / 255.0) - 1.0).transpose(0, 3, 1, 2)


def tvl1(params):
    """The solver with `params` (passed by position: the keyword for inner iterations is misspelt in
    OpenCV's binding)."""
    return cv2.optflow.DualTVL1OpticalFlow_create(*(params[key] for key in TVL1_DEFAULTS))


def raw_flow(first, second, params=None):
    """TV-L1 flow (H, W, 2) float32 in pixels, (dx, dy), from one grayscale uint8 frame to the
    next."""
    return tvl1(params or TVL1_DEFAULTS).calc(first, second, None)


def flow_inputs(grays, crop, params):
    """len(grays) - 1 flows between consecutive grayscale frames -> (n - 1, 2, crop, crop) float32
    in [-1, 1] (clipped at FLOW_CLIP pixels). One process's share of a video; run in a worker
    pool."""
    solver = tvl1(params)
    flows = [center_crop(solver.calc(a, b, None), crop) for a, b in zip(grays[:-1], grays[1:])]
    stack = np.clip(np.stack(flows), -FLOW_CLIP, FLOW_CLIP) / FLOW_CLIP     # (n - 1, crop, crop, 2)
    return stack.astype(np.float32).transpose(0, 3, 1, 2)                  # (n - 1, 2, crop, crop)


def init_flow_worker():
    cv2.setNumThreads(1)                # parallelism comes from the pool: one solver per core
    signal.signal(signal.SIGINT, signal.SIG_IGN)   # Ctrl-C is the main process's to report


def to_gray(frame):
    return cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
