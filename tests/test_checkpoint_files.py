"""engine/checkpoint_files.py: the sha256 record beside the checkpoints (consistent when a write
is killed at any point), the zip check of files without a record (header, size, CRC-32), and the
background writer (the state it writes is the state handed to it, whatever the training loop
does next; its errors reach the training thread)."""
import errno
import hashlib
import io
import json
import threading
import time

import pytest
import torch

from engine import checkpoint_files, checkpoints
from engine.checkpoint_files import (CHECKSUMS, CheckpointError, CheckpointWriter, check_zip,
                                     read_checksums, verify_checkpoint, write_checkpoint_files)
from engine.checkpoints import load_checkpoint
from utils import torch_bytes


def small_state(seed):
    generator = torch.Generator().manual_seed(seed)
    return {"epoch": seed, "model_state_dict": {"w": torch.randn(256, 64, generator=generator),
                                                "b": torch.randn(64, generator=generator)}}


def flip_middle(path, count=49):
    """Invert `count` bytes in the middle of the file (inside the largest tensor's record)."""
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle:middle + count] = bytes(b ^ 0xFF for b in data[middle:middle + count])
    path.write_bytes(bytes(data))


def test_written_files_share_bytes_and_record_their_sha256(tmp_path):
    data = torch_bytes(small_state(1))
    digest = write_checkpoint_files(tmp_path, ["model_latest.pth", "model_step0_best_epoch.pth"],
                                    data)
    assert digest == hashlib.sha256(data).hexdigest()
    for name in ("model_latest.pth", "model_step0_best_epoch.pth"):
        assert (tmp_path / name).read_bytes() == bytes(data)
    assert read_checksums(tmp_path) == {"model_latest.pth": [digest],
                                        "model_step0_best_epoch.pth": [digest]}
    verify_checkpoint(tmp_path / "model_latest.pth")


@pytest.mark.parametrize("recorded", [True, False])
@pytest.mark.parametrize("mmap", [True, False])
def test_flipped_bytes_are_refused(tmp_path, recorded, mmap):
    """49 bytes flipped inside a tensor: torch.load reads the file either way (no CRC check);
    the recorded sha256 or, without a record (released checkpoints), the CRC-32 refuses it."""
    path = tmp_path / "model_step0_last_epoch.pth"
    write_checkpoint_files(tmp_path, [path.name], torch_bytes(small_state(2)))
    if not recorded:
        (tmp_path / CHECKSUMS).unlink()
    flip_middle(path)
    torch.load(path, weights_only=True, mmap=mmap)            # what went unnoticed before
    message = "does not match the sha256 recorded" if recorded else "CRC-32 of member"
    with pytest.raises(CheckpointError, match=message) as info:
        load_checkpoint(path, mmap=mmap)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_truncated_and_non_zip_files(tmp_path):
    good = tmp_path / "good.pth"
    good.write_bytes(bytes(torch_bytes(small_state(3))))
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(good.read_bytes()[:good.stat().st_size * 2 // 3])
    with pytest.raises(CheckpointError, match="truncated.pth could not be read"):
        check_zip(truncated)
    legacy = tmp_path / "legacy.pth"                  # torch's legacy format: left to torch.load
    torch.save(small_state(3), legacy, _use_new_zipfile_serialization=False)
    check_zip(legacy)
    assert torch.equal(load_checkpoint(legacy)["model_state_dict"]["w"],
                       small_state(3)["model_state_dict"]["w"])


@pytest.mark.skipif(not hasattr(torch.serialization, "set_crc32_options"),
                    reason="torch < 2.6 always writes CRC-32")
def test_zip_without_crc_passes_the_structural_check(tmp_path):
    path = tmp_path / "no_crc.pth"
    torch.serialization.set_crc32_options(False)
    try:
        torch.save(small_state(4), path)
    finally:
        torch.serialization.set_crc32_options(True)
    check_zip(path)
    truncated = tmp_path / "no_crc_truncated.pth"
    truncated.write_bytes(path.read_bytes()[:path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="could not be read"):
        check_zip(truncated)


class Killed(BaseException):
    """Stands for a SIGKILL at one point of a write."""


@pytest.mark.parametrize("kill_at", ["before the rename", "after the rename"])
def test_record_is_consistent_when_a_write_is_killed(tmp_path, monkeypatch, kill_at):
    path = tmp_path / "model_latest.pth"
    old = write_checkpoint_files(tmp_path, [path.name], torch_bytes(small_state(5)))
    new_data = torch_bytes(small_state(6))
    real_write = checkpoint_files.write_checksums
    calls = []

    def killed_write_checksums(folder, files):
        calls.append(json.dumps(files))
        if kill_at == "after the rename" and len(calls) == 2:
            raise Killed
        real_write(folder, files)

    def killed_rename(path, data):
        raise Killed

    monkeypatch.setattr(checkpoint_files, "write_checksums", killed_write_checksums)
    if kill_at == "before the rename":
        monkeypatch.setattr(checkpoint_files, "atomic_write_bytes", killed_rename)
    with pytest.raises(Killed):
        write_checkpoint_files(tmp_path, [path.name], new_data)
    new = hashlib.sha256(new_data).hexdigest()
    assert read_checksums(tmp_path)[path.name] == [old, new]          # both accepted meanwhile
    on_disk = hashlib.sha256(path.read_bytes()).hexdigest()
    assert on_disk == (old if kill_at == "before the rename" else new)
    verify_checkpoint(path)
    monkeypatch.undo()
    newest = write_checkpoint_files(tmp_path, [path.name], torch_bytes(small_state(7)))
    assert read_checksums(tmp_path)[path.name] == [newest]            # narrowed again


def test_unreadable_record_is_one_line(tmp_path):
    path = tmp_path / "model_latest.pth"
    write_checkpoint_files(tmp_path, [path.name], torch_bytes(small_state(8)))
    (tmp_path / CHECKSUMS).write_text("{not json")
    with pytest.raises(CheckpointError, match="checksums.json is unreadable") as info:
        verify_checkpoint(path)
    assert "\n" not in str(info.value)


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(8, 4)
        self.norm = torch.nn.BatchNorm1d(4)

    def forward(self, x):
        return self.norm(self.linear(x))


def test_writer_saves_the_state_of_the_epoch_end(tmp_path, monkeypatch, small_args):
    """The next epoch's forward (BatchNorm statistics) and optimizer step run while the writer
    still copies: the file holds the state at the hand-over, and the step waited for the copy."""
    torch.manual_seed(0)
    model = Net()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    x = torch.randn(16, 8)
    model(x).pow(2).mean().backward()
    optimizer.step()                                       # Adam's state exists
    expected = {"model": {k: v.clone() for k, v in model.state_dict().items()},
                "exp_avg": [optimizer.state[p]["exp_avg"].clone() for p in model.parameters()]}
    real_copy, copying, order = checkpoint_files.cpu_copy, threading.Event(), []

    def slow_copy(obj, into=None):               # the whole state, slowly (not each part)
        if copying.is_set():
            return real_copy(obj, into)
        copying.set()
        time.sleep(0.3)
        copied = real_copy(obj, into)
        order.append("copied")
        return copied

    monkeypatch.setattr(checkpoint_files, "cpu_copy", slow_copy)
    writer = CheckpointWriter(tmp_path)
    state = checkpoints.training_state(model, optimizer, small_args(), 0, 0, [0.5, 0.0, 0.0],
                                       [{}], 1.0)
    writer.submit(state, ["model_latest.pth"], optimizer)
    optimizer.register_step_pre_hook(lambda *_: order.append("step"))     # after the writer's
    assert copying.wait(5)
    optimizer.zero_grad()
    model(x + 1).pow(2).mean().backward()                  # running statistics move here
    optimizer.step()                                       # waits for the copy
    assert order == ["copied", "step"]
    writer.wait()
    saved = load_checkpoint(tmp_path / "model_latest.pth")
    for key, value in expected["model"].items():
        assert torch.equal(saved["model_state_dict"][key], value), key
        assert not torch.equal(model.state_dict()[key], value) or key.endswith("batches_tracked")
    saved_exp_avg = [saved["optimizer"]["state"][i]["exp_avg"] for i in range(4)]
    assert all(torch.equal(a, b) for a, b in zip(saved_exp_avg, expected["exp_avg"]))
    assert saved["epoch"] == 1 and saved["best_test_mAP"] == 0.5


def test_writer_error_reaches_the_training_thread_naming_the_file(tmp_path, monkeypatch):
    def full_disk(path, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint_files, "atomic_write_bytes", full_disk)
    model = Net()
    optimizer = torch.optim.Adam(model.parameters())
    for surfaces_in in ("wait", "optimizer step"):
        writer = CheckpointWriter(tmp_path)
        writer.submit({"model_state_dict": model.state_dict()}, ["model_latest.pth"], optimizer)
        with pytest.raises(OSError) as info:
            if surfaces_in == "wait":
                writer.wait()
            else:                                  # the next step after the failed write raises
                while writer.busy():
                    time.sleep(0.01)
                model(torch.randn(4, 8)).sum().backward()
                optimizer.step()
        assert info.value.errno == errno.ENOSPC
        assert info.value.filename == str(tmp_path / "model_latest.pth")
        writer.submit({"model_state_dict": model.state_dict()}, ["model_latest.pth"], optimizer)
        writer.wait()                          # reported once; nothing is written after it
    assert not (tmp_path / "model_latest.pth").exists()


def test_a_queued_checkpoint_is_superseded_file_by_file_in_order(tmp_path, monkeypatch):
    """Epochs shorter than a write (slowed here): the loop never waits; a file a queued
    checkpoint has not written yet gets the newer one's state instead; every write follows the
    order of the hand-overs (a step's best before a later model_latest.pth)."""
    real_write, written = checkpoint_files.write_checkpoint_files, []

    def slow_write(folder, names, data):
        time.sleep(0.3)
        written.append((list(names), torch.load(io.BytesIO(data))["epoch"]))
        return real_write(folder, names, data)

    monkeypatch.setattr(checkpoint_files, "write_checkpoint_files", slow_write)
    model = Net()
    optimizer = torch.optim.Adam(model.parameters())
    writer = CheckpointWriter(tmp_path)
    handed = [["model_step0_best_epoch.pth", "model_latest.pth"], ["model_latest.pth"],
              ["model_step0_best_epoch.pth", "model_latest.pth"], ["model_latest.pth"],
              ["model_step0_last_epoch.pth", "model_latest.pth"]]
    tic = time.perf_counter()
    for epoch, names in enumerate(handed):
        writer.submit({"epoch": epoch, "model_state_dict": model.state_dict()}, names, optimizer)
        writer.before_step()                  # the next step: waits for the copy only
        time.sleep(0.05)
    assert time.perf_counter() - tic < 0.3 * len(handed) / 2
    writer.wait()
    epochs = [epoch for _, epoch in written]
    assert written[0] == (handed[0], 0) and epochs == sorted(epochs) and len(written) < 5
    assert written[-1] == (["model_step0_last_epoch.pth", "model_latest.pth"], 4)
    assert any(names == ["model_step0_best_epoch.pth"] or "model_step0_best_epoch.pth" in names
               for names, epoch in written if epoch == 2)            # the newer best, once
    for name, epoch in [("model_step0_best_epoch.pth", 2), ("model_latest.pth", 4),
                        ("model_step0_last_epoch.pth", 4)]:
        assert load_checkpoint(tmp_path / name)["epoch"] == epoch, name


def test_cuda_generator_states_are_saved_and_restored(monkeypatch):
    """With CUDA (faked here: no GPU on the test machine), every device's generator state goes
    into the checkpoint and is restored after the seeding; a CPU run records none."""
    fake = [torch.tensor([1, 2, 3], dtype=torch.uint8), torch.tensor([4, 5], dtype=torch.uint8)]
    restored = []
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: list(fake))
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", restored.append)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    generator = torch.Generator().manual_seed(3)
    state = checkpoints.rng_state(generator, cuda=True)
    assert "cuda" not in checkpoints.rng_state(generator, cuda=False)
    state = torch.load(io.BytesIO(torch_bytes(state)), weights_only=True)   # as a resume reads it
    checkpoints.restore_rng_state(state, generator, cuda=True)
    assert len(restored) == 1 and len(restored[0]) == 1 and torch.equal(restored[0][0], fake[0])
    checkpoints.restore_rng_state(state, generator, cuda=False)       # a CPU resume ignores it
    assert len(restored) == 1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_writer_copies_cuda_tensors_before_the_next_step_mutates_them(tmp_path):
    """On a GPU the copies run on a side stream into pinned memory and the next optimizer step
    waits for them on the GPU: the file holds the hand-over's weights and Adam state, though the
    steps are issued at once."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(512, 512), torch.nn.BatchNorm1d(512)).cuda()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    x = torch.randn(64, 512, device="cuda")
    model(x).square().mean().backward()
    optimizer.step()
    expected = {key: value.cpu() for key, value in model.state_dict().items()}
    writer = CheckpointWriter(tmp_path)
    state = {"epoch": 1, "model_state_dict": {
        key: value.clone() if key.startswith("1.") else value
        for key, value in model.state_dict().items()}, "optimizer": optimizer.state_dict()}
    writer.submit(state, ["model_latest.pth"], optimizer)
    for _ in range(3):                                     # issued without waiting on the host
        optimizer.zero_grad()
        model(x).square().mean().backward()
        optimizer.step()
    writer.wait()
    saved = load_checkpoint(tmp_path / "model_latest.pth")["model_state_dict"]
    for key, value in expected.items():
        assert torch.equal(saved[key], value), key


def test_hand_over_order_is_kept_when_copies_finish_out_of_order(tmp_path, monkeypatch):
    """The first checkpoint's copy is slow, the second's fast: the second waits for the first,
    so its model_latest.pth is written last and the first's best file is written at all."""
    real_copy, real_write, written = (checkpoint_files.cpu_copy,
                                      checkpoint_files.write_checkpoint_files, [])

    def copy(obj, into=None):
        if isinstance(obj, dict) and obj.get("epoch") == 0:
            time.sleep(0.5)
        return real_copy(obj, into)

    def write(folder, names, data):
        written.append((list(names), torch.load(io.BytesIO(data))["epoch"]))
        return real_write(folder, names, data)

    monkeypatch.setattr(checkpoint_files, "cpu_copy", copy)
    monkeypatch.setattr(checkpoint_files, "write_checkpoint_files", write)
    optimizer = torch.optim.Adam(Net().parameters())
    writer = CheckpointWriter(tmp_path)
    writer.submit({"epoch": 0}, ["model_step0_best_epoch.pth", "model_latest.pth"], optimizer)
    writer.submit({"epoch": 1}, ["model_latest.pth"], optimizer)
    writer.wait()
    assert written == [(["model_step0_best_epoch.pth"], 0), (["model_latest.pth"], 1)] or \
        written == [(["model_step0_best_epoch.pth", "model_latest.pth"], 0),
                    (["model_latest.pth"], 1)]
    assert torch.load(tmp_path / "model_latest.pth", weights_only=True)["epoch"] == 1


def test_copies_reuse_the_buffers_of_a_written_checkpoint(tmp_path, monkeypatch):
    """The second checkpoint is copied into the first one's CPU buffers once that one is
    serialized: each file still holds the state of its own hand-over."""
    torch.manual_seed(1)
    model = Net()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    real_copy, targets = checkpoint_files.cpu_copy, []

    def copy(obj, into=None):
        copied = real_copy(obj, into)
        if isinstance(obj, dict) and "epoch" in obj:          # the whole state (not its parts)
            targets.append((into is not None, [t.data_ptr() for t in copied["model"].values()]))
        return copied

    monkeypatch.setattr(checkpoint_files, "cpu_copy", copy)
    writer = CheckpointWriter(tmp_path)
    expected = []
    for epoch, name in enumerate(["first.pth", "second.pth"]):
        model(torch.randn(4, 8)).pow(2).mean().backward()
        optimizer.step()                              # the parameters move between hand-overs
        expected.append({k: v.clone() for k, v in model.state_dict().items()})
        writer.submit({"model": model.state_dict(), "epoch": epoch}, [name], optimizer)
        writer.wait()
    assert [given for given, _ in targets] == [False, True]
    assert targets[0][1] == targets[1][1]             # the same CPU buffers, reused
    for name, state in zip(["first.pth", "second.pth"], expected):
        saved = torch.load(tmp_path / name, weights_only=True)["model"]
        assert all(torch.equal(saved[key], value) for key, value in state.items()), name
