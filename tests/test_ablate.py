"""ablate.py and its library (engine/ablation.py, engine/ablation_tables.py): a tiny grid through
the real entry script, tables read back from the runs, reruns skip."""
import csv
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import ablate
from config import REPO_ROOT, build_args
from engine import ablation, ablation_tables, run_folder
from utils import UserError

# tiny demo: 16-dim features, 1 epoch per step (the last step too: 3 epochs, 2 steps), evaluation
# after every epoch
TINY = ["--demo", "--feature_dim", "16", "--epochs", "3", "--epochs_per_step", "1",
        "--sample_segments_num", "32", "--eval_freq", "1", "--batch_size", "32"]


def run_ablate(tmp_path, extra=()):
    command = [sys.executable, str(REPO_ROOT / "ablate.py"), "--seeds", "2", "--jobs", "2",
               "--grid", "num_steps=0,1", *TINY, "--data_dir", str(tmp_path / "data"),
               "--checkpoint_root", str(tmp_path / "ck"), *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def final_line_best(log_path):
    """The run's own summary: 'best average mAP per step: step 0 X, step 1 Y (...)' -> [X, Y]."""
    line = [x for x in Path(log_path).read_text().splitlines()
            if x.startswith("best average mAP per step:")][-1]
    return [float(v) for v in re.findall(r"step \d+ (-?[\d.]+)", line)]


@pytest.mark.slow
def test_tiny_grid_end_to_end(tmp_path):
    out = run_ablate(tmp_path)
    assert "4 cells (2 variants x 2 seeds), 0 finished, 4 to run" in out
    result_dir = tmp_path / "ck" / "THUMOS" / "ablate_demo"
    rows = list(csv.DictReader(io.StringIO((result_dir / "ablation.csv").read_text())))
    cells = [row for row in rows if row["seed"] not in ("mean", "std")]
    assert len(cells) == 4 and {row["variant"] for row in cells} == {"num_steps=0", "num_steps=1"}
    folders = {row["run_folder"] for row in cells}
    assert len(folders) == 4                                     # every seed its own run folder
    for row in cells:
        folder = Path(row["run_folder"])
        folder = folder if folder.is_absolute() else tmp_path / folder
        own = final_line_best(folder / "log.txt")
        steps = int(row["num_steps"])
        table = [float(row[f"step{k}_best"]) for k in range(steps + 1)]
        assert table == own                                       # exactly what the run printed
        # and what its checkpoint holds (the log rounds to 2 decimals of %)
        state = torch.load(folder / "model_latest.pth", map_location="cpu", weights_only=False)
        assert np.allclose(table, 100 * np.asarray(state["best_mAP_per_step"]),
                           atol=0.005 + 1e-9)
        assert '"seed": ' + row["seed"] in (folder / "config.json").read_text()
        # the last epoch column: the final step's last evaluation, as metrics.jsonl recorded it
        last = [json.loads(line)
                for line in (folder / "metrics.jsonl").read_text().splitlines()][-1]
        assert last["step"] == steps and row["final_last"] == f"{last['average_mAP']:.2f}"
        assert row["final_val_selected"] == ""
    # mean / std lines and the markdown agree with the per-cell numbers
    for variant in ("num_steps=0", "num_steps=1"):
        finals = [float(r["final_best"]) for r in cells if r["variant"] == variant]
        mean = next(r for r in rows if r["variant"] == variant and r["seed"] == "mean")
        std = next(r for r in rows if r["variant"] == variant and r["seed"] == "std")
        assert float(mean["final_best"]) == pytest.approx(np.mean(finals), abs=1e-4)
        assert float(std["final_best"]) == pytest.approx(np.std(finals, ddof=1), abs=1e-4)
    assert (result_dir / "ablation.md").is_file()
    assert (result_dir / "ablation.png").stat().st_size > 0
    markdown = (result_dir / "ablation.md").read_text()
    assert "| final | range | last epoch | Δ vs" in markdown and "val-selected" not in markdown
    # a rerun skips every finished cell and rewrites the same table, read from results.json alone
    table = (result_dir / "ablation.csv").read_text()
    for row in cells:
        folder = Path(row["run_folder"])
        (folder if folder.is_absolute() else tmp_path / folder).joinpath("log.txt").unlink()
    out = run_ablate(tmp_path)
    assert "4 finished, 0 to run" in out
    assert (result_dir / "ablation.csv").read_text() == table


def test_cell_flags_and_grid():
    base = type("A", (), {"epochs": 60, "epochs_per_step": 20, "num_steps": 2})()  # the demo's
    assert ablation.cell_flags({"num_steps": 3}, base) == ["--num_steps", "3", "--epochs", "80"]
    assert ablation.cell_flags({"num_steps": 0, "epochs": "full"}, base) == [
        "--num_steps", "0", "--epochs", "60"]
    # THUMOS: the full model's last step trains 800 - 3 * 100 = 500 epochs, and so does every
    # row's last step
    thumos = type("A", (), {"epochs": 800, "epochs_per_step": 100, "num_steps": 3})()
    assert [ablation.cell_flags({"num_steps": n}, thumos)[-1] for n in (0, 1, 2, 3)] == [
        "500", "600", "700", "800"]
    assert ablation.cell_flags(dict(ablation.COMPONENT_GRID)["base"], thumos)[-1] == "800"
    assert "last step 500 epochs" in ablation.budget_note(thumos)
    with pytest.raises(UserError, match="last step has no epochs"):
        ablation.cell_flags({"num_steps": 1},
                            type("A", (), {"epochs": 40, "epochs_per_step": 20, "num_steps": 2})())
    assert ablation.cell_flags({"use_uncertainty": False}, base) == ["--use_uncertainty", "false"]
    grid = ablation.parse_grid_axes(["a=1,2", "b=x"])
    assert grid == [("a=1_b=x", {"a": "1", "b": "x"}), ("a=2_b=x", {"a": "2", "b": "x"})]
    names = [name for name, _ in ablation.default_grid(2)]
    assert names == ["base", "+intra", "+inter", "+dynamic", "+pseudo_loss", "full", "steps1",
                     "steps3"]
    with pytest.raises(UserError):
        ablation.parse_grid_axes(["novalues"])


def test_parse_log_takes_each_steps_last_best(tmp_path):
    log = tmp_path / "log.txt"
    log.write_text("\n".join([
        "step 0 epoch 0 | loss 1.0",
        "step 0 epoch 4 | mAP@tIoU 0.10:10.00 0.20:5.00 | avg 7.50 | best 7.50 *",
        "step 0 epoch 9 | mAP@tIoU 0.10:20.00 0.20:6.00 | avg 13.00 | best 13.00 *",
        "step 0 epoch 14 | mAP@tIoU 0.10:12.00 0.20:2.00 | avg 7.00 | best 13.00",
        # the merged format: losses before the mAP
        "step 1 epoch 19 | total 1.2 accuracy 0.5 | lr 0.001 | mAP@tIoU 0.10:30.00 0.20:10.00 "
        "| avg 20.00 | best 20.00 *",
        "best average mAP per step: step 0 13.00, step 1 20.00 (final model: x)"]) + "\n")
    parsed = ablation.parse_log(log)
    assert parsed == {"best": {0: 13.0, 1: 20.0},
                      "tiou": {0: {0.1: 20.0, 0.2: 6.0}, 1: {0.1: 30.0, 0.2: 10.0}},
                      "finished": True}
    with open(log, "a") as handle:                    # resumed and evaluated again: not finished
        handle.write("step 1 epoch 19 | mAP@tIoU 0.10:30.00 0.20:10.00 | avg 20.00 | best 20.00\n")
    assert ablation.parse_log(log)["finished"] is False


def test_summary_paired_difference():
    class FakeCell:
        def __init__(self, variant, seed, final):
            self.variant, self.seed, self.num_steps, self._final = variant, seed, 1, final

        def result(self):
            return {"best": {0: 1.0, 1: self._final}, "tiou": {1: {0.5: self._final}},
                    "finished": True}
    cells = [FakeCell("full", 0, 10.0), FakeCell("full", 1, 14.0), FakeCell("x", 0, 11.0),
             FakeCell("x", 1, 12.0)]
    rows, ref = ablation_tables.summarize(cells, "full")
    x = next(r for r in rows if r["variant"] == "x")
    assert ref == "full"
    assert x["final"] == pytest.approx((11.5, np.std([11.0, 12.0], ddof=1)))
    assert x["paired"] == pytest.approx((-0.5, np.std([1.0, -2.0], ddof=1)))   # 11-10, 12-14


def test_cells_are_pinned_to_one_gpu_each():
    """On CUDA every running cell has a GPU of its own: never two cells on one GPU at the same
    time."""
    import threading
    import time
    lock, running, seen = threading.Lock(), {}, []

    def fake_cell(cell, gpu):
        with lock:
            assert gpu not in running, f"GPU {gpu} already runs cell {running.get(gpu)}"
            running[gpu] = cell
            seen.append(gpu)
        time.sleep(0.01 * (cell % 3))
        with lock:
            del running[gpu]
        return cell, gpu

    results = list(ablation.run_cells(list(range(12)), 3, ["2", "5", "7"], fake_cell))
    assert [cell for cell, _ in results] == list(range(12))                 # the cells' order
    assert set(seen) == {"2", "5", "7"} and len(seen) == 12
    assert [gpu for _, gpu in ablation.run_cells([0, 1], 2, [], lambda c, g: (c, g))] == [
        None, None]                                                          # CPU


def test_visible_gpus_and_gpu_flags(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,6")
    assert ablation.visible_gpus(["--demo"]) == ["3", "6"]
    assert ablation.visible_gpus(["--device", "cuda"]) == ["3", "6"]
    assert ablation.visible_gpus(["--device", "cpu"]) == []
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert ablation.visible_gpus([]) == ["0", "1"]
    with pytest.raises(UserError, match="drop --gpu"):
        ablation.visible_gpus(["--gpu", "1"])
    with pytest.raises(UserError, match="--device cuda:1"):
        ablation.visible_gpus(["--device", "cuda:1"])


def test_dry_run_states_the_epoch_budget_and_gpus(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(ablate, "visible_gpus", lambda passthrough: ["0", "1"])
    assert ablate.main(["--variants", "steps", "--seeds", "1", "--dry_run", "--checkpoint_root",
                        str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "3 cells (3 variants x 1 seeds), 0 finished, 3 to run with 2 jobs" in out
    assert "each cell on one GPU of CUDA_VISIBLE_DEVICES=0,1" in out
    assert "epoch budget: rows that set num_steps keep the full model's step lengths" in out
    assert "last step 500 epochs" in out                                 # THUMOS: 800 - 3 * 100
    commands = [line for line in out.splitlines() if line.startswith("python main_THUMOS.py")]
    assert [c.split("--epochs ")[1].split()[0] for c in commands] == ["600", "700", "800"]


def test_cell_folder_of_another_config_is_refused_before_anything_runs(tmp_path):
    """A cell's folder made under another config (e.g. another epoch budget) is neither reported
    nor resumed."""
    passthrough = ["--checkpoint_root", str(tmp_path)]
    _, cells = ablation.plan_cells("THUMOS", passthrough, [("steps1", {"num_steps": 1})], [0],
                                   "ablate")
    args = build_args("THUMOS", cells[0].argv + ["--device", "cpu"])
    saved = run_folder.as_stored(args)
    saved["epochs"] = 200                                 # the cell as planned under another budget
    os.makedirs(args.save_dir)
    Path(args.save_dir, "config.json").write_text(json.dumps(saved))
    Path(args.save_dir, "model_latest.pth").write_bytes(b"")
    with pytest.raises(UserError,
                       match=r"cell steps1 seed 0: .*epochs: 200 → 600.*another --outdir"):
        ablation.plan_cells("THUMOS", passthrough, [("steps1", {"num_steps": 1})], [0], "ablate")


def test_table_reads_results_json_and_shows_last_and_validation_columns(tmp_path):
    """results.json -> the cell's numbers as the log prints them (2 decimals), last-epoch and
    validation-selected columns beside best; a folder with metrics.jsonl but no results.json is
    unfinished."""
    def results(best, last, val):
        step = {"best": {"epoch": 3, "mAP": {"0.10": best + 1.004, "0.20": best - 1.0},
                         "average_mAP": best},
                "last": {"epoch": 5, "mAP": {}, "average_mAP": last}}
        if val is not None:
            step["val_selected"] = {"epoch": 4, "mAP": {}, "average_mAP": val,
                                    "val_average_mAP": 50.0}
        return {"steps": {"0": step}}

    parsed = ablation.parse_results(results(12.3456, 10.004, 11.111))
    assert parsed["best"] == {0: 12.35} and parsed["last"] == {0: 10.0}
    assert parsed["val"] == {0: 11.11}
    assert parsed["tiou"] == {0: {0.1: 13.35, 0.2: 11.35}}
    folder = tmp_path / "run"
    folder.mkdir()
    cell = ablation.Cell("full", 0, [], str(folder), 0)
    (folder / "log.txt").write_text("best average mAP per step: step 0 1.00 (final model: x)\n")
    (folder / "metrics.jsonl").write_text("")
    assert cell.result() is None                          # a recorded run that has not finished
    (folder / "results.json").write_text(json.dumps(results(12.0, 10.0, 11.0)))
    assert cell.result()["last"] == {0: 10.0}

    class FakeCell:
        def __init__(self, seed, best, last, val):
            self.variant, self.seed, self.num_steps, self.save_dir = "full", seed, 0, f"run{seed}"
            self._result = ablation.parse_results(results(best, last, val))

        def result(self):
            return self._result
    cells = [FakeCell(0, 12.0, 10.0, 11.0), FakeCell(1, 14.0, 11.0, 12.0)]
    rows, ref = ablation_tables.summarize(cells, "full")
    assert rows[0]["last"] == pytest.approx((10.5, np.std([10.0, 11.0], ddof=1)))
    assert rows[0]["val"] == pytest.approx((11.5, np.std([11.0, 12.0], ddof=1)))
    text = ablation_tables.markdown(rows, ref, "header")
    assert "| final | range | last epoch | val-selected |" in text
    assert "| **13.00 ± 1.41** | 12.00–14.00 | 10.50 ± 0.71 | 11.50 ± 0.71 |" in text
    csv_rows = list(csv.DictReader(io.StringIO(ablation_tables.csv_text(rows, cells))))
    assert [r["final_last"] for r in csv_rows] == ["10.00", "11.00", "10.5000", "0.7071"]
    assert [r["final_val_selected"] for r in csv_rows] == ["11.00", "12.00", "11.5000", "0.7071"]
