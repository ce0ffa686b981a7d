"""Ablation runner: a grid of variants x seeds, each an ordinary run of the entry script.

    python ablate.py --demo --seeds 3                          # the default grid on the THUMOS demo
    python ablate.py --dataset ActivityNet --demo --seeds 3
    python ablate.py --demo --seeds 2 --grid use_uncertainty=true,false --grid lr=1e-3,3e-4

Every flag ablate.py does not know is passed to main_{dataset}.py unchanged. Each cell runs as
`python main_{dataset}.py ARGS --seed S --outdir OUTDIR --suffix VARIANT_seedS` in its own run
folder (so it resumes, and can be rerun alone with the command printed in the table file);
cells that have written their results.json are not rerun. Up to --jobs cells run at once, each
with cores // jobs torch threads; on CUDA --jobs defaults to the number of visible GPUs and each
cell runs on one GPU of its own (CUDA_VISIBLE_DEVICES per cell). Rows that change num_steps keep
the full model's step lengths (EPOCH_BUDGET). At the end the tables (mean +- std over seeds of the
best average mAP of every step, the final step's last-epoch average (and, with --val_videos, its
validation-selected one) beside its best, the mAP at each tIoU of the final step's best
evaluation, and the paired difference to the reference variant per seed) are printed and
written, with a plot, to checkpoints/{dataset}/{OUTDIR}/ablation.{md,csv,png}.
All numbers are read back from the runs' own results.json (log.txt for run folders written
before the runs kept a metrics record).

Mean +- std over seeds of the full model on the real data, the way to report a number with
its spread:
    python ablate.py --seeds 5 --variants full [--val_videos 0.2]
"""
import argparse
import os
import sys
import time

from config import DEFAULT_PRESET, PRESETS, build_args
from engine.ablation import (COMPONENT_GRID, REFERENCE, STEPS_GRID, budget_note, default_grid,
                             parse_grid_axes, plan_cells, run_cell, run_cells, visible_gpus)
from engine.ablation_tables import csv_text, markdown, plot, summarize
from utils import UserError, atomic_write_text


def parse_cli(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--dataset", default=DEFAULT_PRESET, choices=sorted(PRESETS))
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 (or --seed_list)")
    parser.add_argument("--seed_list", type=int, nargs="+", default=None)
    parser.add_argument("--jobs", type=int, default=None,
                        help="cells run at once (default: the number of visible GPUs on CUDA, "
                             "else of cores)")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch threads per cell (default cores // jobs)")
    parser.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2",
                        help="a grid axis (repeatable); replaces the default grid by the product "
                             "of the axes")
    parser.add_argument("--variants", default="default",
                        choices=["default", "components", "steps", "full"],
                        help="the default grid, or only its component / num_steps rows, or only "
                             "the full model")
    parser.add_argument("--name", default="ablation", help="name of the result files")
    parser.add_argument("--dry_run", action="store_true",
                        help="print the cells' commands, run nothing")
    return parser.parse_known_args(argv)


def main(argv=None):
    opts, passthrough = parse_cli(sys.argv[1:] if argv is None else argv)
    if (opts.jobs is not None and opts.jobs < 1) or opts.seeds < 1:
        raise UserError("--jobs and --seeds must be at least 1")
    seeds = opts.seed_list or list(range(opts.seeds))
    outdir = "ablate_demo" if "--demo" in passthrough else "ablate"
    if "--outdir" in passthrough:
        index = passthrough.index("--outdir")
        outdir = passthrough[index + 1]
        del passthrough[index:index + 2]
    probe = build_args(opts.dataset, passthrough + ["--device", "cpu"])
    if opts.grid:
        variants = parse_grid_axes(opts.grid)
    else:
        variants = {"default": default_grid(probe.num_steps), "components": COMPONENT_GRID,
                    "steps": STEPS_GRID, "full": [COMPONENT_GRID[-1]]}[opts.variants]
    base_args, cells = plan_cells(opts.dataset, passthrough, variants, seeds, outdir)
    result_dir = os.path.join(base_args.checkpoint_root, base_args.dataset_name, outdir)
    todo = [cell for cell in cells if cell.result() is None]
    gpus = visible_gpus(passthrough)
    jobs = min(opts.jobs or len(gpus) or os.cpu_count() or 1, max(len(todo), 1))
    threads = opts.threads or max(1, (os.cpu_count() or 1) // jobs)
    print(f"{len(cells)} cells ({len(variants)} variants x {len(seeds)} seeds), "
          f"{len(cells) - len(todo)} finished, {len(todo)} to run with {jobs} jobs x "
          f"{threads} threads"
          + (f", each cell on one GPU of CUDA_VISIBLE_DEVICES={','.join(gpus)}" if gpus else ""))
    if any("num_steps" in overrides for _, overrides in variants):
        print(budget_note(base_args))
    if opts.dry_run:
        for cell in todo:
            print(" ".join(["python", f"main_{opts.dataset}.py"] + cell.argv))
        return 0
    if "--demo" in passthrough:              # generate the demo set once, before the parallel cells
        from synthetic_data import ensure_demo_dataset
        ensure_demo_dataset(base_args)
    start = time.time()
    failed, cpu = [], 0.0
    for cell, code, seconds, cpu_s in run_cells(todo, jobs, gpus,
                                                lambda c, gpu: run_cell(c, opts.dataset, threads,
                                                                        result_dir, gpu)):
            status = "done" if code == 0 and cell.result() else f"FAILED (exit {code})"
            cpu += cpu_s
            print(f"  {cell.variant} seed {cell.seed}: {status} in {seconds:.0f} s wall, "
                  f"{cpu_s:.0f} s CPU ({cell.save_dir})", flush=True)
            if status != "done":
                failed.append(cell)
    wall = time.time() - start
    rows, ref = summarize(cells, REFERENCE)
    if not rows:
        raise UserError("no cell finished; see the .out files in " + result_dir)
    command = " ".join(["python ablate.py"] + (sys.argv[1:] if argv is None else list(argv)))
    header = (f"`{command}`: {len(cells)} cells ({len(variants)} variants x {len(seeds)} seeds), "
              f"{len(todo)} run now in {wall / 60:.1f} min wall time ({cpu / 60:.1f} min CPU) "
              f"with {jobs} parallel jobs x {threads} threads on {os.cpu_count()} cores.")
    text = markdown(rows, ref, header)
    print("\n" + text)
    base = os.path.join(result_dir, opts.name)
    atomic_write_text(base + ".md", text)
    atomic_write_text(base + ".csv", csv_text(rows, cells))
    plot(rows, ref, base + ".png")
    print(f"wrote {base}.md, {base}.csv and {base}.png")
    if failed:
        print(f"error: {len(failed)} cells failed; their output is in {result_dir}/*.out",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
