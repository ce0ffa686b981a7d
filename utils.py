"""Small shared helpers: atomic file writes, seeding, logging."""
import contextlib
import errno
import json
import os
import random
import sys
import tempfile

import numpy as np


class UserError(Exception):
    """A problem with the user's input (data, config, checkpoint, output folder).

    Entry points print its message on one line and exit non-zero (traceback only with --debug).
    The message must name the file or key and say what to do.
    """


def run_cli(function, argv, write_hint, interrupt_hint=None):
    """Run an entry point: a UserError, or a full / read-only disk, ends with one `error:` line and exit 2.

    --debug in argv shows the traceback instead; Ctrl-C prints interrupt_hint and exits 130 when given.
    """
    try:
        return function()
    except UserError as err:
        if "--debug" in argv:
            raise
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except OSError as err:
        if "--debug" in argv or err.errno not in (errno.ENOSPC, errno.EACCES, errno.EROFS, errno.EDQUOT):
            raise
        print(f"error: cannot write {err.filename or 'output'}: {err.strerror}; {write_hint}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        if interrupt_hint is None:
            raise
        print(interrupt_hint, file=sys.stderr)
        sys.exit(130)


# ----------------------------------------------------------------------------- atomic writes
_UMASK = os.umask(0)
os.umask(_UMASK)

def _atomic_write(path, write_fn, binary):
    """Write through a temporary file in the same folder, fsync, then rename over `path`.

    A crash at any moment leaves either the old file or the new one, never a torn file.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp_path = tempfile.mkstemp(prefix=".tmp_" + os.path.basename(path) + ".", dir=folder)
    os.chmod(tmp_path, 0o666 & ~_UMASK)      # mkstemp makes 0600 files; give the usual permissions
    try:
        with os.fdopen(fd, "wb" if binary else "w") as handle:
            write_fn(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_path, path)
    except BaseException as err:
        if os.path.exists(tmp_path):
            os.unlink(tmp_path)
        if isinstance(err, OSError) and err.filename is None:   # say which file could not be written
            raise OSError(err.errno, err.strerror, path) from err
        raise
    try:  # make the rename itself durable
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass


def atomic_write_text(path, text):
    _atomic_write(path, lambda handle: handle.write(text), binary=False)


def atomic_write_json(path, obj, indent=None):
    atomic_write_text(path, json.dumps(obj, indent=indent))


def atomic_torch_save(obj, path):
    import torch      # lazily: eval/ and synthetic_data.py use this module without torch
    _atomic_write(path, lambda handle: torch.save(obj, handle), binary=True)


def atomic_save_npz(path, arrays):
    """Save a dict of name -> array as one .npz file, atomically."""
    _atomic_write(path, lambda handle: np.savez(handle, **arrays), binary=True)


def atomic_write_bytes(path, data):
    _atomic_write(path, lambda handle: handle.write(data), binary=True)


# ----------------------------------------------------------------------------- run-folder lock
class RunFolderBusy(UserError):
    """Another live process holds the run folder."""


class RunFolderLock:
    """An exclusive lock on a run folder: a POSIX record lock (fcntl.lockf) on `{folder}/.lock`,
    which holds the owner's pid.

    The kernel drops the lock when its process dies (even by SIGKILL), so a lock left behind by
    a killed run is stale by construction and the next run simply takes it over. A record lock,
    unlike flock, is not inherited by forked DataLoader workers, which may outlive a killed
    parent for a few seconds. The pid in the file only serves the message. Where locking is
    unavailable (no fcntl, some network filesystems) the run goes on unlocked.
    """

    NAME = ".lock"

    def __init__(self, folder):
        self.folder = os.fspath(folder)
        self.path = os.path.join(self.folder, self.NAME)
        self.fd = None

    def acquire(self):
        try:
            import fcntl
        except ImportError:
            return self
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666 & ~_UMASK)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            if err.errno not in (errno.EACCES, errno.EAGAIN):
                os.close(fd)                                # locking not supported here: go on unlocked
                return self
            owner = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise RunFolderBusy(f"run folder {self.folder} is in use by another process (pid {owner}); "
                                f"wait for it to finish or stop it, or choose another --outdir") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd = fd
        return self

    def release(self):
        """Unlock (the file stays: deleting it would let two processes lock two different files)."""
        if self.fd is not None:
            os.close(self.fd)                               # closing drops the lock
            self.fd = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


# ----------------------------------------------------------------------------- memory
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


# ----------------------------------------------------------------------------- seeding
def set_seed(seed):
    """Seed python, numpy and torch (all devices) for a reproducible run."""
    import torch
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 (the global generator, on purpose)
    torch.manual_seed(seed)


def seed_worker(worker_id):
    """DataLoader worker_init_fn: derive numpy/python seeds from torch's per-worker seed."""
    import torch
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)  # noqa: NPY002 (the global generator, on purpose)
    random.seed(worker_seed)


def make_generator(seed):
    import torch
    generator = torch.Generator()
    generator.manual_seed(seed)
    return generator


CUBLAS_WORKSPACE = ":4096:8"          # cuBLAS's reproducible-results setting (read when cuBLAS starts)


@contextlib.contextmanager
def deterministic_mode(enabled):
    """--deterministic (docs/method.md §15): torch's deterministic kernels for the block, an error
    for any op that has none; cuDNN without autotuning; the cuBLAS workspace setting, unless the
    environment sets one. Enter before the first CUDA operation. Restores everything on exit."""
    if not enabled:
        yield
        return
    import torch
    saved = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
             torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark,
             os.environ.get("CUBLAS_WORKSPACE_CONFIG"))
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved[2], saved[3]
        if saved[4] is None:
            os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)


# ----------------------------------------------------------------------------- logging
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
            with open(self.log_path, "a") as handle:
                handle.write(message + "\n")


# ----------------------------------------------------------------------------- checkpoints
class CheckpointError(UserError):
    """A checkpoint file that is missing, unreadable, or does not fit the model being built."""


def _numpy_safe_globals():
    """numpy objects that released checkpoints pickle (best_test_mAP is a numpy float64).

    A numpy scalar pickles as multiarray.scalar(dtype, bytes): the scalar function (named
    numpy.core.multiarray.scalar by numpy 1.x, numpy._core.multiarray.scalar by numpy 2.x),
    np.dtype and the dtype's class (numpy >= 1.25, e.g. np.dtypes.Float64DType) for BUILD.
    """
    scalar = np._core.multiarray.scalar if hasattr(np, "_core") else np.core.multiarray.scalar
    items = [np.dtype, (scalar, "numpy.core.multiarray.scalar"), (scalar, "numpy._core.multiarray.scalar")]
    for name in ("float64", "float32", "float16", "int64", "int32", "int16", "int8", "uint8", "bool_"):
        items.append(type(np.dtype(getattr(np, name))))
    return items


def load_checkpoint(path, map_location="cpu", mmap=False):
    """Read a released-format checkpoint {epoch, model_state_dict, optimizer, best_test_mAP, ...}
    with torch.load(weights_only=True); only numpy scalars are allow-listed (docs/method.md §14).

    A bare state_dict (name -> tensor) is wrapped as {"model_state_dict": it}. mmap=True maps the file
    instead of reading it whole (inference: a training checkpoint's optimizer state, twice the
    weights, is then never read); files torch cannot map (the legacy format) are read normally.
    """
    import torch
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint {path} not found; check --checkpoint or the run folder")
    try:
        with torch.serialization.safe_globals(_numpy_safe_globals()):
            try:
                state = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
            except Exception:
                if not mmap:
                    raise
                state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # corrupt zip, truncated file, disallowed pickled objects, ...
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"checkpoint {path} could not be read ({type(err).__name__}: {reason}); "
                              f"the file is corrupt, truncated or not a torch checkpoint") from err
    if isinstance(state, dict) and state and all(torch.is_tensor(v) for v in state.values()):
        state = {"model_state_dict": state}
    if not isinstance(state, dict) or not isinstance(state.get("model_state_dict"), dict):
        raise CheckpointError(f"checkpoint {path} has no model_state_dict; it is not an ASM-Loc checkpoint")
    return state


def _describe_mismatch(expected, given, args):
    """One sentence on why a state_dict does not fit: other dataset, model kind, feature dim,
    ablation switches, else the first differing keys/shapes. expected/given: name -> shape."""
    missing, unexpected = sorted(set(expected) - set(given)), sorted(set(given) - set(expected))
    cls = given.get("snippet_cls.weight")
    if cls is not None and cls[0] != expected["snippet_cls.weight"][0]:
        other = {21: "a THUMOS", 201: "an ActivityNet"}.get(cls[0], "another dataset's")
        return (f"looks like {other} checkpoint: its classifier has {cls[0]} outputs, "
                f"{args.dataset} needs {expected['snippet_cls.weight'][0]} (classes + background)")
    if ("feature_embedding.1.weight" in given) != ("feature_embedding.1.weight" in expected):
        style = "an ActivityNet" if "feature_embedding.1.weight" in given else "a THUMOS"
        return (f"looks like {style} checkpoint (embedding conv at feature_embedding."
                f"{1 if 'feature_embedding.1.weight' in given else 0}); the {args.dataset} model has "
                f"embed_dropout={args.embed_dropout}")
    full_given = any(k.startswith("MHSA_") for k in given)
    full_expected = any(k.startswith("MHSA_") for k in expected)
    if full_given != full_expected:
        kinds = ("full ASM-Loc model (step >= 1)", "base model (step 0)")
        return (f"the checkpoint holds a {kinds[0] if full_given else kinds[1]} but a "
                f"{kinds[0] if full_expected else kinds[1]} is being loaded")
    emb = given.get("att_branch.weight")
    if emb is not None and emb[1] != expected["att_branch.weight"][1]:
        return f"feature_dim differs: checkpoint {emb[1]}, config {expected['att_branch.weight'][1]}"
    prefixes = {k.split(".")[0] for k in missing + unexpected}
    if prefixes and prefixes <= {"MHSA_Intra", "MHSA_Inter", "uncertainty_branch"}:
        return (f"modules {sorted(prefixes)} are {'missing from' if missing else 'extra in'} the "
                f"checkpoint; check use_intra_attention / use_inter_attention / use_uncertainty")
    shapes = [f"{k} {tuple(given[k])} vs {tuple(expected[k])}" for k in sorted(set(given) & set(expected))
              if given[k] != expected[k]]
    parts = [f"missing keys {missing[:4]}" if missing else "", f"unexpected keys {unexpected[:4]}" if unexpected
             else "", f"shape differs: {shapes[:3]}" if shapes else ""]
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
                              f"{_describe_mismatch(expected, given, args)}")
    model.load_state_dict(state, strict=True)
    return model
