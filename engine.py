"""Training / evaluation passes shared by the refinement driver and test mode.

Layers, each importing only those before it: the passes here (train epoch, evaluation, pseudo
proposals) -> inference.py (the trained cascade: test mode and predict.py) and refinement.py
(the multi-step training run, docs/method.md §10) -> runner.py (the entry point of
main_THUMOS.py / main_ActivityNet.py: config, lock, errors).
Under torchrun every pass works on this process's share and results are gathered (distributed.py).
The parts of a run are named (`timed`), so a profiler such as bench/profile_run.py times them
through `set_timer` instead of patching the engine.
"""
import contextlib
import functools
import math
import os
import warnings

import torch
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

import distributed
from dataset import collate_fn
from eval import ANETDetection, video_proposals
from eval.proposals import write_results_json
from losses import ASMLocBaseLoss, ASMLocLoss
from model import ASMLoc, ASMLocBase
from utils import UserError


class TrainingDiverged(UserError):
    """The loss became NaN/inf."""


# ----------------------------------------------------------------------------- named parts of a run
_timer = None                           # set_timer's timer; None: a part costs one check
_UNTIMED = contextlib.nullcontext()


def set_timer(timer):
    """Install `timer(part, context) -> context manager`, entered around every named part of a
    run (see `timed`; it may also open torch.profiler.record_function ranges); None removes it.
    Returns the timer it replaces."""
    global _timer
    previous, _timer = _timer, timer
    return previous


def timed(part, **context):
    """Context manager: a named part of a run ("train forward", "eval pass", ...).
    context: what a timer may look at (a forward's model, batch, step and args)."""
    return _UNTIMED if _timer is None else _timer(part, context)


def timed_calls(part):
    """Decorator: every call of the function is the named part `part`."""
    def decorate(function):
        @functools.wraps(function)
        def call(*args, **kwargs):
            with timed(part):
                return function(*args, **kwargs)
        return call
    return decorate


def timed_items(iterable, part):
    """The items of `iterable`, the wait for each one a named part (e.g. the loader's batches)."""
    iterator, done = iter(iterable), object()
    while True:
        with timed(part):
            item = next(iterator, done)
        if item is done:
            return
        yield item


# ----------------------------------------------------------------------------- small pieces
def build_model(args, step):
    return (ASMLocBase(args) if step == 0 else ASMLoc(args)).to(args.device)


def build_optimizer(args, model):
    return torch.optim.Adam(model.parameters(), lr=args.lr, betas=(0.9, 0.999), weight_decay=args.weight_decay)


def build_loss(args, step):
    return ASMLocBaseLoss(args) if step == 0 else ASMLocLoss(args)


def step_file(step, kind):
    """model_step{k}_last_epoch.pth / model_step{k}_best_epoch.pth (released names)."""
    return f"model_step{step}_{kind}_epoch.pth"


def forward(model, batch, step, args):
    """Model outputs for a batch dict (bf16 autocast on GPU with --amp)."""
    features = batch["features"].to(args.device, non_blocking=True)               # (B, T, D)
    with torch.autocast(device_type="cuda", dtype=torch.bfloat16,
                        enabled=args.amp and args.device.startswith("cuda")):
        if step == 0:
            return model(features)
        return model(features, batch["proposal_bbox"].to(args.device), batch["proposal_count"].to(args.device))


def predicted_label_sets(fg_cls, threshold):
    """Classes with score > threshold, argmax when none (docs/method.md §11); fg_cls (B, C+1)."""
    scores = fg_cls[:, :-1]                                                        # (B, C)
    chosen = scores > threshold
    argmax = torch.nn.functional.one_hot(scores.argmax(dim=1), scores.shape[1]).bool()
    return torch.where(chosen.any(dim=1, keepdim=True), chosen, argmax)


def progress(iterable, args, desc):
    return tqdm(iterable, desc=desc, leave=False, disable=None if args.is_main else True)


# ----------------------------------------------------------------------------- passes
@timed_calls("train epoch")
def train_one_epoch(model, loss_fn, optimizer, loader, args, step, epoch):
    """One shuffled pass; returns the mean of every loss term and the video-level accuracy.

    Under torchrun each process's mean loss is weighted (GlobalBatchSampler.loss_weight) so that
    DDP's gradient average is the mean over the global batch.
    """
    model.train()
    term_sums, seen = {}, 0.0
    correct = torch.zeros((), device=args.device)          # summed on the device: no sync per batch
    for index, batch in enumerate(timed_items(progress(loader, args, f"step {step} epoch {epoch}"), "train data")):
        with timed("train forward", model=model, batch=batch, step=step, args=args):
            out = forward(model, batch, step, args)
        video_label = batch["video_label"].to(args.device)                          # (B, C)
        pseudo_label = batch["pseudo_instance_label"].to(args.device) if step > 0 else None
        with timed("train loss"):
            loss, terms = loss_fn(video_label, out, pseudo_label)   # terms: floats (the one sync per batch)
        if not math.isfinite(terms["total"]):
            raise TrainingDiverged(f"loss is {terms['total']} at step {step} epoch {epoch} (terms {terms}); "
                                   f"lower --lr or check the features for extreme values")
        weight = loader.batch_sampler.loss_weight(index) if args.world_size > 1 else 1.0
        with timed("train optimizer"):
            optimizer.zero_grad()
        with timed("train backward"):
            (loss * weight if weight != 1.0 else loss).backward()
        with timed("train optimizer"):
            optimizer.step()
        count = video_label.shape[0] if weight > 0 else 0
        for key, value in terms.items():
            term_sums[key] = term_sums.get(key, 0.0) + value * count
        if count:
            predicted = predicted_label_sets(out.fg_cls.detach().float(), args.cls_threshold)
            correct += (predicted == video_label.bool()).all(dim=1).sum()
        seen += count
    keys = sorted(term_sums)
    totals = distributed.all_reduce_sum([term_sums[key] for key in keys] + [correct.item(), seen], args.device)
    seen = max(totals[-1], 1)
    stats = {key: value / seen for key, value in zip(keys, totals)}
    stats["accuracy"] = totals[-2] / seen
    return stats


@torch.no_grad()
def inference_pass(model, dataset, args, step, detect=True, pseudo=False, keep_outputs=False, desc=None):
    """One forward pass per video of `dataset` (batch 1), each video's outputs turned into proposals.

    detect / pseudo: the evaluation-threshold detections / the pseudo proposals (docs/method.md §11),
    both from the same forward. Returns (detections {vid: [...]} or None, pseudo proposals or None,
    raw outputs {vid: ...} for plots or {}), in dataset order on every process (under torchrun each
    process runs its share and the results are gathered).
    """
    model.eval()
    indices = distributed.shard(len(dataset), split=args.distributed_eval)
    loader = DataLoader(Subset(dataset, indices), batch_size=1, shuffle=False, num_workers=args.num_workers,
                        collate_fn=collate_fn, pin_memory=args.device.startswith("cuda"))
    detections, proposals, outputs = {}, {}, {}
    phase = "pseudo" if pseudo and not detect else "eval"
    for batch in timed_items(progress(loader, args, desc or f"step {step}"), f"{phase} data"):
        with timed(f"{phase} forward", model=model, batch=batch, step=step, args=args):
            out = forward(model, batch, step, args)
        vid, vid_len, cum = batch["vid_name"][0], int(batch["vid_len"][0]), batch["cum"][0]
        fg_cls, temp_att, fg_cas = (t[0].float().cpu().numpy() for t in (out.fg_cls, out.temp_att, out.fg_cas))
        with timed(f"{phase} proposals"):
            if detect:
                detections[vid] = video_proposals(fg_cls, temp_att, fg_cas, vid_len, args, pseudo=False, cum=cum)
            if pseudo:
                proposals[vid] = video_proposals(fg_cls, temp_att, fg_cas, vid_len, args, pseudo=True, cum=cum)
        if keep_outputs:
            outputs[vid] = {"fg_cas": fg_cas, "temp_att": temp_att, "vid_len": vid_len, "cum": cum}

    def in_order(local):                       # dataset order: ties in later sorts break the same way
        merged = distributed.all_gather_dict(local)
        return {vid: merged[vid] for vid in dataset.video_names}
    return (in_order(detections) if detect else None, in_order(proposals) if pseudo else None,
            in_order(outputs) if keep_outputs else {})


def predict_proposals(model, dataset, args, step, pseudo, desc):
    """Detections (or, with `pseudo`, pseudo proposals) of every video, and the raw outputs for
    --visualize plots: ({vid: proposals}, {vid: outputs})."""
    detections, proposals, outputs = inference_pass(model, dataset, args, step, detect=not pseudo, pseudo=pseudo,
                                                    keep_outputs=args.visualize and not pseudo, desc=desc)
    return (proposals if pseudo else detections), outputs


@timed_calls("eval pass")
def evaluate(model, dataset, args, step, result_path, gt_file=None, subset=None, desc="test"):
    """Evaluation pass: proposals for the test split (or the held-out videos with their gt_file and
    subset), result JSON, ActivityNet mAP (main process)."""
    results, outputs = predict_proposals(model, dataset, args, step, pseudo=False, desc=f"{desc} step {step}")
    return score_results(results, outputs, args, result_path, gt_file, subset)


@timed_calls("eval mAP")
def score_results(results, outputs, args, result_path, gt_file=None, subset=None):
    """Write one step's detections {vid: [...]} and score them against gt.json's eval subset (or
    `gt_file`'s `subset`) (main process; None elsewhere)."""
    if not args.is_main:
        return None
    write_results_json(result_path, results)
    with warnings.catch_warnings(record=True) as caught:     # e.g. predicted classes absent from the GT
        warnings.simplefilter("always")
        predictions = {"version": "ASM-Loc", "results": results, "external_data": {}}
        detector = ANETDetection(gt_file or os.path.join(args.data_dir, "gt.json"), predictions,
                                 args.tiou_thresholds, subset or args.eval_subset, args.dataset,
                                 num_tiou_for_average=args.num_tiou_for_average)
        detector.evaluate()
    detector.warnings = [str(warning.message) for warning in caught]
    detector.outputs, detector.predictions = outputs, results
    return detector


def format_map_line(detector, prefix):
    values = " ".join(f"{tiou:.2f}:{100 * value:.2f}" for tiou, value in zip(detector.tiou_thresholds, detector.mAP))
    return f"{prefix} | mAP@tIoU {values} | avg {100 * detector.average_mAP:.2f}"


@timed_calls("eval reports")
def report_evaluation(detector, args, step, dataset, tag, log, console=True):
    """Per-class AP (log.txt, and stdout when `console`; kept as detector.table), the CSV, the
    per-step summary JSON, and --visualize plots (main process)."""
    import visualize
    folder = args.save_dir
    detector.table = "\n".join([f"note: {message}" for message in detector.warnings] + [
        visualize.format_per_class_table(detector.activity_index, args.tiou_thresholds, detector.ap,
                                         args.num_tiou_for_average)])
    log(detector.table, console=console)
    visualize.write_per_class_ap_csv(os.path.join(folder, f"{tag}per_class_ap_step{step}.csv"), detector.activity_index,
                                     args.tiou_thresholds, detector.ap, args.num_tiou_for_average)
    visualize.write_summary_json(os.path.join(folder, f"{tag}summary.json"), {f"step {step}": {
        "mAP": detector.mAP, "average_mAP": detector.average_mAP, "tiou_thresholds": args.tiou_thresholds}})
    if getattr(args, "diagnose", False):             # DETAD-style diagnosis files under diagnosis/
        from eval.diagnosis_report import diagnose_evaluation
        log(diagnose_evaluation(detector, os.path.join(args.data_dir, "gt.json"), os.path.join(folder, "diagnosis"),
                                f"{tag}step{step}_", title=f"{tag}step {step}: ",
                                ignore_any_tiou=getattr(args, "ignore_any_tiou", False)), console=console)
    if not args.visualize:
        return
    names = list(detector.outputs)
    names = names[:args.visualize_videos] if args.visualize_videos > 0 else names
    for vid_name in progress(names, args, "visualize"):
        out = detector.outputs[vid_name]
        visualize.plot_video(
            os.path.join(folder, "visualize", f"{tag}step{step}", f"{vid_name}.png"), vid_name, out["vid_len"],
            args.class_name_lst, out["fg_cas"], out["temp_att"], detector.predictions[vid_name],
            dataset.gt_segments[vid_name], args.frames_per_sec, args.segment_frames_num,
            weights=dataset.dynamic_weights(vid_name), cum=out["cum"],
            title_extra=f"step {step}, avg mAP {100 * detector.average_mAP:.2f}", score_threshold=0.0)


@timed_calls("pseudo pass")
def generate_pseudo_proposals(model, full_dataset, args, step):
    """Pseudo proposals of the step-`step` model on the full set, and the dynamic weights (docs/method.md §11, §9)."""
    results, _ = predict_proposals(model, full_dataset, args, step, pseudo=True, desc=f"pseudo step {step}")
    weights = full_dataset.compute_dynamic_weights(results, args) if args.use_dynamic_sampling else None
    return results, weights


