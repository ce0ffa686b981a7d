"""engine/run.py keep_freed_memory: freed tensor buffers are reused instead of being page-faulted
back in."""
import platform
import subprocess
import sys

import pytest

from config import REPO_ROOT as REPO

# 30 rounds, each allocating and freeing one tensor a little larger than the last (4 MiB + 64 KiB
# per round: a batch's activation sizes change with its lengths and proposals); prints the minor
# page faults the rounds took.
CHILD = """
import resource, sys
sys.path.insert(0, {repo!r})
import torch
from engine.run import keep_freed_memory
took = keep_freed_memory() if {keep} else None
torch.ones(2**20).sum()                                   # warm-up: the first touch faults anyway
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for step in range(1, 31):
    torch.ones(2**20 + step * 2**14).sum()        # float32: 4 MiB + step x 64 KiB, freed at once
print(took, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def faults(keep):
    out = subprocess.run([sys.executable, "-c", CHILD.format(repo=str(REPO), keep=keep)],
                         capture_output=True, text=True, check=True).stdout.split()
    return out[0], int(out[1])


@pytest.mark.skipif(not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
                    reason="glibc malloc only")
def test_freed_buffers_are_reused_on_glibc():
    took, kept = faults(True)
    _, default = faults(False)
    assert took == "True"
    # default glibc: each block is larger than the last freed one, so it is mapped afresh from the
    # kernel and its 1024+ pages are faulted in (30k+ in all); kept: the heap block is reused and
    # only its growth (16 pages a round) faults
    assert default > 30 * 1000
    assert kept < default / 4


def test_is_a_no_op_elsewhere(monkeypatch):
    from engine.run import keep_freed_memory
    monkeypatch.setattr(sys, "platform", "darwin")
    assert keep_freed_memory() is False
