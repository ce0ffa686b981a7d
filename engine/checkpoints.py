"""Checkpoints: file names, what one holds, writing, reading (checked) and the resume state.

The released schema (docs/method.md §13) is {epoch (the next to run), model_state_dict,
optimizer, best_test_mAP}; this code adds dataset, model_kind, step, best_mAP_per_step, the RNG
state of every process and the wall time, which an exact resume needs. A refinement step's
inputs (its pseudo proposals and dynamic weights) sit beside the checkpoints.
"""
import json
import os
import random

import numpy as np
import torch

from config import CLASS_LIST_DIR, PRESETS, load_class_names
from engine.checkpoint_files import CheckpointError, verify_checkpoint
from engine.steps import build_model_for_loading, model_kind
from eval.files import write_results_json
from utils import UserError, atomic_save_npz

LATEST = "model_latest.pth"

# ----------------------------------------------------------------------------- names
def step_file(step, kind):
    """model_step{k}_last_epoch.pth / model_step{k}_best_epoch.pth (released names)."""
    return f"model_step{step}_{kind}_epoch.pth"


def cascade_file(step, num_steps):
    """Test mode's file for step k: the last epoch of steps < num_steps, the best epoch of the
    final step."""
    return step_file(step, "last" if step < num_steps else "best")


def cascade_paths(folder, args, needed_by="--test"):
    """One checkpoint path per step 0..num_steps; a one-line error when the folder lacks any."""
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        raise UserError(f"checkpoint folder {folder} not found; {needed_by} needs a run folder "
                        f"with one model_step*.pth file per step")
    paths = [os.path.join(folder, cascade_file(step, args.num_steps))
             for step in range(args.num_steps + 1)]
    missing = [os.path.basename(path) for path in paths if not os.path.isfile(path)]
    if missing:
        raise UserError(f"checkpoint folder {folder} is missing {', '.join(missing)}; {needed_by} "
                        f"needs one file per step (num_steps = {args.num_steps}): pass the flags "
                        f"the run was trained with (e.g. --demo, --num_steps)")
    return paths


# ----------------------------------------------------------------------------- writing
def training_state(model, optimizer, args, step, epoch, best_mAP, rng_states, wall_s):
    """The checkpoint dict after 0-based `epoch` of refinement step `step`, for
    checkpoint_files.CheckpointWriter: what the next epoch changes before its first optimizer
    step is copied here (the model's buffers, e.g. BatchNorm statistics, move in every training
    forward; the optimizer's per-parameter state dicts); the parameters and the optimizer's
    tensors change only in that step, before which the writer has copied them."""
    buffers = {name for name, _ in model.named_buffers()}
    weights = {name: value.clone() if name in buffers else value
               for name, value in model.state_dict().items()}
    optimizer_state = optimizer.state_dict()
    optimizer_state["state"] = {key: dict(value) for key, value in optimizer_state["state"].items()}
    return {"epoch": epoch + 1, "model_state_dict": weights,
            "optimizer": optimizer_state, "best_test_mAP": best_mAP[step],
            "dataset": args.dataset, "model_kind": model_kind(step), "step": step,
            "best_mAP_per_step": list(best_mAP), "rng": rng_states[0],
            "rng_per_rank": rng_states, "wall_s": wall_s}


def uses_cuda(args):
    """True when the run computes on a CUDA device (its generators are then checkpointed)."""
    return args.device.startswith("cuda") and torch.cuda.is_available()


def rng_state(generator, cuda=False):
    """Every random state a resume restores: python, numpy, torch (CPU, and with `cuda` every
    CUDA device's generator: dropout masks on the GPU) and the loader's generator."""
    numpy_state = np.random.get_state(legacy=False)  # noqa: NPY002 (the global generator, on purpose)
    numpy_state["state"]["key"] = numpy_state["state"]["key"].tolist()     # weights_only-loadable
    state = {"python": random.getstate(), "numpy": numpy_state, "torch": torch.get_rng_state(),
             "loader": generator.get_state()}
    if cuda:
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state, generator, cuda=False):
    """Set what rng_state recorded (after set_seed, which seeds every device: a checkpoint
    without CUDA states, or a CPU run, keeps that seed)."""
    python = state["python"]
    random.setstate(tuple(python) if isinstance(python, list) else python)
    numpy_state = {**state["numpy"], "state": dict(state["numpy"]["state"])}
    numpy_state["state"]["key"] = np.asarray(numpy_state["state"]["key"], dtype=np.uint32)
    np.random.set_state(numpy_state)  # noqa: NPY002 (the global generator, on purpose)
    torch.set_rng_state(state["torch"])
    generator.set_state(state["loader"])
    if cuda and state.get("cuda"):
        torch.cuda.set_rng_state_all(state["cuda"][:torch.cuda.device_count()])


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
        raise UserError(f"cannot resume step {step}: {proposal_path} is missing or unreadable "
                        f"({err}); rerun with --no_resume to start over") from None
    weights = None
    if os.path.exists(weight_path):
        with np.load(weight_path) as stored:
            weights = {name: stored[name] for name in stored.files}
    return results, weights


# ----------------------------------------------------------------------------- reading
def numpy_safe_globals():
    """numpy objects that released checkpoints pickle (best_test_mAP is a numpy float64).

    A numpy scalar pickles as multiarray.scalar(dtype, bytes): the scalar function (named
    numpy.core.multiarray.scalar by numpy 1.x, numpy._core.multiarray.scalar by numpy 2.x),
    np.dtype and the dtype's class (numpy >= 1.25, e.g. np.dtypes.Float64DType) for BUILD.
    """
    scalar = np._core.multiarray.scalar if hasattr(np, "_core") else np.core.multiarray.scalar
    items = [np.dtype, (scalar, "numpy.core.multiarray.scalar"),
             (scalar, "numpy._core.multiarray.scalar")]
    for name in ("float64", "float32", "float16", "int64", "int32", "int16", "int8", "uint8",
                 "bool_"):
        items.append(type(np.dtype(getattr(np, name))))
    return items



def load_checkpoint(path, map_location="cpu", mmap=False):
    """Read a released-format checkpoint {epoch, model_state_dict, optimizer, best_test_mAP, ...}
    with torch.load(weights_only=True); only numpy scalars are allow-listed (docs/method.md §14).
    The file is checked first (checkpoint_files.verify_checkpoint).

    A bare state_dict (name -> tensor) is wrapped as {"model_state_dict": it}. mmap=True maps the
    file instead of reading it whole (inference: a training checkpoint's optimizer state, twice the
    weights, is then never read); files torch cannot map (the legacy format) are read normally.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint {path} not found; check --checkpoint or the run folder")
    verify_checkpoint(path)                      # its recorded sha256, else its zip structure
    try:
        with torch.serialization.safe_globals(numpy_safe_globals()):
            try:
                state = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
            except Exception:
                if not mmap:
                    raise
                state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # corrupt zip, truncated file, disallowed pickled objects, ...
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"checkpoint {path} could not be read ({type(err).__name__}: "
                              f"{reason}); the file is corrupt, truncated or not a torch "
                              f"checkpoint") from err
    if isinstance(state, dict) and state and all(torch.is_tensor(v) for v in state.values()):
        state = {"model_state_dict": state}
    if not isinstance(state, dict) or not isinstance(state.get("model_state_dict"), dict):
        raise CheckpointError(f"checkpoint {path} has no model_state_dict; it is not an ASM-Loc "
                              f"checkpoint")
    return state




def resume_checkpoint(args, log):
    """(path, checkpoint) to resume from: --checkpoint FILE, else the run folder's
    model_latest.pth (the newest readable step checkpoint if that one is unreadable); None for a
    fresh start (--no_resume, or nothing saved yet)."""
    path = os.path.join(args.save_dir, LATEST)
    if args.checkpoint and not os.path.isfile(args.checkpoint):
        raise UserError(f"--checkpoint {args.checkpoint} is not a checkpoint file; to train from a "
                        f"checkpoint pass its .pth file, to evaluate a folder of step checkpoints "
                        f"add --test")
    if args.checkpoint:
        path = args.checkpoint
    elif args.no_resume or not os.path.exists(path):
        return None
    try:
        return path, load_checkpoint(path)
    except UserError as err:
        for step in reversed(range(args.num_steps)):
            candidate = os.path.join(args.save_dir, step_file(step, "last"))
            if os.path.exists(candidate):
                log(f"warning: {err}; falling back to {candidate}")
                return candidate, load_checkpoint(candidate)
        raise


def load_step_model(path, step, args, mmap=True):
    """Model of step `step` (base at 0, full after) with the checkpoint's weights, in eval mode.

    Checks the stored dataset and the tensor shapes first (one-line errors). mmap: map the
    checkpoint instead of reading it whole (its optimizer state is never read).
    """
    state = load_checkpoint(path, map_location=args.device, mmap=mmap)
    stored = state.get("dataset")
    if stored is not None and stored != args.dataset:
        raise CheckpointError(f"checkpoint {path} was trained on {stored}, not {args.dataset}; "
                              f"use the {stored} preset (predict.py --dataset {stored}, "
                              f"main_{stored}.py --test)")
    model = build_model_for_loading(args, step)
    load_model_state(model, state, path, args)      # strict: every parameter and buffer is set
    return model.eval()


# ----------------------------------------------------------------------------- diagnosis
def preset_class_count(preset):
    return len(load_class_names(CLASS_LIST_DIR / preset["class_list"]))


def preset_with(matches):
    """"a THUMOS" / "an ActivityNet": the first preset of config.py for which `matches(preset)`
    holds, with its article; "another dataset's" when none does."""
    for name, preset in PRESETS.items():
        if matches(preset):
            return f"{'an' if name[0].lower() in 'aeiou' else 'a'} {name}"
    return "another dataset's"


def describe_mismatch(expected, given, args):
    """One sentence on why a state_dict does not fit: other dataset, model kind, feature dim,
    ablation switches, else the first differing keys/shapes. expected/given: name -> shape."""
    missing, unexpected = sorted(set(expected) - set(given)), sorted(set(given) - set(expected))
    cls = given.get("snippet_cls.weight")
    if cls is not None and cls[0] != expected["snippet_cls.weight"][0]:
        other = preset_with(lambda preset: preset_class_count(preset) + 1 == cls[0])
        return (f"looks like {other} checkpoint: its classifier has {cls[0]} outputs, "
                f"{args.dataset} needs {expected['snippet_cls.weight'][0]} (classes + background)")
    if ("feature_embedding.1.weight" in given) != ("feature_embedding.1.weight" in expected):
        dropout_first = "feature_embedding.1.weight" in given
        style = preset_with(lambda preset: bool(preset["embed_dropout"]) == dropout_first)
        return (f"looks like {style} checkpoint (embedding conv at feature_embedding."
                f"{1 if 'feature_embedding.1.weight' in given else 0}); the {args.dataset} model "
                f"has embed_dropout={args.embed_dropout}")
    full_given = any(k.startswith("MHSA_") for k in given)
    full_expected = any(k.startswith("MHSA_") for k in expected)
    if full_given != full_expected:
        kinds = ("full ASM-Loc model (step >= 1)", "base model (step 0)")
        return (f"the checkpoint holds a {kinds[0] if full_given else kinds[1]} but a "
                f"{kinds[0] if full_expected else kinds[1]} is being loaded")
    emb = given.get("att_branch.weight")
    if emb is not None and emb[1] != expected["att_branch.weight"][1]:
        return (f"feature_dim differs: checkpoint {emb[1]}, config "
                f"{expected['att_branch.weight'][1]}")
    prefixes = {k.split(".")[0] for k in missing + unexpected}
    if prefixes and prefixes <= {"MHSA_Intra", "MHSA_Inter", "uncertainty_branch"}:
        return (f"modules {sorted(prefixes)} are {'missing from' if missing else 'extra in'} the "
                f"checkpoint; check use_intra_attention / use_inter_attention / use_uncertainty")
    shapes = [f"{k} {tuple(given[k])} vs {tuple(expected[k])}"
              for k in sorted(set(given) & set(expected)) if given[k] != expected[k]]
    parts = [f"missing keys {missing[:4]}" if missing else "",
             f"unexpected keys {unexpected[:4]}" if unexpected else "",
             f"shape differs: {shapes[:3]}" if shapes else ""]
    return "; ".join(p for p in parts if p)



def load_model_state(model, state, path, args):
    """Check a checkpoint against `model` before loading, then load with strict=True.

    `state` is a model_state_dict or the whole checkpoint dict; in the latter case a stored
    `dataset` that differs from args.dataset is an error too. Raises CheckpointError with one
    line naming the file and what differs.
    """
    if "model_state_dict" in state:
        stored = state.get("dataset")
        if stored is not None and stored != args.dataset:
            raise CheckpointError(f"checkpoint {path} was trained on {stored}, not {args.dataset}")
        state = state["model_state_dict"]
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    given = {k: tuple(v.shape) for k, v in state.items()}
    if expected != given:
        raise CheckpointError(f"checkpoint {path} does not fit the {type(model).__name__} model: "
                              f"{describe_mismatch(expected, given, args)}")
    model.load_state_dict(state, strict=True)
    return model
