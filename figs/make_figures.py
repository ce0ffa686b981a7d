"""Regenerate the README figures from a finished demo run.

    python main_THUMOS.py --demo                 # trains; the run folder is printed in log.txt
    python figs/make_figures.py                  # replays it in test mode with --visualize
    python figs/make_figures.py --run_dir checkpoints/THUMOS/ablate_demo/RUN
                                                 # or any THUMOS demo run folder

Writes figs/demo_map_over_steps.png (mAP per tIoU for each refinement step) and
figs/demo_video.png (one test video: GT, proposals, CAS, attention, sampling weights).
"""
import argparse
import os
import shutil
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from config import build_args  # noqa: E402
from engine import plots  # noqa: E402
from engine import run as runner  # noqa: E402
from engine.reports import read_summary_json  # noqa: E402
from engine.run_folder import test_output_folder  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--video", default="video_test_0000029", help="test video to show")
    parser.add_argument("--run_dir", default="",
                        help="a finished THUMOS demo run folder (default: the --demo one)")
    cli = parser.parse_args(argv)
    os.chdir(REPO_ROOT)                       # the demo's data/ and checkpoints/ paths are relative
    args = build_args("THUMOS", ["--demo"])
    run_dir = cli.run_dir or args.save_dir
    if not os.path.isfile(os.path.join(run_dir, "model_latest.pth")):
        sys.exit(f"error: no demo run in {run_dir}; run `python main_THUMOS.py --demo` first")
    # test mode takes the run's config from its config.json and writes into its own folder
    runner.run("THUMOS", ["--demo", "--test", "--checkpoint", run_dir, "--visualize",
                          "--visualize_videos", "0"])
    test_dir = test_output_folder(build_args("THUMOS", ["--demo", "--checkpoint", run_dir]))
    figs = REPO_ROOT / "figs"
    summary = read_summary_json(os.path.join(test_dir, "test_summary.json"))
    per_step = plots.summary_to_per_step(summary)
    plots.plot_map_over_steps(figs / "demo_map_over_steps.png", per_step)
    shutil.copyfile(os.path.join(test_dir, "visualize", f"test_step{len(per_step) - 1}",
                                 f"{cli.video}.png"),
                    figs / "demo_video.png")
    print(f"wrote {figs / 'demo_map_over_steps.png'} and {figs / 'demo_video.png'}")


if __name__ == "__main__":
    main()
