"""bench/profile_run.py on a tiny schedule: it wraps the engine's pieces, so a change there must
not silently leave a part untimed (the parts must add up to the run) or break the floors."""
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_profile_run_accounts_for_the_whole_run(tmp_path):
    cmd = [sys.executable, str(REPO / "bench" / "profile_run.py"), "--",
           "--epochs", "2", "--epochs_per_step", "1", "--num_steps", "1", "--eval_freq", "1",
           "--data_dir", str(tmp_path / "synthetic_THUMOS14")]
    out = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    wall = float(re.search(r"wall ([\d.]+) s", out.stdout).group(1))
    rows = {m.group(1).strip(): (float(m.group(2)), m.group(3).strip())
            for m in re.finditer(r"^(\S.{38}\S?)\s+(-?[\d.]+)\s+-?[\d.]+%\s+(\S+)", out.stdout, re.M)}
    parts = [name for name in rows if not name.startswith(("device", "THUMOS", "part"))]
    assert len(parts) == 10, out.stdout
    seconds = {name: rows[name][0] for name in parts}
    # the last row is the run minus every timed part: >= 0 when nothing is counted twice, small
    # when nothing big is untimed (the same for the training loop's own remainder)
    assert all(value >= -0.05 for value in seconds.values()), out.stdout
    assert seconds[parts[-1]] < 0.25 * wall and seconds["training: rest of the loop"] < 0.25 * wall, out.stdout
    for name in parts:
        if name.startswith(("training: forward", "training: backward", "evaluation", "pseudo")):
            assert float(rows[name][1]) > 0, (name, out.stdout)        # a floor for each matmul part
