"""The multi-step refinement run (docs/method.md §10): step switches, checkpoints, exact resume.

Step 0 trains the base model; at epochs k * epochs_per_step (k = 1..num_steps) the current
model's pseudo proposals on the full set are saved and handed, with the dynamic sampling
weights, to a fresh full model. Checkpoints keep the released schema plus what an exact resume
needs (step, best mAP per step, every process's RNG state). Every evaluation appends a line to
metrics.jsonl and a finished run writes results.json (run_record.py); with --val_videos the
held-out training videos (validation.py) are scored at every evaluation too.
"""
import json
import os
import random
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

import distributed
import engine
import run_record
import validation
from config import config_text
from dataset import VideoDataset, read_gt, read_split, collate_fn
from eval import protocol
from eval.proposals import write_results_json
from utils import (Logger, UserError, atomic_save_npz, atomic_torch_save, load_checkpoint, load_model_state,
                   make_generator, seed_worker)


def is_switch_epoch(epoch, args):
    """Epochs at which training moves on to the next refinement step."""
    return 0 < epoch <= args.epochs_per_step * args.num_steps and epoch % args.epochs_per_step == 0


def is_eval_epoch(epoch, args):
    """Evaluate after 0-based `epoch`: every eval_freq epochs and in the last 9 (docs/method.md §10,
    the released rule `(epoch + 1) % eval_freq == 0 or epoch > epochs - 10`)."""
    return (epoch + 1) % args.eval_freq == 0 or epoch > args.epochs - 10


def rng_state(generator):
    numpy_state = np.random.get_state(legacy=False)  # noqa: NPY002 (the global generator, on purpose)
    numpy_state["state"]["key"] = numpy_state["state"]["key"].tolist()     # weights_only-loadable
    return {"python": random.getstate(), "numpy": numpy_state, "torch": torch.get_rng_state(),
            "loader": generator.get_state()}


def restore_rng_state(state, generator):
    random.setstate(tuple(state["python"]) if isinstance(state["python"], list) else state["python"])
    numpy_state = {**state["numpy"], "state": dict(state["numpy"]["state"])}
    numpy_state["state"]["key"] = np.asarray(numpy_state["state"]["key"], dtype=np.uint32)
    np.random.set_state(numpy_state)  # noqa: NPY002 (the global generator, on purpose)
    torch.set_rng_state(state["torch"])
    generator.set_state(state["loader"])


def save_step_inputs(save_dir, step, results, weights):
    """One step's pseudo proposals (released JSON name) and dynamic weights (one .npz)."""
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


class Refinement:
    """State of one training run: datasets, the current step's model/optimizer, best mAP per step."""

    def __init__(self, args):
        self.args = args
        self.log = Logger(args.log_path, enabled=args.is_main)
        if args.is_main:
            for name in os.listdir(args.save_dir):          # temporaries of a write that was killed
                if name.startswith(".tmp_"):
                    os.remove(os.path.join(args.save_dir, name))
        self.held_out = self.choose_held_out() if getattr(args, "val_videos", "") else []
        self.train_set = VideoDataset(args, "train", "random", held_out=self.held_out)
        self.test_set = VideoDataset(args, "test", "uniform")
        self.full_set = VideoDataset(args, "full", "uniform", held_out=self.held_out)
        # held-out videos are scored like test videos; they keep their pseudo proposals (full set)
        self.val_set = VideoDataset(args, "val", "uniform", held_out=self.held_out) if self.held_out else None
        self.protocol = run_record.run_protocol(args, self.test_set)
        self.record = run_record.MetricsRecord(args.save_dir)
        self.wall_offset, self.started = 0.0, time.time()
        self.generator = make_generator(args.seed)          # batch order and per-item sampling seeds
        # the DataLoader draws its worker base seed from this one (per epoch from a fresh loader
        # iterator, once for persistent workers); items take no draw from worker seeds, so it
        # must not be the shuffling generator, nor torch's global one (dropout masks)
        self.worker_seeds = make_generator(args.seed)
        self.best_mAP = [float("-inf")] * (args.num_steps + 1)
        self.last_table = None                # (epoch, per-class AP text) of the step's last evaluation
        self.writer = None
        if args.is_main:
            from tensorboardX import SummaryWriter
            self.writer = SummaryWriter(os.path.join(args.save_dir, "tensorboard"))

    def choose_held_out(self):
        """--val_videos: the held-out training videos; their list and GT are written to the run folder."""
        args = self.args
        root = Path(args.data_dir)
        database = read_gt(root / "gt.json")
        names = validation.held_out_videos(args, database, read_split(root / "split_train.txt"))
        if names and args.is_main:
            resuming = not (args.no_resume or args.checkpoint) and os.path.exists(
                os.path.join(args.save_dir, "model_latest.pth"))
            validation.write_held_out(args.save_dir, names, database, resuming)
        return names

    # -- steps
    def enter_step(self, step, results, weights):
        """Hand the step's proposals to the datasets and start its model, optimizer and loader."""
        args = self.args
        for dataset in (self.train_set, self.test_set, self.full_set, self.val_set):
            if dataset is not None:
                dataset.set_proposals(results, weights)
        self.step = step
        self.model = engine.build_model(args, step)
        self.train_model = distributed.wrap_model(self.model, args)
        self.optimizer = engine.build_optimizer(args, self.model)
        self.loss_fn = engine.build_loss(args, step)
        # a new loader per step: persistent workers hold a copy of the dataset and its proposals
        sampler = distributed.GlobalBatchSampler(len(self.train_set), args.batch_size, self.generator,
                                                 args.rank, args.world_size)
        self.loader = DataLoader(self.train_set, batch_sampler=sampler, num_workers=args.num_workers,
                                 collate_fn=collate_fn, worker_init_fn=seed_worker, generator=self.worker_seeds,
                                 pin_memory=args.device.startswith("cuda"),
                                 persistent_workers=args.num_workers > 0)

    def switch_step(self, step):
        results, weights = engine.generate_pseudo_proposals(self.model, self.full_set, self.args, self.step)
        if self.args.is_main:
            save_step_inputs(self.args.save_dir, step, results, weights)
        self.log(f"step {step}: pseudo proposals for {len(results)} videos "
                 f"({sum(map(len, results.values()))} proposals)")
        self.enter_step(step, results, weights)

    # -- checkpoints
    @engine.timed_calls("checkpoint save")
    def save_checkpoint(self, epoch, name, rng_states):
        if not self.args.is_main:
            return
        state = {"epoch": epoch + 1, "model_state_dict": self.model.state_dict(),
                 "optimizer": self.optimizer.state_dict(), "best_test_mAP": self.best_mAP[self.step],
                 "dataset": self.args.dataset, "model_kind": "base" if self.step == 0 else "full",
                 "step": self.step, "best_mAP_per_step": list(self.best_mAP),
                 "rng": rng_states[0], "rng_per_rank": rng_states, "wall_s": self.wall_s()}
        atomic_torch_save(state, os.path.join(self.args.save_dir, name))

    def resume(self):
        """Pick up from model_latest.pth (or --checkpoint FILE); returns the next epoch to run."""
        args = self.args
        path = os.path.join(args.save_dir, "model_latest.pth")
        if args.checkpoint and not os.path.isfile(args.checkpoint):
            raise UserError(f"--checkpoint {args.checkpoint} is not a checkpoint file; to train from a checkpoint "
                            f"pass its .pth file, to evaluate a folder of step checkpoints add --test")
        if args.checkpoint:
            path = args.checkpoint
        elif args.no_resume or not os.path.exists(path):
            self.enter_step(0, None, None)
            return args.start_epoch
        path, state = self.load_latest_good(path)
        start_epoch = args.start_epoch if args.reset_epoch else state["epoch"]
        step = state.get("step", min(max(state["epoch"] - 1, 0) // args.epochs_per_step, args.num_steps))
        # the step's proposals and weights sit beside the checkpoint (the run folder, or --checkpoint's)
        results, weights = load_step_inputs(os.path.dirname(path), step) if step > 0 else (None, None)
        self.enter_step(step, results, weights)
        load_model_state(self.model, state, path, args)
        self.optimizer.load_state_dict(state["optimizer"])
        self.best_mAP = list(state.get("best_mAP_per_step", self.best_mAP))
        self.wall_offset = float(state.get("wall_s", 0.0)) if not args.reset_epoch else 0.0
        if "rng" in state and not args.reset_epoch:
            per_rank = state.get("rng_per_rank") or [state["rng"]]
            restore_rng_state(per_rank[args.rank] if len(per_rank) == args.world_size else state["rng"],
                              self.generator)
        self.log(f"resumed from {path}: step {step}, next epoch {start_epoch}")
        return start_epoch

    def load_latest_good(self, path):
        """(path, checkpoint); if `path` is unreadable, the newest readable step checkpoint instead."""
        try:
            return path, load_checkpoint(path)
        except UserError as err:
            for step in reversed(range(self.args.num_steps)):
                candidate = os.path.join(self.args.save_dir, engine.step_file(step, "last"))
                if os.path.exists(candidate):
                    self.log(f"warning: {err}; falling back to {candidate}")
                    return candidate, load_checkpoint(candidate)
            raise

    # -- main loop
    def run(self):
        args = self.args
        start_epoch = self.resume()
        self.start_record(start_epoch)
        for epoch in range(start_epoch, args.epochs):
            if is_switch_epoch(epoch, args):
                self.switch_step(epoch // args.epochs_per_step)
            stats = engine.train_one_epoch(self.train_model, self.loss_fn, self.optimizer, self.loader, args,
                                           self.step, epoch)
            self.log_train(epoch, stats)
            improved = False
            if is_eval_epoch(epoch, args):      # one stdout line per evaluation, losses included
                improved = self.evaluate(epoch, stats)
            else:
                self.log(self.train_line(epoch, stats), console=False)
            # every process's RNG state after this epoch, so a resume continues bit for bit
            rng_states = distributed.all_gather_list(rng_state(self.generator))
            if improved:
                self.save_checkpoint(epoch, engine.step_file(self.step, "best"), rng_states)
            if self.step < args.num_steps and epoch + 1 == (self.step + 1) * args.epochs_per_step:
                self.save_checkpoint(epoch, engine.step_file(self.step, "last"), rng_states)
            self.save_checkpoint(epoch, "model_latest.pth", rng_states)
            if epoch + 1 == args.epochs or is_switch_epoch(epoch + 1, args):
                self.show_step_table()
        if self.writer:
            self.writer.close()
        self.log("best average mAP per step: " + ", ".join(
            f"step {step} {100 * value:.2f}" for step, value in enumerate(self.best_mAP) if value > float("-inf"))
            + f" (final model: {os.path.join(args.save_dir, engine.step_file(args.num_steps, 'best'))})")
        if args.is_main:
            self.write_results()
        return self.best_mAP

    # -- the record (metrics.jsonl, results.json)
    def wall_s(self):
        """Training wall time so far, resumed runs included."""
        return self.wall_offset + time.time() - self.started

    def start_record(self, start_epoch):
        """metrics.jsonl keeps the evaluations before start_epoch; results.json (a finished run's) goes
        until this run finishes; the log states the evaluation protocol."""
        args = self.args
        self.log(protocol.protocol_line(self.protocol))
        if self.held_out:
            self.log(f"validation: {len(self.held_out)} held-out training videos (--val_videos {args.val_videos}; "
                     f"{validation.LIST_FILE}), not trained on; per step the epoch of best validation mAP "
                     f"is selected")
        if not args.is_main:
            return
        self.record.start(start_epoch)
        stale = [run_record.RESULTS_FILE] + ([] if self.held_out else [validation.LIST_FILE, validation.GT_FILE])
        for name in stale:                     # a run started over without --val_videos has no held-out list
            if os.path.exists(os.path.join(args.save_dir, name)):
                os.remove(os.path.join(args.save_dir, name))

    def write_results(self):
        """results.json, and the log lines of the last epoch and validation-selected results."""
        args = self.args
        entries = self.record.read()
        held = None
        if self.held_out:
            held = {"val_videos": args.val_videos, "videos": len(self.held_out), "list_file": validation.LIST_FILE,
                    "gt_file": validation.GT_FILE, "selection": "file" if os.path.isfile(args.val_videos)
                    else "stratified by rarest label, seeded by --seed"}
        results = run_record.write_results(args.save_dir, entries, config_text(args), args, self.protocol, held,
                                           self.wall_s())
        steps = results["steps"]
        for step, best in enumerate(self.best_mAP):
            recorded = steps.get(str(step), {}).get("best", {}).get("average_mAP")
            if best > float("-inf") and (recorded is None or f"{recorded:.2f}" != f"{100 * best:.2f}"):
                self.log(f"warning: {run_record.METRICS_FILE} lacks step {step}'s best evaluation (run continued "
                         f"from another folder's checkpoint?); results.json gives what the record holds")
        self.log("last epoch average mAP per step: " + ", ".join(
            f"step {k} {v['last']['average_mAP']:.2f} (epoch {v['last']['epoch']})" for k, v in steps.items()))
        if self.held_out:
            self.log("validation-selected per step: " + ", ".join(
                f"step {k} epoch {v['val_selected']['epoch']} (val {v['val_selected']['val_average_mAP']:.2f}) "
                f"test {v['val_selected']['average_mAP']:.2f}" for k, v in steps.items()))
        final = steps.get(str(args.num_steps))
        if final and final["best"]["averages"]:                # THUMOS: the ranges other papers report
            kinds = [kind for kind in ("best", "last", "val_selected") if kind in final]
            low, high = self.protocol["average_over"]
            ranges = {f"{low:g}:{high:g}": {kind: final[kind]["average_mAP"] for kind in kinds}}
            ranges.update({name: {kind: final[kind]["averages"][name] for kind in kinds}
                           for name in final["best"]["averages"]})
            self.log(f"final step {args.num_steps} average mAP ({' / '.join(kinds)}): " + ", ".join(
                f"{name} " + " / ".join(f"{value:.2f}" for value in values.values())
                for name, values in ranges.items()))
        self.log(f"results: {os.path.join(args.save_dir, run_record.RESULTS_FILE)} "
                 f"(every evaluation: {run_record.METRICS_FILE})")

    def show_step_table(self):
        """Print the per-class AP of the step's last evaluation (log.txt has every evaluation's)."""
        if self.last_table is not None:
            epoch, table = self.last_table
            self.log(f"per-class AP, step {self.step} epoch {epoch} (the step's last evaluation):\n{table}",
                     file=False)
        self.last_table = None

    def evaluate(self, epoch, stats):
        """Evaluate the current model (and score the held-out videos); True when it is the best of this
        step so far. One line of metrics.jsonl per evaluation."""
        args, step = self.args, self.step
        result_path = args.result_path or os.path.join(args.save_dir, f"result_step{step}.json")
        detector = engine.evaluate(self.model, self.test_set, args, step, result_path)
        val = None
        if self.val_set is not None:
            val = engine.evaluate(self.model, self.val_set, args, step,
                                  os.path.join(args.save_dir, f"val_result_step{step}.json"),
                                  os.path.join(args.save_dir, validation.GT_FILE), validation.GT_SUBSET, desc="val")
        if not args.is_main:
            return False
        improved = detector.average_mAP > self.best_mAP[step]
        if improved:
            self.best_mAP[step] = detector.average_mAP
        self.log(engine.format_map_line(detector, self.train_line(epoch, stats))
                 + f" | best {100 * self.best_mAP[step]:.2f}{' *' if improved else ''}"
                 + (f" | val avg {100 * val.average_mAP:.2f}" if val is not None else ""))
        entry = {"step": step, "epoch": epoch, **run_record.map_entry(detector, args), "train": stats,
                 "lr": self.optimizer.param_groups[0]["lr"], "wall_s": self.wall_s()}
        if val is not None:
            entry["val"] = run_record.map_entry(val, args)
            self.writer.add_scalar("val_mAP/average", val.average_mAP, epoch)
        self.record.append(entry)
        engine.report_evaluation(detector, args, step, self.test_set, "", self.log, console=False)
        self.last_table = (epoch, detector.table)
        self.writer.add_scalar("mAP/average", detector.average_mAP, epoch)
        for tiou, value in zip(args.tiou_thresholds, detector.mAP):
            self.writer.add_scalar(f"mAP/tIoU_{tiou:.2f}", value, epoch)
        return improved

    def train_line(self, epoch, stats):
        lr = self.optimizer.param_groups[0]["lr"]
        return (f"step {self.step} epoch {epoch} | " + " ".join(f"{key} {value:.4f}" for key, value in stats.items())
                + f" | lr {lr:g}")

    def log_train(self, epoch, stats):
        """TensorBoard scalars of a training epoch (the text line is written by run)."""
        lr = self.optimizer.param_groups[0]["lr"]
        if self.writer:
            for key, value in stats.items():
                self.writer.add_scalar(f"train/{key}", value, epoch)
            self.writer.add_scalar("train/lr", lr, epoch)
            self.writer.add_scalar("train/step", self.step, epoch)
