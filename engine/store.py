"""The resident feature store: the features of a run's videos held once, where the model runs,
and the rows of a batch taken from it by one indexed gather (docs/method.md §7).

A batch's sampling is planned on the host as row indices and interpolation weights (RowPlan,
planned by engine/batches.py exactly as dataset.py samples an item); `gather` then computes the
rows where the features are. The arithmetic is sampling.lerp_rows's, as separate tensor ops so
that every device rounds the same: a row on a grid node is a copy, a row between nodes a and b is
`a * (1 - f) + b * f` in float32 (1 - f rounded to float32 first, as numpy does).

Placement (FeatureStore.build): with `feature_cache_gb` > 0 and every video fitting in it, the
features go on the GPU when they also fit `resident_features_gb`, else in pinned host memory
(the batch is gathered on the host into pinned memory and copied once); on the CPU they stay in
host memory, shared with dataset.py's cache. `feature_cache_gb` 0, or a dataset larger than it,
keeps the disk reads of the DataLoader path.
"""
import os
import weakref
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

import numpy as np
import torch

import dataset as ds

CPU_CHUNK_ROWS = 32     # rows per step of the CPU gather: the interpolation's temporaries stay in
#                         the core's cache (memory-bound otherwise: 5 passes instead of about 1.5)
SAFE_MAGNITUDE = 1e37   # below it, rows stay finite through two interpolations (each at most 3x)
CPU_BUFFERS = 3         # batches gathered on the CPU reuse these buffers in turn (see FeatureStore)
CPU_GATHER_THREADS = 4  # at most this many threads gather on the host (torch's thread count)
_POOL = None            # their pool (CPU_GATHER_THREADS - 1 threads besides the caller's)
_STORES = weakref.WeakKeyDictionary()       # dataset -> the FeatureStore holding its videos
_NO_ROWS, _NO_WEIGHTS = np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)


class RowPlan(NamedTuple):
    """Rows of a source (N_src, D) as a gather: out[i] = src[a[i]], then for the rows `between`
    out[between] = src[a[between]] * w0 + src[b] * f. Host numpy arrays."""
    a: np.ndarray           # (N,) int64
    between: np.ndarray     # (n,) int64, increasing
    b: np.ndarray           # (n,) int64
    w0: np.ndarray          # (n,) float32, 1 - f
    f: np.ndarray           # (n,) float32

    @classmethod
    def copies(cls, rows):
        return cls(np.asarray(rows, dtype=np.int64), _NO_ROWS, _NO_ROWS, _NO_WEIGHTS, _NO_WEIGHTS)

    @classmethod
    def lerp(cls, T, pos):
        """sampling.lerp_rows(x, pos) for an x of T rows."""
        pos = np.asarray(pos, dtype=np.float64)
        if T == 1:
            return cls.copies(np.zeros(len(pos), dtype=np.int64))
        node = np.rint(pos)
        on_node = (np.abs(pos - node) < 1e-9) & (node >= 0) & (node <= T - 1)   # as lerp_rows
        a = np.where(on_node, node, np.minimum(np.maximum(np.floor(pos), 0), T - 2))
        a = a.astype(np.int64)                                   # whole numbers: exact
        between = np.flatnonzero(~on_node)
        f = (pos[between] - a[between]).astype(np.float32)
        return cls(a, between, a[between] + 1, 1 - f, f)

    @classmethod
    def of_plan(cls, T, plan):
        """sampling.apply_plan: integer plans are copies, float plans interpolate."""
        return cls.copies(plan) if plan.dtype.kind in "iu" else cls.lerp(T, plan)

    def mapped(self, rows):
        """Source indices looked up in `rows` (a plan over rows of another plan)."""
        rows = np.asarray(rows, dtype=np.int64)
        return self._replace(a=rows[self.a], b=rows[self.b])

    @classmethod
    def concat(cls, plans, sources=None, outputs=None):
        """One plan of several; plan i's source rows moved by sources[i], its output rows by
        outputs[i] (default 0)."""
        def joined(key, offsets):
            parts = [getattr(plan, key) for plan in plans]
            out = np.concatenate(parts)
            if offsets is not None:
                out += np.repeat(np.asarray(offsets, dtype=out.dtype), [len(x) for x in parts])
            return out
        return cls(joined("a", sources), joined("between", outputs), joined("b", sources),
                   joined("w0", None), joined("f", None))


def gather(source, plan, out=None, finite=False):
    """The rows of `plan` from source (N_src, D) -> (N, D) float32 on source's device (into `out`
    when given). On a GPU, one call per op (the plan sent in two copies); on the CPU with numpy,
    in chunks of CPU_CHUNK_ROWS rows, so that the interpolation's temporaries stay in the core's
    cache and no op waits for a second thread (torch's CPU ops split across threads, whose
    barrier costs milliseconds when the other core is busy).

    finite: every value of `source` is finite. A row on a grid node may then go through the
    interpolation as x * 1 + x * 0, which is x bit for bit (signed zeros included), so whole
    chunks are interpolated without selecting their interpolated rows first."""
    N, n, D = len(plan.a), len(plan.between), source.shape[1]
    out = torch.empty(N, D, dtype=source.dtype, device=source.device) if out is None else out
    b, weights = plan.a, np.ones((N, 2), dtype=np.float32)          # per row: b, (w0, f)
    if n:
        b = plan.a.copy()
        b[plan.between] = plan.b
        weights[:, 1] = 0
        weights[plan.between] = np.stack([plan.w0, plan.f], axis=1)
    if source.device.type == "cpu":
        _gather_cpu(source.numpy(), plan, b, weights, out.numpy(), finite)
        return out
    ints = to_device(np.concatenate([plan.a, b]), source.device)
    torch.index_select(source, 0, ints[:N], out=out)
    if n:
        weights = to_device(weights, source.device)
        if not finite:           # only the interpolated rows: a copy stays a copy for inf / NaN
            between = to_device(plan.between, source.device)
            rows = out.index_select(0, between)
            other = source.index_select(0, ints[N:].index_select(0, between))
            rows.mul_(weights.index_select(0, between)[:, 0:1])
            other.mul_(weights.index_select(0, between)[:, 1:2])
            out.index_copy_(0, between, rows.add_(other))
        else:
            other = source.index_select(0, ints[N:])
            out.mul_(weights[:, 0:1])
            other.mul_(weights[:, 1:2])
            out.add_(other)
    return out


def _gather_cpu(source, plan, b, weights, out, finite):
    """gather() on the host, numpy arrays: out[i] = source[a[i]] * w0[i] + source[b[i]] * f[i]
    on the chunks that hold interpolated rows: on the whole chunk when `finite` and at least a
    quarter of it interpolates, else on those rows only. The chunks are shared out among
    torch's CPU thread count (at most CPU_GATHER_THREADS) Python threads: numpy computes
    without the GIL, and no thread ever waits on another before the end."""
    N = len(plan.a)
    cuts = np.searchsorted(plan.between, np.arange(0, N + CPU_CHUNK_ROWS, CPU_CHUNK_ROWS))
    starts = list(range(0, N, CPU_CHUNK_ROWS))

    def run(ks):
        other = np.empty((min(CPU_CHUNK_ROWS, N), source.shape[1]), dtype=source.dtype)
        for k in ks:
            rows = slice(starts[k], starts[k] + CPU_CHUNK_ROWS)
            chunk = out[rows]
            np.take(source, plan.a[rows], axis=0, out=chunk, mode="clip")
            if cuts[k + 1] == cuts[k]:                              # copies only
                continue
            if finite and 4 * (cuts[k + 1] - cuts[k]) >= len(chunk):    # mostly interpolated
                part = np.take(source, b[rows], axis=0, out=other[:len(chunk)], mode="clip")
                np.multiply(chunk, weights[rows, 0:1], out=chunk)
                np.multiply(part, weights[rows, 1:2], out=part)
                np.add(chunk, part, out=chunk)
            else:
                local = plan.between[cuts[k]:cuts[k + 1]] - starts[k]
                chunk[local] = (chunk[local] * weights[rows][local, 0:1]
                                + source[b[rows][local]] * weights[rows][local, 1:2])
    threads = max(1, min(torch.get_num_threads(), CPU_GATHER_THREADS, len(starts) // 8))
    if threads == 1:
        return run(range(len(starts)))
    parts = np.array_split(np.arange(len(starts)), threads)
    for done in [_gather_pool().submit(run, part) for part in parts[1:]] + [run(parts[0])]:
        if done is not None:
            done.result()


def _gather_pool():
    """The gather's thread pool, made at its first use (none at import)."""
    global _POOL
    if _POOL is None:
        _POOL = ThreadPoolExecutor(CPU_GATHER_THREADS - 1, thread_name_prefix="gather")
    return _POOL


def _forget_pool():
    """In a forked child (a DataLoader worker) the parent's pool threads do not exist: the
    child makes its own pool if it ever gathers, instead of queueing work nobody runs."""
    global _POOL
    _POOL = None


os.register_at_fork(after_in_child=_forget_pool)


def to_device(array, device):
    """A host numpy array as a tensor on `device` (pinned first, copied without blocking)."""
    tensor = torch.from_numpy(np.ascontiguousarray(array))
    if device.type == "cpu":
        return tensor
    return tensor.pin_memory().to(device, non_blocking=True)


# ----------------------------------------------------------------------------- the store
class FeatureStore:
    """Every row of a set of videos in one float32 tensor (N + 1 + scratch, D): video `key` has
    rows offset[key] ... offset[key] + length[key] - 1; row N is zeros (padding); the scratch
    rows after it hold a training batch's interpolated intermediate rows (engine/batches.py
    batch_plan), so that a batch is gathered from one tensor.

    On the CPU, gathered batches reuse CPU_BUFFERS buffers in turn: a fresh tensor of a THUMOS
    batch (98 MB) is page-faulted in by the kernel at every batch, which costs more than the
    gather itself. A batch's tensors stay valid until the next batch has been gathered (the
    training loop and the inference pass use each batch before asking for the next)."""

    def __init__(self, rows, offset, length, device, scratch=0):
        self.rows, self.offset, self.length = rows, offset, length
        self.device = torch.device(device)          # where batches are used
        self.zero_row = rows.shape[0] - 1 - scratch
        self.scratch_start, self.scratch = self.zero_row + 1, scratch
        self.buffers, self.turn = [torch.empty(0)] * CPU_BUFFERS, 0
        # NaN: both NaN, the test below fails
        low, high = torch.aminmax(rows[:self.scratch_start])
        self.finite = bool(-SAFE_MAGNITUDE < low.item() <= high.item() < SAFE_MAGNITUDE)

    @property
    def nbytes(self):
        return self.rows.numel() * self.rows.element_size()

    @property
    def on_device(self):
        """True when the rows live where the model runs (gathered there), False when a batch is
        gathered in host memory and copied."""
        return self.rows.device.type == self.device.type

    def describe(self):
        where = ("on " + str(self.rows.device) if self.on_device else
                 "in pinned host memory" if self.rows.is_pinned() else "in host memory")
        return (f"resident features: {len(self.offset)} videos, {self.zero_row} rows (and "
                f"{self.scratch} scratch rows), {self.nbytes / 2**30:.2f} GB {where}")

    @classmethod
    def build(cls, datasets, args):
        """The store of the videos of `datasets` (None entries skipped; None when
        feature_cache_gb is 0 or they do not fit in it); each dataset is registered (store_of).
        Features are read once, through the datasets (dataset.py's checks and cache)."""
        budget = float(getattr(args, "feature_cache_gb", 0) or 0) * 2**30
        datasets = [data for data in datasets if data is not None]
        sources = {}
        for data in datasets:
            for vid in data.video_names:
                sources.setdefault(data.paths[vid], (data, vid))
        dim = args.feature_dim
        total = sum(data.vid_len(vid) for data, vid in sources.values())
        if budget <= 0 or not sources or total * dim * 4 > budget:
            return None
        cuda = str(args.device).startswith("cuda")
        on_gpu = cuda and total * dim * 4 <= float(args.resident_features_gb) * 2**30
        scratch = args.batch_size * args.sample_segments_num      # a batch's intermediate rows
        host = torch.empty(total + 1 + scratch, dim, dtype=torch.float32,
                           pin_memory=cuda and not on_gpu)
        offset, length, start = {}, {}, 0
        for key, (data, vid) in sources.items():
            x = np.asarray(data.features(vid), dtype=np.float32)
            host[start:start + len(x)] = torch.from_numpy(x)
            offset[key], length[key] = start, len(x)
            start += len(x)
        host[total] = 0
        if not cuda:                     # dataset.py's cached arrays become views of the store
            view = host.numpy()
            ds.replace_cached({key: view[offset[key]:offset[key] + length[key]]
                               for key in offset})
        store = cls(host.to(args.device) if on_gpu else host, offset, length, args.device,
                    scratch)
        register(datasets, store)
        return store

    def rows_of(self, data, vid):
        """Offset of a dataset video's rows in the store."""
        return self.offset[data.paths[vid]]

    def gather(self, plan, shape):
        """The rows of `plan` (global store rows) as a tensor of `shape` on the device."""
        if self.on_device:
            out = self.cpu_buffer(len(plan.a)) if self.device.type == "cpu" else None
            return gather(self.rows, plan, out=out, finite=self.finite).view(shape)
        pinned = torch.empty(len(plan.a), self.rows.shape[1], pin_memory=self.rows.is_pinned())
        out = gather(self.rows, plan, out=pinned, finite=self.finite).view(shape)
        return out.to(self.device, non_blocking=True)

    def fill_scratch(self, plan):
        """The rows of `plan` (over the video rows) into the first scratch rows."""
        if len(plan.a) > self.scratch:
            raise ValueError(f"{len(plan.a)} intermediate rows do not fit the store's "
                             f"{self.scratch} scratch rows")
        start = self.scratch_start
        gather(self.rows[:start], plan, out=self.rows[start:start + len(plan.a)],
               finite=self.finite)

    def cpu_buffer(self, num_rows):
        """The next of the reused CPU buffers, as (num_rows, D) (grown when too small)."""
        self.turn = (self.turn + 1) % len(self.buffers)
        numel = num_rows * self.rows.shape[1]
        if self.buffers[self.turn].numel() < numel:
            self.buffers[self.turn] = torch.empty(numel, dtype=self.rows.dtype)
        return self.buffers[self.turn][:numel].view(num_rows, -1)


def store_of(data):
    """The FeatureStore registered for a dataset, or None."""
    return _STORES.get(data)


def register(datasets, store):
    """Batches of `datasets` come from `store` (None: from their DataLoader)."""
    for data in datasets:
        if store is None:
            _STORES.pop(data, None)
        else:
            _STORES[data] = store
