"""Checkpoint loading (engine/checkpoints.py): released format with numpy scalars under
weights_only=True, and clear errors for missing / corrupt files and checkpoints that do not fit
the model."""
import pickle
import types

import numpy as np
import pytest
import torch

import config
from engine.checkpoints import CheckpointError, load_checkpoint, load_model_state
from model import ASMLoc, ASMLocBase

SCALAR = np._core.multiarray.scalar


class Numpy1Pickler(pickle._Pickler):
    """Writes numpy scalars the way numpy 1.x did (numpy.core.multiarray.scalar), as in the
    released checkpoints."""

    def save_global(self, obj, name=None):
        if obj is SCALAR:
            self.write(pickle.GLOBAL + b"numpy.core.multiarray\nscalar\n")
            self.memoize(obj)
            return
        super().save_global(obj, name)


def released_state(model, best=np.float64(0.453)):
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    return {"epoch": 100, "model_state_dict": model.state_dict(),
            "optimizer": optimizer.state_dict(), "best_test_mAP": best}


@pytest.mark.parametrize("numpy1", [False, True])
def test_numpy_float64_checkpoint_loads_with_weights_only(tmp_path, small_args, numpy1):
    model = ASMLoc.from_config(small_args())
    path = tmp_path / "model_step1_best_epoch.pth"
    module = (types.SimpleNamespace(__name__="numpy1_pickle", Pickler=Numpy1Pickler) if numpy1
              else pickle)
    torch.save(released_state(model), path, pickle_module=module)
    if numpy1:
        assert b"numpy.core.multiarray" in path.read_bytes()
    with pytest.raises(pickle.UnpicklingError):  # why the allow-list is needed
        torch.load(path, weights_only=True)
    state = load_checkpoint(path)
    assert state["best_test_mAP"] == pytest.approx(0.453) and state["epoch"] == 100
    fresh = ASMLoc.from_config(small_args())
    load_model_state(fresh, state["model_state_dict"], path, small_args())
    for key, value in model.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value)


@pytest.mark.parametrize("mmap", [False, True])
def test_missing_and_corrupt_files(tmp_path, small_args, mmap):
    with pytest.raises(CheckpointError, match="nothere.pth not found"):
        load_checkpoint(tmp_path / "nothere.pth", mmap=mmap)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="garbage.pth could not be read"):
        load_checkpoint(garbage, mmap=mmap)
    good = tmp_path / "good.pth"
    state = released_state(ASMLocBase.from_config(small_args()))
    torch.save(state, good)
    loaded = load_checkpoint(good, mmap=mmap)                # mapped or read: the same tensors
    assert all(torch.equal(loaded["model_state_dict"][k], v)
               for k, v in state["model_state_dict"].items())
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated.pth could not be read"):
        load_checkpoint(truncated, mmap=mmap)
    other = tmp_path / "other.pth"
    torch.save({"epoch": 3}, other)
    with pytest.raises(CheckpointError, match="no model_state_dict"):
        load_checkpoint(other, mmap=mmap)


def meta_model(model_cls, dataset, *extra):
    with torch.device("meta"):
        return model_cls.from_config(config.build_args(dataset, ["--device", "cpu", *extra]))


@pytest.mark.parametrize("source,target,message", [
    ((ASMLoc, "ActivityNet"), (ASMLoc, "THUMOS"), "looks like an ActivityNet checkpoint"),
    ((ASMLocBase, "THUMOS"), (ASMLocBase, "ActivityNet"), "looks like a THUMOS checkpoint"),
    ((ASMLoc, "THUMOS"), (ASMLocBase, "THUMOS"), "holds a full ASM-Loc model"),
    ((ASMLocBase, "THUMOS"), (ASMLoc, "THUMOS"), "holds a base model"),
    ((ASMLoc, "THUMOS", "--feature_dim", "1024"), (ASMLoc, "THUMOS"),
     "feature_dim differs: checkpoint 1024"),
    ((ASMLoc, "THUMOS"), (ASMLoc, "THUMOS", "--use_uncertainty", "false"), "use_uncertainty"),
])
def test_mismatched_checkpoints_give_clear_error(source, target, message):
    state = meta_model(*source).state_dict()
    model = meta_model(*target)
    target_args = config.build_args(target[1], ["--device", "cpu"])
    with pytest.raises(CheckpointError, match=message) as info:
        load_model_state(model, state, "ckpt.pth", target_args)
    assert "ckpt.pth" in str(info.value) and "\n" not in str(info.value)


def test_embedding_index_mismatch_is_named(small_args):
    """Same class count, only the embedding layout differs (ActivityNet-style dropout)."""
    state = meta_model(ASMLocBase, "THUMOS", "--embed_dropout", "true").state_dict()
    with pytest.raises(CheckpointError, match="looks like an ActivityNet checkpoint"):
        load_model_state(meta_model(ASMLocBase, "THUMOS"), state, "x.pth", small_args())


def test_dataset_key_checked(tmp_path, small_args):
    model = ASMLocBase.from_config(small_args())
    state = released_state(model, best=0.1)
    state.update(dataset="ActivityNet", model_kind="base", step=0)
    with pytest.raises(CheckpointError, match="trained on ActivityNet, not THUMOS"):
        load_model_state(ASMLocBase.from_config(small_args()), state, "x.pth", small_args())
    state["dataset"] = "THUMOS"
    load_model_state(ASMLocBase.from_config(small_args()), state, "x.pth", small_args())
