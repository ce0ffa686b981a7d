"""extract_features.py / features/ (extract.py, frames.py, provenance.py) / predict.py --videos on
videos the tests write (moving shapes, 25 and 30 fps sources) with random I3D weights in the
published key layout.

The networks are the real ones at 224 x 224 x 16 (about 3 CPU-seconds per snippet and stream), so
the videos hold one or two snippets. The pipeline tests run TV-L1 with one scale, one warp and two
inner iterations (recorded in extract_config.json like any setting): OpenCV's defaults cost about a
CPU-second per frame pair at 341 x 256. The flow test runs the defaults on small frames."""
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

cv2 = pytest.importorskip("cv2")
if not hasattr(cv2, "optflow"):
    pytest.skip("OpenCV without the contrib modules (pip install -r requirements-extract.txt)",
                allow_module_level=True)

import extract_features  # noqa: E402
import predict  # noqa: E402
from config import build_args  # noqa: E402
from engine import cascade  # noqa: E402
from engine import run as runner  # noqa: E402
from features import extract, provenance  # noqa: E402
from features import frames as video_frames  # noqa: E402
from features.i3d import InceptionI3d  # noqa: E402
from synthetic_data import generate_synthetic_dataset  # noqa: E402

CHEAP_TVL1 = {**video_frames.TVL1_DEFAULTS, "nscales": 1, "warps": 1, "innerIterations": 2,
              "outerIterations": 1}
BITS = 6                        # source frame k carries k in binary: 6 white or black 8 x 8 blocks


def write_video(path, fps, frames, fourcc="MJPG", size=(160, 120)):
    """A textured square moving right by 2 px per frame on grey; blocks at the top left encode the
    frame index."""
    rng = np.random.default_rng(0)
    texture = rng.integers(0, 256, (40, 30, 3), dtype=np.uint8)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, size)
    for k in range(frames):
        frame = np.full((size[1], size[0], 3), 100, np.uint8)
        frame[40:80, 10 + 2 * k:40 + 2 * k] = texture
        for bit in range(BITS):
            frame[:16, 16 * bit:16 * bit + 16] = 255 if k >> bit & 1 else 0
        writer.write(frame)
    writer.release()
    return str(path)


def source_index(frame):
    """Which source frame a decoded frame is: the binary number of its top-left blocks."""
    return sum(1 << bit for bit in range(BITS)
               if frame[4:12, 16 * bit + 4:16 * bit + 12].mean() > 128)


@pytest.fixture(scope="module")
def material(tmp_path_factory):
    root = tmp_path_factory.mktemp("extract")
    videos = root / "videos"
    videos.mkdir()
    write_video(videos / "walk25.avi", 25, 40)                  # 40 frames at 25 fps: 2 snippets
    # 1.2 s: 30 frames at 25 fps, 1 snippet
    write_video(videos / "walk30.mp4", 30, 36, fourcc="mp4v")
    torch.manual_seed(0)
    weights = {}
    for stream, channels in extract.STREAMS:
        weights[stream] = str(root / f"{stream}_imagenet.pt")
        torch.save(InceptionI3d(channels).state_dict(), weights[stream])
    out = root / "features"
    log = []
    extract.extract_videos(str(videos), str(out), weights["rgb"], weights["flow"], workers=2,
                           tvl1_params=CHEAP_TVL1, log=log.append)
    return {"root": root, "videos": videos, "weights": weights, "out": out, "log": log}


def run_extract(material, videos, out, **kwargs):
    log = []
    kwargs = {"workers": 2, "tvl1_params": CHEAP_TVL1, "log": log.append, **kwargs}
    written = extract.extract_videos(videos, str(out), material["weights"]["rgb"],
                                     material["weights"]["flow"], **kwargs)
    return written, log


# ----------------------------------------------------------------------------- the features
def test_output_shape_dtype_and_config(material):
    out = material["out"]
    # frames at 25 fps: 40 (25 fps source); 30 fps source: 36 frames = 1.2 s -> 30 frames;
    # T = frames // 16
    for vid, snippets in (("walk25", 40 // 16), ("walk30", 30 // 16)):
        x = np.load(out / f"{vid}.npy")
        assert x.shape == (snippets, 2048) and x.dtype == np.float32
        assert np.isfinite(x).all() and np.abs(x[:, :1024]).sum() > 0
        assert np.abs(x[:, 1024:]).sum() > 0
    assert sorted(p for p in os.listdir(out) if not p.startswith(".")) == [
        "extract_config.json", "walk25.npy", "walk30.npy"]
    config = json.loads((out / "extract_config.json").read_text())
    assert (config["fps"], config["snippet_frames"], config["crop"], config["short_side"]) == (
        25.0, 16, 224, 256)
    assert config["tvl1"] == CHEAP_TVL1
    for stream in ("rgb", "flow"):
        digest = hashlib.sha256(open(material["weights"][stream], "rb").read()).hexdigest()
        assert config[f"{stream}_weights_sha256"] == digest
    assert set(extract.IDENTITY_KEYS) <= set(config)


def test_two_runs_identical(material, tmp_path):
    written, _ = run_extract(material, str(material["videos"] / "walk30.mp4"), tmp_path / "again")
    assert np.array_equal(np.load(written["walk30"]), np.load(material["out"] / "walk30.npy"))


def test_existing_output_is_skipped(material):
    before = {p: os.stat(material["out"] / p).st_mtime_ns for p in ("walk25.npy", "walk30.npy")}
    _, log = run_extract(material, str(material["videos"]), material["out"])
    assert any(line.startswith("skip walk25") for line in log)
    assert any(line.startswith("skip walk30") for line in log)
    assert before == {p: os.stat(material["out"] / p).st_mtime_ns for p in before}


def test_folder_of_other_settings_is_refused(material):
    with pytest.raises(extract.ExtractError,
                       match=r"other settings \(fps: 25.0 there, 30.0 now\)"):
        run_extract(material, str(material["videos"]), material["out"], fps=30)
    with pytest.raises(extract.ExtractError, match="tvl1"):
        run_extract(material, str(material["videos"]), material["out"],
                    tvl1_params=video_frames.TVL1_DEFAULTS)


# ------------------------------------------------------------------------- frames, resampling, flow
@pytest.mark.parametrize("name, fps, frames",
                         [("a.avi", 25, 40), ("b.mp4", 30, 36), ("c.avi", 12, 6)])
def test_resampled_by_time_not_relabelled(tmp_path, name, fps, frames):
    """Output frame j (time j / 25) is source frame floor(j * fps / 25): 30 fps drops 1 in 6,
    12 fps repeats."""
    path = write_video(tmp_path / name, fps, frames,
                       fourcc="mp4v" if name.endswith("mp4") else "MJPG")
    got = [source_index(f) for f in video_frames.resampled_frames(path, 25)]
    duration = frames / fps
    expected = [j * fps // 25 for j in range(25 * 10 ** 6) if j / 25 < duration - 1e-9]
    assert got == expected
    if fps == 30:
        assert len(got) == 30 and got[:7] == [0, 1, 2, 3, 4, 6, 7]


def test_resize_crop_and_rgb_values_hand_computed():
    frame = np.zeros((120, 160, 3), np.uint8)
    # 160 * 256 / 120 = 341.3
    assert video_frames.resize_short_side(frame, 256).shape == (256, 341, 3)
    assert video_frames.resize_short_side(frame.transpose(1, 0, 2), 256).shape == (341, 256, 3)
    image = np.arange(6 * 8).reshape(6, 8)
    assert np.array_equal(video_frames.center_crop(image, 4), image[1:5, 2:6])
    bgr = np.zeros((4, 4, 3), np.uint8)
    bgr[...] = (0, 51, 255)                                                       # B, G, R
    x = video_frames.rgb_inputs([bgr, bgr], 2)
    assert x.shape == (2, 3, 2, 2) and x.dtype == np.float32
    assert np.allclose(x[0, :, 0, 0], [1.0, 51 / 127.5 - 1, -1.0], atol=1e-6)   # R, G, B in [-1, 1]


def test_shape_moving_right_gives_positive_x_flow(tmp_path):
    """OpenCV's default TV-L1 on a textured square moving 2 px right: mean dx in it about +2, dy
    about 0."""
    rng = np.random.default_rng(0)
    texture = (rng.random((24, 24)) * 200 + 30).astype(np.uint8)
    frames = []
    for k in range(2):
        frame = np.full((64, 80), 100, np.uint8)
        frame[20:44, 20 + 2 * k:44 + 2 * k] = texture
        frames.append(frame)
    flow = video_frames.raw_flow(frames[0], frames[1])                          # (64, 80, 2) pixels
    region = flow[24:40, 26:40]
    assert region[..., 0].mean() > 1.0 and abs(region[..., 1].mean()) < 0.5
    scaled = video_frames.flow_inputs(frames, 48, video_frames.TVL1_DEFAULTS)     # (1, 2, 48, 48)
    oracle = np.clip(video_frames.center_crop(flow, 48), -20, 20) / 20
    assert scaled.shape == (1, 2, 48, 48)
    assert np.allclose(scaled[0].transpose(1, 2, 0), oracle, atol=1e-6)


def test_last_flow_is_repeated_when_the_video_ends_on_a_snippet(material, tmp_path):
    """40 frames, snippets of 8 -> 5 snippets; the last snippet's 8th flow would need frame 40: it
    repeats the 7th."""
    frames = [video_frames.resize_short_side(f, 256) for f in
              video_frames.resampled_frames(str(material["videos"] / "walk25.avi"), 25)][32:40]
    settings = {"crop": 224, "snippet_frames": 8, "workers": 1, "tvl1": CHEAP_TVL1, "device": "cpu"}
    seen = {}

    def fake_streams(nets, rgb, flow, snippet_frames, device):
        seen["flow"] = flow
        return np.zeros((1, 2048), np.float32)

    real, extract.run_streams = extract.run_streams, fake_streams
    try:
        extract.chunk_features(frames, None, None, settings, None)
    finally:
        extract.run_streams = real
    flow = seen["flow"]
    assert flow.shape == (8, 2, 224, 224)
    assert np.array_equal(flow[7], flow[6]) and not np.array_equal(flow[6], flow[5])


# ------------------------------------------------------------------------- bad input, one line each
def cli_error(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        extract_features.main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    return err


@pytest.mark.parametrize("kind, message", [
    ("unreadable", "could not be opened: not a video"),
    ("empty", "is empty (0 bytes)"),
    ("short", "is too short: about 10 frames at 25 fps, one snippet needs 16"),
])
def test_bad_videos_one_line_errors(material, tmp_path, capsys, kind, message):
    path = tmp_path / f"{kind}.avi"
    if kind == "unreadable":
        path.write_bytes(b"not a video " * 100)
    elif kind == "empty":
        path.write_bytes(b"")
    else:
        write_video(path, 25, 10)
    err = cli_error(["--videos", str(path), "--out", str(tmp_path / "out"), "--rgb_weights",
                     material["weights"]["rgb"], "--flow_weights", material["weights"]["flow"],
                     "--workers", "1"], capsys)
    assert message in err and str(path) in err
    assert not (tmp_path / "out" / f"{kind}.npy").exists()
    if kind == "short":  # the count of decoded frames decides where the container lacks metadata
        settings = {"fps": 25.0, "snippet_frames": 16, "batch": 8, "short_side": 256}
        with pytest.raises(extract.ExtractError, match="is too short: 10 frames at 25 fps"):
            extract.extract_video(str(path), "short", None, settings)


def test_swapped_weights_one_line_error(material, tmp_path, capsys):
    err = cli_error(["--videos", str(material["videos"]), "--out", str(tmp_path / "out"),
                     "--rgb_weights", material["weights"]["flow"], "--flow_weights",
                     material["weights"]["rgb"]], capsys)
    assert "holds flow weights (2 input channels)" in err and material["weights"]["flow"] in err


def test_run_with_other_time_base_warns(material):
    assert provenance.extraction_mismatch(str(material["out"]), 25, 16) is None
    message = provenance.extraction_mismatch(str(material["out"]), 30, 16)
    assert "extracted at 25 fps with 16-frame snippets" in message and "--fps 25" in message
    args = build_args("THUMOS", ["--feature_dim", "2048", "--frames_per_sec", "30",
                                 "--device", "cpu"])
    with pytest.warns(UserWarning, match="extracted at 25 fps with 16-frame snippets"):
        cascade.new_video_dataset({"walk25": str(material["out"] / "walk25.npy")}, args)


# ----------------------------------------------------------------------------- Ctrl-C, progress
INTERRUPTIBLE = """
import sys
sys.path.insert(0, {root!r})
from features import extract
extract.PROGRESS_EVERY_S = 0.2
import extract_features
extract_features.main({argv!r})
"""
HINT = "interrupted: rerun the same command to resume; finished videos are kept"


def default_sigint():
    """The child starts with Ctrl-C at its default, as a shell starts a command (an ignored
    SIGINT would be inherited from this process across exec)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_is_one_line_and_the_workers_stop_quietly(material, tmp_path, repo_root):
    """SIGINT to the whole process group, as a terminal's Ctrl-C sends it, while the flow pool
    works (OpenCV's default TV-L1: minutes for this video): the hint alone, exit status 130, no
    traceback from the main process or the workers, the finished videos and the settings kept."""
    out = tmp_path / "out"
    out.mkdir()
    shutil.copy(material["out"] / "walk30.npy", out / "walk30.npy")       # a finished video
    shutil.copy(material["out"] / "extract_config.json", out / "extract_config.json")
    config_text = (out / "extract_config.json").read_text()
    argv = ["--videos", str(material["videos"] / "walk25.avi"), "--out", str(out),
            "--rgb_weights", material["weights"]["rgb"], "--flow_weights",
            material["weights"]["flow"], "--workers", "2"]
    settings = json.loads(config_text)
    settings["tvl1"] = dict(video_frames.TVL1_DEFAULTS)                 # the CLI's flow settings
    (out / "extract_config.json").write_text(json.dumps(settings))
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    process = subprocess.Popen([sys.executable, "-c", INTERRUPTIBLE.format(root=str(repo_root),
                                                                           argv=argv)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True, preexec_fn=default_sigint)
    try:
        first = process.stderr.readline()              # the first progress line: flow is running
        assert first.startswith("walk25: "), first + process.stderr.read()
        time.sleep(0.5)
        os.killpg(process.pid, signal.SIGINT)
        _, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    lines = [line for line in err.splitlines() if not line.startswith("walk25: ")]
    assert process.returncode == 130 and lines == [HINT], err
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.name != ".lock"} == before


def test_progress_lines_where_stderr_is_no_terminal(material, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(extract, "PROGRESS_EVERY_S", 0.05)
    run_extract(material, str(material["videos"] / "walk25.avi"), tmp_path / "out", workers=1)
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("walk25: ")]
    assert lines and all(re.fullmatch(r"walk25: \d+\.\d s of 1\.6 s of video done in \d+ s "
                                      r"\(\d+\.\d{3} s of video per second\)", line)
                         for line in lines), lines


# ----------------------------------------------------------------------------- predict.py --videos
MODEL_FLAGS = ["--feature_dim", "2048", "--num_steps", "1", "--epochs_per_step", "1",
               "--sample_segments_num", "32", "--max_segments_num", "16", "--device", "cpu"]


@pytest.fixture(scope="module")
def demo_checkpoint(tmp_path_factory):
    """A tiny trained run on 2048-d synthetic features (one refinement step, two epochs)."""
    root = tmp_path_factory.mktemp("demo2048")
    data = root / "THUMOS14"
    generate_synthetic_dataset(data, profile="THUMOS14", num_train=6, num_test=2, feature_dim=2048,
                               seed=0, class_names=build_args("THUMOS").class_name_lst,
                               durations=(15.0, 25.0))
    argv = ["--data_dir", str(data), "--checkpoint_root", str(root), "--epochs", "2",
            "--eval_freq", "2", "--batch_size", "4", *MODEL_FLAGS]
    runner.run("THUMOS", argv)
    return build_args("THUMOS", argv).save_dir


def test_predict_videos_end_to_end(material, demo_checkpoint, tmp_path, monkeypatch):
    monkeypatch.setattr(video_frames, "TVL1_DEFAULTS", CHEAP_TVL1)  # the cheap flow of these tests
    out = tmp_path / "pred.json"
    video = str(material["videos"] / "walk30.mp4")
    argv = ["--checkpoint", demo_checkpoint, "--videos", video, "--rgb_weights",
            material["weights"]["rgb"], "--flow_weights", material["weights"]["flow"], "--out",
            str(out), "--data_dir", str(tmp_path / "none"), *MODEL_FLAGS]
    predict.main(argv)
    result = json.loads(out.read_text())
    assert set(result) >= {"version", "results", "external_data"}
    assert list(result["results"]) == ["walk30"]
    for det in result["results"]["walk30"]:
        assert set(det) == {"label", "score", "segment"}
        assert 0 <= det["segment"][0] <= det["segment"][1]
    cached = tmp_path / "pred_features" / "walk30.npy"
    # the same features as the CLI
    assert np.array_equal(np.load(cached), np.load(material["out"] / "walk30.npy"))
    mtime = os.stat(cached).st_mtime_ns
    predict.main(argv)                                       # second run: features from the cache
    assert os.stat(cached).st_mtime_ns == mtime and json.loads(out.read_text()) == result
