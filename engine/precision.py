"""How a run computes: deterministic kernels (--deterministic, docs/method.md §15)."""
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
