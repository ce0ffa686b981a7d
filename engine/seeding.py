"""Seeds: the global generators of a process, the DataLoader workers, and the run's own
torch generators (docs/method.md §15)."""
import random

import numpy as np
import torch


def set_seed(seed):
    """Seed python, numpy and torch (all devices) for a reproducible run."""
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 (the global generator, on purpose)
    torch.manual_seed(seed)


def seed_worker(worker_id):
    """DataLoader worker_init_fn: derive numpy/python seeds from torch's per-worker seed."""
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)  # noqa: NPY002 (the global generator, on purpose)
    random.seed(worker_seed)


def make_generator(seed):
    generator = torch.Generator()
    generator.manual_seed(seed)
    return generator
