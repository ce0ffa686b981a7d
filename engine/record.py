"""The machine-readable record of a training run: metrics.jsonl (one line per evaluation) and
results.json (per step: best-on-test, last epoch, validation-selected; config hash, code version,
environment, evaluation protocol). mAP values are in percent, unrounded.
"""
import hashlib
import json
import os
import platform
import subprocess
from pathlib import Path

from engine.precision import describe_precision
from eval.files import DataError, read_gt
from eval.protocol import describe, range_averages
from utils import append_text, atomic_write_json, atomic_write_text

METRICS_FILE = "metrics.jsonl"
RESULTS_FILE = "results.json"
REPO_ROOT = Path(__file__).resolve().parents[1]
NOT_SCORED = ("not scored: no video of the test split has a segment in gt.json, so no mAP exists; "
              "the detections of every evaluation are in result_step{k}.json, and "
              "model_step{k}_best_epoch.pth is the step's last evaluated epoch")


def map_entry(detector, args):
    """{"mAP": {tIoU: %}, "average_mAP": %, "averages": {"0.1:0.5": %, ...}} of one evaluation
    (without ground truth: no mAP, "scored": false)."""
    if not detector.scored:
        return {"mAP": {}, "average_mAP": None, "averages": {}, "scored": False}
    return {"mAP": {f"{t:.2f}": 100 * float(v) for t, v in zip(args.tiou_thresholds, detector.mAP)},
            "average_mAP": 100 * float(detector.average_mAP),
            "averages": {k: 100 * v for k, v in range_averages(
                args.tiou_thresholds, detector.mAP, args.extra_average_ranges).items()}}


def run_protocol(args, test_set):
    """The evaluation protocol of a run on `test_set` (its gt.json, split list and the config);
    a gt.json without a video in the evaluation subset is an error here, before any training."""
    path = test_set.root / "gt.json"
    database = read_gt(path)
    protocol = describe(database, args.eval_subset, "split_test.txt", test_set.video_names,
                        args.tiou_thresholds, args.num_tiou_for_average, args.extra_average_ranges)
    if not protocol["gt_videos"]:
        listed = sorted({str(database[vid].get("subset")) for vid in test_set.video_names})
        raise DataError(f"{path} has no video in subset {args.eval_subset!r} (eval_subset, the "
                        f"subset scored); the videos of split_test.txt are in subset "
                        f"{' / '.join(map(repr, listed))}: pass --eval_subset {listed[0]}")
    return protocol


class MetricsRecord:
    """metrics.jsonl of a run folder: appended after every evaluation (main process only)."""

    def __init__(self, save_dir):
        self.path = os.path.join(save_dir, METRICS_FILE)

    def read(self):
        """Every complete line (a line torn by a kill mid-append is skipped)."""
        if not os.path.isfile(self.path):
            return []
        entries = []
        with open(self.path) as handle:
            for line in handle:
                try:
                    entries.append(json.loads(line))
                except ValueError:
                    continue
        return entries

    def start(self, start_epoch):
        """Keep the evaluations before `start_epoch` (the epoch the run continues from), rewritten
        atomically: lines of epochs that will run again, or that a killed run appended before its
        checkpoint was saved, go."""
        kept = [entry for entry in self.read() if entry["epoch"] < start_epoch]
        atomic_write_text(self.path, "".join(json.dumps(entry) + "\n" for entry in kept))
        return kept

    def append(self, entry):
        append_text(self.path, json.dumps(entry) + "\n", durable=True)


def evaluation_of(entry):
    return {"epoch": entry["epoch"], "mAP": entry["mAP"], "average_mAP": entry["average_mAP"],
            "averages": entry.get("averages", {})}


def summarize(entries):
    """Per step {"best": the first evaluation with the highest test average, "last": the last one,
    "val_selected": the first with the highest validation average (its test mAP), when
    validated}. Without ground truth (average_mAP null) "best" is the last evaluation, as the
    step's best-epoch checkpoint is."""
    steps = {}
    for entry in entries:
        step = steps.setdefault(str(entry["step"]), {})
        best = step.get("best", {}).get("average_mAP")
        if best is None or entry["average_mAP"] is None or entry["average_mAP"] > best:
            step["best"] = evaluation_of(entry)
        step["last"] = evaluation_of(entry)
        if "val" in entry and (
                "val_selected" not in step
                or entry["val"]["average_mAP"] > step["val_selected"]["val_average_mAP"]):
            step["val_selected"] = {**evaluation_of(entry),
                                    "val_average_mAP": entry["val"]["average_mAP"],
                                    "val_mAP": entry["val"]["mAP"]}
    return steps


def config_sha256(config_text):
    """sha256 of config.json as written (`sha256sum config.json` gives the same)."""
    return hashlib.sha256(config_text.encode()).hexdigest()


def git_commit():
    """(commit, dirty) of the checkout, or (None, None) without git."""
    def git(*argv):
        return subprocess.run(["git", *argv], cwd=REPO_ROOT, capture_output=True, text=True,
                              timeout=10)
    try:
        head = git("rev-parse", "HEAD")
        if head.returncode:
            return None, None
        status = git("status", "--porcelain", "--untracked-files=no")
        return head.stdout.strip(), bool(status.stdout.strip()) if status.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None, None


def environment(args):
    import numpy
    import torch
    device = args.device
    if device.startswith("cuda") and torch.cuda.is_available():
        device = f"{device} ({torch.cuda.get_device_name(torch.device(device))})"
    commit, dirty = git_commit()
    return {"git_commit": commit, "git_dirty": dirty, "python": platform.python_version(),
            "torch": torch.__version__, "numpy": numpy.__version__, "device": device,
            "world_size": args.world_size, "platform": platform.platform()}


def write_results(save_dir, entries, config_text, args, protocol, validation, wall_s):
    """results.json of a finished run (atomic); returns it."""
    results = {"dataset": args.dataset_name, "preset": args.dataset,
               "scored": bool(protocol["scored"]), "run_folder": save_dir, "epochs": args.epochs,
               "num_steps": args.num_steps, "config_sha256": config_sha256(config_text),
               **environment(args), "precision": describe_precision(args), "wall_s": wall_s,
               "protocol": protocol,
               "validation": validation, "steps": summarize(entries)}
    if not protocol["scored"]:
        results["note"] = NOT_SCORED
    atomic_write_json(os.path.join(save_dir, RESULTS_FILE), results, indent=2)
    return results


def finished_results(args):
    """results.json of the finished run in args.save_dir when this command would only repeat it
    (resuming: model_latest.pth is there, its results.json says the same number of epochs), else
    None. results.json is removed whenever a run starts or resumes, so it marks a finished run."""
    if args.no_resume or args.checkpoint or not os.path.isfile(
            os.path.join(args.save_dir, "model_latest.pth")):
        return None
    results = read_results(args.save_dir)
    return results if isinstance(results, dict) and results.get("epochs") == args.epochs else None


def read_results(save_dir):
    """results.json of a run folder, or None when the run has not finished."""
    path = os.path.join(save_dir, RESULTS_FILE)
    try:
        with open(path) as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None
