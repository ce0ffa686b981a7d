"""Model tests: released state_dict layout, masks vs a loop oracle, identity start, NaN safety,
fast segment attention == dense released-style attention (outputs and gradients)."""
import copy

import pytest
import torch

import config
from losses import ASMLocLoss
from model import ASMLoc, ASMLocBase, attention_masks, proposal_membership


def small_args(dataset="THUMOS", *extra):
    return config.build_args(dataset, ["--feature_dim", "32", "--num_heads", "8", "--device", "cpu", *extra])


def loop_masks(bbox, count, T):
    """Reference masks written from SPEC section 5 with plain loops."""
    B, K, _ = bbox.shape
    member = torch.zeros(B, T, K, dtype=torch.bool)
    intra = torch.zeros(B, T, T, dtype=torch.bool)
    inter = torch.zeros(B, K, K, dtype=torch.bool)
    for b in range(B):
        for k in range(int(count[b])):
            s, e = int(bbox[b, k, 0]), int(bbox[b, k, 1])
            for t in range(s, e + 1):
                member[b, t, k] = True
                for u in range(s, e + 1):
                    intra[b, t, u] = True
        inter[b, :int(count[b]), :int(count[b])] = True
    return member, intra, inter


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
    keys = {f"feature_embedding.{embed_index}.weight": (D, D, 3), f"feature_embedding.{embed_index}.bias": (D,),
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


@pytest.mark.parametrize("dataset,classes,embed_index", [("THUMOS", 20, 0), ("ActivityNet", 200, 1)])
@pytest.mark.parametrize("model_cls", [ASMLocBase, ASMLoc])
def test_state_dict_matches_released_layout(dataset, classes, embed_index, model_cls):
    args = config.build_args(dataset, ["--device", "cpu"])
    with torch.device("meta"):  # shapes only; no 2048 x 2048 weights allocated
        model = model_cls(args)
    got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert got == expected_keys(2048, classes, embed_index, model_cls is ASMLoc)


def test_ablation_switches_drop_modules():
    args = small_args("THUMOS", "--use_intra_attention", "false", "--use_uncertainty", "false")
    model = ASMLoc(args)
    keys = model.state_dict().keys()
    assert not any(k.startswith("MHSA_Intra") for k in keys) and "uncertainty_branch.weight" not in keys
    assert any(k.startswith("MHSA_Inter") for k in keys)
    out = model(torch.randn(2, 10, 32), torch.tensor([[[1, 4]], [[0, 9]]]), torch.tensor([1, 1]))
    assert out.uncertainty is None


def test_masks_equal_loop_version():
    generator = torch.Generator().manual_seed(0)
    for T, K in ((1, 1), (7, 3), (30, 9)):
        bbox, count = random_proposals(4, T, K, generator) if T > 1 else (torch.zeros(4, 1, 2, dtype=torch.long),
                                                                          torch.tensor([1, 0, 1, 0]))
        member, valid = proposal_membership(bbox, count, T)
        intra, inter = attention_masks(member, valid)
        ref_member, ref_intra, ref_inter = loop_masks(bbox, count, T)
        assert torch.equal(member, ref_member) and torch.equal(intra, ref_intra) and torch.equal(inter, ref_inter)


def test_shapes_and_topk_pooling():
    args = small_args()
    model = ASMLocBase(args).eval()
    features = torch.randn(2, 5, 32)
    out = model(features)
    assert out.fg_cls.shape == (2, 21) and out.temp_att.shape == (2, 5, 2) and out.cas.shape == (2, 5, 21)
    assert out.uncertainty is None
    # T // fg_topk_seg = 0 -> k = 1: fg_cls is the softmax of the per-class max
    emb = model.embed(features)
    logits = model.snippet_cls(emb)
    fg = logits * torch.softmax(model.att_branch(emb.transpose(1, 2)).transpose(1, 2), dim=2)[:, :, :1]
    torch.testing.assert_close(out.fg_cls, torch.softmax(fg.max(dim=1).values, dim=1))
    torch.testing.assert_close(out.fg_cls.sum(dim=1), torch.ones(2))


@pytest.mark.parametrize("train", [True, False])
def test_attention_blocks_are_identity_at_init(train):
    model = ASMLoc(small_args()).train(train)
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
def test_no_nan_with_empty_proposals(fast):
    model = ASMLoc(small_args()).train()
    randomise_bn(model, torch.Generator().manual_seed(0))
    model.fast_attention = fast
    features = torch.randn(2, 12, 32)
    for bbox, count in ((torch.zeros(2, 4, 2, dtype=torch.long), torch.zeros(2, dtype=torch.long)), (None, None)):
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


@pytest.mark.parametrize("dataset", ["THUMOS", "ActivityNet"])
@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_fast_path_equals_dense_oracle(dataset, train, dtype):
    # Both paths compute the same sums in other orders and groupings. A sum of n terms is off by
    # at most n*u times the sum of |terms| (u = eps/2, the unit roundoff); the longest sums here
    # run over the B*T = 120 snippets (BatchNorm statistics, weight gradients), and the forward
    # plus backward pass chains about 16 such layers, whose first-order errors add. The q/k
    # weights are scaled by 3 below, so attention logits and their rounding errors are 9x
    # larger, and a softmax turns an absolute logit error into a relative output error.
    # tol = 9 * 16 * 120 * u, relative to the largest magnitude: 1.0e-3 in float32 (seen:
    # up to 7.6e-5 over 48 seeds/configs), 1.9e-12 in float64 (seen: 5.8e-14), the exact check.
    tol = 9 * 16 * 120 * torch.finfo(dtype).eps / 2
    torch.manual_seed(4)                   # the model's initial weights: the same alone or in the suite
    generator = torch.Generator().manual_seed(4)
    model = ASMLoc(small_args(dataset)).to(dtype).train(train)
    randomise_bn(model, generator)
    with torch.no_grad():  # larger q/k weights, so the attention is far from uniform
        for p in model.parameters():
            if p.dim() == 3 and p.shape[0] == p.shape[1]:
                p.mul_(3.0)
    dense = copy.deepcopy(model)
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


def test_gradients_reach_parameters():
    """Every parameter gets a gradient, except two biases that cannot influence a training loss:
    conv_key.bias (adds a per-query constant to the logits; softmax ignores it) and
    conv_out.bias (a per-channel constant that training-mode BatchNorm subtracts again)."""
    args = small_args()
    model = ASMLoc(args).double().train()
    features = torch.randn(4, 24, 32, dtype=torch.float64)
    bbox, count = random_proposals(4, 24, 6, torch.Generator().manual_seed(2))
    label = torch.zeros(4, 20, dtype=torch.float64)
    label[:, 3] = 1.0
    pseudo = torch.softmax(torch.randn(4, 24, 21, dtype=torch.float64), dim=2)
    # at initialisation the blocks are the identity (BN weight 0): only bn.weight / bn.bias
    # get gradient inside them; the q/k/v/out convolutions get exactly zero
    ASMLocLoss(args)(label, model(features, bbox, count), pseudo)[0].backward()
    for name, p in model.named_parameters():
        if name.startswith("MHSA_") and ".conv_" in name:
            assert torch.count_nonzero(p.grad) == 0, name
        else:
            assert p.grad.abs().max() > 0, name
    model.zero_grad()
    randomise_bn(model, torch.Generator().manual_seed(5))
    ASMLocLoss(args)(label, model(features, bbox, count), pseudo)[0].backward()
    for name, p in model.named_parameters():
        if name.endswith(("conv_key.bias", "conv_out.bias")):
            assert p.grad.abs().max() < 1e-12, name
        else:
            assert p.grad.abs().max() > 1e-6, name


def test_uncertainty_init_and_no_pseudo_loss_gradient():
    args = small_args("THUMOS", "--use_pseudo_instance_loss", "false")
    model = ASMLoc(args)
    assert model.uncertainty_branch.bias is None and model.uncertainty_branch.weight.abs().max() < 1e-3
    out = model(torch.randn(2, 10, 32), torch.tensor([[[0, 4]], [[2, 9]]]), torch.tensor([1, 1]))
    loss, _ = ASMLocLoss(args)(torch.eye(20)[:2], out)
    loss.backward()
    assert model.uncertainty_branch.weight.grad is None  # only the pseudo instance loss trains it


def test_fast_path_runs_under_autocast():
    """--amp uses bf16 autocast: mixed dtypes must not break the index_copy packing."""
    model = ASMLoc(small_args()).train()
    bbox, count = random_proposals(3, 20, 5, torch.Generator().manual_seed(6))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(torch.randn(3, 20, 32), bbox, count)
    sum(o.float().sum() for o in out).backward()
    assert all(torch.isfinite(o.float()).all() for o in out)
