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

CheckpointWriter runs the writing in background threads: the training loop hands it the state
at the end of an epoch and goes on. The model's parameters and the optimizer's tensors are copied
to CPU memory in a thread while the next epoch's first forward and backward run, and the next
optimizer step waits for that copy (a step pre-hook; on a GPU the copies run on a side stream
into pinned memory and the step waits for them on the GPU, not on the host); the copies reuse the
buffers of a checkpoint already serialized. The writes follow
in hand-over order; one the disk has not reached yet is superseded file by file by a newer one,
so the loop never waits for the disk.
"""
import hashlib
import json
import os
import struct
import threading
import zipfile
import zlib
from dataclasses import dataclass, field

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
def cpu_copy(obj, into=None):
    """`obj` with every tensor in its dicts, lists and tuples copied to CPU memory: into the
    tensor at the same place of `into` (an earlier copy no longer in use) where its shape and
    dtype match (and it is pinned for a CUDA source), else into a new one. A CUDA tensor goes to
    pinned memory without blocking, on the calling thread's current stream: the copy is complete
    once that stream has reached it. Reusing buffers spares the allocation and the page faults
    of hundreds of MB per checkpoint."""
    if torch.is_tensor(obj):
        target = into if (torch.is_tensor(into) and into.shape == obj.shape
                          and into.dtype == obj.dtype and into.device.type == "cpu"
                          and (not obj.is_cuda or into.is_pinned())) else None
        if target is None:
            target = torch.empty(obj.shape, dtype=obj.dtype, device="cpu",
                                 pin_memory=obj.is_cuda)
        return target.copy_(obj.detach(), non_blocking=obj.is_cuda)
    if isinstance(obj, dict):
        into = into if isinstance(into, dict) else {}
        return {key: cpu_copy(value, into.get(key)) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        into = into if isinstance(into, (list, tuple)) and len(into) == len(obj) else \
            [None] * len(obj)
        return type(obj)(cpu_copy(value, spare) for value, spare in zip(obj, into))
    return obj


def cuda_device(obj):
    """The device of the first CUDA tensor in `obj` (dicts, lists, tuples), or None."""
    if torch.is_tensor(obj):
        return obj.device if obj.is_cuda else None
    values = obj.values() if isinstance(obj, dict) else obj if isinstance(obj, (list, tuple)) \
        else ()
    return next(filter(None, map(cuda_device, values)), None)


@dataclass
class Handover:
    """One checkpoint handed to the writer: its files and its copy's progress."""
    names: list
    thread: threading.Thread = None
    copied: threading.Event = field(default_factory=threading.Event)   # host copies made
    device: torch.device = None          # CUDA: the copies run on a stream of this device ...
    done: object = None                  # ... and this CUDA event marks their end
    waited: bool = False                 # the training stream waits for `done`


class CheckpointWriter:
    """Writes a folder's checkpoints in the background, in the order they were handed over.

    submit() returns at once. A copy thread per checkpoint copies its tensors to CPU memory (the
    next optimizer step waits for that), then queues it for one writer thread. A checkpoint still
    queued when a newer one names the same file is not written to that file (the newer one is):
    when epochs are shorter than a write, model_latest.pth is written as often as the disk
    allows and the loop never waits for it; a resume then starts from the newest complete file,
    exactly as from any other. A failed write (a full disk) drops the queue and is raised on the
    training thread: at the next optimizer step, submit() or wait().
    """

    def __init__(self, folder):
        self.folder = os.fspath(folder)
        self.lock = threading.Condition()    # the queue, in hand-over order
        self.queue = []            # [sequence, [file names], CPU state] waiting, oldest first
        self.sequence, self.queued, self.writing, self.error = 0, 0, [], None
        self.failed = False        # after a failed write nothing more is written (order kept)
        self.copies, self.thread = [], None      # the Handover of each copy; the writer thread
        self.hook, self.hooked = None, None
        self.spares = []           # CPU states already written (or superseded): the next copies'
        #                            buffers

    def submit(self, state, names, optimizer):
        """Write the checkpoint dict `state` to each file of `names`, in that order. Its tensors
        are copied in a thread before `optimizer`'s next step, which waits for that copy:
        anything else in `state` that changes before that step must be a copy already."""
        self.raise_error()
        if optimizer is not self.hooked:                 # a new step's optimizer
            if self.hook is not None:
                self.hook.remove()
            self.hook = optimizer.register_step_pre_hook(lambda *_: self.before_step())
            self.hooked = optimizer
        self.sequence += 1
        handover = Handover(list(names), device=cuda_device(state))
        ready = None
        if handover.device is not None:          # the state as the training stream leaves it
            ready = torch.cuda.Event()
            ready.record(torch.cuda.current_stream(handover.device))
        handover.thread = threading.Thread(target=self.copy,
                                           args=(state, handover, self.sequence, ready),
                                           name="checkpoint copy", daemon=True)
        self.copies = [copy for copy in self.copies if copy.thread.is_alive()] + [handover]
        handover.thread.start()

    def copy(self, state, handover, sequence, ready):
        """Copy thread: the state to CPU memory (CUDA tensors on a side stream, which the next
        optimizer step waits for on the GPU), then into the queue (superseding the files a
        queued checkpoint has not written yet), the writer started when idle."""
        names, source = handover.names, state      # source: kept until the copies are done
        try:
            with self.lock:
                spare = self.spares.pop() if self.spares else None
            try:
                if ready is None:
                    state = cpu_copy(state, spare)
                else:
                    side = torch.cuda.Stream(device=handover.device)
                    side.wait_event(ready)
                    with torch.cuda.stream(side):
                        state = cpu_copy(state, spare)
                    handover.done = torch.cuda.Event()
                    handover.done.record(side)
            finally:
                handover.copied.set()
            if handover.done is not None:
                handover.done.synchronize()
            del source
            with self.lock:                            # after every earlier hand-over
                self.lock.wait_for(lambda: self.queued >= sequence - 1 or self.failed)
                if self.failed:
                    return
                for entry in self.queue:
                    entry[1] = [name for name in entry[1] if name not in names]
                self.spares = (self.spares + [entry[2] for entry in self.queue
                                              if not entry[1]])[-1:]
                self.queue = [entry for entry in self.queue if entry[1]] + [
                    [sequence, names, state]]
                if self.thread is None:
                    self.thread = threading.Thread(target=self.write_queue,
                                                   name="checkpoint writer", daemon=True)
                    self.thread.start()
        except BaseException as err:           # handed to the training thread
            self.error, self.failed = err, True
        finally:
            with self.lock:
                self.queued = max(self.queued, sequence)
                self.lock.notify_all()

    def write_queue(self):
        """Writer thread: the queued checkpoints, oldest first, until the queue is empty."""
        while True:
            with self.lock:
                if not self.queue or self.failed:
                    self.thread, self.writing = None, []
                    return
                _, self.writing, state = self.queue.pop(0)
            try:
                data = torch_bytes(state)
                with self.lock:                   # serialized: its buffers may be reused
                    self.spares = (self.spares + [state])[-1:]
                write_checkpoint_files(self.folder, self.writing, data)
            except BaseException as err:
                with self.lock:
                    if isinstance(err, OSError) and err.filename is None:
                        err = OSError(err.errno, err.strerror,
                                      os.path.join(self.folder, self.writing[0]))
                    self.error, self.failed = err, True
                    self.queue, self.thread, self.writing = [], None, []
                return
            del state

    def before_step(self):
        """Before an optimizer step: wait until every checkpoint's tensors are copied; raise
        the error of a failed write at once."""
        for copy in self.copies:
            if not copy.copied.is_set():
                with timed("checkpoint wait"):
                    copy.copied.wait()
            if copy.done is not None and not copy.waited:   # on the GPU, not on the host
                torch.cuda.current_stream(copy.device).wait_event(copy.done)
                copy.waited = True
        self.raise_error()

    @property
    def names(self):
        """The files being written or waiting to be."""
        with self.lock:
            names = self.writing + [name for entry in self.queue for name in entry[1]]
        copying = [name for copy in self.copies if copy.thread.is_alive()
                   for name in copy.names]
        return list(dict.fromkeys(names + copying))

    def busy(self):
        return self.thread is not None or any(copy.thread.is_alive() for copy in self.copies)

    def wait(self):
        """Wait until every handed-over checkpoint is written; raise a write's error."""
        for copy in self.copies:
            if copy.thread.is_alive():
                with timed("checkpoint wait"):
                    copy.thread.join()
        self.copies = []
        writer = self.thread                  # no copy is left to start another one
        if writer is not None:
            with timed("checkpoint wait"):
                writer.join()
        if self.hook is not None:
            self.hook.remove()
            self.hook, self.hooked = None, None
        self.raise_error()

    def raise_error(self):
        error, self.error = self.error, None
        if error is not None:
            raise error
