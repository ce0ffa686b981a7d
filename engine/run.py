"""The entry point of main_THUMOS.py and main_ActivityNet.py: config, run folder, errors, then
training (engine/training.py) or test mode (engine/cascade.py).

The run folder is locked for the whole run (rank 0 takes the lock for all torchrun ranks), so a
second command on the same folder stops at once instead of mixing its files in. A run resumes
only under the config that made it (run_folder.check_run_folder, before anything is written).
Test mode takes the config of the run in --checkpoint and writes into a folder of its own.
"""
import os
import sys

from config import DEMO_EXPECTED_MAP, NON_RESULT_KEYS, build_args, explicit_keys, save_config
from engine import cascade, distributed, record, reports, run_folder, training
from engine.precision import deterministic_mode, precision_mode
from engine.seeding import set_seed
from utils import PeerStopped, RunFolderLock, run_cli


def main(dataset, argv=None):
    """`python main_{dataset}.py ARGS`: errors are one line (exit 2), Ctrl-C says how to resume."""
    argv = sys.argv[1:] if argv is None else list(argv)
    run_cli(lambda: run(dataset, argv), argv,
            "files written before are intact (writes are atomic), free space or change "
            "--checkpoint_root and rerun",
            interrupt_hint="interrupted: rerun the same command to resume from model_latest.pth")


def run(dataset, argv):
    """Build the config and run training (or --test); returns the best mAP per step (or the
    test mode's detectors)."""
    keep_freed_memory()           # reuse freed activation buffers instead of page-faulting them
    args = build_args(dataset, argv)
    with deterministic_mode(args.deterministic):   # before CUDA starts: cuBLAS reads it once
        try:
            return run_training_or_test(distributed.init_distributed(args), argv)
        except Exception as err:
            if not args.is_main and distributed.peer_lost(err):    # rank 0 stopped, and says why
                raise PeerStopped(2) from err
            raise
        finally:
            distributed.shutdown()


def run_training_or_test(args, argv):
    """run() after the config: the trained config in test mode, seed, demo data, every input
    checked, then the run folder (lock, identity check, config.json) and training or --test.

    The folder is made, and config.json and log.txt written, only once the inputs have passed;
    a command that fails at its start removes a folder it made (run_folder.StartGuard). A refused
    command (changed config, busy folder) and the rerun of a finished run write no file."""
    notes = []
    if args.test:
        notes = run_folder.adopt_trained_config(args, argv)
        args.save_dir = run_folder.test_output_folder(args)
        args.log_path = os.path.join(args.save_dir, "log.txt")
        notes.append(f"test mode writes its results, log and plots to {args.save_dir}")
    set_seed(args.seed + args.rank)   # per-process dropout masks; DDP broadcasts rank 0's weights
    lock, guard = RunFolderLock(args.save_dir), run_folder.StartGuard(args)
    try:
        inputs = finished = None
        with distributed.rank0_decides():       # under torchrun its error stops every rank
            if args.is_main:
                inputs, finished = start_run_folder(args, lock, guard, notes)
        finished = distributed.all_gather_list(finished)[0]
        if not args.is_main and finished is None:       # after rank 0 made the demo data
            inputs = read_inputs(args)
        if finished is not None:
            lines, best = reports.finished_run_lines(finished, args)
            if args.is_main:
                print("\n".join(notes + lines), flush=True)
        else:
            with precision_mode(args):          # TF32 as the (trained) config states
                if args.test:
                    return cascade.test_cascade(args, inputs)
                best = training.train(args, inputs)
        if args.demo and args.is_main:          # a newcomer's check of the install
            changed = explicit_keys(args.dataset, argv) - {"demo", *NON_RESULT_KEYS}
            print(reports.demo_check_line(best, DEMO_EXPECTED_MAP.get(args.dataset), changed))
        return best
    except BaseException:
        if args.is_main:
            guard.undo()
        raise
    finally:
        lock.release()


def read_inputs(args):
    """What the run reads (checked before anything is written): test mode's checkpoints and
    test set, or training's data."""
    return cascade.test_inputs(args) if args.test else training.RunData.of_run(args)


def start_run_folder(args, lock, guard, notes):
    """Rank 0's start: the demo data, the inputs, the run folder's lock and identity check, then
    the notes and config.json; returns (the inputs, results.json of a finished run or None)."""
    if args.demo:
        from synthetic_data import ensure_demo_dataset
        args.demo_data_sha256 = ensure_demo_dataset(args)     # recorded in config.json
    # the data are checked before the folder is made; a finished run's rerun reads none
    maybe_finished = not args.test and record.read_results(args.save_dir) is not None
    inputs = None if maybe_finished else read_inputs(args)
    guard.made = run_folder.check_writable(args.save_dir)
    lock.acquire(write_pid=False)
    notes += run_folder.check_run_folder(args)                # raises before anything is written
    finished = None if args.test else record.finished_results(args)
    if finished is None:
        inputs = read_inputs(args) if inputs is None else inputs
        lock.write_pid()
        log = reports.Logger(args.log_path)
        for line in notes:
            log(line)
        # a user's dataset: its name is shown; a preset's: in log.txt only
        log(reports.dataset_line(args), console=args.dataset_name != args.dataset)
        save_config(args, os.path.join(args.save_dir, "config.json"))
    return inputs, finished


# ----------------------------------------------------------------------------- process memory
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3        # mallopt parameters (glibc malloc.h)


def keep_freed_memory():
    """Ask glibc's malloc to keep freed activation buffers for reuse; True when it took effect.

    Every training iteration frees and reallocates the same multi-MB tensors. By default glibc
    maps each block above 128 KB freshly from the kernel and hands it back when freed, so the
    next iteration page-faults it in again and the kernel zeroes it: about a million page faults
    in a demo run, a quarter of a base-model iteration at the demo's sizes (bench/README.md).
    Raising the mmap threshold to its maximum (32 MiB) and the trim threshold to 1 GiB keeps
    those blocks in the heap. No effect on results; elsewhere (macOS, musl) it does nothing.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, 32 * 2**20)) and bool(mallopt(_M_TRIM_THRESHOLD, 2**30))
