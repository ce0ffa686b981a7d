"""Slow loop version of engine/heldout.py's stratum quotas."""
import numpy as np


def quotas_loop(sizes, total):
    """Largest remainder written out: floors, then one more video to the strata in order of their
    remainder (largest first, earlier stratum on ties), skipping full strata, round after round."""
    exact = [total * size / sum(sizes) for size in sizes]
    quota = [min(int(np.floor(x)), size - 1) for x, size in zip(exact, sizes)]
    while sum(quota) < total:
        best = None
        for i, size in enumerate(sizes):
            if quota[i] < size - 1 and (best is None
                                        or exact[i] - quota[i] > exact[best] - quota[best]):
                best = i
        quota[best] += 1
    return quota
