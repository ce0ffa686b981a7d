"""Batches of a run (docs/method.md §7, §8): training batches and the length-bucketed batches of
the evaluation and pseudo-proposal passes.

With a feature store (engine/store.py) a training batch is planned on the host, item by item
exactly as dataset.py's VideoDataset samples it (the same draws: np.random.default_rng(seed) of
the key, sampling.py's plan functions), as rows of the store and interpolation weights, then
taken in one gather where the features are. The targets of a step (attention proposals, pseudo
instance labels, video labels) do not depend on the random draw: they are built once per step
(ResidentTargets) and a batch selects them by video. Without a store, training batches come from
a DataLoader over the VideoDataset (disk reads).

Evaluation batches group videos of similar sampled length under `eval_batch_rows` padded rows
(lengths of the sampled rows; the padding is zeros and the model masks it: model.py
ASMLocBase.forward), from the store or, without one, from a DataLoader that pads its items.
"""
import weakref

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset

from engine.seeding import make_generator
from engine.timing import timed
from engine.store import RowPlan, store_of
from sampling import dynamic_positions, random_plan, uniform_plan

ONE_SNIPPET_CUM = np.array([0.0, 0.5, 1.0])     # cum of a one-snippet video (dynamic_sample)


# ----------------------------------------------------------------------------- one item
def timeline(data, vid, T):
    """(cum or None, dynamic positions or None, timeline length) of a video under the dataset's
    dynamic weights (as VideoDataset._sample)."""
    w = data.weights_of(vid, T)
    if w is None:
        return None, None, T
    if T == 1:
        return ONE_SNIPPET_CUM, None, 1
    cum, pos = dynamic_positions(w)
    return cum, pos, len(pos)


def item_plan(data, vid, rng=None, line=None):
    """VideoDataset._sample of one item as plans: (first level over the video's T rows, second
    level over the first level's rows or None, cum, timeline length). The second level is the
    dynamic-then-float-plan case, whose intermediate rows are rounded to float32 first.
    line: the video's timeline(), when already known."""
    T, S = data.vid_len(vid), data.num_samples

    def plan_fn(n):
        return random_plan(n, S, rng) if data.sampling == "random" else uniform_plan(n, S)
    cum, pos, length = line or timeline(data, vid, T)
    if cum is None:
        return RowPlan.of_plan(T, plan_fn(T)), None, None, T
    if T == 1:                                      # two copies of the one row, then the plan
        return RowPlan.of_plan(2, plan_fn(2)).mapped([0, 0]), None, cum, 1
    plan = plan_fn(length)
    if plan.dtype.kind in "iu":                     # only the rows sampled
        return RowPlan.lerp(T, pos[plan] - 1), None, cum, length
    return RowPlan.lerp(T, pos - 1), RowPlan.lerp(length, plan), cum, length


def batch_plan(store, data, items, rows_per_item=None):
    """Plans of a batch of items [(vid, first, second)] over the store's rows: (pre, final).
    final gives the batch's rows, item i at rows i * R ... with R = rows_per_item (padded with
    the store's zero row) or its own length (then every item has the same). pre (None when
    there is none) gives the interpolated intermediate rows of the two-level items, computed
    first into the store's scratch rows: final reads those there, and reads the intermediate
    rows that are copies straight from the video's rows."""
    finals, sources, outputs = [], [], []
    pres, pre_sources, pre_outputs, scratch = [], [], [], 0
    for i, (vid, first, second) in enumerate(items):
        offset = store.rows_of(data, vid)
        length = len((first if second is None else second).a)
        rows = rows_per_item or length
        if second is None:
            finals.append(first)
            sources.append(offset)
        else:
            k = len(first.between)
            pres.append(RowPlan(first.a[first.between], np.arange(k), first.b, first.w0, first.f))
            pre_sources.append(offset)
            pre_outputs.append(scratch)
            where = first.a + offset                       # intermediate j: a row of the video
            where[first.between] = store.scratch_start + scratch + np.arange(k)  # or a computed one
            scratch += k
            finals.append(second.mapped(where))
            sources.append(0)
        outputs.append(i * rows)
        if rows > length:
            finals.append(RowPlan.copies(np.full(rows - length, store.zero_row)))
            sources.append(0)
            outputs.append(0)
    pre = RowPlan.concat(pres, pre_sources, pre_outputs) if pres else None
    return pre, RowPlan.concat(finals, sources, outputs)


def gather_batch(store, plans, shape):
    """The features of a batch plan (pre, final) as a tensor of `shape` on the device."""
    pre, final = plans
    if pre is not None:
        store.fill_scratch(pre)
    return store.gather(final, shape)


# ----------------------------------------------------------------------------- training
class ResidentTargets:
    """A step's targets of every training video, built once when the proposals are set: host
    attention proposals (bbox, count), and on the store's device the video labels and the
    pseudo instance labels (as 0/1 masks: label / row sum, as sampling.pseudo_instance_label
    divides)."""

    def __init__(self, data, device):
        S, rows = data.num_samples, []
        for vid in data.video_names:
            cum, _, length = timeline(data, vid, data.vid_len(vid))
            rows.append(data.item_targets(vid, S, length, cum) + (cum,))
        self.bbox = torch.from_numpy(np.stack([r[0] for r in rows]))           # (V, K, 2)
        self.count = torch.tensor([r[1] for r in rows], dtype=torch.int64)     # (V,)
        mask = np.stack([r[2] > 0 for r in rows])                              # (V, S, C+1)
        self.label_mask = torch.from_numpy(mask).to(device)
        self.video_label = torch.from_numpy(
            np.stack([data.video_labels[vid] for vid in data.video_names])).to(device)
        self.cum = [r[3] for r in rows]
        self.vid_len = torch.tensor([data.vid_len(vid) for vid in data.video_names])

    def select(self, index):
        """The targets of videos `index` (a host list) as the batch dict's entries."""
        where = torch.tensor(index, dtype=torch.int64)
        if self.label_mask.device.type == "cpu":          # numpy: one thread, no barrier waits
            mask = np.take(self.label_mask.numpy(), index, axis=0).astype(np.float32)
            pil = torch.from_numpy(mask / np.maximum(mask.sum(axis=2, keepdims=True), 1e-6))
            on_device = where
        else:
            on_device = where.to(self.label_mask.device, non_blocking=True)
            mask = self.label_mask.index_select(0, on_device).float()          # (B, S, C+1)
            pil = mask / mask.sum(dim=2, keepdim=True).clamp(min=1e-6)
        return {"video_label": self.video_label.index_select(0, on_device),
                "proposal_bbox": self.bbox.index_select(0, where),
                "proposal_count": self.count.index_select(0, where),
                "pseudo_instance_label": pil, "vid_len": self.vid_len.index_select(0, where),
                "cum": [self.cum[i] for i in index]}


class ResidentBatches:
    """The training loader over a feature store: iterates the batch sampler's keys
    [(index, seed)] and yields collate_fn-shaped batches, features and labels on the device."""

    def __init__(self, data, store, batch_sampler):
        self.data, self.store, self.batch_sampler = data, store, batch_sampler
        self.targets = ResidentTargets(data, store.device if store.on_device else "cpu")
        self.lines = {}             # video index -> its timeline (the step's dynamic weights)
        self.fixed = {}             # video index -> its plans when they draw no random number

    def __len__(self):
        return len(self.batch_sampler)

    def __iter__(self):
        for keys in self.batch_sampler:
            yield self.batch(keys)

    def plan(self, keys):
        """Host work of a batch: each item's sampling plan (its own generator), as store rows.
        A video whose sampling draws nothing (at most S rows to sample: interpolated or all
        taken) has the same plan at every epoch of the step: it is planned once."""
        data, items = self.data, []
        for index, seed in keys:
            vid = data.video_names[index]
            if index in self.fixed:
                items.append((vid, *self.fixed[index]))
                continue
            if index not in self.lines:
                self.lines[index] = timeline(data, vid, data.vid_len(vid))
            rng = np.random.default_rng(seed)
            state = rng.bit_generator.state
            first, second, _, _ = item_plan(data, vid, rng, self.lines[index])
            if rng.bit_generator.state == state:
                self.fixed[index] = (first, second)
            items.append((vid, first, second))
        return batch_plan(self.store, data, items), [index for index, _ in keys]

    def batch(self, keys, plan=None):
        (rows, index), data = plan or self.plan(keys), self.data
        with timed("train gather"):
            features = gather_batch(self.store, rows, (len(index), data.num_samples, -1))
        batch = self.targets.select(index)
        if not self.store.on_device:                     # labels gathered on the host: copy once
            batch = {key: value.to(self.store.device, non_blocking=True)
                     if key in ("video_label", "pseudo_instance_label") else value
                     for key, value in batch.items()}
        return {"vid_name": [data.video_names[i] for i in index], "features": features, **batch}


def training_loader(data, batch_sampler, args, worker_seeds):
    """The training batches: ResidentBatches when the dataset has a feature store, else a
    DataLoader over the dataset (disk reads, `num_workers` workers)."""
    store = store_of(data)
    if store is not None:
        return ResidentBatches(data, store, batch_sampler)
    from dataset import collate_fn
    from engine.seeding import seed_worker
    return DataLoader(data, batch_sampler=batch_sampler, num_workers=args.num_workers,
                      collate_fn=collate_fn, worker_init_fn=seed_worker, generator=worker_seeds,
                      pin_memory=args.device.startswith("cuda"),
                      persistent_workers=args.num_workers > 0)


# ----------------------------------------------------------------------------- evaluation
_EVAL_PLANS = weakref.WeakKeyDictionary()     # dataset -> (proposals, weights, {vid: plan})


def eval_item(data, vid):
    """(first, second, cum, bbox, count, rows) of a uniformly sampled video, cached per dataset
    until its proposals or weights change."""
    cached = _EVAL_PLANS.get(data)
    if cached is None or cached[0] is not data.pseudo_results or cached[1] is not data.weights:
        cached = _EVAL_PLANS[data] = (data.pseudo_results, data.weights, {})
    if vid not in cached[2]:
        first, second, cum, length = item_plan(data, vid)
        rows = len((second or first).a)
        bbox, count, _ = data.item_targets(vid, rows, length, cum, labels=False)
        cached[2][vid] = (first, second, cum, bbox, count, rows)
    return cached[2][vid]


def buckets(lengths, max_rows):
    """Batches of positions into `lengths`: sorted by length, each batch as many videos as fit
    in max_rows padded rows (at least one)."""
    order = np.argsort(np.asarray(lengths), kind="stable")
    out, current = [], []
    for position in order.tolist():
        if current and (len(current) + 1) * lengths[position] > max_rows:
            out.append(current)
            current = []
        current.append(position)
    return out + ([current] if current else [])


def eval_batches(data, indices, args, phase="eval"):
    """Batches of the videos `indices` of a uniformly sampled dataset, padded and bucketed by
    length: dicts with features (B, L, D), lengths (B,), the attention proposals, vid_name,
    vid_len and cum (the proposals' timeline). The gather from the store is the named part
    "{phase} gather"."""
    store = store_of(data)
    items = [eval_item(data, data.video_names[i]) for i in indices]
    groups = buckets([item[5] for item in items], args.eval_batch_rows)
    if store is None:
        loader = DataLoader(Subset(data, indices), batch_sampler=groups, collate_fn=pad_collate,
                            num_workers=args.num_workers, generator=make_generator(0),
                            pin_memory=args.device.startswith("cuda"))
        yield from loader
        return
    for group in groups:
        chosen = [items[position] for position in group]
        length = max(item[5] for item in chosen)
        vids = [data.video_names[indices[position]] for position in group]
        plans = batch_plan(store, data, [(vid, item[0], item[1])
                                         for vid, item in zip(vids, chosen)], length)
        with timed(f"{phase} gather"):
            features = gather_batch(store, plans, (len(group), length, -1))
        yield {"vid_name": vids, "features": features,
               "lengths": torch.tensor([item[5] for item in chosen]),
               "proposal_bbox": torch.from_numpy(np.stack([item[3] for item in chosen])),
               "proposal_count": torch.tensor([item[4] for item in chosen]),
               "vid_len": torch.tensor([data.vid_len(vid) for vid in vids]),
               "cum": [item[2] for item in chosen]}


def pad_collate(items):
    """Items of different lengths as one batch padded with zero rows, with their lengths (in a
    DataLoader worker the features go straight into shared memory)."""
    lengths = [item["features"].shape[0] for item in items]
    first = items[0]["features"]
    shape = (len(items), max(lengths), first.shape[1])
    if torch.utils.data.get_worker_info() is not None:
        storage = first._typed_storage()._new_shared(int(np.prod(shape)), device=first.device)
        features = first.new(storage).resize_(*shape).zero_()
    else:
        features = first.new_zeros(shape)
    for row, item in zip(features, items):
        row[:item["features"].shape[0]] = item["features"]
    return {"vid_name": [item["vid_name"] for item in items], "features": features,
            "lengths": torch.tensor(lengths),
            "proposal_bbox": torch.stack([item["proposal_bbox"] for item in items]),
            "proposal_count": torch.stack([item["proposal_count"] for item in items]),
            "vid_len": torch.tensor([item["vid_len"] for item in items]),
            "cum": [item["cum"] for item in items]}
