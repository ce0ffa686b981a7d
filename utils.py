"""Small shared helpers: one-line user errors, command-line value types, atomic file writes, a
folder lock, one array helper.

Nothing here knows the method; every other module may import it.
"""
import argparse
import ast
import errno
import functools
import io
import json
import math
import os
import sys
import tempfile
import tokenize
from collections.abc import Mapping
from fractions import Fraction
from pathlib import Path
from typing import NamedTuple

import numpy as np


class UserError(Exception):
    """A problem with the user's input (data, config, checkpoint, output folder).

    Entry points print its message on one line and exit non-zero (traceback only with --debug).
    The message must name the file or key and say what to do.
    """


def run_cli(function, argv, write_hint, interrupt_hint=None):
    """Run an entry point: a UserError, or a full / read-only disk, ends with one `error:` line
    and exit 2. --debug in argv shows the traceback instead; Ctrl-C prints interrupt_hint and
    exits 130 when given."""
    try:
        return function()
    except UserError as err:
        if "--debug" in argv:
            raise
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except OSError as err:
        disk = (errno.ENOSPC, errno.EACCES, errno.EROFS, errno.EDQUOT)
        if "--debug" in argv or err.errno not in disk:
            raise
        print(f"error: cannot write {err.filename or 'output'}: {err.strerror}; {write_hint}",
              file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        if interrupt_hint is None:
            raise
        print(interrupt_hint, file=sys.stderr)
        sys.exit(130)


# ----------------------------------------------------------------------------- values
class Range(NamedTuple):
    """Valid values of a numeric setting: finite, from low to high, each end closed unless
    marked open."""
    low: float
    high: float = math.inf
    low_open: bool = False
    high_open: bool = False

    def holds(self, value):
        if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
            return False
        return bool(math.isfinite(value)
                    and (value > self.low if self.low_open else value >= self.low)
                    and (value < self.high if self.high_open else value <= self.high))

    def text(self):
        if self.high == math.inf:
            return "positive and finite" if self.low_open else f"at least {self.low:g}"
        return (f"in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}"
                f"{')' if self.high_open else ']'}")


def parse_bool(text):
    lowered = str(text).lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


def parse_rate(text):
    """A frame rate as a float: `25`, `29.97` or the exact ratio `30000/1001`."""
    try:
        value = float(Fraction(str(text).strip()))
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"expected a frame rate such as 25, 29.97 or 30000/1001, "
                                         f"got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"a frame rate must be positive, got {text!r}")
    return value


def format_rate(fps):
    """A frame rate as parse_rate reads it back: 25, 29.97, or NTSC's exact 30000/1001."""
    ntsc = round(float(fps) * 1001)
    if ntsc % 1000 == 0 and math.isclose(ntsc / 1001, fps, rel_tol=1e-12) and ntsc % 1001:
        return f"{ntsc}/1001"
    return f"{float(fps):.10g}"


def show_value(value):
    """A setting as --help shows it: lists of more than six values by their ends and count."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple, np.ndarray)):
        values = [f"{float(x):g}" for x in np.asarray(value, dtype=np.float64).reshape(-1)]
        if len(values) > 6:
            return f"{' '.join(values[:2])} ... {values[-1]}, {len(values)} values"
        return " ".join(values) if values else "none"
    return '""' if value == "" else f"{value:g}" if isinstance(value, float) else str(value)


def source_comments(path, tables):
    """{key: comment} of the `key=value,  # comment` lines (one key on the line) of the dict(...)
    tables assigned to the names `tables` in the Python file `path`; the first comment wins."""
    return dict(_source_comments(os.fspath(path), tuple(tables)))


@functools.lru_cache(maxsize=8)
def _source_comments(path, tables):
    source = Path(path).read_text()
    comments = {token.start[0]: token.string.lstrip("#").strip()
                for token in tokenize.generate_tokens(io.StringIO(source).readline)
                if token.type == tokenize.COMMENT}
    keys_ending_on = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and any(getattr(target, "id", None) in tables
                                                for target in node.targets):
            for call in ast.walk(node.value):
                if isinstance(call, ast.Call) and getattr(call.func, "id", None) == "dict":
                    for keyword in call.keywords:
                        keys_ending_on.setdefault(keyword.end_lineno, []).append(keyword.arg)
    described = {}
    for line in sorted(keys_ending_on):
        if len(keys_ending_on[line]) == 1 and line in comments:
            described.setdefault(keys_ending_on[line][0], comments[line])
    return described


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
        if isinstance(err, OSError) and err.filename is None:   # say which file failed
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


def atomic_write_bytes(path, data):
    _atomic_write(path, lambda handle: handle.write(data), binary=True)


def atomic_torch_save(obj, path):
    import torch      # lazily: eval/ and synthetic_data.py use this module without torch
    _atomic_write(path, lambda handle: torch.save(obj, handle), binary=True)


def atomic_save_npz(path, arrays):
    """Save a dict of name -> array as one .npz file, atomically."""
    _atomic_write(path, lambda handle: np.savez(handle, **arrays), binary=True)


def jsonable(obj):
    """obj with numpy arrays and scalars turned into lists and Python numbers, and NaN into
    None (JSON has no NaN), ready for json.dumps."""
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, np.ndarray)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    return None if isinstance(obj, float) and obj != obj else obj


def pyplot():
    """matplotlib.pyplot with the headless Agg backend (imported on first use)."""
    import matplotlib
    matplotlib.use("Agg")          # harmless when chosen already
    import matplotlib.pyplot as plt
    return plt


def save_figure(fig, path, dpi=100, **savefig_options):
    """Write a matplotlib figure as a PNG (atomically) and close it."""
    plt = pyplot()
    buffer = io.BytesIO()
    try:
        fig.savefig(buffer, format="png", dpi=dpi, **savefig_options)
    finally:
        plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())


# ----------------------------------------------------------------------------- folder lock
class RunFolderBusy(UserError):
    """Another live process holds the run folder."""


class RunFolderLock:
    """An exclusive lock on a folder: a POSIX record lock (fcntl.lockf) on `{folder}/.lock`,
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

    def acquire(self, write_pid=True):
        """Take the lock; write_pid=False leaves .lock's content as it is (a command that may
        still be refused rewrites no file): call write_pid() once it goes on."""
        try:
            import fcntl
        except ImportError:
            return self
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666 & ~_UMASK)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            if err.errno not in (errno.EACCES, errno.EAGAIN):
                os.close(fd)                                # no locking here: go on unlocked
                return self
            owner = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise RunFolderBusy(f"run folder {self.folder} is in use by another process (pid "
                                f"{owner}); wait for it to finish or stop it, or choose another "
                                f"--outdir") from None
        self.fd = fd
        if write_pid:
            self.write_pid()
        return self

    def write_pid(self):
        if self.fd is not None:
            os.ftruncate(self.fd, 0)
            os.pwrite(self.fd, f"{os.getpid()}\n".encode(), 0)

    def release(self):
        """Unlock (the file stays: deleting it would let two processes lock two files)."""
        if self.fd is not None:
            os.close(self.fd)                               # closing drops the lock
            self.fd = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


# ----------------------------------------------------------------------------- arrays
def group_positions(counts):
    """For consecutive groups of sizes counts (n,), each element's position in its group."""
    counts = np.asarray(counts, dtype=np.int64)
    starts = np.cumsum(counts) - counts
    return np.arange(counts.sum()) - np.repeat(starts, counts)
