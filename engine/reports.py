"""What a run tells its user: log lines (stdout and log.txt), per-class tables, summary JSON,
TensorBoard scalars, diagnosis and plots of an evaluation. Formatting only: the numbers come
from the passes and the record."""
import json
import os
import socket
import struct
import time

from engine.passes import progress
from engine.plots import plot_video
from engine.timing import timed_calls
from eval.tables import format_per_class_table, in_class_list_order, write_per_class_ap_csv
from utils import append_bytes, append_text, atomic_write_text, jsonable


class Logger:
    """Print to stdout and append the same line to log.txt (console=False: log.txt only;
    file=False: stdout only)."""

    def __init__(self, log_path=None, enabled=True):
        self.log_path = log_path if enabled else None
        self.enabled = enabled          # False on the non-main processes of a torchrun job
        if self.log_path:
            os.makedirs(os.path.dirname(os.path.abspath(log_path)), exist_ok=True)

    def __call__(self, message="", console=True, file=True):
        if not self.enabled:
            return
        if console:
            print(message, flush=True)
        if self.log_path and file:
            append_text(self.log_path, message + "\n")


class Scalars:
    """TensorBoard scalars of a training run (tensorboard/ in the run folder; main process).

    An event file (TFRecord framing of tensorboardX's Event protos) written on the calling
    thread: no background thread, no exit hook. Events are appended every FLUSH_S seconds and
    when closed, so a write error, such as a full disk, is an OSError naming the file, raised
    here and nowhere else."""

    FLUSH_S = 10.0

    def __init__(self, folder, enabled=True):
        self.path, self.pending, self.flushed = None, bytearray(), time.time()
        if enabled:
            from tensorboardX.proto.event_pb2 import Event
            self.path = os.path.join(folder, "tensorboard", f"events.out.tfevents."
                                     f"{int(time.time())}.{socket.gethostname()}")
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            self.record(Event(wall_time=time.time(), file_version="brain.Event:2"))
            self.flush()

    def record(self, event):
        from tensorboardX.record_writer import masked_crc32c
        data = event.SerializeToString()
        header = struct.pack("<Q", len(data))
        self.pending += (header + struct.pack("<I", masked_crc32c(header)) + data
                         + struct.pack("<I", masked_crc32c(data)))

    def add(self, values, epoch):
        """values {tag: number}, all at `epoch`."""
        if self.path is None:
            return
        from tensorboardX.proto.event_pb2 import Event
        from tensorboardX.summary import scalar
        for tag, value in values.items():
            self.record(Event(summary=scalar(tag, value), step=epoch, wall_time=time.time()))
        if time.time() - self.flushed >= self.FLUSH_S:
            self.flush()

    def flush(self):
        if self.pending:
            append_bytes(self.path, bytes(self.pending), durable=True)
            self.pending.clear()
        self.flushed = time.time()

    def close(self, quiet=False):
        """Write what is pending (quiet: after another error, a second one is not raised)."""
        try:
            if self.path is not None:
                self.flush()
        except OSError:
            if not quiet:
                raise
        finally:
            self.path = None


# ----------------------------------------------------------------------------- lines
def train_line(step, epoch, stats, lr):
    return (f"step {step} epoch {epoch} | "
            + " ".join(f"{key} {value:.4f}" for key, value in stats.items()) + f" | lr {lr:g}")


def format_map_line(detector, prefix):
    values = " ".join(f"{tiou:.2f}:{100 * value:.2f}"
                      for tiou, value in zip(detector.tiou_thresholds, detector.mAP))
    return f"{prefix} | mAP@tIoU {values} | avg {100 * detector.average_mAP:.2f}"


def unscored_line(prefix, result_path):
    """An evaluation without ground truth: where its detections went."""
    return f"{prefix} | detections {os.path.basename(result_path)} | not scored (no segment)"


def dataset_line(args):
    """Which dataset a run is on: its name, preset, class list and data folder."""
    return (f"dataset {args.dataset_name}: preset {args.dataset}, {args.action_cls_num} classes "
            f"from {args.class_list_file}, data {args.data_dir}")


def best_per_step_line(best_mAP, final_model):
    return ("best average mAP per step: " + ", ".join(
        f"step {step} {100 * value:.2f}" for step, value in enumerate(best_mAP)
        if value > float("-inf")) + f" (final model: {final_model})")


def demo_check_line(best_mAP, expected, changed_keys):
    """The demo's last line: its final step's best average mAP against the range the demo gives
    on any CPU (config.py:DEMO_EXPECTED_MAP, docs/demo.md), or why there is no range."""
    value = 100 * best_mAP[-1]
    if changed_keys or expected is None:
        changed = ", ".join(f"--{key}" for key in sorted(changed_keys))
        return (f"demo check: no expected range for a demo changed by {changed}" if changed
                else "demo check: no expected range for this demo")
    low, high = expected
    if low <= value <= high:
        return (f"demo check: final step {value:.2f}, within the expected range for this demo "
                f"({low:.2f}-{high:.2f} on any CPU)")
    return (f"demo check: final step {value:.2f}, outside the expected range for this demo "
            f"({low:.2f}-{high:.2f}): see docs/demo.md")


def results_lines(results, num_steps, protocol, held_out):
    """The closing lines of a finished run from its results.json: last-epoch and validation-
    selected mAP per step, and the final step's averages over the reported tIoU ranges."""
    steps = results["steps"]
    if not results.get("scored", True):
        return ["last evaluated epoch per step: " + ", ".join(
            f"step {k} epoch {v['last']['epoch']}" for k, v in steps.items())
            + " (not scored: no mAP)"]
    lines = ["last epoch average mAP per step: " + ", ".join(
        f"step {k} {v['last']['average_mAP']:.2f} (epoch {v['last']['epoch']})"
        for k, v in steps.items())]
    if held_out:
        lines.append("validation-selected per step: " + ", ".join(
            f"step {k} epoch {v['val_selected']['epoch']} (val "
            f"{v['val_selected']['val_average_mAP']:.2f}) test "
            f"{v['val_selected']['average_mAP']:.2f}"
            for k, v in steps.items()))
    final = steps.get(str(num_steps))
    if final and final["best"]["averages"]:          # the extra ranges other papers report
        kinds = [kind for kind in ("best", "last", "val_selected") if kind in final]
        low, high = protocol["average_over"]
        ranges = {f"{low:g}:{high:g}": {kind: final[kind]["average_mAP"] for kind in kinds}}
        ranges.update({name: {kind: final[kind]["averages"][name] for kind in kinds}
                       for name in final["best"]["averages"]})
        lines.append(f"final step {num_steps} average mAP ({' / '.join(kinds)}): " + ", ".join(
            f"{name} " + " / ".join(f"{value:.2f}" for value in values.values())
            for name, values in ranges.items()))
    return lines


def finished_run_lines(results, args):
    """What a rerun of a finished run prints, from its results.json: that nothing was run or
    written, then the run's closing lines."""
    steps = results["steps"]
    best = [steps[str(step)]["best"]["average_mAP"] / 100 if str(step) in steps else float("-inf")
            for step in range(args.num_steps + 1)]
    final = os.path.join(args.save_dir, f"model_step{args.num_steps}_best_epoch.pth")
    return [f"run {args.save_dir} is finished (its results.json); nothing was run or written: "
            f"--no_resume trains it again, --suffix NAME trains a variant in a folder of its own",
            best_per_step_line(best, final),
            *results_lines(results, args.num_steps, results["protocol"], results.get("validation")),
            f"results: {os.path.join(args.save_dir, 'results.json')}"], best


# ----------------------------------------------------------------------------- summary JSON
def read_summary_json(path):
    """The summary dict in `path`, or {} if the file is missing or not a JSON object."""
    try:
        with open(path) as handle:
            data = json.load(handle)
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def write_summary_json(path, summary):
    """Merge {"step k": {"mAP", "average_mAP", "tiou_thresholds"}} into `path` (other steps
    kept)."""
    merged = read_summary_json(path)
    merged.update(jsonable(summary))
    atomic_write_text(path, json.dumps(merged, indent=2, sort_keys=True) + "\n")
    return merged


# ----------------------------------------------------------------------------- an evaluation
@timed_calls("eval reports")
def report_evaluation(detector, args, step, dataset, tag, log, console=True):
    """Per-class AP (log.txt, and stdout when `console`; kept as detector.table), the CSV, the
    per-step summary JSON, and --diagnose / --visualize output (main process)."""
    folder = args.save_dir
    names, ap = in_class_list_order(detector.activity_index, detector.ap, args.class_name_lst)
    table = format_per_class_table(names, args.tiou_thresholds, ap, args.num_tiou_for_average)
    detector.table = "\n".join([f"note: {message}" for message in detector.warnings] + [table])
    log(detector.table, console=console)
    write_per_class_ap_csv(os.path.join(folder, f"{tag}per_class_ap_step{step}.csv"), names,
                           args.tiou_thresholds, ap, args.num_tiou_for_average)
    write_summary_json(os.path.join(folder, f"{tag}summary.json"), {f"step {step}": {
        "mAP": detector.mAP, "average_mAP": detector.average_mAP,
        "tiou_thresholds": args.tiou_thresholds}})
    if getattr(args, "diagnose", False):             # DETAD-style diagnosis under diagnosis/
        from eval.diagnosis_report import diagnose_evaluation
        log(diagnose_evaluation(detector, os.path.join(args.data_dir, "gt.json"),
                                os.path.join(folder, "diagnosis"), f"{tag}step{step}_",
                                title=f"{tag}step {step}: ",
                                ignore_any_tiou=getattr(args, "ignore_any_tiou", False)),
            console=console)
    if args.visualize:
        plot_videos(detector, args, step, dataset, os.path.join(folder, "visualize",
                                                                f"{tag}step{step}"))


def plot_videos(detector, args, step, dataset, folder):
    """--visualize: one PNG per video (the first visualize_videos of them; 0 = all)."""
    names = list(detector.outputs)
    names = names[:args.visualize_videos] if args.visualize_videos > 0 else names
    for vid_name in progress(names, args, "visualize"):
        out = detector.outputs[vid_name]
        plot_video(os.path.join(folder, f"{vid_name}.png"), vid_name, out["vid_len"],
                   args.class_name_lst, out["fg_cas"], out["temp_att"],
                   detector.predictions[vid_name], dataset.gt_segments[vid_name],
                   args.frames_per_sec, args.segment_frames_num,
                   weights=dataset.dynamic_weights(vid_name), cum=out["cum"],
                   title_extra=f"step {step}, avg mAP {100 * detector.average_mAP:.2f}",
                   score_threshold=0.0)
