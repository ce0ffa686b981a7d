"""engine/precision.py: the float precision of a run (TF32 flags for the block only, autocast
under --amp with the outputs cast back to float32 before any loss) and its record."""
import contextlib

import pytest
import torch

from engine import passes, precision, steps


def test_precision_mode_sets_the_flags_for_the_block_only(small_args):
    before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    for tf32, cudnn_tf32 in [(True, False), (False, True)]:
        args = small_args("THUMOS", "--tf32", str(tf32), "--cudnn_tf32", str(cudnn_tf32))
        with precision.precision_mode(args):
            assert torch.backends.cuda.matmul.allow_tf32 is tf32
            assert torch.backends.cudnn.allow_tf32 is cudnn_tf32
        assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == before


def test_defaults_are_pytorchs_and_describe_says_what_applies(small_args):
    args = small_args()
    assert (args.tf32, args.cudnn_tf32, args.amp, args.amp_dtype) == (False, True, False,
                                                                      "bfloat16")
    args.device = "cuda:1"                                     # described, not run
    assert precision.describe_precision(args) == {
        "device": "cuda", "autocast": "off", "matmul": "float32", "cudnn_conv": "tf32",
        "loss": "float32"}
    args.amp, args.tf32 = True, True
    assert precision.describe_precision(args)["autocast"] == "bfloat16"
    assert precision.describe_precision(args)["matmul"] == "tf32"


def test_float16_autocast_is_refused(small_args):
    from config import ConfigError
    with pytest.raises(ConfigError, match="--amp_dtype float16 is not supported"):
        small_args("THUMOS", "--amp_dtype", "float16")


@pytest.mark.parametrize("step", [0, 1])
def test_losses_run_in_float32_under_autocast(small_args, monkeypatch, step):
    """CPU autocast in bfloat16 stands in for --amp on CUDA: the heads come out in bfloat16,
    forward() hands float32 to the loss, and the loss and its gradients are float32."""
    args = small_args("THUMOS", "--sample_segments_num", "24", "--max_segments_num", "4")
    seen = {}

    @contextlib.contextmanager
    def cpu_bf16(_):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            yield

    def spy(out):
        seen.update({name: value.dtype for name, value in out._asdict().items()
                     if torch.is_tensor(value)})
        return real(out)

    real = precision.float32_outputs
    monkeypatch.setattr(precision, "autocast", cpu_bf16)
    monkeypatch.setattr(precision, "float32_outputs", spy)
    generator = torch.Generator().manual_seed(step)
    model, loss_fn = steps.build_model(args, step), steps.build_loss(args, step)
    classes = args.action_cls_num
    batch = {"features": torch.randn(2, 24, 32, generator=generator),
             "proposal_bbox": torch.tensor([[[0, 6], [8, 20], [0, 0], [0, 0]]] * 2),
             "proposal_count": torch.tensor([2, 2])}
    out = passes.forward(model, batch, args)
    assert torch.bfloat16 in seen.values()                     # autocast did run in bf16
    assert all(value.dtype == torch.float32 for value in out if torch.is_tensor(value))
    video_label = torch.zeros(2, classes)
    video_label[:, 0] = 1
    pseudo = torch.zeros(2, 24, classes + 1)
    pseudo[..., -1] = 1
    loss, terms = loss_fn(video_label, out, pseudo)
    assert loss.dtype == torch.float32 and all(map(lambda v: v == v, terms.values()))
    loss.backward()
    assert all(p.grad is None or p.grad.dtype == torch.float32 for p in model.parameters())
