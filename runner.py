"""Entry point shared by main_THUMOS.py and main_ActivityNet.py: config, run-folder lock, errors.

The top layer: it imports the refinement driver (refinement.py) and the trained cascade of test mode
(inference.py), which import the passes (engine.py);
neither imports it back.
"""
import os
import sys

import distributed
import inference
from config import build_args, save_config
from refinement import Refinement
from run_identity import adopt_trained_config, check_run_folder, test_output_folder
from utils import Logger, RunFolderLock, UserError, deterministic_mode, keep_freed_memory, run_cli, set_seed


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
    """Build the config and run training (or --test); returns the best mAP per step (or the detectors).

    The run folder is locked for the whole run (rank 0 takes the lock for all torchrun ranks),
    so a second command on the same folder stops at once instead of mixing its files in. It resumes only
    under the config that made it (run_identity.check_run_folder, before anything is written). Test mode
    takes the config of the run in --checkpoint and writes into a folder of its own (DIR/test).
    """
    keep_freed_memory()                  # reuse freed activation buffers instead of page-faulting them back
    args = build_args(dataset, argv)
    with deterministic_mode(args.deterministic):     # before CUDA starts: cuBLAS reads its setting once
        return run_training_or_test(distributed.init_distributed(args), argv)


def run_training_or_test(args, argv):
    """run() after the config: the trained config in test mode, seed, demo data, run-folder lock and
    identity check, then training or --test."""
    notes = []
    if args.test:
        notes = adopt_trained_config(args, argv)
        args.save_dir = test_output_folder(args)
        args.log_path = os.path.join(args.save_dir, "log.txt")
        notes.append(f"test mode writes its results, log and plots to {args.save_dir}")
    set_seed(args.seed + args.rank)      # per-process dropout masks; DDP broadcasts rank 0's weights
    if args.demo and args.is_main:
        from synthetic_data import ensure_demo_dataset
        args.demo_data_sha256 = ensure_demo_dataset(args)     # recorded in config.json
    lock = RunFolderLock(args.save_dir)
    if args.is_main:
        check_writable(args.save_dir)
        lock.acquire()
    try:
        if args.is_main:
            notes += check_run_folder(args)         # raises before anything is written
            log = Logger(args.log_path)
            for line in notes:
                log(line)
            save_config(args, os.path.join(args.save_dir, "config.json"))
        distributed.barrier()
        if args.test:
            return inference.test_cascade(args)
        return Refinement(args).run()
    finally:
        lock.release()


def main(dataset, argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    run_cli(lambda: run(dataset, argv), argv,
            "files written before are intact (writes are atomic), free space or change --checkpoint_root and rerun",
            interrupt_hint="interrupted: rerun the same command to resume from model_latest.pth")
