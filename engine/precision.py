"""How a run computes: deterministic kernels (--deterministic, docs/method.md §15) and float
precision (TF32 for CUDA matmuls and cuDNN convolutions, autocast under --amp), applied in one
place at start-up (engine/run.py) and recorded in results.json."""
import contextlib
import os

import torch

CUBLAS_WORKSPACE = ":4096:8"     # cuBLAS's reproducible-results setting (read when cuBLAS starts)


@contextlib.contextmanager
def deterministic_mode(enabled):
    """--deterministic: torch's deterministic kernels for the block, an error for any op that has
    none; cuDNN without autotuning; the cuBLAS workspace setting, unless the environment sets
    one. Enter before the first CUDA operation. Restores everything on exit."""
    if not enabled:
        yield
        return
    saved = (torch.are_deterministic_algorithms_enabled(),
             torch.is_deterministic_algorithms_warn_only_enabled(),
             torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark,
             os.environ.get("CUBLAS_WORKSPACE_CONFIG"))
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved[2], saved[3]
        if saved[4] is None:
            os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)


# ----------------------------------------------------------------------------- float precision
def describe_precision(args):
    """How the run computes in float32 on its device, as results.json records it (the keys
    amp, amp_dtype, tf32, cudnn_tf32 of config.json; TF32 and autocast apply on CUDA only)."""
    cuda = args.device.startswith("cuda")
    return {"device": "cuda" if cuda else args.device,
            "autocast": args.amp_dtype if args.amp and cuda else "off",
            "matmul": "tf32" if args.tf32 and cuda else "float32",
            "cudnn_conv": "tf32" if args.cudnn_tf32 and cuda else "float32",
            "loss": "float32"}


@contextlib.contextmanager
def precision_mode(args):
    """TF32 for CUDA matmuls (args.tf32) and cuDNN convolutions (args.cudnn_tf32) for the block,
    restored on exit. The defaults (tf32 off, cudnn_tf32 on) are PyTorch's own; the flags are
    read by CUDA kernels only, so a CPU run computes the same either way."""
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = bool(args.tf32)
    torch.backends.cudnn.allow_tf32 = bool(args.cudnn_tf32)
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def autocast(args):
    """The autocast context of a forward: --amp on CUDA, in args.amp_dtype; off otherwise."""
    return torch.autocast(device_type="cuda", dtype=getattr(torch, args.amp_dtype),
                          enabled=args.amp and args.device.startswith("cuda"))


def float32_outputs(out):
    """A model output (named tuple of tensors) with every floating tensor in float32: the losses
    and the proposals compute in float32 whatever autocast gave the heads."""
    return out._replace(**{name: value.float() for name, value in out._asdict().items()
                           if torch.is_tensor(value) and value.is_floating_point()
                           and value.dtype != torch.float32})
