"""How far the demo's numbers move between CPUs: the demo run under several CPU code paths.

    .venv/bin/python bench/demo_spread.py [--datasets THUMOS ActivityNet] [--json spread.json]

The demo is deterministic on one machine and software stack, but MKL, oneDNN and ATen choose
their kernels by instruction set, so another CPU rounds some float32 sums differently, and over
60 epochs of training that moves the final mAP. This script forces the code paths another CPU
would take, on this one, and runs `main_{dataset}.py --demo` once under each (same data, same
seed, a fresh temporary checkpoint root):

  this CPU       no change
  avx2           ATen, MKL and oneDNN limited to AVX2 (a CPU without AVX-512)
  no-simd        ATen's scalar kernels (ATEN_CPU_CAPABILITY=default), MKL at SSE4.2
  mkl-compat     MKL's conditional numerical reproducibility in COMPATIBLE mode
  no-mkldnn      torch.backends.mkldnn off (convolutions without oneDNN)

It prints each run's best average mAP per step and, per dataset, the final step's min, max and
spread; --json writes them. The range config.py:DEMO_EXPECTED_MAP states for the demo's end line
comes from these runs (docs/demo.md).
"""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BEST = re.compile(r"best average mAP per step: ([^(\n]*)")
VARIANTS = {
    "this CPU": {},
    "avx2": {"ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2",
             "ONEDNN_MAX_CPU_ISA": "AVX2"},
    "no-simd": {"ATEN_CPU_CAPABILITY": "default", "MKL_ENABLE_INSTRUCTIONS": "SSE4_2",
                "ONEDNN_MAX_CPU_ISA": "SSE41"},
    "mkl-compat": {"MKL_CBWR": "COMPATIBLE"},
    "no-mkldnn": {"DEMO_SPREAD_NO_MKLDNN": "1"},
}
# The entry point run in a child process (torch.backends.mkldnn has no environment variable).
CHILD = ("import os, runpy, sys, torch\n"
         "torch.backends.mkldnn.enabled = not os.environ.get('DEMO_SPREAD_NO_MKLDNN')\n"
         "sys.argv = sys.argv[1:]\n"
         "runpy.run_path(sys.argv[0], run_name='__main__')\n")


def run_demo(dataset, env_changes, root):
    """(best mAP per step, wall seconds) of one demo run in checkpoint root `root`."""
    env = {**os.environ, **env_changes}
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", CHILD, f"main_{dataset}.py", "--demo",
                           "--checkpoint_root", root], cwd=REPO, env=env, capture_output=True,
                          text=True)
    wall = time.perf_counter() - start
    found = BEST.findall(done.stdout)
    if done.returncode or not found:
        raise SystemExit(f"{dataset} demo under {env_changes} failed:\n{done.stderr[-2000:]}")
    steps = [float(part.split()[-1]) for part in found[-1].split(",")]
    return steps, wall


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["THUMOS", "ActivityNet"])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--json", default=None, help="also write the results to this file")
    opts = parser.parse_args()
    report = {}
    for dataset in opts.datasets:
        runs = {}
        for name in opts.variants:
            with tempfile.TemporaryDirectory(prefix="demo_spread_") as root:
                steps, wall = run_demo(dataset, VARIANTS[name], root)
            runs[name] = {"best_per_step": steps, "wall_s": round(wall, 1)}
            print(f"{dataset:12s} {name:11s} " + "  ".join(f"step {k} {v:5.2f}"
                                                          for k, v in enumerate(steps))
                  + f"   ({wall:.0f} s)", flush=True)
        finals = [run["best_per_step"][-1] for run in runs.values()]
        report[dataset] = {"runs": runs, "final_min": min(finals), "final_max": max(finals),
                           "final_spread": round(max(finals) - min(finals), 2)}
        print(f"{dataset:12s} final step: min {min(finals):.2f}, max {max(finals):.2f}, "
              f"spread {max(finals) - min(finals):.2f}", flush=True)
    if opts.json:
        Path(opts.json).write_text(json.dumps(report, indent=2) + "\n")
        print(f"written to {opts.json}")


if __name__ == "__main__":
    main()
