"""Small shared helpers: atomic file writes, seeding, logging."""
import json
import os
import random
import tempfile

import numpy as np
import torch


class UserError(Exception):
    """A problem with the user's input (data, config, checkpoint, output folder).

    Entry points print its message on one line and exit non-zero (traceback only with --debug).
    The message must name the file or key and say what to do.
    """


# ----------------------------------------------------------------------------- atomic writes
def _atomic_write(path, write_fn, binary):
    """Write through a temporary file in the same folder, fsync, then rename over `path`.

    A crash at any moment leaves either the old file or the new one, never a torn file.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp_path = tempfile.mkstemp(prefix=".tmp_" + os.path.basename(path) + ".", dir=folder)
    try:
        with os.fdopen(fd, "wb" if binary else "w") as handle:
            write_fn(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        if os.path.exists(tmp_path):
            os.unlink(tmp_path)
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
    _atomic_write(path, lambda handle: torch.save(obj, handle), binary=True)


# ----------------------------------------------------------------------------- seeding
def set_seed(seed):
    """Seed python, numpy and torch (all devices) for a reproducible run."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def seed_worker(worker_id):
    """DataLoader worker_init_fn: derive numpy/python seeds from torch's per-worker seed."""
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)
    random.seed(worker_seed)


def make_generator(seed):
    generator = torch.Generator()
    generator.manual_seed(seed)
    return generator


# ----------------------------------------------------------------------------- logging
class Logger:
    """Print to stdout and append the same line to log.txt."""

    def __init__(self, log_path=None):
        self.log_path = log_path
        if log_path:
            os.makedirs(os.path.dirname(os.path.abspath(log_path)), exist_ok=True)

    def __call__(self, message=""):
        print(message, flush=True)
        if self.log_path:
            with open(self.log_path, "a") as handle:
                handle.write(message + "\n")
