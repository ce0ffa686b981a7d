"""Time `main_THUMOS.py --demo` in two checkouts back to back and compare wall time and mAP.

    .venv/bin/python bench/compare_demo.py --old ../old_checkout [--seeds 0 1 2] [--repeats 1]
    .venv/bin/python bench/compare_demo.py --old ../old_checkout --same_data
                                                   # the old code on this demo's data

Each (repeat, seed) runs the old tree and then the new one (the order alternates between
repeats, so a slow phase of the machine does not always hit the same tree), each in a fresh
temporary checkpoint root with --no_resume. The demo data of each tree is generated once,
untimed, before the first run. The mAPs come from each run's results.json (from its printed
summary line for a checkout that does not write one). Prints every run, then per tree the wall
time (mean, min) and the per-step best average mAP (mean +- std over seeds), and the new / old
time ratio.
Each tree runs with its own .venv/bin/python when it has one. With --same_data the old tree does
not run its own --demo (whose generator may differ) but this tree's demo schedule as flags on
this tree's demo data, so the two versions see the same inputs.
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BEST = re.compile(r"best average mAP per step: ([^(\n]*)")


def tree_python(tree):
    venv = Path(tree) / ".venv" / "bin" / "python"
    return str(venv) if venv.exists() else sys.executable


def prepare(tree):
    code = ("import config\nfrom synthetic_data import ensure_demo_dataset\n"
            "ensure_demo_dataset(config.build_args('THUMOS', ['--demo']))")
    subprocess.run([tree_python(tree), "-c", code], cwd=tree, check=True, stdout=subprocess.DEVNULL)


def same_data_flags(tree):
    """This tree's THUMOS demo as explicit flags: its schedule and its (absolute) demo data
    folder."""
    sys.path.insert(0, tree)
    import config
    demo = config.build_args("THUMOS", ["--demo"])
    flags = ["--data_dir", os.path.join(tree, demo.data_dir)]
    for key, value in config.DEMO_PRESETS["THUMOS"].items():
        flags += [f"--{key}", str(value)]
    return flags


def best_per_step(root, output):
    """{step: best mAP %} from the run's results.json, or from its printed summary line (a
    checkout older than the results file)."""
    found = sorted(Path(root).rglob("results.json"))
    if found:
        steps = json.loads(found[0].read_text())["steps"]
        return {int(step): float(f"{value['best']['average_mAP']:.2f}")
                for step, value in steps.items()}
    lines = BEST.findall(output)
    if not lines:
        return {}
    return {int(step): float(value)
            for step, value in re.findall(r"step (\d+) ([-\d.]+)", lines[-1])}


def run_demo(tree, seed, extra, demo_flags=("--demo",)):
    """Wall seconds and {step: best mAP %} of one demo run."""
    with tempfile.TemporaryDirectory(prefix="asmloc_cmp_") as root:
        cmd = [tree_python(tree), "main_THUMOS.py", *demo_flags, "--no_resume",
               "--seed", str(seed), "--checkpoint_root", root, *extra]
        tic = time.perf_counter()
        proc = subprocess.run(cmd, cwd=tree, capture_output=True, text=True)
        wall = time.perf_counter() - tic
        if proc.returncode != 0:
            sys.exit(f"error: {' '.join(cmd)} in {tree} failed:\n{proc.stderr[-2000:]}")
        return wall, best_per_step(root, proc.stdout + proc.stderr)


def summary(values):
    if not values:
        return "-"
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.2f} +- {std:.2f}"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--old", required=True, help="checkout of the old version")
    parser.add_argument("--new", default=str(Path(__file__).resolve().parents[1]),
                        help="default: this checkout")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--same_data", action="store_true",
                        help="old tree: the new tree's demo data and schedule")
    parser.add_argument("--extra", nargs=argparse.REMAINDER, default=[],
                        help="more flags for both runs")
    args = parser.parse_args(argv)
    trees = {"old": os.path.abspath(args.old), "new": os.path.abspath(args.new)}
    for name, tree in trees.items():
        if not (args.same_data and name == "old"):
            prepare(tree)
    demo_flags = {"old": same_data_flags(trees["new"]) if args.same_data else ["--demo"],
                  "new": ["--demo"]}
    print(f"load average at start {os.getloadavg()[0]:.1f}; {os.cpu_count()} cpus")
    walls = {name: [] for name in trees}
    maps = {name: {} for name in trees}
    for repeat in range(args.repeats):
        for seed in args.seeds:
            order = ("old", "new") if repeat % 2 == 0 else ("new", "old")
            for name in order:
                wall, per_step = run_demo(trees[name], seed, args.extra, demo_flags[name])
                walls[name].append(wall)
                for step, value in per_step.items():
                    maps[name].setdefault(step, {})[seed] = value  # same seed, same result
                steps = " ".join(f"s{step} {value:.2f}"
                                 for step, value in sorted(per_step.items()))
                print(f"repeat {repeat} seed {seed} {name}: {wall:7.1f} s  mAP {steps}",
                      flush=True)
    print(f"load average at end {os.getloadavg()[0]:.1f}")
    for name in trees:
        steps = " | ".join(f"step {step} {summary(list(by_seed.values()))}"
                           for step, by_seed in sorted(maps[name].items()))
        print(f"{name}: wall mean {statistics.mean(walls[name]):.1f} s, "
              f"min {min(walls[name]):.1f} s; mAP {steps}")
    ratios = [new / old for new, old in zip(walls["new"], walls["old"])]
    print(f"new / old wall time: mean of paired ratios {statistics.mean(ratios):.2f}, "
          f"ratio of means {statistics.mean(walls['new']) / statistics.mean(walls['old']):.2f}")


if __name__ == "__main__":
    main()
