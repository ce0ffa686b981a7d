"""extract_features.py's cost per stage and per minute of video, with random I3D weights in the
published layout (the cost does not depend on the weights' values).

Stages (frames per second of 25 fps output; wall and CPU seconds, since a shared machine's wall
time swings):
  decode   decoding + resampling to 25 fps of a generated clip (--source WxH at --source_fps, mp4v)
  prep     scaling to 256 short side + grayscale
  flow     OpenCV's default TV-L1 on one core, then with a pool of --workers processes
  rgb      the RGB I3D on --device, --batch snippets a pass
  flow net the flow I3D likewise
  end to end  features.extract.extract_videos on a --seconds clip, extrapolated linearly from
              the frames used (16 T) to the 1500 of one minute (fixed costs such as loading the
              weights too: an upper bound)

Run: .venv/bin/python bench/bench_extract.py [--device cuda] [--seconds 2] [--workers N]
     [--batch 8]
"""
import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import cv2  # noqa: E402

from features import extract as extract_features  # noqa: E402
from features import frames as video_frames  # noqa: E402
from features.i3d import InceptionI3d  # noqa: E402


def write_clip(path, seconds, fps, size):
    """Textured shapes moving over a noisy background (the decoder and TV-L1 see real
    structure)."""
    rng = np.random.default_rng(0)
    width, height = size
    noise = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    background = cv2.GaussianBlur(noise, (7, 7), 2)
    texture = rng.integers(0, 256, (height // 3, width // 5, 3), dtype=np.uint8)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    for k in range(int(round(seconds * fps))):
        frame = background.copy()
        x = (3 * k) % (width - texture.shape[1])
        frame[height // 3:height // 3 + texture.shape[0], x:x + texture.shape[1]] = texture
        writer.write(frame)
    writer.release()


def timed(function):
    wall, cpu = time.perf_counter(), time.process_time()
    result = function()
    return result, time.perf_counter() - wall, time.process_time() - cpu


def report(name, frames, wall, cpu=None, note=""):
    cpu_text = f", CPU {cpu:7.2f} s ({frames / cpu:7.1f} frames/CPU-s)" if cpu else ""
    print(f"{name:<22} {frames:5d} frames: wall {wall:7.2f} s = {frames / wall:7.1f} frames/s"
          f"{cpu_text} {note}")


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seconds", type=float, default=2.0, help="length of the generated clip")
    parser.add_argument("--source", default="320x240",
                        help="clip size WxH (THUMOS-14 videos are 320x180)")
    parser.add_argument("--source_fps", type=float, default=30.0)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="flow processes")
    parser.add_argument("--batch", type=int, default=8, help="snippets per network pass")
    parser.add_argument("--flow_pairs", type=int, default=8,
                        help="frame pairs of the one-core flow timing")
    a = parser.parse_args()
    size = tuple(int(v) for v in a.source.split("x"))
    print(f"cores {os.cpu_count()}, torch threads {torch.get_num_threads()}, load average "
          f"{os.getloadavg()[0]:.1f} (1 min), OpenCV {cv2.__version__}, "
          f"torch {torch.__version__}, device {a.device}")
    with tempfile.TemporaryDirectory() as tmp:
        clip = Path(tmp) / "clip.mp4"
        write_clip(clip, a.seconds, a.source_fps, size)
        frames, wall, cpu = timed(lambda: list(video_frames.resampled_frames(str(clip), 25)))
        report("decode + resample", len(frames), wall, cpu, f"({a.source} at {a.source_fps:g} fps)")
        scaled, wall, cpu = timed(lambda: [
            video_frames.resize_short_side(f, extract_features.SHORT_SIDE) for f in frames])
        grays, wall2, cpu2 = timed(lambda: [video_frames.to_gray(f) for f in scaled])
        report("scale 256 + gray", len(frames), wall + wall2, cpu + cpu2,
               f"(-> {scaled[0].shape[1]}x{scaled[0].shape[0]})")
        pairs = grays[:a.flow_pairs + 1]
        _, wall, cpu = timed(lambda: video_frames.flow_inputs(pairs, extract_features.CROP,
                                                              video_frames.TVL1_DEFAULTS))
        report("TV-L1, one process", len(pairs) - 1, wall, cpu, "(OpenCV defaults)")
        import multiprocessing
        context = multiprocessing.get_context("spawn")
        with context.Pool(a.workers, video_frames.init_flow_worker) as pool:
            warm = [(grays[:2], 32, video_frames.TVL1_DEFAULTS)] * a.workers
            pool.starmap(video_frames.flow_inputs, warm)
            bounds = np.linspace(0, len(grays) - 1, a.workers + 1).round().astype(int)
            jobs = [(grays[s:e + 1], extract_features.CROP, video_frames.TVL1_DEFAULTS)
                    for s, e in zip(bounds[:-1], bounds[1:])]
            _, wall, _ = timed(lambda: pool.starmap(video_frames.flow_inputs, jobs))
        report(f"TV-L1, {a.workers} processes", len(grays) - 1, wall)
        torch.manual_seed(0)
        snippets = a.batch
        for stream, channels in extract_features.STREAMS:
            net = InceptionI3d(channels).to(a.device).eval()
            crop = extract_features.CROP
            x = torch.rand(snippets, channels, 16, crop, crop, device=a.device)
            with torch.inference_mode():
                net.snippet_features(x[:1])                                     # warm-up
                if a.device.startswith("cuda"):
                    torch.cuda.synchronize()
                _, wall, cpu = timed(lambda: (net.snippet_features(x).sum().item()))
            report(f"I3D {stream} stream", snippets * 16, wall, cpu,
                   f"({snippets} snippets a pass)")
        weights = {}
        for stream, channels in extract_features.STREAMS:
            weights[stream] = str(Path(tmp) / f"{stream}.pt")
            torch.save(InceptionI3d(channels).state_dict(), weights[stream])
        _, wall, _ = timed(lambda: extract_features.extract_videos(
            {"clip": str(clip)}, str(Path(tmp) / "features"), weights["rgb"], weights["flow"],
            device=a.device, batch=a.batch, workers=a.workers, log=lambda line: None))
        t = np.load(Path(tmp) / "features" / "clip.npy").shape[0]
        per_minute = wall * 25 * 60 / (16 * t) / 60   # the clip's 16 T frames -> 1500 a minute
        print(f"end to end: {a.seconds:g} s clip ({len(frames)} frames at 25 fps, {t} snippets = "
              f"{16 * t} frames used) in {wall:.1f} s wall, weights loading included; "
              f"extrapolated linearly to one minute of video (1500 frames): {per_minute:.1f} min")


if __name__ == "__main__":
    main()
