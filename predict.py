"""Localize actions in new videos with a trained cascade: I3D feature files in, detections out.

    python predict.py --checkpoint RUN_FOLDER --features PATH [--out FILE] [--format json|csv]
        [--plot]
    python predict.py --checkpoint RUN_FOLDER --videos PATH --rgb_weights RGB.pt
        --flow_weights FLOW.pt [...]

PATH is one (T, D) float .npy file or a folder of them (one per video, named VID.npy); with
--videos, a video file or folder whose two-stream I3D features are extracted first
(features/extract.py) into OUT_features/, where a later run finds them. The cascade is replayed
as test mode does (engine/cascade.py; equal up to float32 rounding, which depends on the videos
sharing a forward); no gt.json or split file is needed. The config is
the run's (RUN_FOLDER/config.json: dataset, feature_dim, fps, snippet frames, thresholds, ...); any
key can be overridden as in the entry scripts (`--nms_thresh 0.3`, ...), and each override is
printed. Without config.json (released checkpoints) config.py is used: pass the flags the run was
trained with. When the features' snippets span another time than the model's training snippets
(extract_config.json beside them, or --fps / --snippet_frames), one warning says so.
"""
import argparse
import csv
import io
import os
import sys
import warnings
from pathlib import Path

from config import COMMON, DEFAULT_PRESET, PRESETS, build_args
from engine.run_folder import CONFIG_NAME, adopt_trained_config, read_config, trained_dataset
from eval.files import write_results_json
from features.provenance import MISMATCH_START, extraction_time_base, snippet_time_warning
from options import parse_rate
from utils import UserError, atomic_write_text, run_cli

EPILOG = """Any key of config.py is taken as well, as by the entry scripts (--nms_thresh 0.3,
--cls_threshold 0.2, --device cpu, --debug, ...): `python main_THUMOS.py --help` lists them with
their defaults and descriptions. Flags given here win over the run's config.json; each override is
printed."""


class OneLineParser(argparse.ArgumentParser):
    """A bad predict.py flag is one error line, as in the entry scripts."""

    def error(self, message):
        raise UserError(f"{message} (see predict.py --help)")


def parse_predict_args(argv):
    """Predict-only flags; everything else goes to config.build_args (the entry scripts' flags)."""
    parser = OneLineParser(prog="predict.py", allow_abbrev=False, description=__doc__,
                           epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", help="the run folder (model_step*.pth, config.json)")
    parser.add_argument("--demo", action="store_true",
                        help="a --demo run's folder without config.json: the demo's keys")
    parser.add_argument("--dataset", choices=sorted(PRESETS),
                        help="preset of config.py (default: the run's, from config.json; "
                             "else THUMOS)")
    parser.add_argument("--features", help="a (T, D) float .npy file or a folder of them")
    parser.add_argument("--videos",
                        help="a video file or folder: extract I3D features "
                             "(cached in OUT_features/)")
    parser.add_argument("--rgb_weights",
                        help="with --videos: the PyTorch I3D port's models/rgb_imagenet.pt")
    parser.add_argument("--flow_weights",
                        help="with --videos: the PyTorch I3D port's models/flow_imagenet.pt")
    parser.add_argument("--out", default="",
                        help="output file (default predictions.json / predictions.csv)")
    parser.add_argument("--format", default="json", choices=["json", "csv"],
                        help="json: ActivityNet result file; csv: video,label,score,start,end")
    parser.add_argument("--plot", action="store_true",
                        help="one PNG per video beside --out (OUT_plots/VID.png)")
    parser.add_argument("--fps", type=parse_rate,
                        help="frame rate of the features: 25, 29.97 or 30000/1001 (default: the "
                             "run's, 25)")
    parser.add_argument("--snippet_frames", type=int,
                        help="frames per feature snippet (default: the run's, 16)")
    parser.add_argument("--score_threshold", type=float, help="keep detections with score >= X")
    parser.add_argument("--top_k", type=int, help="keep the K best-scored detections per video")
    known, rest = parser.parse_known_args(argv)
    if known.checkpoint is not None:
        rest += ["--checkpoint", known.checkpoint]
    if known.demo:
        rest += ["--demo"]
    if known.fps is not None:
        rest += ["--frames_per_sec", repr(known.fps)]
    if known.snippet_frames is not None:
        rest += ["--segment_frames_num", str(known.snippet_frames)]
    if (known.features is None) == (known.videos is None):
        raise UserError("predict.py needs either --features PATH (.npy files) or --videos PATH "
                        "(video files)")
    if known.top_k is not None and known.top_k < 1:
        raise UserError(f"--top_k must be at least 1, got {known.top_k}")
    if not known.checkpoint:
        raise UserError("predict.py needs --checkpoint RUN_FOLDER (the folder with "
                        "model_step*.pth)")
    return known, rest


def filter_detections(detections, score_threshold=None, top_k=None):
    """Detections with score >= score_threshold, then the top_k best scored; original order kept."""
    kept = [d for d in detections if score_threshold is None or d["score"] >= score_threshold]
    if top_k is not None and len(kept) > top_k:
        # stable: ties keep order
        best = sorted(range(len(kept)), key=lambda i: -kept[i]["score"])[:top_k]
        kept = [kept[i] for i in sorted(best)]
    return kept


def detections_csv(results):
    """CSV text: one row per detection, video,label,score,start,end (seconds)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["video", "label", "score", "start", "end"])
    for vid, detections in results.items():
        for d in detections:
            writer.writerow([vid, d["label"], repr(d["score"]), repr(d["segment"][0]),
                             repr(d["segment"][1])])
    return buffer.getvalue()


def write_plots(folder, results, outputs, dataset, args):
    from engine.plots import plot_video
    for vid, out in outputs.items():
        plot_video(os.path.join(folder, f"{vid}.png"), vid, out["vid_len"], args.class_name_lst,
                             out["fg_cas"], out["temp_att"], results[vid], [], args.frames_per_sec,
                             args.segment_frames_num, weights=dataset.dynamic_weights(vid),
                             cum=out["cum"],
                             title_extra=f"step {args.num_steps} (final)", score_threshold=0.0)


def trained_time_base(folder):
    """(frames_per_sec, segment_frames_num) the model in `folder` was trained with: its
    config.json's, else config.py's."""
    path = os.path.join(folder, CONFIG_NAME)
    config = read_config(path) if os.path.isfile(path) else {}
    return (config.get("frames_per_sec", COMMON["frames_per_sec"]),
            config.get("segment_frames_num", COMMON["segment_frames_num"]))


def run(argv):
    known, rest = parse_predict_args(argv)
    args = build_args(known.dataset or trained_dataset(known.checkpoint) or DEFAULT_PRESET, rest)
    for line in adopt_trained_config(args, rest):
        print(line)
    from engine.precision import precision_mode
    with precision_mode(args):                       # TF32 as the trained config states
        return predict(known, args)


def predict(known, args):
    """The detections of predict.py's videos, written as --out says."""
    from engine.cascade import list_feature_files, load_cascade, new_video_dataset, run_cascade
    out = Path(known.out or f"predictions.{known.format}")
    models = load_cascade(args.checkpoint, args, "predict.py")
    now = (args.frames_per_sec, args.segment_frames_num)
    made = extraction_time_base(known.features) if known.features is not None else None
    warning = snippet_time_warning(made or now, trained_time_base(known.checkpoint), now,
                                   known.features if made else None)
    if warning:
        print(f"warning: {warning}", flush=True)
    if known.videos is not None:       # features at the run's time base, cached beside the output
        from features.extract import FEATURE_DIM, extract_videos
        if args.feature_dim != FEATURE_DIM:
            raise UserError(f"--videos gives {FEATURE_DIM}-d features, but the model was "
                            f"trained on {args.feature_dim}-d features")
        videos = extract_videos(known.videos, out.with_name(out.stem + "_features"),
                                known.rgb_weights, known.flow_weights, args.frames_per_sec,
                                args.segment_frames_num, args.device)
    else:
        videos = list_feature_files(known.features)
    with warnings.catch_warnings():
        if warning:         # the line above said it already
            warnings.filterwarnings("ignore", message=MISMATCH_START)
        dataset = new_video_dataset(videos, args)
    results, outputs = run_cascade(models, dataset, args, keep_outputs=known.plot)
    results = {vid: filter_detections(dets, known.score_threshold, known.top_k)
               for vid, dets in results.items()}
    out.parent.mkdir(parents=True, exist_ok=True)
    if known.format == "csv":
        atomic_write_text(out, detections_csv(results))
    else:
        write_results_json(out, results)
    if known.plot:
        write_plots(out.with_name(out.stem + "_plots"), results, outputs, dataset, args)
    count = sum(map(len, results.values()))
    print(f"{count} detections in {len(results)} video{'s' if len(results) != 1 else ''} -> {out}")
    return results


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    run_cli(lambda: run(argv), argv, "choose another --out")


if __name__ == "__main__":
    main()
