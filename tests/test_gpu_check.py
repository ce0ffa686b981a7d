"""bench/gpu_check.sh stops at once, with one line, where it cannot run: no tensorboardX, no
cuda."""
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def run_check(tmp_path, python):
    env = dict(os.environ, PYTHON=str(python), OUT=str(tmp_path / "out"))
    tic = time.perf_counter()
    out = subprocess.run(["bash", str(REPO / "bench" / "gpu_check.sh")], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=60)
    return out, time.perf_counter() - tic


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_stops_within_seconds_without_cuda(tmp_path):
    import torch
    if torch.cuda.is_available():
        pytest.skip("this machine has cuda: the check would run")
    out, seconds = run_check(tmp_path, sys.executable)
    lines = (out.stdout + out.stderr).strip().splitlines()
    assert out.returncode != 0 and seconds < 10, (out.returncode, seconds)
    assert (len(lines) == 1 and lines[0].startswith("gpu_check: error: ")
            and "cuda" in lines[0]), lines
    assert not (tmp_path / "out").exists()              # nothing written before the checks pass


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_stops_without_tensorboardx(tmp_path):
    # -S: no site-packages, so no tensorboardX
    python = tmp_path / "python_without_site_packages"
    python.write_text(f'#!/bin/sh\nexec "{sys.executable}" -S "$@"\n')
    python.chmod(0o755)
    out, seconds = run_check(tmp_path, python)
    lines = (out.stdout + out.stderr).strip().splitlines()
    assert out.returncode != 0 and seconds < 10, (out.returncode, seconds)
    assert len(lines) == 1 and "has no tensorboardX" in lines[0], lines
