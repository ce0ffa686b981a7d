"""bench/profile_run.py on a tiny schedule: it times the run through the engine's seam
(engine.set_timer), so the parts it reports must cover the whole run whatever the engine's
parts are called or how many there are, and each matmul part must get a floor."""
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_profile_run_parts_cover_the_run(tmp_path):
    cmd = [sys.executable, str(REPO / "bench" / "profile_run.py"),
           "--json", str(tmp_path / "parts.json"), "--",
           "--epochs", "2", "--epochs_per_step", "1", "--num_steps", "1", "--eval_freq", "1",
           "--data_dir", str(tmp_path / "synthetic_THUMOS14")]
    out = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    report = json.loads((tmp_path / "parts.json").read_text())
    wall, parts = report["wall"], report["parts"]
    untimed = [name for name in parts if name.startswith("untimed")]
    assert len(untimed) == 1, parts
    timed = {name: seconds for name, seconds in parts.items() if name not in untimed}
    # the parts are disjoint (none negative, their sum not above the wall time) and cover the run
    # up to a few percent (what no part covers: logging, TensorBoard, RNG states, step switches)
    assert all(seconds >= 0 for seconds in timed.values()), out.stdout
    assert sum(timed.values()) <= wall * (1 + 1e-9), out.stdout
    assert sum(timed.values()) >= 0.95 * wall, out.stdout
    assert abs(sum(parts.values()) - wall) < 1e-6 * wall
    # every training iteration, evaluation and pseudo-proposal video ran through a timed forward
    calls = report["calls"]
    assert (calls["train epoch"] == 2 and calls["eval pass"] == 2
            and calls["pseudo pass"] == 1), calls
    assert (calls["train forward"] == calls["train backward"] > 0
            and calls["eval forward"] > 0), calls
    assert all(report["floors"][key] > 0
               for key in ("train forward", "train backward", "eval forward",
                           "pseudo forward")), report["floors"]
