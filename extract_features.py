"""Two-stream I3D features of videos, in the convention of the public THUMOS-14 / ActivityNet-1.3
features.

    python extract_features.py --videos FILE|DIR --out DIR --rgb_weights rgb_imagenet.pt
        --flow_weights flow_imagenet.pt [--device cuda] [--fps 25] [--snippet_frames 16] [--batch 8]
        [--workers N]

Per video: frames resampled to --fps by presentation time; non-overlapping snippets of
--snippet_frames frames; per snippet the RGB and flow streams' Mixed_5c output, average-pooled,
concatenated: OUT/VID.npy, (T, 2048) float32, RGB || flow. Settings and weight checksums go to
OUT/extract_config.json; a folder extracted with other settings is refused. A video whose VID.npy
exists is skipped, so an interrupted run resumes. Weights are never downloaded: pass the PyTorch
port's models/rgb_imagenet.pt and models/flow_imagenet.pt. The library is features/extract.py.
Needs OpenCV's contrib build (pip install -r requirements-extract.txt).

    python extract_features.py --videos DIR --labels labels.csv --out data/mydata
        --rgb_weights rgb_imagenet.pt --flow_weights flow_imagenet.pt [--classes FILE] [...]

With --labels, a dataset: OUT gets gt.json, split_train.txt, split_test.txt, classes.txt and the
features of every video in OUT/train/ and OUT/test/, from the videos of DIR and the label CSV
(columns video,split,label,start,end; every row is checked before any extraction). Then train with
`python main_THUMOS.py --data_dir OUT`. Format and checks: features/dataset_builder.py,
docs/custom_data.md.
"""
import argparse
import sys

import torch

from features.dataset_builder import build_dataset
from features.extract import ExtractError, extract_videos
from options import parse_rate
from utils import run_cli


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="extract_features.py", description=__doc__,
                                     allow_abbrev=False,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", required=True, help="a video file or a folder of them")
    parser.add_argument("--out", required=True,
                        help="folder for VID.npy and extract_config.json (with --labels: the "
                             "data folder)")
    parser.add_argument("--labels",
                        help="a label CSV (video,split,label,start,end): build a dataset in --out")
    parser.add_argument("--classes",
                        help="with --labels: the class list's order (default: labels sorted)")
    parser.add_argument("--rgb_weights", required=True,
                        help="the PyTorch I3D port's models/rgb_imagenet.pt")
    parser.add_argument("--flow_weights", required=True,
                        help="the PyTorch I3D port's models/flow_imagenet.pt")
    parser.add_argument("--device", default="cpu",
                        help="torch device of the two networks (cpu, cuda, cuda:1)")
    parser.add_argument("--fps", type=parse_rate, default=25.0,
                        help="frame rate the videos are resampled to: 25, 29.97 or 30000/1001")
    parser.add_argument("--snippet_frames", type=int, default=16, help="frames per feature snippet")
    parser.add_argument("--batch", type=int, default=8, help="snippets per network pass")
    parser.add_argument("--workers", type=int, default=0,
                        help="processes computing flow (default: all CPU cores)")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    return parser.parse_args(argv)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)

    def run():
        a = parse_args(argv)
        if a.device.startswith("cuda") and not torch.cuda.is_available():
            raise ExtractError(f"--device {a.device}: CUDA is not available on this machine")
        if a.labels:
            build_dataset(a.videos, a.labels, a.out, a.rgb_weights, a.flow_weights, a.fps,
                          a.snippet_frames, a.device, a.batch, a.workers, a.classes)
        elif a.classes:
            raise ExtractError("--classes orders the class list of a dataset: add --labels CSV")
        else:
            extract_videos(a.videos, a.out, a.rgb_weights, a.flow_weights, a.fps,
                           a.snippet_frames, a.device, a.batch, a.workers)
    run_cli(run, argv, "choose another --out",
            interrupt_hint="interrupted: rerun the same command to resume; finished videos are "
                           "kept")


if __name__ == "__main__":
    main()
