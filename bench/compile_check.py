"""Does torch.compile pay for itself on a whole run? The demo with every model compiled vs eager.

    .venv/bin/python bench/compile_check.py                    # python main_THUMOS.py --demo, both ways
    .venv/bin/python bench/compile_check.py --mode eager       # one of them
    .venv/bin/python bench/compile_check.py -- --epochs 10     # more flags for the runs

Each mode runs in a fresh subprocess (so one does not warm the other's caches; the compiled run
starts with an empty inductor cache in a temporary folder), with the entry point's own code: the
compiled mode only wraps each model that engine.build_model returns in torch.compile (default
options). Prints wall time and per-step best mAP of each. This is how the README's --compile
verdict was measured; there is no --compile switch because it did not pay for itself.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHILD = """
import sys, torch
sys.path.insert(0, {here!r})
import engine, runner
if {compiled}:
    build = engine.build_model
    engine.build_model = lambda args, step: torch.compile(build(args, step))
runner.run({dataset!r}, {argv!r})
"""


def run(mode, dataset, extra):
    with tempfile.TemporaryDirectory(prefix="asmloc_compile_") as root:
        argv = ["--demo", "--no_resume", "--checkpoint_root", root, *extra]
        env = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=os.path.join(root, "inductor"))
        code = CHILD.format(here=HERE, compiled=mode == "compiled", dataset=dataset, argv=argv)
        tic = time.perf_counter()
        proc = subprocess.run([sys.executable, "-c", code], cwd=HERE, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - tic
        if proc.returncode:
            print(f"{mode}: failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
            return
        found = sorted(Path(root).rglob("results.json"))         # the run's own record
        steps = json.loads(found[0].read_text())["steps"] if found else {}
    best = ", ".join(f"step {k} {v['best']['average_mAP']:.2f}" for k, v in steps.items()) or "-"
    print(f"{mode:8s} wall {wall:6.1f} s   best mAP per step: {best}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="THUMOS", choices=["THUMOS", "ActivityNet"])
    parser.add_argument("--mode", choices=["both", "eager", "compiled"], default="both")
    parser.add_argument("run_args", nargs="*", help="flags for the runs (after --)")
    opts = parser.parse_args()
    for mode in (["eager", "compiled"] if opts.mode == "both" else [opts.mode]):
        run(mode, opts.dataset, opts.run_args)


if __name__ == "__main__":
    main()
