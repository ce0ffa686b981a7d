"""engine/passes.py: batched evaluation (several videos of different lengths per forward, padded
and masked) gives each video batch 1's outputs to float32 rounding, base and full models, THUMOS
and ActivityNet presets; the inference pass gives batch 1's proposals; evaluation only observes
(no random draw: the same schedule evaluated at other epochs trains the same weights)."""
import os
import random

import numpy as np
import pytest
import torch

from engine import passes
from engine import run as runner
from engine import steps
from engine.layout import model_layout, proposal_layout

EPS = float(np.finfo(np.float32).eps)


def trained_like(model):
    """Attention blocks that are not the identity (BatchNorm weight and bias away from 0) and
    non-trivial running statistics."""
    with torch.no_grad():
        for block in (getattr(model, "MHSA_Intra", None), getattr(model, "MHSA_Inter", None)):
            if block is not None:
                block.bn.weight.normal_(0.0, 0.5)
                block.bn.bias.normal_(0.0, 0.5)
                block.bn.running_mean.normal_(0.0, 0.1)
                block.bn.running_var.uniform_(0.5, 2.0)
    return model.eval()


def videos(lengths, D, K, seed):
    """Per video: features (L, D), attention proposals bbox (K, 2) inside its rows, count."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for i, L in enumerate(lengths):
        x = torch.randn(L, D, generator=g).relu()
        start = torch.randint(0, L, (K,), generator=g)
        end = (start + torch.randint(0, max(L // 3, 1), (K,), generator=g)).clamp(max=L - 1)
        count = torch.tensor(0 if i % 4 == 1 else int(torch.randint(1, K + 1, (), generator=g)))
        out.append((x, torch.stack([start, end], dim=1), count))
    return out


@pytest.mark.parametrize("dataset", ["THUMOS", "ActivityNet"])
@pytest.mark.parametrize("step", [0, 1])
def test_padded_batch_equals_batch_one(dataset, step, small_args):
    args = small_args(dataset, "--sample_segments_num", "48")
    D, K = args.feature_dim, 6
    model = trained_like(steps.build_model(args, step))
    # lengths below the top-k divisor (k = 1), around it, odd, and the longest of the batch
    lengths = [48, 1, 2, 7, 17, 30, 47, 48]
    items = videos(lengths, D, K, seed=step)
    L = max(lengths)
    features = torch.zeros(len(items), L, D)
    for i, (x, _, _) in enumerate(items):
        features[i, :len(x)] = x
    bbox = torch.stack([b for _, b, _ in items])
    count = torch.stack([c for _, _, c in items])
    lengths_t = torch.tensor(lengths)
    with torch.no_grad():
        batched = model(features, bbox, count, lengths=lengths_t,
                        layout=model_layout(model, bbox, count, L))
        for i, (x, b, c) in enumerate(items):
            alone = model(x[None], b[None], c[None])
            T = len(x)
            # float32 rounding of sums over D (embedding: 3 D terms, projections: D) and of the
            # attention over at most T keys, through a few layers
            tol = 8 * EPS * (3 * D + T)
            for name, got, want in zip(alone._fields, batched, alone):
                if want is None:
                    assert got is None
                    continue
                got = got[i] if got.dim() == 2 else got[i, :T]
                torch.testing.assert_close(got, want[0], rtol=tol, atol=tol, msg=name)


def test_proposal_layout_avoids_host_syncs(small_args):
    """With the host layout, the full model's forward reads no tensor value on the host."""
    args = small_args("THUMOS")
    model = trained_like(steps.build_model(args, 1))
    x, bbox, count = videos([40], args.feature_dim, 5, seed=3)[0]
    layout = proposal_layout(bbox[None].numpy(), count[None].numpy(), 40)
    reads = []
    originals = {name: getattr(torch.Tensor, name) for name in ("item", "tolist", "__int__")}

    def recording(name):
        def read(self, *a, **k):
            reads.append(name)
            return originals[name](self, *a, **k)
        return read
    with torch.no_grad():
        want = model(x[None], bbox[None], count[None])
        try:
            for name in originals:
                setattr(torch.Tensor, name, recording(name))
            got = model(x[None], bbox[None], count[None], layout=layout)
        finally:
            for name, function in originals.items():
                setattr(torch.Tensor, name, function)
    assert reads == []
    for a, b in zip(got, want):
        assert torch.equal(a, b)


# ----------------------------------------------------------------------------- whole passes
def test_inference_pass_equals_batch_one(tiny_data, small_args):
    args = small_args("THUMOS", "--data_dir", str(tiny_data), "--sample_segments_num", "48")
    from dataset import VideoDataset
    data = VideoDataset(args, "full", "uniform")
    model = trained_like(steps.build_model(args, 0))
    results = {}
    for rows in (1, 10**6):                      # one video per forward, all videos in one
        args.eval_batch_rows = rows
        results[rows] = passes.inference_pass(model, data, args, 0, detect=True, pseudo=True,
                                              keep_outputs=True)
    one, many = results[1], results[10**6]
    for kind in (0, 1):                                   # detections, pseudo proposals
        assert list(one[kind]) == list(many[kind]) == data.video_names
        for vid in data.video_names:
            a, b = one[kind][vid], many[kind][vid]
            assert [p["label"] for p in a] == [p["label"] for p in b], vid
            np.testing.assert_allclose([p["segment"] for p in a] or np.zeros((0, 2)),
                                       [p["segment"] for p in b] or np.zeros((0, 2)),
                                       rtol=1e-6, atol=1e-6)
            np.testing.assert_allclose([p["score"] for p in a], [p["score"] for p in b],
                                       rtol=1e-4, atol=1e-5)
    for vid in data.video_names:
        np.testing.assert_allclose(one[2][vid]["fg_cas"], many[2][vid]["fg_cas"], atol=1e-5)


def test_inference_pass_draws_no_random_number(tiny_data, small_args):
    args = small_args("THUMOS", "--data_dir", str(tiny_data))
    from dataset import VideoDataset
    data = VideoDataset(args, "test", "uniform")
    model = steps.build_model(args, 1)
    states = (torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate())  # noqa: NPY002
    for cache in (4.0, 0.0):                           # feature store, and the DataLoader path
        args.feature_cache_gb = cache
        passes.inference_pass(model, data, args, 1, pseudo=True)
    assert torch.equal(torch.get_rng_state(), states[0])
    assert np.array_equal(np.random.get_state()[1], states[1])  # noqa: NPY002
    assert random.getstate() == states[2]


def test_evaluation_frequency_does_not_change_training(tiny_data, tiny_argv, tmp_path):
    """The same schedule evaluated every epoch or every third (12 epochs: the last 9 are
    evaluated by both) trains bit-identical weights (the passes without a feature store draw
    nothing either: test_inference_pass_draws_no_random_number)."""
    weights = {}
    for freq in (1, 3):
        argv = tiny_argv(tiny_data, tmp_path / f"e{freq}", epochs=12, epochs_per_step=6,
                         num_steps=1, eval_freq=freq)
        runner.run("THUMOS", argv)
        folder = os.path.join(tmp_path / f"e{freq}", "THUMOS", "default",
                              "t48_step1_e6_gamma6_alpha0.7_delta0.5")
        weights[freq] = {name: torch.load(os.path.join(folder, name), weights_only=False)
                         for name in ("model_step0_last_epoch.pth", "model_latest.pth")}
    for name, state in weights[1].items():
        other = weights[3][name]["model_state_dict"]
        for key, value in state["model_state_dict"].items():
            assert torch.equal(value, other[key]), (name, key)
