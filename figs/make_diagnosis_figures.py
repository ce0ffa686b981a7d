"""Regenerate the README's diagnosis figures and numbers from a finished demo run.

    python main_THUMOS.py --demo                    # trains
    python figs/make_diagnosis_figures.py           # replays it in test mode with --diagnose

Replays the cascade (test mode, which also writes every step's files under diagnosis/ in its
test output folder), then writes figs/demo_diagnosis_bins.png and figs/demo_diagnosis_fp.png
(final step), figs/demo_diagnosis_length_by_step.png (mAP per length bin for each step) and
prints the markdown table the README shows.
"""
import argparse
import os
import shutil
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from config import build_args  # noqa: E402
from engine.run import run  # noqa: E402
from engine.run_folder import test_output_folder  # noqa: E402
from eval.diagnosis import diagnose  # noqa: E402
from utils import pyplot, save_figure  # noqa: E402


def plot_length_by_step(path, tables):
    """Grouped bars: average mAP (%) of every length bin (and all GT) for each step."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(9, 4.5))
    width = 0.8 / len(tables)
    for s, table in enumerate(tables):
        rows = table[table["characteristic"].isin(["all", "length"])]
        labels = [f"{r.bin} {r.range}\nn={r.gt_count}" if r.characteristic == "length"
                  else f"all\nn={r.gt_count}" for r in rows.itertuples()]
        values = [100 * v for v in rows["avg_mAP"].fillna(0)]
        ax.bar([i + s * width for i in range(len(values))], values, width, label=f"step {s}")
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(labels))], labels, fontsize=8)
    ax.set_ylabel("avg mAP@0.1:0.7 (%)")
    ax.set_xlabel("GT length bin (s)")
    ax.set_title("demo: mAP by action length for each refinement step")
    ax.grid(axis="y", linestyle=":")
    ax.legend()
    save_figure(fig, path, bbox_inches="tight")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run_dir", default=None,
                        help="demo run folder (default: the demo preset's)")
    cli = parser.parse_args(argv)
    os.chdir(REPO_ROOT)                       # the demo's data/ and checkpoints/ paths are relative
    args = build_args("THUMOS", ["--demo"])
    run_dir = cli.run_dir or args.save_dir
    if not os.path.isfile(os.path.join(run_dir, "model_latest.pth")):
        sys.exit(f"error: no demo run in {run_dir}; run `python main_THUMOS.py --demo` first")
    run("THUMOS", ["--demo", "--test", "--checkpoint", run_dir, "--diagnose"])
    # test mode's own folder
    test_dir = test_output_folder(build_args("THUMOS", ["--demo", "--checkpoint", run_dir]))
    gt_file = os.path.join(args.data_dir, "gt.json")
    tables = []
    for step in range(args.num_steps + 1):
        result = os.path.join(test_dir, f"test_result_step{step}.json")
        tables.append(diagnose(gt_file, result, args.tiou_thresholds, args.eval_subset, "THUMOS",
                               args.num_tiou_for_average).by_characteristic)
    figs = REPO_ROOT / "figs"
    last = f"test_step{args.num_steps}_"
    for name in ("diagnosis_bins.png", "diagnosis_fp.png"):
        shutil.copyfile(os.path.join(test_dir, "diagnosis", last + name), figs / f"demo_{name}")
    plot_length_by_step(figs / "demo_diagnosis_length_by_step.png", tables)
    rows = tables[0][tables[0]["characteristic"].isin(["all", "length"])]
    print("| step | " + " | ".join(f"{r.bin} {r.range} (n={r.gt_count})"
                                   if r.characteristic == "length" else f"all (n={r.gt_count})"
                                   for r in rows.itertuples()) + " |")
    print("|---" * (len(rows) + 1) + "|")
    for step, table in enumerate(tables):
        sel = table[table["characteristic"].isin(["all", "length"])]
        print(f"| {step} | " + " | ".join("empty" if v != v else f"{100 * v:.2f}"
                                          for v in sel["avg_mAP"]) + " |")
    print(f"wrote figs/demo_diagnosis_bins.png, figs/demo_diagnosis_fp.png, "
          f"figs/demo_diagnosis_length_by_step.png; per-step files in "
          f"{os.path.join(test_dir, 'diagnosis')}")


if __name__ == "__main__":
    main()
