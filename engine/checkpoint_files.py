"""Checkpoint files on disk: written in the background and atomically, their sha256 recorded
beside them, checked before every read.

Writing: the checkpoint is serialized into memory (torch.save), its sha256 taken from those bytes,
and every file of that epoch (model_latest.pth and the step's best / last, the same bytes) written
atomically (temporary file, fsync, rename). A full disk is then a plain OSError naming the file.
The digests go to checksums.json in the same folder. While files are replaced the record lists
both their old and their new digest (written before the renames, narrowed to the new one after
them), so a kill between a rename and the record's update leaves a file the record accepts.

Reading (resume, test mode, predict.py): a file the folder's checksums.json records must match one
of its digests; any other file (released checkpoints) gets the structural check of its zip: each
member's local header, its size and, where the zip stores one, its CRC-32. torch.load with
mmap=True checks none of these, and torch.load without it not the CRC.

CheckpointWriter runs the writing in a background thread: the training loop hands it the state
at the end of an epoch and goes on. The model's parameters and the optimizer's tensors are copied
to CPU memory in the thread while the next epoch's first forward and backward run; the next
optimizer step waits for that copy (a step pre-hook), and the next checkpoint for the previous
write, so the loop waits only when those have not finished.
"""
import hashlib
import json
import os
import struct
import threading
import zipfile
import zlib

import torch

from engine.timing import timed
from utils import UserError, atomic_write_bytes, atomic_write_json, torch_bytes

CHECKSUMS = "checksums.json"
CHUNK = 1 << 22                        # bytes read at a time when hashing or checking a file
ZIP_MAGIC = b"PK\x03\x04"              # a zip's local file header (torch's format since 1.6)


class CheckpointError(UserError):
    """A checkpoint file that is missing, unreadable, or does not fit the model being built."""


# ----------------------------------------------------------------------------- the record
def read_checksums(folder):
    """{file name: [accepted sha256 hex digests]} of `folder`/checksums.json; {} without one."""
    path = os.path.join(os.fspath(folder), CHECKSUMS)
    if not os.path.isfile(path):
        return {}
    try:
        with open(path) as handle:
            files = json.load(handle)["sha256"]
        return {str(name): [str(digest) for digest in digests] for name, digests in files.items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise CheckpointError(f"{path} is unreadable ({type(err).__name__}: {err}); it records "
                              f"the sha256 of the folder's checkpoints: restore it, or delete it "
                              f"to check their zip structure only") from None


def write_checksums(folder, files):
    atomic_write_json(os.path.join(folder, CHECKSUMS),
                      {"sha256": {name: files[name] for name in sorted(files)},
                       "note": "sha256 of each checkpoint, recorded when it was written (two "
                               "digests while a file is being replaced)"}, indent=1)


def write_checkpoint_files(folder, names, data):
    """Write the bytes `data` to each file of `names` in `folder`, atomically, with the record
    kept consistent at every moment; returns their sha256."""
    digest = hashlib.sha256(data).hexdigest()
    files = read_checksums(folder)
    write_checksums(folder, {**files, **{name: list(dict.fromkeys([*files.get(name, []), digest]))
                                         for name in names}})          # old and new accepted
    for name in names:
        atomic_write_bytes(os.path.join(folder, name), data)
    write_checksums(folder, {**files, **{name: [digest] for name in names}})
    return digest


# ----------------------------------------------------------------------------- checking
def file_sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def zip_member_problem(raw, archive, info):
    """What is wrong with one member of a zip (its header, size or CRC-32), or None."""
    raw.seek(info.header_offset)
    header = raw.read(30)
    if len(header) < 30 or header[:4] != ZIP_MAGIC:
        return f"member {info.filename} has no local header"
    name_length, extra_length = struct.unpack("<HH", header[26:30])
    name = raw.read(name_length).decode("utf-8" if info.flag_bits & 0x800 else "cp437")
    if name != info.filename:
        return f"member {info.filename}'s header names {name!r}"
    if info.compress_type != zipfile.ZIP_STORED:              # not torch's: zipfile checks it
        try:
            with archive.open(info) as member:
                while member.read(CHUNK):
                    pass
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as err:
            return f"member {info.filename}: {err}"
        return None
    raw.seek(extra_length, os.SEEK_CUR)
    crc, left = 0, info.compress_size
    while left:
        chunk = raw.read(min(left, CHUNK))
        if not chunk:
            return f"member {info.filename} is truncated"
        crc, left = zlib.crc32(chunk, crc), left - len(chunk)
    if info.CRC and crc != info.CRC:        # 0: written without CRC-32 (torch can be told so)
        return f"CRC-32 of member {info.filename} does not match"
    return None


def check_zip(path):
    """The structural check of a torch zip checkpoint; a file in torch's legacy format (or no
    zip at all) is left to torch.load."""
    with open(path, "rb") as raw:
        if raw.read(4) != ZIP_MAGIC:
            return
        try:
            archive = zipfile.ZipFile(raw)
            problem = next(filter(None, (zip_member_problem(raw, archive, info)
                                         for info in archive.infolist())), None)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, ValueError) as err:
            problem = f"{type(err).__name__}: {err}"
    if problem:
        raise CheckpointError(f"checkpoint {path} could not be read ({problem}); the file is "
                              f"corrupt or truncated: restore it or write it again")


_checked = {}          # real path -> (size, mtime) of the files checked by this process


def verify_checkpoint(path):
    """Check a checkpoint file before it is read: against its sha256 in the folder's
    checksums.json when that records it, else its zip structure (check_zip). Raises
    CheckpointError naming the file. A file checked before and unchanged since is not read
    again."""
    path = os.fspath(path)
    stat = os.stat(path)
    key, stamp = os.path.realpath(path), (stat.st_size, stat.st_mtime_ns)
    if _checked.get(key) == stamp:
        return
    accepted = read_checksums(os.path.dirname(os.path.abspath(path))).get(os.path.basename(path))
    if accepted:
        if file_sha256(path) not in accepted:
            raise CheckpointError(f"checkpoint {path} does not match the sha256 recorded in "
                                  f"{CHECKSUMS} when it was written: the file was damaged or "
                                  f"replaced since; restore it, or train its step again")
    else:
        check_zip(path)
    _checked[key] = stamp


# ----------------------------------------------------------------------------- the writer
def cpu_copy(obj):
    """`obj` with every tensor in its dicts, lists and tuples copied to CPU memory."""
    if torch.is_tensor(obj):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {key: cpu_copy(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(cpu_copy(value) for value in obj)
    return obj


class CheckpointWriter:
    """Writes a folder's checkpoints in a background thread, one checkpoint at a time.

    submit() returns at once (after waiting for the previous write, if it is still running).
    An error of the thread (a full disk) is raised by the next submit() or by wait().
    """

    def __init__(self, folder):
        self.folder = os.fspath(folder)
        self.thread, self.error, self.names = None, None, []
        self.copied = threading.Event()
        self.copied.set()
        self.hooks = []

    def submit(self, state, names, optimizer):
        """Write the checkpoint dict `state` to each file of `names`. Its tensors are copied in
        the thread before `optimizer`'s next step, which waits for that copy: anything else in
        `state` that changes before that step must be a copy already."""
        self.wait()
        self.copied, self.names = threading.Event(), list(names)
        self.hooks.append(optimizer.register_step_pre_hook(lambda *_: self.before_step()))
        self.thread = threading.Thread(target=self.write, args=(state, self.names, self.copied),
                                       name="checkpoint writer", daemon=True)
        self.thread.start()

    def write(self, state, names, copied):
        try:
            try:
                state = cpu_copy(state)
            finally:
                copied.set()
            data = torch_bytes(state)
            del state
            write_checkpoint_files(self.folder, names, data)
        except BaseException as err:           # handed to the training thread
            self.error = err

    def before_step(self):
        """Before an optimizer step: wait until the tensors of the latest checkpoint are copied;
        raise the error of a write that has failed (a full disk) at once."""
        if not self.copied.is_set():
            with timed("checkpoint wait"):
                self.copied.wait()
        if self.error is not None and not self.busy():
            self.raise_error()

    def busy(self):
        return self.thread is not None and self.thread.is_alive()

    def wait(self):
        """Wait for the write in flight; raise its error, if it had one."""
        if self.thread is not None:
            if self.thread.is_alive():
                with timed("checkpoint wait"):
                    self.thread.join()
            self.thread = None
        for hook in self.hooks:
            hook.remove()
        self.hooks = []
        self.raise_error()

    def raise_error(self):
        error, self.error = self.error, None
        if error is None:
            return
        if isinstance(error, OSError) and error.filename is None and self.names:
            raise OSError(error.errno, error.strerror,
                          os.path.join(self.folder, self.names[0])) from error
        raise error
