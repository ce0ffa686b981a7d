"""A tiny labelled video folder to try `extract_features.py --labels` and the path after it
(docs/custom_data.md), and the videos of tests/test_custom_data.py.

    python -m features.toy_videos toy [--random_weights] [--seconds 1.92] [--train_per_class 2]

writes toy/videos/*.avi (MJPG, 160 x 120, 25 fps): on a textured grey background, a coloured
textured shape that moves only during its action, at a known time: "Bounce" (a disc going up and
down), "Slide" (a square going right) and "Pulse" (a square growing and shrinking), each in its
own colour; and toy/labels.csv in the format of features/dataset_builder.py: training videos with
their label only, test videos with their action's segment, and one test video without a label
(predicted, not scored). With --random_weights also toy/rgb_random.pt and toy/flow_random.pt:
I3D weights of features/i3d.py drawn at random (about 50 MB each), which make the path run without
the published weight files. Their features mean nothing: for trying the commands only.
"""
import argparse
import csv
import os

import numpy as np

CLASSES = ("Bounce", "Slide", "Pulse")
COLOURS = {"Bounce": (40, 40, 220), "Slide": (40, 200, 40), "Pulse": (220, 120, 30)}   # BGR
SIZE = (160, 120)               # width, height
FPS = 25


def shape_position(name, phase):
    """(centre x, centre y, half size) of a class's shape at `phase` in [0, 1] of its action
    (0 before it, 1 after it)."""
    wave = np.sin(np.pi * 2 * phase)
    if name == "Bounce":
        return 80, int(60 - 30 * abs(wave)), 14
    if name == "Slide":
        return int(30 + 100 * phase), 60, 14
    return 80, 60, int(14 + 12 * abs(wave))


def draw_frame(background, texture, name, phase):
    frame = background.copy()
    x, y, half = shape_position(name, phase)
    patch = texture[:2 * half, :2 * half]
    tinted = (patch.astype(np.float32) * np.asarray(COLOURS[name], np.float32) / 255).astype(
        np.uint8)                                                          # (2h, 2h, 3)
    if name == "Bounce":                                                   # a disc
        yy, xx = np.mgrid[-half:half, -half:half]
        inside = xx ** 2 + yy ** 2 <= half ** 2
        region = frame[y - half:y + half, x - half:x + half]
        region[inside] = tinted[inside]
    else:
        frame[y - half:y + half, x - half:x + half] = tinted
    return frame


def write_clip(path, name, frames, action, rng):
    """One clip of `frames` frames; `action` (first frame, end frame) or None (no motion)."""
    import cv2
    background = rng.integers(70, 130, (SIZE[1], SIZE[0], 3), dtype=np.uint8)
    texture = rng.integers(120, 256, (60, 60, 3), dtype=np.uint8)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), FPS, SIZE)
    try:
        for k in range(frames):            # still before the action, still after it
            phase = 0.0 if action is None else min(max(
                (k - action[0]) / (action[1] - action[0]), 0.0), 1.0)
            writer.write(draw_frame(background, texture, name, phase))
    finally:
        writer.release()


def write_toy_videos(out, seconds=1.92, train_per_class=2, test_per_class=1, unlabelled=1,
                     classes=CLASSES, seed=0):
    """OUT/videos/*.avi and OUT/labels.csv; returns (videos folder, CSV path). Each action lasts
    40-60 % of its clip, at a random place; times are whole frames at 25 fps."""
    rng = np.random.default_rng(seed)
    videos = os.path.join(out, "videos")
    os.makedirs(videos, exist_ok=True)
    frames = int(round(seconds * FPS))
    rows = []
    for name in classes:
        for split, count in (("train", train_per_class), ("test", test_per_class)):
            for i in range(count):
                length = int(rng.integers(int(0.4 * frames), int(0.6 * frames) + 1))
                start = int(rng.integers(0, frames - length + 1))
                vid = f"{name.lower()}_{split}_{i}"
                write_clip(os.path.join(videos, f"{vid}.avi"), name, frames,
                           (start, start + length), rng)
                segment = ([f"{start / FPS:g}", f"{(start + length) / FPS:g}"] if split == "test"
                           else ["", ""])
                rows.append([f"{vid}.avi", split, name, *segment])
    for i in range(unlabelled):
        name = classes[i % len(classes)]
        vid = f"unlabelled_test_{i}"
        write_clip(os.path.join(videos, f"{vid}.avi"), name, frames, (frames // 4, frames // 2),
                   rng)
        rows.append([f"{vid}.avi", "test", "", "", ""])
    path = os.path.join(out, "labels.csv")
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["video", "split", "label", "start", "end"])
        writer.writerows(rows)
    return videos, path


def write_random_weights(out, seed=0):
    """OUT/rgb_random.pt and OUT/flow_random.pt: features/i3d.py's two streams, random weights
    (seeded); returns the two paths."""
    import torch

    from features.i3d import InceptionI3d
    torch.manual_seed(seed)
    paths = []
    for stream, channels in (("rgb", 3), ("flow", 2)):
        path = os.path.join(out, f"{stream}_random.pt")
        if not os.path.isfile(path):
            torch.save(InceptionI3d(channels).state_dict(), path)
        paths.append(path)
    return paths


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m features.toy_videos",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("out", help="folder for videos/, labels.csv (and the random weights)")
    parser.add_argument("--seconds", type=float, default=1.92, help="length of every clip")
    parser.add_argument("--train_per_class", type=int, default=2)
    parser.add_argument("--test_per_class", type=int, default=1)
    parser.add_argument("--random_weights", action="store_true",
                        help="also write random I3D weights (rgb_random.pt, flow_random.pt)")
    opts = parser.parse_args(argv)
    videos, labels = write_toy_videos(opts.out, opts.seconds, opts.train_per_class,
                                      opts.test_per_class)
    print(f"{len(os.listdir(videos))} videos in {videos}, labels in {labels}")
    if opts.random_weights:
        print("random I3D weights (for trying the commands only): "
              + ", ".join(write_random_weights(opts.out)))


if __name__ == "__main__":
    main()
