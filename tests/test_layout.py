"""engine/layout.py: the host layout (proposal_layout, interval arithmetic on the proposals'
host copy) equals the device packing (model.py's intra_packing on the membership tensor) and the
proposal count the inter-segment attention reads, for every packing, on random and hand-made
proposals."""
import numpy as np
import pytest
import torch

from engine.layout import proposal_layout
from model import intra_packing, proposal_membership


def device_layout(bbox, count, T, packing):
    member, valid = proposal_membership(bbox, count, T)
    covered = member.any(dim=2)
    sel = covered.reshape(-1).nonzero().squeeze(1)
    slot, groups = intra_packing(member, covered, sel, packing)
    k_max = int(valid.sum(dim=1).max()) if valid.numel() else 0
    return k_max, sel, slot, groups


def random_spans(B, T, K, seed):
    """Spans that nest, overlap, touch, sit outside 0..T-1 or are empty (end < start)."""
    g = torch.Generator().manual_seed(seed)
    start = torch.randint(-2, T + 2, (B, K), generator=g)
    end = start + torch.randint(-1, max(T // 3, 2), (B, K), generator=g)
    count = torch.randint(0, K + 1, (B,), generator=g)
    count[0] = 0
    return torch.stack([start, end], dim=2), count


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("packing", ["auto", "run", "video"])
def test_host_layout_equals_device_packing(seed, packing):
    B, T, K = 4 + seed % 3, 13 + 7 * seed, 1 + 2 * seed
    bbox, count = random_spans(B, T, K, seed)
    host = proposal_layout(bbox.numpy(), count.numpy(), T, packing)
    k_max, sel, slot, groups = device_layout(bbox, count, T, packing)
    assert host.k_max == k_max and host.groups == groups
    assert torch.equal(host.sel, sel) and torch.equal(host.slot, slot)


def test_host_layout_hand_case():
    # one video, T = 10: [0, 2] and [2, 3] overlap (one run of 4), [5, 5] alone, [7, 8] alone;
    # a second video without proposals
    bbox = torch.tensor([[[0, 2], [2, 3], [5, 5], [7, 8]], [[0, 9], [0, 0], [0, 0], [0, 0]]])
    layout = proposal_layout(bbox.numpy(), np.array([4, 0]), 10, "auto")
    assert layout.k_max == 4
    assert layout.sel.tolist() == [0, 1, 2, 3, 5, 7, 8]
    # runs of length 1, 2, 4 in length classes 0, 1, 2: cost 1 + 4 + 16 < 2 x 7^2
    assert layout.groups == [(0, 1, 1), (1, 1, 2), (3, 1, 4)]
    assert layout.slot.tolist() == [3, 4, 5, 6, 0, 1, 2]
    video = proposal_layout(bbox.numpy(), np.array([4, 0]), 10, "video")
    assert video.groups == [(0, 2, 7)] and video.slot.tolist() == list(range(7))
    empty = proposal_layout(bbox.numpy(), np.array([0, 0]), 10, "auto")
    assert empty.k_max == 0 and empty.sel.numel() == 0 and empty.groups == [(0, 2, 0)]
