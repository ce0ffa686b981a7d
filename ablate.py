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

Mean +- std over seeds of the full model on the real data, the way to report a number with its spread:
    python ablate.py --seeds 5 --variants full [--val_videos 0.2]
"""
import argparse
import itertools
import os
import queue
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from config import build_args
from run_identity import RunConfigChanged, check_run_folder
from run_record import METRICS_FILE, read_results
from utils import UserError, atomic_write_text

REPO_ROOT = Path(__file__).resolve().parent
OFF = dict(use_intra_attention=False, use_inter_attention=False, use_dynamic_sampling=False,
           use_pseudo_instance_loss=False, use_uncertainty=False)

# The default grid: (name, config overrides), relative to the preset (or the demo preset).
# The component rows follow the paper's component ablation, each adding one part to the row above.
# "num_steps" cells follow EPOCH_BUDGET unless "epochs" is given; the base row trains as many epochs
# as the full model ("full").
COMPONENT_GRID = [
    ("base", dict(num_steps=0, epochs="full")),                                 # base model only
    ("+intra", {**OFF, "use_intra_attention": True}),                           # + intra-segment attention
    ("+inter", {**OFF, "use_intra_attention": True, "use_inter_attention": True}),  # + inter-segment attention
    ("+dynamic", {**OFF, "use_intra_attention": True, "use_inter_attention": True,
                  "use_dynamic_sampling": True}),                               # + dynamic segment sampling
    ("+pseudo_loss", {**OFF, "use_intra_attention": True, "use_inter_attention": True,
                      "use_dynamic_sampling": True, "use_pseudo_instance_loss": True}),  # + pseudo instance loss
    ("full", {}),                                                               # + uncertainty = the full model
]
STEPS_GRID = [(f"steps{n}", dict(num_steps=n)) for n in (1, 2, 3)]
REFERENCE = "full"                  # paired differences are taken to this variant (else the first)
# A row that sets num_steps keeps the full model's step lengths: each step before the last trains
# epochs_per_step epochs and the last step as many as the full model's last step. What a row reports is
# the best evaluation of its last step, whose model is trained from scratch within that step: equal
# last-step lengths give every row's model the same training and the same number of evaluations to
# take the best of. Equal total epochs would lengthen the last step of rows with fewer steps (THUMOS:
# 700 epochs for num_steps 1 against the full model's 500), and leave none when num_steps * epochs_per_step
# reaches the total (num_steps 3 on the demo).
EPOCH_BUDGET = ("rows that set num_steps keep the full model's step lengths: each step before the last trains "
                "epochs_per_step = {eps} epochs and the last step {last} epochs, as the full model's last step "
                "(epochs - num_steps * epochs_per_step = {epochs} - {steps} * {eps}); such a row trains "
                "{eps} * num_steps + {last} epochs in all. The base row trains the full model's {epochs} epochs.")

# log.txt of a run folder without metrics.jsonl (written before the runs kept a record):
# an evaluation line (losses may come between the epoch and the mAP part)
EVAL_LINE = re.compile(r"^step (\d+) epoch (\d+) \|.*?mAP@tIoU (.*?) \| avg ([-\d.]+) \| best ([-\d.]+)( \*)?$")
FINAL_LINE = "best average mAP per step:"


def parse_grid_axes(axes):
    """['key=v1,v2', ...] -> [(name, overrides)] of their cartesian product."""
    parsed = []
    for axis in axes:
        key, sep, values = axis.partition("=")
        if not sep or not key or not values:
            raise UserError(f"--grid {axis!r}: expected KEY=V1,V2,...")
        parsed.append([(key, value) for value in values.split(",")])
    return [("_".join(f"{k}={v}" for k, v in combo), dict(combo)) for combo in itertools.product(*parsed)]


def default_grid(preset_steps):
    """Component rows, then the num_steps rows that differ from the full model (same cell otherwise)."""
    return COMPONENT_GRID + [(name, o) for name, o in STEPS_GRID if o["num_steps"] != preset_steps]


def last_step_epochs(base_args):
    """Epochs of the full model's last refinement step (EPOCH_BUDGET)."""
    last = base_args.epochs - base_args.epochs_per_step * base_args.num_steps
    if last < 1:
        raise UserError(f"the full model's last step has no epochs (epochs {base_args.epochs} <= num_steps "
                        f"{base_args.num_steps} * epochs_per_step {base_args.epochs_per_step})")
    return last


def budget_note(base_args):
    return "epoch budget: " + EPOCH_BUDGET.format(eps=base_args.epochs_per_step, last=last_step_epochs(base_args),
                                                  epochs=base_args.epochs, steps=base_args.num_steps)


def cell_flags(overrides, base_args):
    """Command-line flags of one variant; num_steps sets the epochs to epochs_per_step * num_steps + the
    full model's last-step epochs (EPOCH_BUDGET)."""
    overrides = dict(overrides)
    if overrides.get("epochs") == "full":
        overrides["epochs"] = base_args.epochs
    if "num_steps" in overrides and "epochs" not in overrides:
        eps = int(overrides.get("epochs_per_step", base_args.epochs_per_step))
        overrides["epochs"] = eps * int(overrides["num_steps"]) + last_step_epochs(base_args)
    return [item for key, value in overrides.items() for item in (f"--{key}", str(value).lower()
                                                                     if isinstance(value, bool) else str(value))]


def folder_safe(name):
    return re.sub(r"[^A-Za-z0-9_.=-]+", "-", name.replace("+", "plus_")).strip("-")


def parse_log(path):
    """{'best': {step: avg %}, 'tiou': {step: {tiou: mAP %}} at each step's best evaluation, 'finished'}."""
    best, tiou, finished = {}, {}, False
    with open(path) as handle:
        for line in handle:
            line = line.rstrip("\n")
            if line.startswith(FINAL_LINE):
                finished = True
            match = EVAL_LINE.match(line)
            if match and match.group(6):                     # ' *': a new best of its step
                step = int(match.group(1))
                best[step] = float(match.group(5))
                tiou[step] = {float(k): float(v) for k, v in (p.split(":") for p in match.group(3).split())}
            elif match:
                finished = False                             # an evaluation after the final line: resumed
    return {"best": best, "tiou": tiou, "finished": finished}


def parse_results(results):
    """A finished run's results.json -> {'best', 'tiou' (as parse_log), 'last': {step: avg %},
    'val': {step: test avg % of the validation-selected epoch} (with --val_videos), 'finished'},
    every value rounded to 2 decimals as the run's log prints it (the table's statistics are those of
    the numbers it lists)."""
    def printed(value):
        return float(f"{value:.2f}")
    out = {"best": {}, "tiou": {}, "last": {}, "val": {}, "finished": True}
    for key, step in results["steps"].items():
        k = int(key)
        out["best"][k] = printed(step["best"]["average_mAP"])
        out["tiou"][k] = {float(t): printed(value) for t, value in step["best"]["mAP"].items()}
        out["last"][k] = printed(step["last"]["average_mAP"])
        if "val_selected" in step:
            out["val"][k] = printed(step["val_selected"]["average_mAP"])
    return out


class Cell:
    def __init__(self, variant, seed, argv, save_dir, num_steps):
        self.variant, self.seed, self.argv, self.save_dir, self.num_steps = variant, seed, argv, save_dir, num_steps
        self.log_path = os.path.join(save_dir, "log.txt")

    def result(self):
        """The finished run's numbers (results.json), or None while it has not finished."""
        results = read_results(self.save_dir)
        if results is not None:
            parsed = parse_results(results)
        elif os.path.isfile(self.log_path) and not os.path.isfile(os.path.join(self.save_dir, METRICS_FILE)):
            parsed = parse_log(self.log_path)
        else:
            return None
        done = parsed["finished"] and self.num_steps in parsed["best"]
        return parsed if done else None


def plan_cells(dataset, passthrough, variants, seeds, outdir):
    cells = []
    base_args = build_args(dataset, passthrough + ["--device", "cpu"])
    user_suffix = base_args.suffix
    for name, overrides in variants:
        for seed in seeds:
            suffix = "_".join(filter(None, [user_suffix, folder_safe(name), f"seed{seed}"]))
            argv = passthrough + cell_flags(overrides, base_args) + ["--seed", str(seed), "--outdir", outdir,
                                                                     "--suffix", suffix]
            args = build_args(dataset, argv + ["--device", "cpu"])        # the run folder the entry script uses
            try:
                check_run_folder(args)          # a folder of another config is neither reported nor resumed
            except RunConfigChanged as err:
                raise UserError(f"cell {name} seed {seed}: {err}; for this grid choose another --outdir "
                                f"(or delete that folder)") from None
            cells.append(Cell(name, seed, argv, args.save_dir, args.num_steps))
    return base_args, cells


def visible_gpus(passthrough):
    """GPU ids the cells are pinned to: CUDA_VISIBLE_DEVICES's entries (else 0..n-1); none on CPU."""
    if "--gpu" in passthrough:
        raise UserError("ablate.py pins each cell to one GPU itself; drop --gpu and choose the GPUs with "
                        "CUDA_VISIBLE_DEVICES=0,1 python ablate.py ...")
    device = passthrough[passthrough.index("--device") + 1] if "--device" in passthrough[:-1] else ""
    if device and device != "cuda":
        if device.startswith("cuda"):
            raise UserError(f"--device {device}: ablate.py pins each cell to one GPU; pass --device cuda or nothing")
        return []
    import torch
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    listed = [g.strip() for g in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if g.strip()]
    return (listed if "CUDA_VISIBLE_DEVICES" in os.environ else [str(i) for i in range(count)])[:count]


def run_cells(cells, jobs, gpus, run_one):
    """run_one(cell, gpu) for every cell, `jobs` at a time, each on a GPU no other running cell has while
    jobs <= len(gpus) (gpu None without GPUs); yields the results in the cells' order."""
    slots = queue.Queue()
    for index in range(jobs):
        slots.put(gpus[index % len(gpus)] if gpus else None)

    def on_a_slot(cell):
        gpu = slots.get()
        try:
            return run_one(cell, gpu)
        finally:
            slots.put(gpu)
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        yield from pool.map(on_a_slot, cells)


def run_cell(cell, dataset, threads, out_dir, gpu=None):
    """Run one cell as a subprocess of the entry script (on GPU `gpu` alone when given); returns
    (cell, return code, wall s, CPU s).

    The CPU time (user + system of the cell's process) says what a cell costs even on a busy machine.
    """
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = str(gpu)
    command = [sys.executable, str(REPO_ROOT / f"main_{dataset}.py")] + cell.argv
    os.makedirs(out_dir, exist_ok=True)
    start = time.time()
    with open(os.path.join(out_dir, f"{os.path.basename(cell.save_dir)}.out"), "w") as handle:
        process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
    return cell, process.returncode, time.time() - start, usage.ru_utime + usage.ru_stime


def mean_std(values):
    values = np.asarray(values, dtype=np.float64)
    std = values.std(ddof=1) if len(values) > 1 else float("nan")
    return float(values.mean()), float(std)


def fmt(pair):
    mean, std = pair
    return f"{mean:.2f}" if np.isnan(std) else f"{mean:.2f} ± {std:.2f}"


def summarize(cells, reference):
    """Per variant: per-step best avg, final-step tIoU mAP and the paired difference, over seeds."""
    variants = list(dict.fromkeys(cell.variant for cell in cells))
    results = {(c.variant, c.seed): c.result() for c in cells}
    ref = reference if reference in variants else variants[0]
    rows = []
    for name in variants:
        mine = [c for c in cells if c.variant == name and results[(c.variant, c.seed)]]
        if not mine:
            continue
        steps = mine[0].num_steps
        per_step = {k: mean_std([results[(c.variant, c.seed)]["best"][k] for c in mine]) for k in range(steps + 1)}
        finals = {c.seed: results[(c.variant, c.seed)]["best"][steps] for c in mine}
        tious = sorted(results[(mine[0].variant, mine[0].seed)]["tiou"][steps])
        per_tiou = {t: mean_std([results[(c.variant, c.seed)]["tiou"][steps][t] for c in mine]) for t in tious}
        ref_finals = {c.seed: results[(c.variant, c.seed)]["best"][c.num_steps] for c in cells
                      if c.variant == ref and results[(c.variant, c.seed)]}
        paired = [finals[s] - ref_finals[s] for s in finals if s in ref_finals]
        others = {}
        for kind in ("last", "val"):                      # the final step's last epoch / validation-selected
            values = [results[(c.variant, c.seed)].get(kind, {}).get(steps) for c in mine]
            others[kind] = mean_std(values) if values and None not in values else (float("nan"), float("nan"))
        rows.append(dict(variant=name, steps=steps, seeds=sorted(finals), per_step=per_step,
                         final=mean_std(list(finals.values())), per_tiou=per_tiou,
                         paired=mean_std(paired) if paired else (float("nan"), float("nan")),
                         finals=finals, last=others["last"], val=others["val"]))
    return rows, ref


def fmt_or_dash(pair):
    return "—" if np.isnan(pair[0]) else fmt(pair)


def markdown(rows, ref, header):
    max_steps = max(row["steps"] for row in rows)
    with_val = any(not np.isnan(row["val"][0]) for row in rows)
    extra = " | val-selected" if with_val else ""
    lines = [header, "", "Best average mAP (%) per step (the best-on-test epoch of each step, the released "
             "protocol), mean ± std over seeds; final = the last step's best, range = its lowest and highest "
             "seed; last epoch = the last step's last evaluation"
             + ("; val-selected = the last step's epoch of best validation mAP (--val_videos), its test mAP"
                if with_val else "") + f"; Δ = final − {ref}'s final, paired by seed (mean ± std):", "",
             "| variant | seeds | " + " | ".join(f"step {k}" for k in range(max_steps + 1))
             + f" | final | range | last epoch{extra} | Δ vs {ref} |",
             "|---|---|" + "---|" * (max_steps + 5 + with_val)]
    for row in rows:
        cells = [fmt(row["per_step"][k]) if k in row["per_step"] else "" for k in range(max_steps + 1)]
        delta = "—" if row["variant"] == ref else fmt(row["paired"])
        finals = list(row["finals"].values())
        lines.append(f"| {row['variant']} | {len(row['seeds'])} | " + " | ".join(cells)
                     + f" | **{fmt(row['final'])}** | {min(finals):.2f}–{max(finals):.2f} | {fmt_or_dash(row['last'])}"
                     + (f" | {fmt_or_dash(row['val'])}" if with_val else "") + f" | {delta} |")
    tious = list(rows[0]["per_tiou"])
    lines += ["", "mAP (%) at each tIoU of the final step's best evaluation, mean ± std over seeds:", "",
              "| variant | " + " | ".join(f"{t:.2f}" for t in tious) + " |", "|---|" + "---|" * len(tious)]
    for row in rows:
        lines.append(f"| {row['variant']} | " + " | ".join(fmt(row["per_tiou"].get(t, (np.nan, np.nan)))
                                                          for t in tious) + " |")
    return "\n".join(lines) + "\n"


def csv_text(rows, cells):
    """One line per finished cell (the raw numbers), then mean and std lines per variant."""
    max_steps = max(row["steps"] for row in rows)
    head = ["variant", "seed", "num_steps"] + [f"step{k}_best" for k in range(max_steps + 1)] + [
        "final_best", "final_last", "final_val_selected", "run_folder"]
    lines = [",".join(head)]
    for cell in cells:
        result = cell.result()
        if result:
            steps = [f"{result['best'][k]:.2f}" if k in result["best"] else "" for k in range(max_steps + 1)]
            others = [f"{result[kind][cell.num_steps]:.2f}" if cell.num_steps in result.get(kind, {}) else ""
                      for kind in ("last", "val")]
            lines.append(",".join([cell.variant, str(cell.seed), str(cell.num_steps)] + steps
                                  + [f"{result['best'][cell.num_steps]:.2f}"] + others + [cell.save_dir]))
    for row in rows:
        for index, stat in enumerate(("mean", "std")):
            steps = [f"{row['per_step'][k][index]:.4f}" if k in row["per_step"] else "" for k in range(max_steps + 1)]
            others = ["" if np.isnan(row[kind][0]) else f"{row[kind][index]:.4f}" for kind in ("last", "val")]
            lines.append(",".join([row["variant"], stat, str(row["steps"])] + steps
                                  + [f"{row['final'][index]:.4f}"] + others + [""]))
    return "\n".join(lines) + "\n"


def plot(rows, ref, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(max(5, 1.1 * len(rows)), 3.8), layout="constrained")
    x = np.arange(len(rows))
    means = [row["final"][0] for row in rows]
    stds = [0 if np.isnan(row["final"][1]) else row["final"][1] for row in rows]
    ax.bar(x, means, yerr=stds, capsize=4, color=["tab:orange" if r["variant"] == ref else "tab:blue" for r in rows])
    for i, row in enumerate(rows):
        ax.plot([i] * len(row["finals"]), list(row["finals"].values()), "k.", ms=4)
    ax.set_xticks(x, [row["variant"] for row in rows], rotation=30, ha="right")
    ax.set_ylabel("best avg mAP (%) of the final step")
    ax.set_title("Ablation: mean ± std over seeds (dots: seeds)")
    ax.grid(axis="y", alpha=0.3)
    tmp = f"{path}.tmp.png"
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)


def parse_cli(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--dataset", default="THUMOS", choices=["THUMOS", "ActivityNet"])
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 (or --seed_list)")
    parser.add_argument("--seed_list", type=int, nargs="+", default=None)
    parser.add_argument("--jobs", type=int, default=None,
                        help="cells run at once (default: the number of visible GPUs on CUDA, else of cores)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads per cell (default cores // jobs)")
    parser.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2",
                        help="a grid axis (repeatable); replaces the default grid by the product of the axes")
    parser.add_argument("--variants", default="default", choices=["default", "components", "steps", "full"],
                        help="the default grid, or only its component / num_steps rows, or only the full model")
    parser.add_argument("--name", default="ablation", help="name of the result files")
    parser.add_argument("--dry_run", action="store_true", help="print the cells' commands, run nothing")
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
    result_dir = os.path.join(base_args.checkpoint_root, opts.dataset, outdir)
    todo = [cell for cell in cells if cell.result() is None]
    gpus = visible_gpus(passthrough)
    jobs = min(opts.jobs or len(gpus) or os.cpu_count() or 1, max(len(todo), 1))
    threads = opts.threads or max(1, (os.cpu_count() or 1) // jobs)
    print(f"{len(cells)} cells ({len(variants)} variants x {len(seeds)} seeds), {len(cells) - len(todo)} finished, "
          f"{len(todo)} to run with {jobs} jobs x {threads} threads"
          + (f", each cell on one GPU of CUDA_VISIBLE_DEVICES={','.join(gpus)}" if gpus else ""))
    if any("num_steps" in overrides for _, overrides in variants):
        print(budget_note(base_args))
    if opts.dry_run:
        for cell in todo:
            print(" ".join(["python", f"main_{opts.dataset}.py"] + cell.argv))
        return 0
    if "--demo" in passthrough:                     # generate the demo set once, before the parallel cells
        from synthetic_data import ensure_demo_dataset
        ensure_demo_dataset(base_args)
    start = time.time()
    failed, cpu = [], 0.0
    for cell, code, seconds, cpu_s in run_cells(todo, jobs, gpus,
                                                lambda c, gpu: run_cell(c, opts.dataset, threads, result_dir, gpu)):
            status = "done" if code == 0 and cell.result() else f"FAILED (exit {code})"
            cpu += cpu_s
            print(f"  {cell.variant} seed {cell.seed}: {status} in {seconds:.0f} s wall, {cpu_s:.0f} s CPU "
                  f"({cell.save_dir})", flush=True)
            if status != "done":
                failed.append(cell)
    wall = time.time() - start
    rows, ref = summarize(cells, REFERENCE)
    if not rows:
        raise UserError("no cell finished; see the .out files in " + result_dir)
    command = " ".join(["python ablate.py"] + (sys.argv[1:] if argv is None else list(argv)))
    header = (f"`{command}`: {len(cells)} cells ({len(variants)} variants x {len(seeds)} seeds), "
              f"{len(todo)} run now in {wall / 60:.1f} min wall time ({cpu / 60:.1f} min CPU) with {jobs} parallel "
              f"jobs x {threads} threads on {os.cpu_count()} cores.")
    text = markdown(rows, ref, header)
    print("\n" + text)
    base = os.path.join(result_dir, opts.name)
    atomic_write_text(base + ".md", text)
    atomic_write_text(base + ".csv", csv_text(rows, cells))
    plot(rows, ref, base + ".png")
    print(f"wrote {base}.md, {base}.csv and {base}.png")
    if failed:
        print(f"error: {len(failed)} cells failed; their output is in {result_dir}/*.out", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
