"""Training / evaluation engine shared by main_THUMOS.py and main_ActivityNet.py (SPEC.md section 7).

One `Refinement` run trains the base model (step 0) and `num_steps` full models; between steps the
current model's pseudo proposals on the full set drive segment attention, pseudo instance labels
and dynamic segment sampling of the next step.
"""
import errno
import json
import os
import random
import sys
import warnings

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from config import build_args, save_config
from dataset import VideoDataset, collate_fn
from eval import ANETDetection, video_proposals
from eval.proposals import write_results_json
from losses import ASMLocBaseLoss, ASMLocLoss
from model import ASMLoc, ASMLocBase
from utils import (Logger, UserError, atomic_save_npz, atomic_torch_save, load_checkpoint,
                   load_model_state, make_generator, seed_worker, set_seed)


class TrainingDiverged(UserError):
    """The loss became NaN/inf."""


# ----------------------------------------------------------------------------- small pieces
def build_model(args, step):
    return (ASMLocBase(args) if step == 0 else ASMLoc(args)).to(args.device)


def build_optimizer(args, model):
    return torch.optim.Adam(model.parameters(), lr=args.lr, betas=(0.9, 0.999),
                            weight_decay=args.weight_decay)


def build_loss(args, step):
    return ASMLocBaseLoss(args) if step == 0 else ASMLocLoss(args)


def is_switch_epoch(epoch, args):
    """Epochs at which training moves on to the next refinement step."""
    return epoch > 0 and epoch % args.epochs_per_step == 0 and epoch <= args.epochs_per_step * args.num_steps


def step_file(step, args, kind):
    """model_step{k}_last_epoch.pth / model_step{k}_best_epoch.pth (released names)."""
    return f"model_step{step}_{kind}_epoch.pth"


def test_checkpoint_name(step, args):
    return step_file(step, args, "last" if step < args.num_steps else "best")


def forward(model, batch, step, device):
    features = batch["features"].to(device)                          # (B, T, D)
    if step == 0:
        return model(features)
    return model(features, batch["proposal_bbox"].to(device), batch["proposal_count"].to(device))


def predicted_label_sets(fg_cls, threshold):
    """Classes with score > threshold, argmax when none (SPEC section 8); fg_cls (B, C+1)."""
    scores = fg_cls[:, :-1]                                            # (B, C)
    chosen = scores > threshold
    argmax = torch.nn.functional.one_hot(scores.argmax(dim=1), scores.shape[1]).bool()
    return torch.where(chosen.any(dim=1, keepdim=True), chosen, argmax)


def rng_state(loader_generator):
    numpy_state = np.random.get_state(legacy=False)
    numpy_state["state"]["key"] = numpy_state["state"]["key"].tolist()
    return {"python": random.getstate(), "numpy": numpy_state, "torch": torch.get_rng_state(),
            "loader": loader_generator.get_state()}


def restore_rng_state(state, loader_generator):
    random.setstate(state["python"])
    numpy_state = dict(state["numpy"])
    numpy_state["state"] = dict(numpy_state["state"])
    numpy_state["state"]["key"] = np.asarray(numpy_state["state"]["key"], dtype=np.uint32)
    np.random.set_state(numpy_state)
    torch.set_rng_state(state["torch"])
    loader_generator.set_state(state["loader"])


# ----------------------------------------------------------------------------- passes
def train_one_epoch(model, loss_fn, optimizer, loader, args, step, epoch):
    """One shuffled pass; returns the mean of every loss term and the video-level accuracy."""
    model.train()
    totals, correct, seen = {}, 0, 0
    for batch in tqdm(loader, desc=f"step {step} epoch {epoch}", leave=False, disable=None):
        out = forward(model, batch, step, args.device)
        video_label = batch["video_label"].to(args.device)            # (B, C)
        pseudo_label = batch["pseudo_instance_label"].to(args.device) if step > 0 else None
        loss, terms = loss_fn(video_label, out, pseudo_label)
        if not torch.isfinite(loss):
            raise TrainingDiverged(
                f"loss is {loss.item()} at step {step} epoch {epoch} (terms {terms}); "
                f"lower --lr or check the features for extreme values")
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        batch_size = video_label.shape[0]
        for key, value in terms.items():
            totals[key] = totals.get(key, 0.0) + value * batch_size
        predicted = predicted_label_sets(out.fg_cls.detach(), args.cls_threshold)
        correct += (predicted == video_label.bool()).all(dim=1).sum().item()
        seen += batch_size
    stats = {key: value / max(seen, 1) for key, value in totals.items()}
    stats["accuracy"] = correct / max(seen, 1)
    return stats


@torch.no_grad()
def predict_proposals(model, dataset, args, step, pseudo, desc):
    """Run the model over a dataset (batch 1) and turn each video's outputs into proposals."""
    model.eval()
    loader = DataLoader(dataset, batch_size=1, shuffle=False, num_workers=args.num_workers,
                        collate_fn=collate_fn)
    results, outputs = {}, {}
    for batch in tqdm(loader, desc=desc, leave=False, disable=None):
        out = forward(model, batch, step, args.device)
        vid_name, vid_len, cum = batch["vid_name"][0], int(batch["vid_len"][0]), batch["cum"][0]
        fg_cls, temp_att, fg_cas = (t[0].float().cpu().numpy() for t in (out.fg_cls, out.temp_att, out.fg_cas))
        results[vid_name] = video_proposals(fg_cls, temp_att, fg_cas, vid_len, args, pseudo=pseudo, cum=cum)
        if args.visualize and not pseudo:
            outputs[vid_name] = {"fg_cls": fg_cls, "temp_att": temp_att, "fg_cas": fg_cas,
                                 "vid_len": vid_len, "cum": cum}
    return results, outputs


def evaluate(model, dataset, args, step, result_path):
    """Evaluation pass: proposals for the test split, result JSON, ActivityNet mAP."""
    results, outputs = predict_proposals(model, dataset, args, step, pseudo=False, desc=f"test step {step}")
    write_results_json(result_path, results)
    with warnings.catch_warnings(record=True) as caught:     # e.g. predicted classes absent from the GT
        warnings.simplefilter("always")
        predictions = {"version": "ASM-Loc", "results": results, "external_data": {}}
        detector = ANETDetection(os.path.join(args.data_dir, "gt.json"), predictions, args.tiou_thresholds,
                                 args.eval_subset, args.dataset, num_tiou_for_average=args.num_tiou_for_average)
        detector.evaluate()
    detector.warnings = [str(warning.message) for warning in caught]
    detector.outputs, detector.predictions = outputs, results
    return detector


def report_evaluation(detector, args, step, dataset, tag, log):
    """Per-class AP (log + CSV), the per-step summary JSON, and --visualize plots."""
    import visualize
    folder = args.save_dir
    for message in detector.warnings:
        log(f"note: {message}")
    log(visualize.format_per_class_table(detector.activity_index, args.tiou_thresholds, detector.ap,
                                         args.num_tiou_for_average))
    visualize.write_per_class_ap_csv(os.path.join(folder, f"{tag}per_class_ap_step{step}.csv"), detector.activity_index,
                                     args.tiou_thresholds, detector.ap, args.num_tiou_for_average)
    visualize.write_summary_json(os.path.join(folder, f"{tag}summary.json"), {f"step {step}": {
        "mAP": detector.mAP, "average_mAP": detector.average_mAP, "tiou_thresholds": args.tiou_thresholds}})
    if not args.visualize:
        return
    names = list(detector.outputs)
    names = names[:args.visualize_videos] if args.visualize_videos > 0 else names
    for vid_name in tqdm(names, desc="visualize", leave=False, disable=None):
        out = detector.outputs[vid_name]
        visualize.plot_video(
            os.path.join(folder, "visualize", f"{tag}step{step}", f"{vid_name}.png"), vid_name, out["vid_len"],
            args.class_name_lst, out["fg_cas"], out["temp_att"], detector.predictions[vid_name],
            dataset.gt_segments[vid_name], args.frames_per_sec, args.segment_frames_num,
            weights=dataset.dynamic_weights(vid_name), cum=out["cum"],
            title_extra=f"step {step}, avg mAP {100 * detector.average_mAP:.2f}")


def generate_pseudo_proposals(model, full_dataset, args, step):
    """Pseudo proposals of the step-`step` model on the full set (test list then train list)."""
    results, _ = predict_proposals(model, full_dataset, args, step, pseudo=True, desc=f"pseudo step {step}")
    weights = full_dataset.compute_dynamic_weights(results, args) if args.use_dynamic_sampling else None
    return results, weights


def save_step_inputs(save_dir, step, results, weights):
    """Persist one step's pseudo proposals (released JSON name) and dynamic weights (one .npz)."""
    write_results_json(os.path.join(save_dir, f"pseudo_proposals_step{step}.json"), results)
    if weights is not None:
        atomic_save_npz(os.path.join(save_dir, f"dynamic_weights_step{step}.npz"), weights)


def load_step_inputs(save_dir, step):
    proposal_path = os.path.join(save_dir, f"pseudo_proposals_step{step}.json")
    weight_path = os.path.join(save_dir, f"dynamic_weights_step{step}.npz")
    try:
        with open(proposal_path) as handle:
            results = json.load(handle)["results"]
    except (OSError, ValueError, KeyError) as err:
        raise UserError(f"cannot resume step {step}: {proposal_path} is missing or unreadable ({err}); "
                        f"rerun with --no_resume to start over") from None
    weights = None
    if os.path.exists(weight_path):
        with np.load(weight_path) as stored:
            weights = {name: stored[name] for name in stored.files}
    return results, weights


# ----------------------------------------------------------------------------- the refinement run
class Refinement:
    """Multi-step training (SPEC section 7): state, step switches, checkpoints, resume."""

    def __init__(self, args):
        self.args = args
        self.log = Logger(args.log_path)
        for name in os.listdir(args.save_dir):          # temporaries of a write that was killed
            if name.startswith(".tmp_"):
                os.remove(os.path.join(args.save_dir, name))
        self.train_set = VideoDataset(args, "train", "random")
        self.test_set = VideoDataset(args, "test", "uniform")
        self.full_set = VideoDataset(args, "full", "uniform")
        self.generator = make_generator(args.seed)
        self.loader = DataLoader(self.train_set, batch_size=args.batch_size, shuffle=True, drop_last=False,
                                 num_workers=args.num_workers, collate_fn=collate_fn,
                                 worker_init_fn=seed_worker, generator=self.generator,
                                 pin_memory=args.device.startswith("cuda"))
        self.best_mAP = [float("-inf")] * (args.num_steps + 1)
        from tensorboardX import SummaryWriter
        self.writer = SummaryWriter(os.path.join(args.save_dir, "tensorboard"))

    # -- steps
    def enter_step(self, step, results, weights):
        for dataset in (self.train_set, self.test_set, self.full_set):
            dataset.set_proposals(results, weights)
        self.step = step
        self.model = build_model(self.args, step)
        self.optimizer = build_optimizer(self.args, self.model)
        self.loss_fn = build_loss(self.args, step)

    def switch_step(self, step):
        results, weights = generate_pseudo_proposals(self.model, self.full_set, self.args, self.step)
        save_step_inputs(self.args.save_dir, step, results, weights)
        self.log(f"step {step}: pseudo proposals for {len(results)} videos "
                 f"({sum(map(len, results.values()))} proposals)")
        self.enter_step(step, results, weights)

    # -- checkpoints
    def save_checkpoint(self, epoch, name):
        state = {"epoch": epoch + 1, "model_state_dict": self.model.state_dict(),
                 "optimizer": self.optimizer.state_dict(), "best_test_mAP": self.best_mAP[self.step],
                 "dataset": self.args.dataset, "model_kind": "base" if self.step == 0 else "full",
                 "step": self.step, "best_mAP_per_step": list(self.best_mAP),
                 "rng": rng_state(self.generator)}
        atomic_torch_save(state, os.path.join(self.args.save_dir, name))

    def resume(self):
        """Pick up from model_latest.pth (or --checkpoint FILE); returns the next epoch to run."""
        args = self.args
        path = os.path.join(args.save_dir, "model_latest.pth")
        if args.checkpoint and os.path.isfile(args.checkpoint):
            path = args.checkpoint
        elif args.no_resume or not os.path.exists(path):
            self.enter_step(0, None, None)
            return args.start_epoch
        state = self.load_latest_good(path)
        start_epoch = args.start_epoch if args.reset_epoch else state["epoch"]
        step = min((state["epoch"] - 1) // args.epochs_per_step, args.num_steps) if state["epoch"] > 0 else 0
        step = state.get("step", step)
        results, weights = load_step_inputs(args.save_dir, step) if step > 0 else (None, None)
        self.enter_step(step, results, weights)
        load_model_state(self.model, state, path, args)
        self.optimizer.load_state_dict(state["optimizer"])
        self.best_mAP = list(state.get("best_mAP_per_step", self.best_mAP))
        if "rng" in state and not args.reset_epoch:
            restore_rng_state(state["rng"], self.generator)
        self.log(f"resumed from {path}: step {step}, next epoch {start_epoch}")
        return start_epoch

    def load_latest_good(self, path):
        """Load `path`; if it is unreadable, fall back to the newest readable step checkpoint."""
        try:
            return load_checkpoint(path)
        except UserError as err:
            candidates = [os.path.join(self.args.save_dir, step_file(k, self.args, "last"))
                          for k in reversed(range(self.args.num_steps))]
            for candidate in candidates:
                if os.path.exists(candidate):
                    self.log(f"warning: {err}; falling back to {candidate}")
                    return load_checkpoint(candidate)
            raise

    # -- main loop
    def run(self):
        args = self.args
        start_epoch = self.resume()
        for epoch in range(start_epoch, args.epochs):
            if is_switch_epoch(epoch, args):
                self.switch_step(epoch // args.epochs_per_step)
            stats = train_one_epoch(self.model, self.loss_fn, self.optimizer, self.loader, args, self.step, epoch)
            self.log_train(epoch, stats)
            if (epoch + 1) % args.eval_freq == 0 or epoch >= args.epochs - 10:
                self.evaluate_and_select(epoch)
            if self.step < args.num_steps and epoch + 1 == (self.step + 1) * args.epochs_per_step:
                self.save_checkpoint(epoch, step_file(self.step, args, "last"))
            self.save_checkpoint(epoch, "model_latest.pth")
        self.writer.close()
        return self.best_mAP

    def evaluate_and_select(self, epoch):
        args, step = self.args, self.step
        result_path = args.pred_segment_path or os.path.join(args.save_dir, f"result_step{step}.json")
        detector = evaluate(self.model, self.test_set, args, step, result_path)
        improved = detector.average_mAP > self.best_mAP[step]
        if improved:
            self.best_mAP[step] = detector.average_mAP
            self.save_checkpoint(epoch, step_file(step, args, "best"))
        self.log(format_map_line(detector, f"step {step} epoch {epoch}")
                 + f" | best {100 * self.best_mAP[step]:.2f}{' *' if improved else ''}")
        report_evaluation(detector, args, step, self.test_set, "", self.log)
        self.writer.add_scalar("mAP/average", detector.average_mAP, epoch)
        for tiou, value in zip(args.tiou_thresholds, detector.mAP):
            self.writer.add_scalar(f"mAP/tIoU_{tiou:.2f}", value, epoch)
        return detector

    def log_train(self, epoch, stats):
        lr = self.optimizer.param_groups[0]["lr"]
        terms = " ".join(f"{key} {value:.4f}" for key, value in stats.items())
        self.log(f"step {self.step} epoch {epoch} | {terms} | lr {lr:g}")
        for key, value in stats.items():
            self.writer.add_scalar(f"train/{key}", value, epoch)
        self.writer.add_scalar("train/lr", lr, epoch)
        self.writer.add_scalar("train/step", self.step, epoch)


def format_map_line(detector, prefix):
    values = " ".join(f"{tiou:.2f}:{100 * value:.2f}" for tiou, value in zip(detector.tiou_thresholds, detector.mAP))
    return f"{prefix} | mAP@tIoU {values} | avg {100 * detector.average_mAP:.2f}"


# ----------------------------------------------------------------------------- test mode
def test_cascade(args):
    """Replay the refinement cascade from a checkpoint folder (SPEC section 7, test mode)."""
    log = Logger(args.log_path)
    paths = [os.path.join(args.checkpoint, test_checkpoint_name(step, args)) for step in range(args.num_steps + 1)]
    missing = [path for path in paths if not os.path.isfile(path)]
    if missing:
        raise UserError(f"checkpoint folder {args.checkpoint} is missing {', '.join(map(os.path.basename, missing))}; "
                        f"--test needs one file per step (num_steps = {args.num_steps})")
    test_set, full_set = VideoDataset(args, "test", "uniform"), VideoDataset(args, "full", "uniform")
    results = weights = None
    detectors = []
    for step, path in enumerate(paths):
        test_set.set_proposals(results, weights)
        full_set.set_proposals(results, weights)
        model = build_model(args, step)
        load_model_state(model, load_checkpoint(path, map_location=args.device), path, args)
        detector = evaluate(model, test_set, args, step, os.path.join(args.save_dir, f"test_result_step{step}.json"))
        log(format_map_line(detector, f"test step {step} ({os.path.basename(path)})"))
        report_evaluation(detector, args, step, test_set, "test_", log)
        detectors.append(detector)
        if step < args.num_steps:
            results, weights = generate_pseudo_proposals(model, full_set, args, step)
    return detectors


# ----------------------------------------------------------------------------- entry point
def check_writable(folder):
    try:
        os.makedirs(folder, exist_ok=True)
        probe = os.path.join(folder, ".write_test")
        with open(probe, "w") as handle:
            handle.write("ok")
        os.remove(probe)
    except OSError as err:
        raise UserError(f"output folder {folder} is not writable ({err.strerror}); "
                        f"choose another with --outdir or --checkpoint_root") from None


def run(dataset, argv):
    args = build_args(dataset, argv)
    set_seed(args.seed)
    if args.demo:
        from synthetic_data import ensure_demo_dataset
        ensure_demo_dataset(args)
    check_writable(args.save_dir)
    if args.test:
        return test_cascade(args)
    save_config(args, os.path.join(args.save_dir, "config.json"))
    return Refinement(args).run()


def main(dataset, argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        run(dataset, argv)
    except UserError as err:
        if "--debug" in argv:
            raise
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except OSError as err:
        if "--debug" in argv or err.errno not in (errno.ENOSPC, errno.EACCES, errno.EROFS, errno.EDQUOT):
            raise
        print(f"error: cannot write {err.filename or 'output'}: {err.strerror}; files written before are "
              f"intact (writes are atomic), free space or change --checkpoint_root and rerun", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted: rerun the same command to resume from model_latest.pth", file=sys.stderr)
        sys.exit(130)
