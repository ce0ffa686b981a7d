"""The full model's proposal layout computed on the host (docs/method.md §4-5): where
intra-segment attention packs each snippet, and how many proposals inter-segment attention runs
over.

model.py:intra_packing computes the packing on the device from the membership tensor; sizing the
packed buffers then needs the data on the host (a few syncs per forward). `proposal_layout`
computes the same packing, and the proposal count, on the host from the host copies of
proposal_bbox and proposal_count (which come from the host anyway: the dataset's targets), so a
forward given the layout makes no host sync. Both give the same slots and groups
(tests/test_layout.py).
"""
from typing import NamedTuple

import numpy as np
import torch


def model_layout(model, proposal_bbox, proposal_count, T):
    """The layout `model`'s forward takes for host proposal_bbox (B, K, 2) / proposal_count (B,)
    tensors and T rows: a ProposalLayout for the full model's fast path, else None (the base
    model and the dense path need none). A DDP wrapper is looked through."""
    model = getattr(model, "module", model)
    if not getattr(model, "fast_attention", False):
        return None
    intra = getattr(model, "MHSA_Intra", None)
    packing = intra.packing if intra is not None else "video"
    return proposal_layout(proposal_bbox.numpy(), proposal_count.numpy(), T, packing)


class ProposalLayout(NamedTuple):
    """The proposal-dependent sizes of one batch, computed on the host (proposal_layout)."""
    k_max: int              # proposals inter-segment attention runs over (max count of the batch)
    sel: torch.Tensor       # (n,) int64 flat indices b * T + t of the covered snippets
    slot: torch.Tensor      # (n,) int64 slot of each covered snippet in the packed buffer
    groups: list            # [(first slot, rows, row length)], one attention call each

    def to(self, device):
        return self._replace(sel=self.sel.to(device, non_blocking=True),
                             slot=self.slot.to(device, non_blocking=True))


def proposal_layout(proposal_bbox, proposal_count, T, packing="auto"):
    """ProposalLayout of a batch from host arrays: proposal_bbox (B, K, 2) int, proposal_count
    (B,) int, T rows per video. The arithmetic of proposal_membership + intra_packing on
    intervals instead of the (B, T, K) membership: snippet t is covered when some valid proposal
    k (k < count) has start <= t <= end, and t-1, t are joined when one has start <= t-1 and
    t <= end."""
    bbox = np.asarray(proposal_bbox, dtype=np.int64)
    count = np.asarray(proposal_count, dtype=np.int64).reshape(-1)
    B, K = bbox.shape[:2]
    valid = np.arange(K)[None, :] < count[:, None]                      # (B, K)
    k_max = int(valid.sum(axis=1).max()) if valid.size else 0
    lo, hi = np.maximum(bbox[..., 0], 0), np.minimum(bbox[..., 1], T - 1)  # (B, K) inside 0..T-1
    video = np.broadcast_to(np.arange(B)[:, None], (B, K))

    def spans(first, last, keep):      # (B, T) count of the kept intervals [first, last] over t
        keep = keep & (first <= last)
        diff = np.bincount((video * (T + 1) + first)[keep], minlength=B * (T + 1)) \
            - np.bincount((video * (T + 1) + last + 1)[keep], minlength=B * (T + 1))
        return np.cumsum(diff.reshape(B, T + 1), axis=1)[:, :T] > 0
    covered = spans(lo, hi, valid)                                      # (B, T)
    sel = np.flatnonzero(covered)                                       # (n,)
    n = len(sel)
    n_max = int(covered.sum(axis=1).max()) if B else 0
    video_cost = B * n_max ** 2
    if packing != "video" and n:
        joined = spans(lo + 1, hi, valid)                               # t-1 and t share one
        starts = covered & ~joined
        run = np.cumsum(starts.reshape(-1))[sel] - 1                    # (n,) run of each snippet
        lengths = np.bincount(run)                                      # (R,)
        position = np.arange(n) - (np.cumsum(lengths) - lengths)[run]
        length_class = np.ceil(np.log2(lengths.astype(np.float64))).astype(np.int64)
        by_class = [np.flatnonzero(length_class == j) for j in np.unique(length_class)]
        longest = [int(lengths[ids].max()) for ids in by_class]
        run_cost = sum(len(ids) * length ** 2 for ids, length in zip(by_class, longest))
        if packing == "run" or (packing == "auto" and run_cost < video_cost):
            row_of_run = np.empty_like(lengths)
            groups, offset = [], 0
            for ids, length in zip(by_class, longest):
                row_of_run[ids] = offset + np.arange(len(ids)) * length
                groups.append((offset, len(ids), length))
                offset += len(ids) * length
            return ProposalLayout(k_max, torch.from_numpy(sel),
                                  torch.from_numpy(row_of_run[run] + position), groups)
    rank = (np.cumsum(covered, axis=1) - 1).reshape(-1)[sel]
    return ProposalLayout(k_max, torch.from_numpy(sel),
                          torch.from_numpy((sel // T) * n_max + rank), [(0, B, n_max)])
