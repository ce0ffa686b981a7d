"""The training run as a recipe (docs/method.md §10): `train` reads top to bottom.

config (resolved by engine/run.py) -> data -> the step's model, loss, optimizer and loader ->
epoch loop (step switch with pseudo proposals, training epoch, evaluation, checkpoints) ->
results. Each line calls a part with one home: the schedule (refinement.py), the builder of a
step (steps.py), the passes (passes.py), checkpoints and resume (checkpoints.py), the record
(record.py) and the reports (reports.py).
"""
import contextlib
import os
import sys
import time
from dataclasses import dataclass
from typing import Optional

import torch
from torch.utils.data import DataLoader

from config import config_text
from dataset import VideoDataset
from engine import (batches, checkpoints, distributed, heldout, passes, record, refinement,
                    reports, steps)
from engine.checkpoint_files import CheckpointWriter
from engine.seeding import make_generator
from engine.store import FeatureStore
from engine.timing import timed
from eval import protocol


def train(args, data=None):
    """Train the refinement cascade of args.save_dir (resuming it when it holds a run); returns
    the best average mAP of each step. data: the run's RunData (RunData.of_run), when built
    already."""
    run = Run(args)                                          # log, record, generators, clock
    with run.closing():                     # on an error: wait for the checkpoint write, close
        return run_epochs(run, args, data)


def run_epochs(run, args, data=None):
    """train() after its Run: data, resume, the epoch loop, the results."""
    data = data or RunData.of_run(args)                      # train / test / full (/ held-out)
    heldout.save_held_out(args, data.held_out)
    run.protocol = record.run_protocol(args, data.test)
    run.log(data.store.describe() if data.store is not None else
            f"features read from disk at every epoch (feature_cache_gb {args.feature_cache_gb}: "
            f"0, or less than the videos need)", console=False)
    parts, start_epoch = resume_or_start(run, data)          # step 0, or from model_latest.pth
    run.start_record(start_epoch, data.held_out)
    for epoch in range(start_epoch, args.epochs):
        if refinement.is_switch_epoch(epoch, args):          # pseudo proposals -> the next step
            parts = switch_step(run, data, parts, epoch // args.epochs_per_step)
        stats = passes.train_one_epoch(parts.train_model, parts.loss, parts.optimizer,
                                       parts.loader, args, parts.step, epoch)
        run.scalars.add(run.train_scalars(parts, stats), epoch)
        improved = False
        if refinement.is_eval_epoch(epoch, args):          # one stdout line per evaluation
            improved = evaluate(run, data, parts, epoch, stats)
        else:
            run.log(reports.train_line(parts.step, epoch, stats, parts.lr), console=False)
        save_checkpoints(run, parts, epoch, improved)      # written in the background
        if refinement.is_step_end(epoch, args):
            run.show_step_table(parts.step)
    return run.finish(data.held_out)


# ----------------------------------------------------------------------------- the run's state
class Run:
    """What a training run carries across steps: its log, TensorBoard scalars, record, random
    generators, best mAP per step and wall clock."""

    def __init__(self, args):
        self.args = args
        self.log = reports.Logger(args.log_path, enabled=args.is_main)
        if args.is_main:
            for name in os.listdir(args.save_dir):      # temporaries of a write that was killed
                if name.startswith(".tmp_"):
                    os.remove(os.path.join(args.save_dir, name))
        self.record = record.MetricsRecord(args.save_dir)
        self.protocol = None
        self.wall_offset, self.started = 0.0, time.time()
        self.generator = make_generator(args.seed)     # batch order and per-item sampling seeds
        # the DataLoader draws its worker base seed from this one (per epoch from a fresh loader
        # iterator, once for persistent workers); items take no draw from worker seeds, so it
        # must not be the shuffling generator, nor torch's global one (dropout masks)
        self.worker_seeds = make_generator(args.seed)
        self.best_mAP = [float("-inf")] * (args.num_steps + 1)
        self.last_table = None          # (epoch, per-class AP text) of the step's last evaluation
        self.scalars = reports.Scalars(args.save_dir, enabled=args.is_main)
        self.writer = CheckpointWriter(args.save_dir) if args.is_main else None

    @contextlib.contextmanager
    def closing(self):
        """On an error or Ctrl-C: wait for the checkpoint write in flight (saying so on Ctrl-C;
        a second error of that write, e.g. the disk still full, is not reported), close the
        TensorBoard file; the first error is what the user sees."""
        try:
            yield
        except BaseException as err:
            if self.writer is not None:
                if self.writer.busy() and isinstance(err, KeyboardInterrupt):
                    print(f"waiting for the checkpoint write ({', '.join(self.writer.names)}) "
                          f"to finish ...", file=sys.stderr, flush=True)
                with contextlib.suppress(Exception):
                    self.writer.wait()
            self.scalars.close(quiet=True)
            raise

    def wall_s(self):
        """Training wall time so far, resumed runs included."""
        return self.wall_offset + time.time() - self.started

    def train_scalars(self, parts, stats):
        return {**{f"train/{key}": value for key, value in stats.items()},
                "train/lr": parts.lr, "train/step": parts.step}

    def start_record(self, start_epoch, held_out):
        """metrics.jsonl keeps the evaluations before start_epoch; results.json (a finished
        run's) goes until this run finishes; the log states the evaluation protocol."""
        args = self.args
        self.log(protocol.protocol_line(self.protocol))
        if held_out:
            self.log(f"validation: {len(held_out)} held-out training videos (--val_videos "
                     f"{args.val_videos}; {heldout.LIST_FILE}), not trained on; per step the epoch "
                     f"of best validation mAP is selected")
        if not args.is_main:
            return
        self.record.start(start_epoch)
        stale = [record.RESULTS_FILE] + ([] if held_out else [heldout.LIST_FILE, heldout.GT_FILE])
        for name in stale:                # a run started over without --val_videos has no list
            if os.path.exists(os.path.join(args.save_dir, name)):
                os.remove(os.path.join(args.save_dir, name))

    def show_step_table(self, step):
        """Print the per-class AP of the step's last evaluation (log.txt has every one)."""
        if self.last_table is not None:
            epoch, table = self.last_table
            self.log(f"per-class AP, step {step} epoch {epoch} (the step's last evaluation):\n"
                     f"{table}", file=False)
        self.last_table = None

    def finish(self, held_out):
        """The closing lines and results.json; returns the best average mAP per step."""
        args = self.args
        if self.writer is not None:
            self.writer.wait()                  # the last checkpoints are on disk
        self.scalars.close()
        final = os.path.join(args.save_dir, checkpoints.step_file(args.num_steps, "best"))
        self.log(reports.best_per_step_line(self.best_mAP, final) if self.protocol["scored"]
                 else f"{record.NOT_SCORED} (final model: {final})")
        if args.is_main:
            self.write_results(held_out)
        return self.best_mAP

    def write_results(self, held_out):
        """results.json, and the log lines of the last epoch and validation-selected results."""
        args = self.args
        held = None
        if held_out:
            held = {"val_videos": args.val_videos, "videos": len(held_out),
                    "list_file": heldout.LIST_FILE, "gt_file": heldout.GT_FILE,
                    "selection": "file" if os.path.isfile(args.val_videos)
                    else "stratified by rarest label, seeded by --seed"}
        results = record.write_results(args.save_dir, self.record.read(), config_text(args),
                                       args, self.protocol, held, self.wall_s())
        for step, best in enumerate(self.best_mAP):
            recorded = results["steps"].get(str(step), {}).get("best", {}).get("average_mAP")
            if best > float("-inf") and (recorded is None
                                         or f"{recorded:.2f}" != f"{100 * best:.2f}"):
                self.log(f"warning: {record.METRICS_FILE} lacks step {step}'s best evaluation "
                         f"(run continued from another folder's checkpoint?); results.json gives "
                         f"what the record holds")
        for line in reports.results_lines(results, args.num_steps, self.protocol, held_out):
            self.log(line)
        self.log(f"results: {os.path.join(args.save_dir, record.RESULTS_FILE)} (every evaluation: "
                 f"{record.METRICS_FILE})")


class RunData:
    """The datasets of a run: training videos (random sampling), test videos, the full set
    (test then training list: pseudo proposals) and the held-out videos of --val_videos
    (scored like test videos; they keep their pseudo proposals from the full set)."""

    def __init__(self, args, held_out):
        self.held_out = held_out
        self.train = VideoDataset(args, "train", "random", held_out=held_out)
        self.test = VideoDataset(args, "test", "uniform")
        self.full = VideoDataset(args, "full", "uniform", held_out=held_out)
        self.val = VideoDataset(args, "val", "uniform", held_out=held_out) if held_out else None
        # every video's features held once where the model runs (None: read from disk)
        self.store = FeatureStore.build([self.train, self.test, self.full, self.val], args)

    @classmethod
    def of_run(cls, args):
        """The datasets of the run `args` describes, every file checked (nothing written)."""
        return cls(args, heldout.held_out_for_run(args))

    def set_proposals(self, results, weights):
        for dataset in (self.train, self.test, self.full, self.val):
            if dataset is not None:
                dataset.set_proposals(results, weights)


@dataclass
class StepParts:
    """One refinement step's model (and its DDP wrapper), optimizer, loss and training loader."""
    step: int
    model: torch.nn.Module
    train_model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    loss: torch.nn.Module
    loader: Optional[DataLoader]

    @property
    def lr(self):
        return self.optimizer.param_groups[0]["lr"]


# ----------------------------------------------------------------------------- steps
def start_step(run, data, step, results, weights):
    """Hand the step's proposals to the datasets; build its model, optimizer, loss and loader."""
    args = run.args
    data.set_proposals(results, weights)
    model = steps.build_model(args, step)
    # a new loader per step: persistent workers hold a copy of the dataset and its proposals
    sampler = distributed.GlobalBatchSampler(len(data.train), args.batch_size, run.generator,
                                             args.rank, args.world_size)
    loader = batches.training_loader(data.train, sampler, args, run.worker_seeds)
    return StepParts(step, model, distributed.wrap_model(model, args),
                     steps.build_optimizer(args, model), steps.build_loss(args, step), loader)


def switch_step(run, data, parts, step):
    """Pseudo proposals of the current model on the full set (saved to the run folder), then
    the next step's parts."""
    args = run.args
    results, weights = passes.generate_pseudo_proposals(parts.model, data.full, args, parts.step)
    if args.is_main:
        checkpoints.save_step_inputs(args.save_dir, step, results, weights)
    run.log(f"step {step}: pseudo proposals for {len(results)} videos "
            f"({sum(map(len, results.values()))} proposals)")
    return start_step(run, data, step, results, weights)


def resume_or_start(run, data):
    """The step's parts and the next epoch to run: from model_latest.pth (or --checkpoint FILE)
    with every random state restored, else a fresh step 0."""
    args = run.args
    found = checkpoints.resume_checkpoint(args, run.log)
    if found is None:
        return start_step(run, data, 0, None, None), args.start_epoch
    path, state = found
    start_epoch = args.start_epoch if args.reset_epoch else state["epoch"]
    step = state.get("step", refinement.step_of_epoch(max(state["epoch"] - 1, 0), args))
    # the step's proposals and weights sit beside the checkpoint (the run folder, or --checkpoint's)
    inputs = (checkpoints.load_step_inputs(os.path.dirname(path), step) if step > 0
              else (None, None))
    parts = start_step(run, data, step, *inputs)
    checkpoints.load_model_state(parts.model, state, path, args)
    parts.optimizer.load_state_dict(state["optimizer"])
    run.best_mAP = list(state.get("best_mAP_per_step", run.best_mAP))
    run.wall_offset = float(state.get("wall_s", 0.0)) if not args.reset_epoch else 0.0
    if "rng" in state and not args.reset_epoch:
        per_rank = state.get("rng_per_rank") or [state["rng"]]
        mine = per_rank[args.rank] if len(per_rank) == args.world_size else state["rng"]
        checkpoints.restore_rng_state(mine, run.generator, cuda=checkpoints.uses_cuda(args))
    run.log(f"resumed from {path}: step {step}, next epoch {start_epoch}")
    return parts, start_epoch


# ----------------------------------------------------------------------------- epochs
def evaluate(run, data, parts, epoch, stats):
    """Evaluate the current model (and score the held-out videos); True when it is the best of
    this step so far. One line of metrics.jsonl per evaluation."""
    args, step = run.args, parts.step
    result_path = args.result_path or os.path.join(args.save_dir, f"result_step{step}.json")
    detector = passes.evaluate(parts.model, data.test, args, step, result_path)
    val = None
    if data.val is not None:
        val = passes.evaluate(parts.model, data.val, args, step,
                              os.path.join(args.save_dir, f"val_result_step{step}.json"),
                              os.path.join(args.save_dir, heldout.GT_FILE), heldout.GT_SUBSET,
                              desc="val")
    if not args.is_main:
        return False
    # without ground truth (no segment in the test split) every evaluation is the step's latest
    improved = not detector.scored or detector.average_mAP > run.best_mAP[step]
    if improved and detector.scored:
        run.best_mAP[step] = detector.average_mAP
    prefix = reports.train_line(step, epoch, stats, parts.lr)
    run.log((reports.format_map_line(detector, prefix)
             + f" | best {100 * run.best_mAP[step]:.2f}{' *' if improved else ''}"
             if detector.scored else reports.unscored_line(prefix, result_path))
            + (f" | val avg {100 * val.average_mAP:.2f}" if val is not None else ""))
    entry = {"step": step, "epoch": epoch, **record.map_entry(detector, args), "train": stats,
             "lr": parts.lr, "wall_s": run.wall_s()}
    if val is not None:
        entry["val"] = record.map_entry(val, args)
        run.scalars.add({"val_mAP/average": val.average_mAP}, epoch)
    run.record.append(entry)
    if not detector.scored:
        return improved
    reports.report_evaluation(detector, args, step, data.test, "", run.log, console=False)
    run.last_table = (epoch, detector.table)
    run.scalars.add({"mAP/average": detector.average_mAP, **{
        f"mAP/tIoU_{tiou:.2f}": value for tiou, value in zip(args.tiou_thresholds, detector.mAP)}},
        epoch)
    return improved


def save_checkpoints(run, parts, epoch, improved):
    """model_latest.pth after every epoch; the step's best and last epochs under their released
    names. Every process's RNG state goes in, so a resume continues bit for bit. Written by the
    run's CheckpointWriter in the background; the state is taken here."""
    args, step = run.args, parts.step
    rng_states = distributed.all_gather_list(
        checkpoints.rng_state(run.generator, cuda=checkpoints.uses_cuda(args)))
    if not args.is_main:
        return
    with timed("checkpoint save"):              # the hand-over; the writing runs in a thread
        state = checkpoints.training_state(parts.model, parts.optimizer, args, step, epoch,
                                           run.best_mAP, rng_states, run.wall_s())
        names = ([checkpoints.step_file(step, "best")] if improved else []) + \
            ([checkpoints.step_file(step, "last")]
             if refinement.is_last_epoch_of_step(epoch, step, args) else []) + [checkpoints.LATEST]
        run.writer.submit(state, names, parts.optimizer)
