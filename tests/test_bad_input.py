"""Every kind of bad input ends in exit code 2 and one clear line naming the file or key (no
traceback)."""
import errno
import hashlib
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

import predict
from config import build_args
from engine import passes
from engine import run as runner
from eval.__main__ import main as eval_main
from model import ASMLoc, ASMLocBase
from synthetic_data import generate_synthetic_dataset

D = 32


@pytest.fixture
def data_dir(tmp_path):
    root = tmp_path / "THUMOS14"
    generate_synthetic_dataset(root, profile="THUMOS14", num_train=4, num_test=3, feature_dim=D,
                               seed=1, durations=(10.0, 30.0))
    return root


def argv_for(data_dir, tmp_path, *extra):
    return ["--data_dir", str(data_dir), "--checkpoint_root", str(tmp_path / "runs"),
            "--feature_dim", str(D), "--epochs", "2", "--epochs_per_step", "1", "--num_steps", "1",
            "--eval_freq", "1", "--sample_segments_num", "32", "--batch_size", "2",
            "--device", "cpu", *extra]


def run_main(argv, capsys, dataset="THUMOS"):
    """Run the entry point; return (exit code, the stderr message)."""
    with pytest.raises(SystemExit) as exc:
        runner.main(dataset, argv)
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    assert err.startswith("error: ")
    return exc.value.code, err


def first_video(data_dir, split="train"):
    return (data_dir / f"split_{split}.txt").read_text().split()[0]


def corrupt_feature(data_dir, array=None, raw=None):
    path = data_dir / "train" / f"{first_video(data_dir)}.npy"
    if raw is not None:
        path.write_bytes(raw)
    else:
        np.save(path, array)
    return path


def edit_gt(data_dir, change):
    gt = json.loads((data_dir / "gt.json").read_text())
    change(gt)
    (data_dir / "gt.json").write_text(json.dumps(gt))


CASES = {
    "missing data folder": (lambda d: d.rename(d.with_name("elsewhere")),
                            ["not found", "download", "train/VID.npy"]),
    "video without features": (lambda d: (d / "train" / f"{first_video(d)}.npy").unlink(),
                               ["is missing"]),
    "video without gt entry": (lambda d: edit_gt(d, lambda gt: gt["database"].pop(first_video(d))),
                               ["has no entry in"]),
    "truncated npy": (lambda d: corrupt_feature(
        d, raw=(d / "test" / f"{first_video(d, 'test')}.npy").read_bytes()[:200]),
        ["not a readable .npy"]),
    "not an npy": (lambda d: corrupt_feature(d, raw=b"hello, these are not features"),
                   ["not a readable .npy"]),
    "wrong rank": (lambda d: corrupt_feature(d, np.zeros(10, np.float32)), ["expected a 2-D"]),
    "wrong dimension": (lambda d: corrupt_feature(d, np.zeros((10, 16), np.float32)),
                        ["dimension 16", "--feature_dim"]),
    "wrong dtype": (lambda d: corrupt_feature(d, np.zeros((10, D), np.int32)),
                    ["dtype int32", "floating point"]),
    "nan features": (lambda d: corrupt_feature(d, np.full((10, D), np.nan, np.float32)),
                     ["NaN or inf"]),
    "gt not json": (lambda d: (d / "gt.json").write_text("{not json"),
                    ["gt.json", "not valid JSON"]),
    "gt without database": (lambda d: (d / "gt.json").write_text('{"version": 1}'),
                            ["gt.json", "database"]),
    "unknown label": (lambda d: edit_gt(d, lambda gt: gt["database"][first_video(d)]
                                        ["annotations"].append({"segment": [1.0, 2.0],
                                                                "label": "Juggling"})),
                      ["'Juggling'", "class list"]),
    "empty split": (lambda d: (d / "split_test.txt").write_text("\n"),
                    ["split_test.txt", "is empty"]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_data(case, data_dir, tmp_path, capsys):
    damage, fragments = CASES[case]
    damage(data_dir)
    code, err = run_main(argv_for(data_dir, tmp_path), capsys)
    assert code == 2
    for fragment in fragments:
        assert fragment in err, err
    # "missing data folder" prints the expected tree
    assert len(err.splitlines()) == 1 or case == "missing data folder"


@pytest.mark.parametrize("extra, fragment", [(["--no_such_key", "3"], "--no_such_key"),
                                             (["--epochs", "3.5"], "--epochs"),
                                             (["-b", "0"], "--batch_size must be at least 1"),
                                             (["--epochs", "0"], "--epochs must be at least 1")])
def test_bad_config(extra, fragment, data_dir, tmp_path, capsys):
    code, err = run_main(argv_for(data_dir, tmp_path, *extra), capsys)
    assert code == 2 and fragment in err


def save_fake_checkpoints(folder, model_by_step):
    folder.mkdir(parents=True, exist_ok=True)
    for name, model in model_by_step.items():
        torch.save({"epoch": 1, "model_state_dict": model.state_dict(), "optimizer": {},
                    "best_test_mAP": np.float64(0.1)}, folder / name)


def test_checkpoint_folder_missing_step_file(data_dir, tmp_path, capsys):
    args = build_args("THUMOS", argv_for(data_dir, tmp_path))
    save_fake_checkpoints(tmp_path / "ckpt",
                          {"model_step0_last_epoch.pth": ASMLocBase.from_config(args)})
    code, err = run_main(argv_for(data_dir, tmp_path, "--test", "--checkpoint",
                                  str(tmp_path / "ckpt")), capsys)
    assert code == 2 and "model_step1_best_epoch.pth" in err and "missing" in err


@pytest.mark.parametrize("kind", ["other dataset", "other model kind"])
def test_checkpoint_of_other_dataset_or_model(kind, data_dir, tmp_path, capsys):
    thumos = build_args("THUMOS", argv_for(data_dir, tmp_path))
    anet = build_args("ActivityNet", ["--feature_dim", str(D), "--device", "cpu"])
    step0 = ASMLocBase.from_config(anet) if kind == "other dataset" else ASMLoc.from_config(thumos)
    save_fake_checkpoints(tmp_path / "ckpt",
                          {"model_step0_last_epoch.pth": step0,
                           "model_step1_best_epoch.pth": ASMLoc.from_config(thumos)})
    code, err = run_main(argv_for(data_dir, tmp_path, "--test", "--checkpoint",
                                  str(tmp_path / "ckpt")), capsys)
    assert code == 2 and "model_step0_last_epoch.pth" in err
    assert (("ActivityNet" in err) if kind == "other dataset"
            else ("full" in err or "MHSA" in err)), err


def test_prediction_file_without_results(tmp_path, capsys):
    gt = {"version": "x", "database": {"v1": {
        "subset": "test", "duration": 10.0,
        "annotations": [{"segment": [1.0, 2.0], "label": "Diving"}]}}}
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "pred.json").write_text(json.dumps({"version": "x", "external_data": {}}))
    code = eval_main(["--gt", str(tmp_path / "gt.json"), "--pred", str(tmp_path / "pred.json")])
    err = capsys.readouterr().err
    assert code != 0 and "results" in err and "pred.json" in err and "Traceback" not in err


def test_output_folder_not_writable(data_dir, tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    code, err = run_main(argv_for(data_dir, tmp_path) + ["--checkpoint_root", str(blocker)], capsys)
    assert code == 2 and "not writable" in err and str(blocker) in err


def test_disk_full_while_saving_keeps_previous_checkpoint(data_dir, tmp_path, capsys, monkeypatch):
    argv = argv_for(data_dir, tmp_path, "--num_steps", "0", "--epochs", "1")
    runner.main("THUMOS", argv)
    latest = os.path.join(build_args("THUMOS", argv).save_dir, "model_latest.pth")
    before = open(latest, "rb").read()

    def full_disk(obj, handle):
        handle.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    code, err = run_main(argv + ["--no_resume"], capsys)
    assert code == 2 and "No space left on device" in err
    assert open(latest, "rb").read() == before
    assert not [name for name in os.listdir(os.path.dirname(latest)) if name.startswith(".tmp_")]


def test_unreadable_latest_checkpoint_falls_back_to_step_file(data_dir, tmp_path, capsys,
                                                              monkeypatch):
    argv = argv_for(data_dir, tmp_path)
    original, calls = passes.train_one_epoch, []

    def stop_in_second_epoch(*args, **kwargs):        # the run is interrupted after its first epoch
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(*args, **kwargs)
    monkeypatch.setattr(passes, "train_one_epoch", stop_in_second_epoch)
    with pytest.raises(SystemExit):
        runner.main("THUMOS", argv)
    monkeypatch.setattr(passes, "train_one_epoch", original)
    save_dir = build_args("THUMOS", argv).save_dir
    open(os.path.join(save_dir, "model_latest.pth"), "wb").write(b"garbage")
    runner.main("THUMOS", argv)
    out = capsys.readouterr().out
    # the folder's checksums.json records the file: the garbage fails its sha256
    assert "model_latest.pth does not match the sha256 recorded" in out and "falling back to" in out
    assert torch.load(os.path.join(save_dir, "model_latest.pth"),
                      weights_only=False)["epoch"] == 2


# ----------------------------------------------------------------------------- damaged checkpoints
def flip_bytes(path, count=49):
    """Invert `count` bytes in the middle of a file (inside its largest tensor)."""
    data = bytearray(open(path, "rb").read())
    middle = len(data) // 2
    data[middle:middle + count] = bytes(b ^ 0xFF for b in data[middle:middle + count])
    open(path, "wb").write(bytes(data))


def folder_digest(folder):
    """{relative path: sha256} of every file under `folder`."""
    return {os.path.relpath(os.path.join(root, name), folder):
            hashlib.sha256(open(os.path.join(root, name), "rb").read()).hexdigest()
            for root, _, names in os.walk(folder) for name in names}


def test_flipped_checkpoint_is_refused_before_any_evaluation(data_dir, tmp_path, capsys):
    """49 bytes flipped in model_step0_last_epoch.pth (two tensors change by < 1e-6 as floats):
    --test, predict.py and a resume stop with one line naming the file, before evaluating or
    writing anything."""
    argv = argv_for(data_dir, tmp_path)
    runner.main("THUMOS", argv)
    save_dir = build_args("THUMOS", argv).save_dir
    damaged = os.path.join(save_dir, "model_step0_last_epoch.pth")
    flip_bytes(damaged)
    code, err = run_main(argv + ["--test", "--checkpoint", save_dir], capsys)
    assert code == 2 and len(err.splitlines()) == 1
    assert f"checkpoint {damaged} does not match the sha256 recorded in checksums.json" in err
    assert not os.path.exists(os.path.join(save_dir, "test"))    # checked before the folder
    out = tmp_path / "pred.json"
    with pytest.raises(SystemExit) as exc:
        predict.main(["--checkpoint", save_dir, "--features", str(data_dir / "test"),
                      "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and len(err.splitlines()) == 1 and damaged in err
    assert not out.exists()
    # resume (of a run not finished yet): a damaged model_latest.pth falls back to the step
    # files, which are damaged too
    os.remove(os.path.join(save_dir, "results.json"))
    flip_bytes(os.path.join(save_dir, "model_latest.pth"))
    before = folder_digest(save_dir)
    code, err = run_main(argv, capsys)
    assert code == 2 and len(err.splitlines()) == 1 and damaged in err
    assert "does not match the sha256" in err
    def kept(digests):        # the log and a TensorBoard file are opened before the resume
        return {k: v for k, v in digests.items()
                if k != "log.txt" and not k.startswith("tensorboard")}
    assert kept(folder_digest(save_dir)) == kept(before)         # nothing evaluated, nothing saved


@pytest.mark.parametrize("record", [True, False])
def test_truncated_last_step_checkpoint_is_found_before_step_0_is_evaluated(record, data_dir,
                                                                           tmp_path, capsys):
    """The final step's file cut in half: test mode names it before evaluating any step (with
    the folder's sha256 record, and without it as for released checkpoints)."""
    argv = argv_for(data_dir, tmp_path)
    runner.main("THUMOS", argv)
    save_dir = build_args("THUMOS", argv).save_dir
    last = os.path.join(save_dir, "model_step1_best_epoch.pth")
    data = open(last, "rb").read()
    open(last, "wb").write(data[:len(data) // 2])
    if not record:
        os.remove(os.path.join(save_dir, "checksums.json"))
    code, err = run_main(argv + ["--test", "--checkpoint", save_dir], capsys)
    assert code == 2 and len(err.splitlines()) == 1 and last in err
    assert ("does not match the sha256" if record else "could not be read") in err
    assert not os.path.exists(os.path.join(save_dir, "test"))    # checked before the folder


# ----------------------------------------------------------------------------- full disk
def fail_fsync_of(monkeypatch, fragment, nth):
    """From the nth fsync of a file whose path holds `fragment` on, fsync fails with ENOSPC."""
    if not os.path.isdir("/proc/self/fd"):
        pytest.skip("needs /proc/self/fd to tell which file is synced")
    real, seen = os.fsync, []

    def fsync(fd):
        target = os.readlink(f"/proc/self/fd/{fd}")
        if fragment in target:
            seen.append(target)
            if len(seen) >= nth:
                raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd)
    monkeypatch.setattr(os, "fsync", fsync)


def latest_weights(save_dir):
    return torch.load(os.path.join(save_dir, "model_latest.pth"),
                      weights_only=False)["model_state_dict"]


@pytest.mark.parametrize("fragment, nth", [("model_latest.pth", 2), ("metrics.jsonl", 2),
                                           ("tfevents", 2), ("results.json", 1)])
def test_full_disk_is_one_line_and_the_rerun_resumes_exactly(fragment, nth, data_dir, tmp_path,
                                                             capsys, monkeypatch):
    """A write that fails with ENOSPC (a checkpoint in the background writer, the record, the
    TensorBoard file, the results) ends the run with one line naming that file; the earlier
    checkpoints stay intact, and the rerun after space is freed ends as an uninterrupted run."""
    from engine.checkpoint_files import verify_checkpoint
    reference = argv_for(data_dir, tmp_path / "reference", "--epochs", "3",
                         "--epochs_per_step", "2")
    runner.main("THUMOS", reference)
    capsys.readouterr()
    argv = argv_for(data_dir, tmp_path, "--epochs", "3", "--epochs_per_step", "2")
    with monkeypatch.context() as patch:
        fail_fsync_of(patch, fragment, nth)
        code, err = run_main(argv, capsys)
    save_dir = build_args("THUMOS", argv).save_dir
    assert code == 2 and len(err.splitlines()) == 1, err
    assert err.startswith("error: cannot write ") and fragment in err
    assert "No space left on device" in err and "Traceback" not in err
    # a run stopped before its first checkpoint removes the folder it made
    names = os.listdir(save_dir) if os.path.isdir(save_dir) else []
    assert not [name for name in names if name.startswith(".tmp_")]
    for name in names:
        if name.endswith(".pth"):
            verify_checkpoint(os.path.join(save_dir, name))       # every checkpoint intact
    runner.main("THUMOS", argv)                                   # space freed: resume
    expected = latest_weights(build_args("THUMOS", reference).save_dir)
    for key, value in latest_weights(save_dir).items():
        assert torch.equal(value, expected[key]), key


TMPFS = r"""
mount -t tmpfs -o size=20m tmpfs "$MNT" || exit 77
head -c "$FILL" /dev/zero > "$MNT/filler" 2>/dev/null
"$PY" -c "$MAIN" "$@" > "$OUT/first.out" 2> "$OUT/first.err"; echo $? > "$OUT/first.rc"
ls -a "$RUN" > "$OUT/first.ls"
rm -f "$MNT/filler"
"$PY" -c "$MAIN" "$@" > "$OUT/second.out" 2> "$OUT/second.err"; echo $? > "$OUT/second.rc"
cp "$RUN/model_latest.pth" "$OUT/"
"""


@pytest.mark.slow
def test_real_full_disk_is_one_line_and_the_rerun_resumes_exactly(data_dir, tmp_path, repo_root):
    """A 20 MB tmpfs as --checkpoint_root, filled up to 400 KB (in a mount namespace of its own:
    skipped where mounting is not allowed; the run's second step then fails to save): one error
    line; after freeing the space, the rerun resumes and ends with the uninterrupted run's
    weights."""
    free_kb = 400
    if shutil.which("unshare") is None or not sys.platform.startswith("linux"):
        pytest.skip("needs Linux's unshare to mount a tmpfs")
    mount_point, out = tmp_path / "tmpfs", tmp_path / "out"
    mount_point.mkdir()
    out.mkdir()
    argv = argv_for(data_dir, mount_point, "--epochs", "3", "--epochs_per_step", "2")
    env = {**os.environ, "MNT": str(mount_point), "OUT": str(out), "PY": sys.executable,
           "FILL": str(20 * 2**20 - free_kb * 2**10), "TQDM_DISABLE": "1",
           "RUN": build_args("THUMOS", argv).save_dir, "OMP_NUM_THREADS": "1",
           "MAIN": f"import sys; sys.path.insert(0, {str(repo_root)!r}); "
                   f"from engine.run import main; main('THUMOS', sys.argv[1:])"}
    namespace = ["unshare", "-m"] if os.geteuid() == 0 else ["unshare", "-rm"]
    done = subprocess.run([*namespace, "bash", "-c", TMPFS, "tmpfs", *argv], env=env,
                          capture_output=True, text=True, timeout=600)
    if done.returncode == 77 or not (out / "first.rc").exists():
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()[-200:]}")
    first = (out / "first.err").read_text().strip().splitlines()
    assert (out / "first.rc").read_text().strip() == "2", first
    assert len(first) == 1 and first[0].startswith("error: cannot write "), first
    assert "No space left on device" in first[0]
    assert (out / "second.rc").read_text().strip() == "0", (out / "second.err").read_text()
    left = (out / "first.ls").read_text().split()
    assert not [name for name in left if name.startswith(".tmp_")], left
    assert ("resumed from" in (out / "second.out").read_text()) == ("model_latest.pth" in left)
    reference = argv_for(data_dir, tmp_path / "reference", "--epochs", "3",
                         "--epochs_per_step", "2")          # the same thread count: a process
    subprocess.run([sys.executable, "-c", env["MAIN"], *reference], env=env, check=True,
                   capture_output=True, timeout=600)
    expected = latest_weights(build_args("THUMOS", reference).save_dir)
    got = torch.load(out / "model_latest.pth", weights_only=False)["model_state_dict"]
    for key, value in expected.items():
        assert torch.equal(got[key], value), key
