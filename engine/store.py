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
import weakref
from typing import NamedTuple

import numpy as np
import torch

import dataset as ds

CPU_CHUNK_ROWS = 32     # rows per step of the CPU gather: the interpolation's temporaries stay in
#                         the core's cache (memory-bound otherwise: 5 passes instead of about 1.5)
SAFE_MAGNITUDE = 1e37   # below it, rows stay finite through two interpolations (each at most 3x)
CPU_BUFFERS = 3         # batches gathered on the CPU reuse these buffers in turn (see FeatureStore)
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
        a = np.clip(np.floor(pos), 0, T - 2).astype(np.int64)
        a[on_node] = node[on_node]
        between = np.flatnonzero(~on_node)
        f = (pos[between] - a[between]).astype(np.float32)
        return cls(a, between, a[between] + 1, 1 - f, f)

    @classmethod
    def of_plan(cls, T, plan):
        """sampling.apply_plan: integer plans are copies, float plans interpolate."""
        return cls.copies(plan) if plan.dtype.kind in "iu" else cls.lerp(T, plan)

    def shifted(self, offset, out_offset=0):
        """Source rows moved by `offset`, output rows by `out_offset` (a video inside a batch)."""
        return RowPlan(self.a + offset, self.between + out_offset, self.b + offset, self.w0, self.f)

    def mapped(self, rows):
        """Source indices looked up in `rows` (a plan over rows of another plan)."""
        rows = np.asarray(rows, dtype=np.int64)
        return self._replace(a=rows[self.a], b=rows[self.b])

    @classmethod
    def concat(cls, plans):
        return cls(*(np.concatenate([getattr(p, key) for p in plans]) for key in cls._fields))


def gather(source, plan, out=None, finite=False):
    """The rows of `plan` from source (N_src, D) -> (N, D) float32 on source's device (into `out`
    when given). On the CPU in chunks of CPU_CHUNK_ROWS rows (the interpolation's temporaries
    stay in cache); elsewhere one call per op, the plan sent in two copies.

    finite: every value of `source` is finite. A row on a grid node may then go through the
    interpolation as x * 1 + x * 0, which is x bit for bit (signed zeros included), so whole
    chunks are interpolated without selecting their interpolated rows first."""
    N, n, D = len(plan.a), len(plan.between), source.shape[1]
    device = source.device
    out = torch.empty(N, D, dtype=source.dtype, device=device) if out is None else out
    if n == 0:
        return torch.index_select(source, 0, to_device(plan.a, device), out=out)
    if not finite:
        return _gather_selected(source, plan, out)
    b = plan.a.copy()
    b[plan.between] = plan.b
    weights = np.zeros((N, 2), dtype=np.float32)                            # (w0, f) per row
    weights[:, 0] = 1
    weights[plan.between] = np.stack([plan.w0, plan.f], axis=1)
    ints, weights = to_device(np.concatenate([plan.a, b]), device), to_device(weights, device)
    a, b = ints[:N], ints[N:]
    step = CPU_CHUNK_ROWS if device.type == "cpu" else N
    cuts = np.searchsorted(plan.between, np.arange(0, N + step, step))
    other = torch.empty(min(step, N), D, dtype=source.dtype, device=device)
    for k, start in enumerate(range(0, N, step)):
        rows = slice(start, start + step)
        chunk = torch.index_select(source, 0, a[rows], out=out[rows])
        if cuts[k + 1] > cuts[k]:                                # some rows interpolate
            part = torch.index_select(source, 0, b[rows], out=other[:len(chunk)])
            chunk.mul_(weights[rows, 0:1])
            part.mul_(weights[rows, 1:2])
            chunk.add_(part)
    return out


def _gather_selected(source, plan, out):
    """gather() for any source: the interpolated rows selected, computed and put back."""
    N, n = len(plan.a), len(plan.between)
    ints = to_device(np.concatenate([plan.a, plan.between, plan.b]), source.device)
    a, between, b = ints[:N], ints[N:N + n], ints[N + n:]
    weights = to_device(np.stack([plan.w0, plan.f], axis=1), source.device)     # (n, 2)
    w0, f = weights[:, 0:1], weights[:, 1:2]
    if source.device.type != "cpu":
        torch.index_select(source, 0, a, out=out)
        _interpolate(out, source, between, b, w0, f)
        return out
    cuts = np.searchsorted(plan.between, np.arange(0, N + CPU_CHUNK_ROWS, CPU_CHUNK_ROWS))
    for k, start in enumerate(range(0, N, CPU_CHUNK_ROWS)):
        chunk = torch.index_select(source, 0, a[start:start + CPU_CHUNK_ROWS],
                                   out=out[start:start + CPU_CHUNK_ROWS])
        lo, hi = int(cuts[k]), int(cuts[k + 1])
        if hi > lo:
            _interpolate(chunk, source, between[lo:hi] - start, b[lo:hi], w0[lo:hi], f[lo:hi])
    return out


def to_device(array, device):
    """A host numpy array as a tensor on `device` (pinned first, copied without blocking)."""
    tensor = torch.from_numpy(np.ascontiguousarray(array))
    if device.type == "cpu":
        return tensor
    return tensor.pin_memory().to(device, non_blocking=True)


def _interpolate(out, source, between, b, w0, f):
    """out[between] = out[between] * w0 + source[b] * f, three roundings as in lerp_rows."""
    rows = out.index_select(0, between)
    rows.mul_(w0)
    other = source.index_select(0, b)
    other.mul_(f)
    rows.add_(other)
    out.index_copy_(0, between, rows)


# ----------------------------------------------------------------------------- the store
class FeatureStore:
    """Every row of a set of videos in one float32 tensor (N + 1, D): video `key` has rows
    offset[key] ... offset[key] + length[key] - 1; row N is zeros (padding).

    On the CPU, gathered batches reuse CPU_BUFFERS buffers in turn: a fresh tensor of a THUMOS
    batch (98 MB) is page-faulted in by the kernel at every batch, which costs more than the
    gather itself. A batch's tensors stay valid until the next batch has been gathered (the
    training loop and the inference pass use each batch before asking for the next)."""

    def __init__(self, rows, offset, length, device):
        self.rows, self.offset, self.length = rows, offset, length
        self.device = torch.device(device)          # where batches are used
        self.zero_row = rows.shape[0] - 1
        self.buffers, self.turn = [torch.empty(0)] * CPU_BUFFERS, 0
        low, high = torch.aminmax(rows)                 # NaN: both NaN, the test below fails
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
        return (f"resident features: {len(self.offset)} videos, {self.rows.shape[0] - 1} rows, "
                f"{self.nbytes / 2**30:.2f} GB {where}")

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
        host = torch.empty(total + 1, dim, dtype=torch.float32, pin_memory=cuda and not on_gpu)
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
        store = cls(host.to(args.device) if on_gpu else host, offset, length, args.device)
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
