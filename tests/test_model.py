"""model.py: released state_dict layout, masks vs a loop oracle (tests/oracles/model_loop.py),
identity start, NaN safety, fast segment attention == dense released-style attention (outputs and
gradients)."""
import copy
import math

import pytest
import torch

import config
from losses import ASMLocLoss
from model import (ASMLoc, ASMLocBase, attention_masks, intra_packing, proposal_membership,
                   segment_attention)
from oracles.model_loop import loop_attention, loop_masks, loop_runs, masked_attention


def random_proposals(B, T, K, generator):
    """Nested, overlapping, touching and single-snippet spans; counts include 0 and K."""
    start = torch.randint(0, T, (B, K), generator=generator)
    end = (start + torch.randint(0, T // 3, (B, K), generator=generator)).clamp(max=T - 1)
    bbox = torch.stack([start, end], dim=-1)                             # (B, K, 2)
    bbox[0, 1] = torch.tensor([bbox[0, 0, 0], bbox[0, 0, 0]])          # nested in proposal 0
    count = torch.randint(0, K + 1, (B,), generator=generator)
    count[0], count[1], count[2] = K, 0, 1
    return bbox, count


def expected_keys(D, C, embed_index, full):
    keys = {f"feature_embedding.{embed_index}.weight": (D, D, 3),
            f"feature_embedding.{embed_index}.bias": (D,),
            "att_branch.weight": (2, D, 1), "att_branch.bias": (2,),
            "snippet_cls.weight": (C + 1, D), "snippet_cls.bias": (C + 1,)}
    if full:
        for block in ("MHSA_Intra", "MHSA_Inter"):
            for conv in ("conv_query", "conv_key", "conv_value", "conv_out"):
                keys[f"{block}.{conv}.weight"] = (D, D, 1)
                keys[f"{block}.{conv}.bias"] = (D,)
            for name in ("weight", "bias", "running_mean", "running_var"):
                keys[f"{block}.bn.{name}"] = (D,)
            keys[f"{block}.bn.num_batches_tracked"] = ()
        keys["uncertainty_branch.weight"] = (1, D, 1)
    return keys


@pytest.mark.parametrize("dataset,classes,embed_index",
                         [("THUMOS", 20, 0), ("ActivityNet", 200, 1)])
@pytest.mark.parametrize("model_cls", [ASMLocBase, ASMLoc])
def test_state_dict_matches_released_layout(dataset, classes, embed_index, model_cls):
    args = config.build_args(dataset, ["--device", "cpu"])
    with torch.device("meta"):  # shapes only; no 2048 x 2048 weights allocated
        model = model_cls.from_config(args)
    got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert got == expected_keys(2048, classes, embed_index, model_cls is ASMLoc)


def test_ablation_switches_drop_modules(small_args):
    args = small_args("THUMOS", "--use_intra_attention", "false", "--use_uncertainty", "false")
    model = ASMLoc.from_config(args)
    keys = model.state_dict().keys()
    assert not any(k.startswith("MHSA_Intra") for k in keys)
    assert "uncertainty_branch.weight" not in keys
    assert any(k.startswith("MHSA_Inter") for k in keys)
    out = model(torch.randn(2, 10, 32), torch.tensor([[[1, 4]], [[0, 9]]]), torch.tensor([1, 1]))
    assert out.uncertainty is None


def test_masks_equal_loop_version():
    generator = torch.Generator().manual_seed(0)
    for T, K in ((1, 1), (7, 3), (30, 9)):
        bbox, count = (random_proposals(4, T, K, generator) if T > 1 else
                       (torch.zeros(4, 1, 2, dtype=torch.long), torch.tensor([1, 0, 1, 0])))
        member, valid = proposal_membership(bbox, count, T)
        intra, inter = attention_masks(member, valid)
        ref_member, ref_intra, ref_inter = loop_masks(bbox, count, T)
        assert torch.equal(member, ref_member) and torch.equal(intra, ref_intra)
        assert torch.equal(inter, ref_inter)


def test_shapes_and_topk_pooling(small_args):
    args = small_args()
    model = ASMLocBase.from_config(args).eval()
    features = torch.randn(2, 5, 32)
    out = model(features)
    assert out.fg_cls.shape == (2, 21) and out.temp_att.shape == (2, 5, 2)
    assert out.cas.shape == (2, 5, 21)
    assert out.uncertainty is None
    # T // fg_topk_seg = 0 -> k = 1: fg_cls is the softmax of the per-class max
    emb = model.embed(features)
    logits = model.snippet_cls(emb)
    att = torch.softmax(model.att_branch(emb.transpose(1, 2)).transpose(1, 2), dim=2)
    fg = logits * att[:, :, :1]
    torch.testing.assert_close(out.fg_cls, torch.softmax(fg.max(dim=1).values, dim=1))
    torch.testing.assert_close(out.fg_cls.sum(dim=1), torch.ones(2))


@pytest.mark.parametrize("train", [True, False])
def test_attention_blocks_are_identity_at_init(train, small_args):
    model = ASMLoc.from_config(small_args()).train(train)
    x = torch.randn(3, 20, 32)
    bbox, count = random_proposals(3, 20, 5, torch.Generator().manual_seed(1))
    member, valid = proposal_membership(bbox, count, 20)
    intra, inter = attention_masks(member, valid)
    for block in (model.MHSA_Intra, model.MHSA_Inter):
        extra = (member, valid) if block is model.MHSA_Inter else (member,)
        torch.testing.assert_close(block.forward_fast(x, *extra), x, rtol=0, atol=0)
    torch.testing.assert_close(model.MHSA_Intra.forward_dense(x, intra), x, rtol=0, atol=0)
    torch.testing.assert_close(model.MHSA_Inter.forward_dense(x, member, inter), x, rtol=0, atol=0)


def randomise_bn(model, generator):
    """A trained-like state: attention blocks are no longer the identity."""
    with torch.no_grad():
        for block in (model.MHSA_Intra, model.MHSA_Inter):
            block.bn.weight.copy_(torch.randn(block.bn.weight.shape, generator=generator))
            block.bn.bias.copy_(torch.randn(block.bn.bias.shape, generator=generator))
            block.bn.running_var.uniform_(0.5, 2.0, generator=generator)


@pytest.mark.parametrize("fast", [True, False])
def test_no_nan_with_empty_proposals(fast, small_args):
    model = ASMLoc.from_config(small_args()).train()
    randomise_bn(model, torch.Generator().manual_seed(0))
    model.fast_attention = fast
    features = torch.randn(2, 12, 32)
    empty = (torch.zeros(2, 4, 2, dtype=torch.long), torch.zeros(2, dtype=torch.long))
    for bbox, count in (empty, (None, None)):
        model.zero_grad()
        out = model(features, bbox, count)
        sum(o.sum() for o in out).backward()
        assert all(torch.isfinite(o).all() for o in out)
        assert all(torch.isfinite(p.grad).all() for p in model.parameters())


def run_and_grad(model, features, bbox, count, dense_oracle):
    model.zero_grad()
    torch.manual_seed(3)
    if dense_oracle:
        out = model.forward_masks(features, *loop_masks(bbox, count, features.shape[1]))
    else:
        out = model(features, bbox, count)
    weights = torch.Generator().manual_seed(9)
    loss = sum((o * torch.randn(o.shape, generator=weights, dtype=o.dtype)).sum() for o in out)
    loss.backward()
    return out, {n: p.grad.clone() for n, p in model.named_parameters()}, model.state_dict()


@pytest.mark.parametrize("packing", ["video", "run"])
@pytest.mark.parametrize("dataset", ["THUMOS", "ActivityNet"])
@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_fast_path_equals_dense_oracle(dataset, train, dtype, packing, small_args):
    # Both paths compute the same sums in other orders and groupings. A sum of n terms is off by
    # at most n*u times the sum of |terms| (u = eps/2, the unit roundoff); the longest sums here
    # run over the B*T = 120 snippets (BatchNorm statistics, weight gradients), and the forward
    # plus backward pass chains about 16 such layers, whose first-order errors add. The q/k
    # weights are scaled by 3 below, so attention logits and their rounding errors are 9x
    # larger, and a softmax turns an absolute logit error into a relative output error.
    # tol = 9 * 16 * 120 * u, relative to the largest magnitude: 1.0e-3 in float32 (seen:
    # up to 7.6e-5 over 48 seeds/configs), 1.9e-12 in float64 (seen: 5.8e-14), the exact check.
    tol = 9 * 16 * 120 * torch.finfo(dtype).eps / 2
    torch.manual_seed(4)               # the model's initial weights: the same alone or in the suite
    generator = torch.Generator().manual_seed(4)
    model = ASMLoc.from_config(small_args(dataset)).to(dtype).train(train)
    randomise_bn(model, generator)
    with torch.no_grad():  # larger q/k weights, so the attention is far from uniform
        for p in model.parameters():
            if p.dim() == 3 and p.shape[0] == p.shape[1]:
                p.mul_(3.0)
    dense = copy.deepcopy(model)
    model.MHSA_Intra.packing = packing
    features = torch.randn(4, 30, 32, generator=generator, dtype=dtype)
    bbox, count = random_proposals(4, 30, 9, generator)
    out_f, grad_f, state_f = run_and_grad(model, features, bbox, count, dense_oracle=False)
    out_d, grad_d, state_d = run_and_grad(dense, features, bbox, count, dense_oracle=True)

    def close(a, b):
        assert (a - b).abs().max() <= tol * max(b.abs().max().item(), 1.0)
    for a, b in zip(out_f, out_d):
        close(a, b)
    for name in grad_d:
        close(grad_f[name], grad_d[name])
    for name in state_d:  # BN running statistics see the same batch
        close(state_f[name].to(dtype), state_d[name].to(dtype))


@pytest.mark.parametrize("seed", range(6))
def test_intra_packing_equals_loop_runs(seed):
    generator = torch.Generator().manual_seed(seed)
    B, T, K = 5, 40, 7
    bbox, count = random_proposals(B, T, K, generator)
    if seed == 0:       # touching but not overlapping: two runs; a one-snippet proposal: a run of 1
        bbox[3, :3] = torch.tensor([[2, 6], [7, 9], [20, 20]])
        count[3] = 3
    member, _ = proposal_membership(bbox, count, T)
    covered = member.any(dim=2)
    sel = covered.reshape(-1).nonzero().squeeze(1)
    runs = loop_runs(bbox, count, T)
    for packing in ("video", "run", "auto"):
        slot, groups = intra_packing(member, covered, sel, packing)
        assert len(set(slot.tolist())) == len(sel)                    # one slot per covered snippet
        row_of = {}                                                   # slot -> (group, row, column)
        for g, (offset, rows, length) in enumerate(groups):
            for i in range(rows * length):
                row_of[offset + i] = (g, i // length, i % length)
        where = {int(index): row_of[int(s)] for index, s in zip(sel, slot)}
        videos = [(b, [t for t in range(T) if covered[b, t]]) for b in range(B)]
        units = runs if packing == "run" else [(b, snippets) for b, snippets in videos if snippets]
        if packing == "auto":
            video_cost = B * max(len(snippets) for _, snippets in units) ** 2
            classes = {}
            for _, snippets in runs:
                j = math.ceil(math.log2(len(snippets)))
                classes[j] = classes.get(j, []) + [len(snippets)]
            run_cost = sum(len(lengths) * max(lengths) ** 2 for lengths in classes.values())
            if run_cost < video_cost:
                units = runs
        for b, snippets in units:                                   # a unit fills one row, in order
            cells = [where[b * T + t] for t in snippets]
            assert len({cell[:2] for cell in cells}) == 1
            assert [cell[2] for cell in cells] == list(range(len(snippets)))
        # no two units share a row
        assert len({where[b * T + s[0]][:2] for b, s in units}) == len(units)
        if packing == "run":      # a group: run lengths in (2^(j-1), 2^j], row length = the longest
            lengths = {}
            for b, snippets in runs:
                lengths.setdefault(where[b * T + snippets[0]][0], []).append(len(snippets))
            for g, (_, rows, length) in enumerate(groups):
                assert rows == len(lengths[g]) and length == max(lengths[g])
                assert math.ceil(math.log2(min(lengths[g]))) == math.ceil(math.log2(length))


def test_intra_packing_hand_case():
    # one video, T = 10: proposals [0, 2] and [2, 3] overlap (one run of 4), [5, 5] alone,
    # [7, 8] alone
    bbox = torch.tensor([[[0, 2], [2, 3], [5, 5], [7, 8]]])
    member, _ = proposal_membership(bbox, torch.tensor([4]), 10)
    covered = member.any(dim=2)
    sel = covered.reshape(-1).nonzero().squeeze(1)
    assert sel.tolist() == [0, 1, 2, 3, 5, 7, 8]
    slot, groups = intra_packing(member, covered, sel, "run")
    # classes: length 4 -> 2^2, length 1 -> 2^0, length 2 -> 2^1; groups in class order
    assert groups == [(0, 1, 1), (1, 1, 2), (3, 1, 4)]
    assert slot.tolist() == [3, 4, 5, 6, 0, 1, 2]
    slot, groups = intra_packing(member, covered, sel, "video")
    assert groups == [(0, 1, 7)] and slot.tolist() == list(range(7))
    # cost: runs 1 + 4 + 16 = 21 < one video row 7^2 = 49
    assert intra_packing(member, covered, sel, "auto")[1] == [(0, 1, 1), (1, 1, 2), (3, 1, 4)]


def test_gradients_reach_parameters(small_args):
    """Every parameter gets a gradient, except two biases that cannot influence a training loss:
    conv_key.bias (adds a per-query constant to the logits; softmax ignores it) and
    conv_out.bias (a per-channel constant that training-mode BatchNorm subtracts again)."""
    args = small_args()
    model = ASMLoc.from_config(args).double().train()
    features = torch.randn(4, 24, 32, dtype=torch.float64)
    bbox, count = random_proposals(4, 24, 6, torch.Generator().manual_seed(2))
    label = torch.zeros(4, 20, dtype=torch.float64)
    label[:, 3] = 1.0
    pseudo = torch.softmax(torch.randn(4, 24, 21, dtype=torch.float64), dim=2)
    # at initialisation the blocks are the identity (BN weight 0): only bn.weight / bn.bias
    # get gradient inside them; the q/k/v/out convolutions get exactly zero
    ASMLocLoss.from_config(args)(label, model(features, bbox, count), pseudo)[0].backward()
    for name, p in model.named_parameters():
        if name.startswith("MHSA_") and ".conv_" in name:
            assert torch.count_nonzero(p.grad) == 0, name
        else:
            assert p.grad.abs().max() > 0, name
    model.zero_grad()
    randomise_bn(model, torch.Generator().manual_seed(5))
    ASMLocLoss.from_config(args)(label, model(features, bbox, count), pseudo)[0].backward()
    for name, p in model.named_parameters():
        if name.endswith(("conv_key.bias", "conv_out.bias")):
            assert p.grad.abs().max() < 1e-12, name
        else:
            assert p.grad.abs().max() > 1e-6, name


def test_uncertainty_init_and_no_pseudo_loss_gradient(small_args):
    args = small_args("THUMOS", "--use_pseudo_instance_loss", "false")
    model = ASMLoc.from_config(args)
    assert model.uncertainty_branch.bias is None
    assert model.uncertainty_branch.weight.abs().max() < 1e-3
    out = model(torch.randn(2, 10, 32), torch.tensor([[[0, 4]], [[2, 9]]]), torch.tensor([1, 1]))
    loss, _ = ASMLocLoss.from_config(args)(torch.eye(20)[:2], out)
    loss.backward()
    assert model.uncertainty_branch.weight.grad is None  # only the pseudo instance loss trains it


def test_fast_path_runs_under_autocast(small_args):
    """--amp uses bf16 autocast: mixed dtypes must not break the index_copy packing."""
    model = ASMLoc.from_config(small_args()).train()
    bbox, count = random_proposals(3, 20, 5, torch.Generator().manual_seed(6))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(torch.randn(3, 20, 32), bbox, count)
    sum(o.float().sum() for o in out).backward()
    assert all(torch.isfinite(o.float()).all() for o in out)


# ----------------------------------------------------------------------------- fused attention
def attention_case(generator, dtype, B=3, h=2, T=11, dh=4, kind="proposals"):
    """Random q/k/v and a mask with empty rows, fully covered rows and single-snippet proposals."""
    q, k, v = (3 * torch.randn(B, h, T, dh, generator=generator, dtype=dtype) for _ in range(3))
    if kind == "proposals":
        bbox, count = random_proposals(B, T, 4, generator)
        bbox[0, 2] = torch.tensor([0, T - 1])                      # covers every snippet of video 0
        bbox[0, 3] = torch.tensor([5, 5])                          # single snippet
        member, valid = proposal_membership(bbox, count, T)
        mask = attention_masks(member, valid)[0]                   # (B, T, T); video 1 all empty
    else:  # unstructured, including non-square (Nq != Nk) masks
        k, v = k[:, :, :T - 3], v[:, :, :T - 3]
        mask = torch.rand(B, T, T - 3, generator=generator) < 0.4
        mask[0, 0] = False
        mask[0, 1] = True
    return [t.requires_grad_() for t in (q, k, v)], mask


def attention_and_grads(fn, q, k, v, mask, scale, upstream):
    out = fn(q, k, v, mask, scale)
    grads = torch.autograd.grad((out * upstream).sum(), (q, k, v))
    return [out.detach(), *grads]


@pytest.mark.parametrize("kind", ["proposals", "random"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_segment_attention_equals_loop_oracle(kind, dtype):
    generator = torch.Generator().manual_seed(11)
    (q, k, v), mask = attention_case(generator, dtype, kind=kind)
    assert (~mask.any(-1)).any() and mask.all(-1).any()                # empty and full rows present
    scale = q.shape[-1] ** -0.5
    upstream = torch.randn(q.shape, generator=generator, dtype=dtype)
    fused = attention_and_grads(segment_attention, q, k, v, mask, scale, upstream)
    for oracle in (loop_attention, masked_attention):
        expected = attention_and_grads(oracle, q, k, v, mask, scale, upstream)
        # float32: a row mixes Nk <= 11 values after a dh = 4 term dot product, inputs of size ~3
        # with logits up to ~30: relative rounding of a few (Nk + dh) eps per result; 8x margin
        tol = 1e-10 if dtype == torch.float64 else 8 * (11 + 4) * 2.0 ** -23
        for got, want in zip(fused, expected):
            assert torch.isfinite(got).all()
            assert (got - want).abs().max() <= tol * max(want.abs().max().item(), 1.0)
    empty = ~mask.any(-1)                                               # (B, Nq)
    assert torch.count_nonzero(fused[0].transpose(1, 2)[empty]) == 0    # empty rows give 0 ...
    assert torch.count_nonzero(fused[1].transpose(1, 2)[empty]) == 0    # ... and pass no gradient


def test_segment_attention_hand_case():
    """One head, dh = 1, scale 1: q = 1, keys 0 and ln 3 -> weights 1/4, 3/4 over values 1 and 5."""
    q = torch.ones(1, 1, 3, 1, dtype=torch.float64)
    k = torch.tensor([0.0, math.log(3.0)], dtype=torch.float64).view(1, 1, 2, 1)
    v = torch.tensor([1.0, 5.0], dtype=torch.float64).view(1, 1, 2, 1)
    mask = torch.tensor([[[True, True], [True, False], [False, False]]])
    out = segment_attention(q, k, v, mask, 1.0).flatten()
    torch.testing.assert_close(out, torch.tensor([4.0, 1.0, 0.0], dtype=torch.float64), rtol=0,
                               atol=1e-12)


def test_segment_attention_all_empty_no_nan():
    q, k, v = (torch.randn(2, 2, 5, 4, requires_grad=True) for _ in range(3))
    out = segment_attention(q, k, v, torch.zeros(2, 5, 5, dtype=torch.bool), 0.5)
    out.sum().backward()
    assert torch.count_nonzero(out) == 0
    assert all(t.grad is not None and torch.count_nonzero(t.grad) == 0 for t in (q, k, v))
