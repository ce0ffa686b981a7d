"""Entry point shared by main_THUMOS.py and main_ActivityNet.py: config, run-folder lock, errors.

The top layer: it imports the refinement driver (refinement.py) and the trained cascade of test mode
(inference.py), which import the passes (engine.py);
neither imports it back.
"""
import json
import os
import sys

import distributed
import inference
from config import build_args, save_config
from refinement import Refinement
from utils import RunFolderLock, UserError, deterministic_mode, keep_freed_memory, run_cli, set_seed


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


def check_resume_seed(args):
    """A run folder holds one seed's run: resuming it under another --seed would mix two runs.

    The folder name does not carry the seed (it keeps the released naming), so the seed recorded
    in the folder's config.json is compared before that file is rewritten.
    """
    config_path = os.path.join(args.save_dir, "config.json")
    if args.test or args.no_resume or args.checkpoint or not (
            os.path.isfile(config_path) and os.path.isfile(os.path.join(args.save_dir, "model_latest.pth"))):
        return
    try:
        with open(config_path) as handle:
            saved = json.load(handle).get("seed")
    except (OSError, ValueError):
        return                                  # unreadable: the checkpoint's own checks decide
    if saved is not None and saved != args.seed:
        raise UserError(f"run folder {args.save_dir} holds a run with seed {saved}, not --seed {args.seed}; "
                        f"add --suffix seed{args.seed} for a run folder of its own, or --no_resume to start "
                        f"this folder over")


def run(dataset, argv):
    """Build the config and run training (or --test); returns the best mAP per step (or the detectors).

    The run folder is locked for the whole run (rank 0 takes the lock for all torchrun ranks),
    so a second command on the same folder stops at once instead of mixing its files in.
    """
    keep_freed_memory()                  # reuse freed activation buffers instead of page-faulting them back
    args = build_args(dataset, argv)
    with deterministic_mode(args.deterministic):     # before CUDA starts: cuBLAS reads its setting once
        return run_training_or_test(distributed.init_distributed(args))


def run_training_or_test(args):
    """run() after the config: seed, demo data, run-folder lock, then training or --test."""
    set_seed(args.seed + args.rank)      # per-process dropout masks; DDP broadcasts rank 0's weights
    if args.demo and args.is_main:
        from synthetic_data import ensure_demo_dataset
        args.demo_data_sha256 = ensure_demo_dataset(args)     # recorded in config.json
    lock = RunFolderLock(args.save_dir)
    if args.is_main:
        check_writable(args.save_dir)
        lock.acquire()
        check_resume_seed(args)
    try:
        distributed.barrier()
        if args.test:
            return inference.test_cascade(args)
        if args.is_main:
            save_config(args, os.path.join(args.save_dir, "config.json"))
        return Refinement(args).run()
    finally:
        lock.release()


def main(dataset, argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    run_cli(lambda: run(dataset, argv), argv,
            "files written before are intact (writes are atomic), free space or change --checkpoint_root and rerun",
            interrupt_hint="interrupted: rerun the same command to resume from model_latest.pth")
