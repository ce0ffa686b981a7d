"""The passes over a dataset: one training epoch, the inference pass (detections and / or
pseudo proposals from batched forwards), evaluation (inference + scoring) and the pseudo-proposal
pass between refinement steps (docs/method.md §10, §11).

Under torchrun every pass works on this process's share and the results are gathered
(engine/distributed.py). Each pass is a named part of the run (engine/timing.py).
"""
import math
import os
import warnings
from concurrent.futures import ThreadPoolExecutor

import torch
from tqdm import tqdm

from engine import batches, distributed, precision
from engine.layout import model_layout
from engine.timing import timed, timed_calls, timed_items
from eval import ANETDetection
from eval.files import write_results_json
from proposals import ProposalSettings, predicted_class_mask, proposals_from_outputs
from utils import UserError


class TrainingDiverged(UserError):
    """The loss became NaN/inf."""


def forward(model, batch, args):
    """Model outputs for a batch dict, in float32 (autocast on GPU with --amp, the outputs cast
    back before any loss or proposal). Both model kinds take the proposals; the base model
    ignores them. The proposals' layout is computed on the host from their host copies (no host
    sync in the forward); `lengths` (padded evaluation batches) is passed when some video is
    shorter than the batch."""
    features = batch["features"].to(args.device, non_blocking=True)               # (B, T, D)
    bbox, count = batch["proposal_bbox"], batch["proposal_count"]
    layout = None
    if bbox.device.type == "cpu":
        layout = model_layout(model, bbox, count, features.shape[1])
    lengths = batch.get("lengths")
    if lengths is not None and bool((lengths == features.shape[1]).all()):
        lengths = None                                           # host tensor: no padding, no sync
    with precision.autocast(args):
        out = model(features, bbox.to(args.device, non_blocking=True),
                    count.to(args.device, non_blocking=True),
                    lengths=None if lengths is None else lengths.to(args.device),
                    layout=None if layout is None else layout.to(args.device))
    return precision.float32_outputs(out)


def progress(iterable, args, desc, total=None):
    return tqdm(iterable, desc=desc, total=total, leave=False,
                disable=None if args.is_main else True)


@timed_calls("train epoch")
def train_one_epoch(model, loss_fn, optimizer, loader, args, step, epoch):
    """One shuffled pass; returns the mean of every loss term and the video-level accuracy.

    Under torchrun each process's mean loss is weighted (GlobalBatchSampler.loss_weight) so
    that DDP's gradient average is the mean over the global batch.
    """
    model.train()
    term_sums, seen, scores, labels = {}, 0.0, [], []
    batches = timed_items(progress(loader, args, f"step {step} epoch {epoch}"), "train data")
    for index, batch in enumerate(batches):
        video_label = batch["video_label"].to(args.device)                          # (B, C)
        with timed("train forward", model=model, batch=batch, step=step, args=args):
            out = forward(model, batch, args)
            pseudo_label = batch["pseudo_instance_label"].to(args.device)          # (B, T, C+1)
            loss, terms = loss_fn(video_label, out, pseudo_label)   # floats: one sync per batch
        if not math.isfinite(terms["total"]):
            raise TrainingDiverged(f"loss is {terms['total']} at step {step} epoch {epoch} (terms "
                                   f"{terms}); lower --lr or check the features for extreme values")
        weight = loader.batch_sampler.loss_weight(index) if args.world_size > 1 else 1.0
        with timed("train backward"):
            optimizer.zero_grad()
            (loss * weight if weight != 1.0 else loss).backward()
        with timed("train optimizer"):
            optimizer.step()
        count = video_label.shape[0] if weight > 0 else 0
        for key, value in terms.items():
            term_sums[key] = term_sums.get(key, 0.0) + value * count
        seen += count
        if count:                                   # kept on the device until the epoch's end
            scores.append(out.fg_cls.detach()[:, :-1].float())
            labels.append(video_label.bool())
    correct = 0
    if scores:
        predicted = predicted_class_mask(torch.cat(scores).cpu().numpy(), args.cls_threshold)
        correct = int((predicted == torch.cat(labels).cpu().numpy()).all(axis=1).sum())
    keys = sorted(term_sums)
    totals = distributed.all_reduce_sum([term_sums[key] for key in keys] + [correct, seen],
                                        args.device)
    seen = max(totals[-1], 1)
    stats = {key: value / seen for key, value in zip(keys, totals)}
    stats["accuracy"] = totals[-2] / seen
    return stats


@torch.no_grad()
def inference_pass(model, dataset, args, step, detect=True, pseudo=False, keep_outputs=False,
                   desc=None):
    """The forward passes over `dataset` (several videos per forward, engine/batches.py
    eval_batches), each video's outputs turned into proposals in a worker thread while the next
    batch runs.

    detect / pseudo: the evaluation-threshold detections / the pseudo proposals
    (docs/method.md §11), both from the same forward. Returns (detections {vid: [...]} or None,
    pseudo proposals or None, raw outputs {vid: ...} for plots or {}), in dataset order on every
    process (under torchrun each process runs its share and the results are gathered). No random
    draw: the pass leaves every generator of the training as it was.
    """
    model.eval()
    indices = distributed.shard(len(dataset), split=args.distributed_eval)
    settings = {kind: ProposalSettings.from_config(args, pseudo=kind) for kind in (False, True)}
    wanted = [kind for kind, on in ((False, detect), (True, pseudo)) if on]
    phase = "pseudo" if pseudo and not detect else "eval"
    found, outputs, pending = {False: {}, True: {}}, {}, []

    def video_proposals(batch, fg_cls, temp_att, fg_cas):          # the worker thread
        with timed(f"{phase} proposals (worker)", background=True):
            return [(vid, kind, proposals_from_outputs(
                fg_cls[i], temp_att[i, :length], fg_cas[i, :length], int(batch["vid_len"][i]),
                settings[kind], batch["cum"][i]))
                for i, (vid, length) in enumerate(zip(batch["vid_name"], lengths_of(batch)))
                for kind in wanted]

    bar = progress(None, args, desc or f"step {step}", total=len(indices))
    with ThreadPoolExecutor(max_workers=1) as worker:
        for batch in timed_items(batches.eval_batches(dataset, indices, args, phase),
                                 f"{phase} data"):
            with timed(f"{phase} forward", model=model, batch=batch, step=step, args=args):
                out = forward(model, batch, args)
            with timed(f"{phase} outputs"):
                fg_cls, temp_att, fg_cas = (t.float().cpu().numpy()
                                            for t in (out.fg_cls, out.temp_att, out.fg_cas))
            pending.append(worker.submit(video_proposals, batch, fg_cls, temp_att, fg_cas))
            bar.update(len(batch["vid_name"]))
            if keep_outputs:
                for i, (vid, length) in enumerate(zip(batch["vid_name"], lengths_of(batch))):
                    outputs[vid] = {"fg_cas": fg_cas[i, :length], "temp_att": temp_att[i, :length],
                                    "vid_len": int(batch["vid_len"][i]), "cum": batch["cum"][i]}
        with timed(f"{phase} proposals"):                  # what the worker has left to do
            for future in pending:
                for vid, kind, proposals in future.result():
                    found[kind][vid] = proposals
    bar.close()

    def in_order(local):                       # dataset order: ties in later sorts break the same
        merged = distributed.all_gather_dict(local)
        return {vid: merged[vid] for vid in dataset.video_names}
    return (in_order(found[False]) if detect else None, in_order(found[True]) if pseudo else None,
            in_order(outputs) if keep_outputs else {})


def lengths_of(batch):
    """Each video's own rows of a (possibly padded) batch."""
    lengths = batch.get("lengths")
    if lengths is None:
        return [batch["features"].shape[1]] * len(batch["vid_name"])
    return lengths.tolist()


def predict_proposals(model, dataset, args, step, pseudo, desc):
    """Detections (or, with `pseudo`, pseudo proposals) of every video, and the raw outputs for
    --visualize plots: ({vid: proposals}, {vid: outputs})."""
    detections, proposals, outputs = inference_pass(
        model, dataset, args, step, detect=not pseudo, pseudo=pseudo,
        keep_outputs=args.visualize and not pseudo, desc=desc)
    return (proposals if pseudo else detections), outputs


@timed_calls("eval pass")
def evaluate(model, dataset, args, step, result_path, gt_file=None, subset=None, desc="test"):
    """Evaluation pass: proposals for the test split (or the held-out videos with their gt_file
    and subset), result JSON, ActivityNet mAP (main process)."""
    results, outputs = predict_proposals(model, dataset, args, step, pseudo=False,
                                         desc=f"{desc} step {step}")
    return score_results(results, outputs, args, result_path, gt_file, subset)


@timed_calls("eval mAP")
def score_results(results, outputs, args, result_path, gt_file=None, subset=None):
    """Write one step's detections {vid: [...]} and score them against gt.json's eval subset
    (or `gt_file`'s `subset`) (main process; None elsewhere)."""
    if not args.is_main:
        return None
    write_results_json(result_path, results)
    with warnings.catch_warnings(record=True) as caught:   # e.g. predicted classes absent from GT
        warnings.simplefilter("always")
        predictions = {"version": "ASM-Loc", "results": results, "external_data": {}}
        detector = ANETDetection(gt_file or os.path.join(args.data_dir, "gt.json"), predictions,
                                 args.tiou_thresholds, subset or args.eval_subset, args.dataset,
                                 num_tiou_for_average=args.num_tiou_for_average)
        detector.evaluate()
    detector.warnings = [str(warning.message) for warning in caught]
    detector.outputs, detector.predictions = outputs, results
    return detector


@timed_calls("pseudo pass")
def generate_pseudo_proposals(model, full_dataset, args, step):
    """Pseudo proposals of the step-`step` model on the full set, and the dynamic weights
    (docs/method.md §11, §9)."""
    results, _ = predict_proposals(model, full_dataset, args, step, pseudo=True,
                                   desc=f"pseudo step {step}")
    weights = (full_dataset.compute_dynamic_weights(results, args)
               if args.use_dynamic_sampling else None)
    return results, weights

