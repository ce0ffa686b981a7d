"""An ablation grid (ablate.py): variants x seeds, each cell an ordinary run of the entry script
in its own run folder, read back from its results.json; the tables are engine/ablation_tables.py.
"""
import itertools
import os
import queue
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from config import build_args
from engine.record import METRICS_FILE, read_results
from engine.run_folder import RunConfigChanged, check_run_folder
from utils import UserError

REPO_ROOT = Path(__file__).resolve().parents[1]
OFF = dict(use_intra_attention=False, use_inter_attention=False, use_dynamic_sampling=False,
           use_pseudo_instance_loss=False, use_uncertainty=False)

# The default grid: (name, config overrides), relative to the preset (or the demo preset).
# The component rows follow the paper's component ablation, each adding one part to the row above.
# "num_steps" cells follow EPOCH_BUDGET unless "epochs" is given; the base row trains as many epochs
# as the full model ("full").
COMPONENT_GRID = [
    ("base", dict(num_steps=0, epochs="full")),                     # base model only
    ("+intra", {**OFF, "use_intra_attention": True}),               # + intra-segment attention
    ("+inter", {**OFF, "use_intra_attention": True,
                "use_inter_attention": True}),                      # + inter-segment attention
    ("+dynamic", {**OFF, "use_intra_attention": True, "use_inter_attention": True,
                  "use_dynamic_sampling": True}),                   # + dynamic segment sampling
    ("+pseudo_loss", {**OFF, "use_intra_attention": True, "use_inter_attention": True,
                      "use_dynamic_sampling": True,
                      "use_pseudo_instance_loss": True}),           # + pseudo instance loss
    ("full", {}),                                                   # + uncertainty = the full model
]
STEPS_GRID = [(f"steps{n}", dict(num_steps=n)) for n in (1, 2, 3)]
REFERENCE = "full"                  # paired differences are taken to this variant (else the first)
# A row that sets num_steps keeps the full model's step lengths: each step before the last trains
# epochs_per_step epochs and the last step as many as the full model's last step. What a row reports
# is the best evaluation of its last step, whose model is trained from scratch within that step:
# equal last-step lengths give every row's model the same training and the same number of
# evaluations to take the best of. Equal total epochs would lengthen the last step of rows with
# fewer steps (THUMOS: 700 epochs for num_steps 1 against the full model's 500), and leave none when
# num_steps * epochs_per_step reaches the total (num_steps 3 on the demo).
EPOCH_BUDGET = ("rows that set num_steps keep the full model's step lengths: each step before the "
                "last trains epochs_per_step = {eps} epochs and the last step {last} epochs, as "
                "the full model's last step (epochs - num_steps * epochs_per_step = {epochs} - "
                "{steps} * {eps}); such a row trains {eps} * num_steps + {last} epochs in all. The "
                "base row trains the full model's {epochs} epochs.")

# log.txt of a run folder without metrics.jsonl (written before the runs kept a record):
# an evaluation line (losses may come between the epoch and the mAP part)
EVAL_LINE = re.compile(r"^step (\d+) epoch (\d+) \|.*?mAP@tIoU (.*?) \| avg ([-\d.]+) \| "
                       r"best ([-\d.]+)( \*)?$")
FINAL_LINE = "best average mAP per step:"


def parse_grid_axes(axes):
    """['key=v1,v2', ...] -> [(name, overrides)] of their cartesian product."""
    parsed = []
    for axis in axes:
        key, sep, values = axis.partition("=")
        if not sep or not key or not values:
            raise UserError(f"--grid {axis!r}: expected KEY=V1,V2,...")
        parsed.append([(key, value) for value in values.split(",")])
    return [("_".join(f"{k}={v}" for k, v in combo), dict(combo))
            for combo in itertools.product(*parsed)]


def default_grid(preset_steps):
    """Component rows, then the num_steps rows that differ from the full model (same cell
    otherwise)."""
    return COMPONENT_GRID + [(name, o) for name, o in STEPS_GRID if o["num_steps"] != preset_steps]


def last_step_epochs(base_args):
    """Epochs of the full model's last refinement step (EPOCH_BUDGET)."""
    last = base_args.epochs - base_args.epochs_per_step * base_args.num_steps
    if last < 1:
        raise UserError(f"the full model's last step has no epochs (epochs {base_args.epochs} <= "
                        f"num_steps {base_args.num_steps} * epochs_per_step "
                        f"{base_args.epochs_per_step})")
    return last


def budget_note(base_args):
    return "epoch budget: " + EPOCH_BUDGET.format(eps=base_args.epochs_per_step,
                                                  last=last_step_epochs(base_args),
                                                  epochs=base_args.epochs,
                                                  steps=base_args.num_steps)


def cell_flags(overrides, base_args):
    """Command-line flags of one variant; num_steps sets the epochs to epochs_per_step * num_steps
    + the full model's last-step epochs (EPOCH_BUDGET)."""
    overrides = dict(overrides)
    if overrides.get("epochs") == "full":
        overrides["epochs"] = base_args.epochs
    if "num_steps" in overrides and "epochs" not in overrides:
        eps = int(overrides.get("epochs_per_step", base_args.epochs_per_step))
        overrides["epochs"] = eps * int(overrides["num_steps"]) + last_step_epochs(base_args)
    return [item for key, value in overrides.items()
            for item in (f"--{key}", str(value).lower() if isinstance(value, bool) else str(value))]


def folder_safe(name):
    return re.sub(r"[^A-Za-z0-9_.=-]+", "-", name.replace("+", "plus_")).strip("-")


def parse_log(path):
    """{'best': {step: avg %}, 'tiou': {step: {tiou: mAP %}} at each step's best evaluation,
    'finished'}."""
    best, tiou, finished = {}, {}, False
    with open(path) as handle:
        for line in handle:
            line = line.rstrip("\n")
            if line.startswith(FINAL_LINE):
                finished = True
            match = EVAL_LINE.match(line)
            if match and match.group(6):               # ' *': a new best of its step
                step = int(match.group(1))
                best[step] = float(match.group(5))
                tiou[step] = {float(k): float(v)
                              for k, v in (p.split(":") for p in match.group(3).split())}
            elif match:
                finished = False                       # an evaluation after the final line: resumed
    return {"best": best, "tiou": tiou, "finished": finished}


def parse_results(results):
    """A finished run's results.json -> {'best', 'tiou' (as parse_log), 'last': {step: avg %},
    'val': {step: test avg % of the validation-selected epoch} (with --val_videos), 'finished'},
    every value rounded to 2 decimals as the run's log prints it (the table's statistics are those
    of the numbers it lists)."""
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
        self.variant, self.seed, self.argv, self.save_dir, self.num_steps = \
            variant, seed, argv, save_dir, num_steps
        self.log_path = os.path.join(save_dir, "log.txt")

    def result(self):
        """The finished run's numbers (results.json), or None while it has not finished."""
        results = read_results(self.save_dir)
        if results is not None:
            parsed = parse_results(results)
        elif os.path.isfile(self.log_path) \
                and not os.path.isfile(os.path.join(self.save_dir, METRICS_FILE)):
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
            argv = passthrough + cell_flags(overrides, base_args) + ["--seed", str(seed),
                                                                     "--outdir", outdir,
                                                                     "--suffix", suffix]
            # the run folder the entry script uses
            args = build_args(dataset, argv + ["--device", "cpu"])
            try:
                check_run_folder(args)  # a folder of another config is neither reported nor resumed
            except RunConfigChanged as err:
                raise UserError(f"cell {name} seed {seed}: {err}; for this grid choose another "
                                f"--outdir (or delete that folder)") from None
            cells.append(Cell(name, seed, argv, args.save_dir, args.num_steps))
    return base_args, cells


def visible_gpus(passthrough):
    """GPU ids the cells are pinned to: CUDA_VISIBLE_DEVICES's entries (else 0..n-1); none on
    CPU."""
    if "--gpu" in passthrough:
        raise UserError("ablate.py pins each cell to one GPU itself; drop --gpu and choose the "
                        "GPUs with CUDA_VISIBLE_DEVICES=0,1 python ablate.py ...")
    device = passthrough[passthrough.index("--device") + 1] \
        if "--device" in passthrough[:-1] else ""
    if device and device != "cuda":
        if device.startswith("cuda"):
            raise UserError(f"--device {device}: ablate.py pins each cell to one GPU; pass "
                            f"--device cuda or nothing")
        return []
    import torch
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    listed = [g.strip() for g in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if g.strip()]
    return (listed if "CUDA_VISIBLE_DEVICES" in os.environ
            else [str(i) for i in range(count)])[:count]


def run_cells(cells, jobs, gpus, run_one):
    """run_one(cell, gpu) for every cell, `jobs` at a time, each on a GPU no other running cell has
    while jobs <= len(gpus) (gpu None without GPUs); yields the results in the cells' order."""
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

    The CPU time (user + system of the cell's process) says what a cell costs even on a busy
    machine.
    """
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = str(gpu)
    command = [sys.executable, str(REPO_ROOT / f"main_{dataset}.py")] + cell.argv
    os.makedirs(out_dir, exist_ok=True)
    start = time.time()
    with open(os.path.join(out_dir, f"{os.path.basename(cell.save_dir)}.out"), "w") as handle:
        process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=handle,
                                   stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
    return cell, process.returncode, time.time() - start, usage.ru_utime + usage.ru_stime
