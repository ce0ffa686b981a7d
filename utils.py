"""Small shared helpers: one-line user errors, atomic file writes, a folder lock, one array
helper (command-line value types are in options.py).

Nothing here knows the method; every other module may import it.
"""
import errno
import io
import json
import os
import sys
import tempfile
import time
from collections.abc import Mapping

import numpy as np


class UserError(Exception):
    """A problem with the user's input (data, config, checkpoint, output folder).

    Entry points print its message on one line and exit non-zero (traceback only with --debug).
    The message must name the file or key and say what to do.
    """


class PeerStopped(Exception):
    """Another process of a torchrun job stopped the run and reported why; this process exits
    quietly with `status`."""

    def __init__(self, status):
        super().__init__(f"stopped by another process (exit status {status})")
        self.status = status


def launch_rank():
    """This process's rank under torchrun (its RANK variable), 0 outside it."""
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0


DISK_ERRORS = (errno.ENOSPC, errno.EACCES, errno.EROFS, errno.EDQUOT)


def exit_status(err):
    """The exit status run_cli gives an error: 2 for a user error or a full / read-only disk,
    130 for Ctrl-C, 1 for anything else."""
    if isinstance(err, PeerStopped):
        return err.status
    if isinstance(err, UserError) or (isinstance(err, OSError) and err.errno in DISK_ERRORS):
        return 2
    return 130 if isinstance(err, KeyboardInterrupt) else 1


QUIET_EXIT_GRACE_S = 3.0    # torchrun: how long a rank >= 1 lets rank 0 print before it exits


def quiet_exit(status):
    """A rank >= 1 stopping without a word: first a moment for rank 0, which stops on the same
    error and prints it, since torchrun ends every process once one has exited."""
    time.sleep(QUIET_EXIT_GRACE_S)
    sys.exit(status)


def run_cli(function, argv, write_hint, interrupt_hint=None):
    """Run an entry point: a UserError, or a full / read-only disk, ends with one `error:` line
    and exit 2. --debug in argv shows the traceback instead; Ctrl-C prints interrupt_hint and
    exits 130 when given. Under torchrun only rank 0 prints: the other ranks exit quietly with
    the same status (a PeerStopped carries rank 0's)."""
    quiet = launch_rank() != 0
    try:
        return function()
    except PeerStopped as err:
        if "--debug" in argv:
            raise
        quiet_exit(err.status)
    except UserError as err:
        if "--debug" in argv:
            raise
        if quiet:
            quiet_exit(2)
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except OSError as err:
        if "--debug" in argv or err.errno not in DISK_ERRORS:
            raise
        if quiet:
            quiet_exit(2)
        print(f"error: cannot write {err.filename or 'output'}: {err.strerror}; {write_hint}",
              file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        if interrupt_hint is None:
            raise
        if not quiet:
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
    try:
        fd, tmp_path = tempfile.mkstemp(prefix=".tmp_" + os.path.basename(path) + ".",
                                        dir=folder)
    except OSError as err:                                     # name the file, not the temporary
        raise OSError(err.errno, err.strerror, path) from err
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
        if isinstance(err, OSError) and err.filename in (None, tmp_path):   # name the file
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


def torch_bytes(obj):
    """torch.save's bytes of `obj`, serialized in memory: a full disk then fails in the plain
    file write (an OSError naming the file) instead of inside torch's zip writer."""
    import torch      # lazily: eval/ and synthetic_data.py use this module without torch
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getbuffer()


def atomic_torch_save(obj, path):
    atomic_write_bytes(path, torch_bytes(obj))


def append_text(path, text, durable=False):
    """Append `text` to the file `path` (fsync'd when `durable`); an OSError names the file."""
    append_bytes(path, text.encode(), durable)


def append_bytes(path, data, durable=False):
    """Append `data` to the file `path` (fsync'd when `durable`); an OSError names the file."""
    try:
        with open(path, "ab") as handle:
            handle.write(data)
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
    except OSError as err:
        if err.filename is None:
            raise OSError(err.errno, err.strerror, os.fspath(path)) from err
        raise


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
