"""engine/batches.py and engine/store.py: batches gathered from the resident feature store equal
dataset.py's items (VideoDataset + collate_fn, the DataLoader path) bit for bit, item by item over
a demo-shaped epoch (base step; full step with pseudo proposals and dynamic weights; THUMOS and
ActivityNet presets; one-snippet and short videos); the gather's arithmetic against
sampling.lerp_rows, a loop oracle and a hand case; evaluation batches (padded, bucketed by length)
against the items, from the store and from the DataLoader."""
import itertools
import json
import multiprocessing
import threading

import numpy as np
import pytest
import torch

import dataset as ds
from config import build_args
from engine import batches
from engine.distributed import GlobalBatchSampler
from engine.seeding import make_generator
from engine.store import FeatureStore, RowPlan, gather, store_of
from oracles.sampling_loop import lerp_loop
from sampling import lerp_rows
from synthetic_data import PROFILES as SYNTHETIC
from synthetic_data import generate_synthetic_dataset

PROFILES = {"THUMOS": "THUMOS14", "ActivityNet": "ActivityNet13"}
SHORT_LENGTHS = (1, 2, 3)         # one-snippet and short videos, edited into the training split


def bits(tensor):
    """A float32 tensor's bit patterns (equal bits: equal values, signed zeros included)."""
    return tensor.contiguous().view(torch.int32)


def assert_same_batch(batch, ref):
    assert batch["vid_name"] == ref["vid_name"]
    for key in ("features", "video_label", "proposal_bbox", "proposal_count",
                "pseudo_instance_label", "vid_len"):
        a, b = batch[key], ref[key]
        assert a.shape == b.shape and a.dtype == b.dtype, (key, a.shape, b.shape)
        assert torch.equal(bits(a) if a.is_floating_point() else a,
                           bits(b) if b.is_floating_point() else b), key
    for a, b in zip(batch["cum"], ref["cum"], strict=True):
        assert (a is None and b is None) or np.array_equal(a, b)


@pytest.fixture(scope="module", params=sorted(PROFILES))
def demo_like(request, tmp_path_factory):
    """(args, train, full) of a small set shaped like the preset's demo (its S, batch size and
    profile; 32-d features), training videos cut or stretched to 1, 2, 3, S and 2 S + 1
    snippets."""
    dataset = request.param
    root = tmp_path_factory.mktemp(dataset) / "data"
    args = build_args(dataset, ["--demo", "--data_dir", str(root), "--feature_dim", "32",
                                "--device", "cpu"])
    profile = PROFILES[dataset]
    generate_synthetic_dataset(root, profile, 22, 8, feature_dim=32, seed=4,
                               class_names=args.class_name_lst,
                               durations=SYNTHETIC[profile]["durations"])
    names = (root / "split_train.txt").read_text().split()
    S = args.sample_segments_num
    for vid, T in zip(names, SHORT_LENGTHS + (S, 2 * S + 1)):
        x = np.load(root / "train" / f"{vid}.npy")
        np.save(root / "train" / f"{vid}.npy", np.resize(x, (T, 32)))
    ds.clear_feature_cache()
    train, full = ds.VideoDataset(args, "train", "random"), ds.VideoDataset(args, "full", "uniform")
    assert FeatureStore.build([train, full], args) is store_of(train) is store_of(full)
    return args, train, full


def pseudo_proposals(full, root, seed=1):
    """Each GT instance jittered by about a second, with random scores."""
    gt = json.loads((root / "gt.json").read_text())["database"]
    rng = np.random.default_rng(seed)
    return {vid: [{"label": a["label"], "score": float(rng.uniform(0.2, 0.9)),
                   "segment": sorted((np.asarray(a["segment"]) + rng.normal(0, 1, 2))
                                     .clip(0).tolist())}
                  for a in gt[vid]["annotations"]] for vid in full.video_names}


def compare_epoch(args, train, seed):
    """Every batch of two epochs of a step (the second reuses the plans that draw nothing)
    through ResidentBatches vs the DataLoader path's collate_fn."""
    store = store_of(train)
    sampler = GlobalBatchSampler(len(train), args.batch_size, make_generator(seed))
    state = sampler.generator.get_state()
    keys = list(sampler) + list(sampler)           # the same keys, then the same draws again
    sampler.generator.set_state(state)
    resident = batches.ResidentBatches(train, store, sampler)
    seen = 0
    # each batch checked before the next is gathered (CPU batches reuse a few buffers)
    for batch_keys, batch in zip(keys, itertools.chain(resident, resident), strict=True):
        assert_same_batch(batch, ds.collate_fn([train[key] for key in batch_keys]))
        seen += len(batch_keys)
    assert seen == 2 * len(train) and 0 < len(resident.fixed) < len(train)


def test_training_batches_equal_items(demo_like):
    args, train, full = demo_like
    S = args.sample_segments_num
    compare_epoch(args, train, seed=0)                                     # base step
    results = pseudo_proposals(full, train.root)
    weights = full.compute_dynamic_weights(results, args)
    for data in (train, full):
        data.set_proposals(results, weights)
    try:
        compare_epoch(args, train, seed=1)                                 # full step
        # every sampling case ran: one snippet, interpolated (T < S), drawn (T > S), and under
        # dynamic sampling one level (M >= S) and two levels (1 < M < S)
        lengths = [train.vid_len(vid) for vid in train.video_names]
        dynamic = [batches.timeline(train, vid, T)[2] for vid, T in zip(train.video_names,
                                                                        lengths)]
        assert min(lengths) == 1 and any(1 < T < S for T in lengths) and max(lengths) > S
        assert any(M >= S for M in dynamic) and any(1 < M < S for M in dynamic)
        assert any(len(item_two_levels(train, vid)) for vid in train.video_names)
    finally:
        for data in (train, full):
            data.set_proposals(None, None)


def item_two_levels(data, vid):
    """The second level of a video's plan (empty when it has one level)."""
    second = batches.item_plan(data, vid, np.random.default_rng(0))[1]
    return [] if second is None else second.a


@pytest.mark.parametrize("with_store", [True, False])
def test_evaluation_batches_equal_items(demo_like, with_store, monkeypatch):
    args, _, full = demo_like
    results = pseudo_proposals(full, full.root, seed=2)
    full.set_proposals(results, full.compute_dynamic_weights(results, args))
    if not with_store:
        monkeypatch.setattr(batches, "store_of", lambda data: None)
    try:
        rows = 3 * args.sample_segments_num           # a few videos per batch
        args = build_args(args.dataset, ["--demo", "--data_dir", str(full.root), "--feature_dim",
                                         "32", "--device", "cpu", "--eval_batch_rows", str(rows)])
        indices = list(range(1, len(full)))           # a shard: not every video
        seen = []
        for batch in batches.eval_batches(full, indices, args):
            B, L, _ = batch["features"].shape
            assert B * L <= rows or B == 1
            for i, vid in enumerate(batch["vid_name"]):
                item = full[full.video_names.index(vid)]
                length = int(batch["lengths"][i])
                assert length == item["features"].shape[0]
                assert torch.equal(bits(batch["features"][i, :length]), bits(item["features"]))
                assert not batch["features"][i, length:].any()                 # zero padding
                assert torch.equal(batch["proposal_bbox"][i], item["proposal_bbox"])
                assert int(batch["proposal_count"][i]) == int(item["proposal_count"])
                assert int(batch["vid_len"][i]) == item["vid_len"]
                assert np.array_equal(batch["cum"][i], item["cum"])
                seen.append(vid)
        assert sorted(seen) == sorted(full.video_names[i] for i in indices)
    finally:
        full.set_proposals(None, None)


def test_buckets_sorted_under_budget():
    lengths = [5, 3, 8, 3, 8, 1, 20]
    groups = batches.buckets(lengths, 16)
    assert sorted(p for group in groups for p in group) == list(range(len(lengths)))
    # by length 1, 3, 3 (3 x 3 rows), then 5, 8 (2 x 8 = 16 fit), then 8, then 20 alone
    assert groups == [[5, 1, 3], [0, 2], [4], [6]]
    for group in groups:
        assert len(group) * max(lengths[p] for p in group) <= 16 or len(group) == 1


# ----------------------------------------------------------------------------- the gather
@pytest.mark.parametrize("finite", [False, True])
@pytest.mark.parametrize("T", [1, 2, 7, 40])
def test_gather_equals_lerp_rows_and_loop(T, finite):
    rng = np.random.default_rng(T)
    x = rng.standard_normal((T, 16)).astype(np.float32)
    x[0, :3] = [-0.0, 0.0, -0.0]                    # signed zeros survive the copies
    pos = np.concatenate([rng.uniform(-1.5, T + 0.5, 50), np.arange(T, dtype=np.float64),
                          np.arange(T) + 1e-12, np.linspace(0, T - 1, 37)])
    source = torch.from_numpy(np.concatenate([rng.standard_normal((3, 16)), x]).astype(np.float32))
    plan = RowPlan.concat([RowPlan.lerp(T, pos)], sources=[3])   # x: rows 3.. of the source
    out = gather(source, plan, finite=finite)
    assert torch.equal(bits(out), bits(torch.from_numpy(lerp_rows(x, pos))))
    if T > 1:
        np.testing.assert_allclose(out.numpy(), lerp_loop(x, pos), rtol=0,
                                   atol=8 * np.finfo(np.float32).eps * (np.abs(x).max() + 1)
                                   * (2 + np.abs(pos).max()))


def test_gather_hand_case():
    x = torch.tensor([[0.0, 10.0], [1.0, 20.0], [3.0, -40.0]])
    plan = RowPlan.lerp(3, [0.0, 0.25, 1.0, 1.5, 2.0, 2.5])
    assert plan.a.tolist() == [0, 0, 1, 1, 2, 1] and plan.between.tolist() == [1, 3, 5]
    out = gather(x, plan)
    expected = [[0.0, 10.0], [0.25, 12.5], [1.0, 20.0], [2.0, -10.0], [3.0, -40.0], [4.0, -70.0]]
    assert out.tolist() == expected                     # 2.5 extrapolates from rows 1 and 2
    copies = gather(x, RowPlan.copies([2, 2, 0]))
    assert copies.tolist() == [[3.0, -40.0], [3.0, -40.0], [0.0, 10.0]]


def test_cpu_chunks_do_not_change_rows(monkeypatch):
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.standard_normal((50, 8)).astype(np.float32))
    dense = rng.uniform(0, 49, 300)
    dense[::3] = np.rint(dense[::3])                    # copies between the interpolated rows
    sparse = np.rint(dense)
    sparse[::10] += 0.25                                # chunks that mostly copy
    for pos in (dense, sparse):
        plan = RowPlan.lerp(50, pos)
        expected = bits(torch.from_numpy(lerp_rows(x.numpy(), pos)))
        for rows in (1, 7, 64, 1000):
            monkeypatch.setattr("engine.store.CPU_CHUNK_ROWS", rows)
            for finite in (False, True):
                assert torch.equal(bits(gather(x, plan, finite=finite)), expected)


def threaded_case(seed=0):
    """A source and a plan long enough for the CPU gather to share its chunks out (rows of
    interpolation and of copies mixed), with lerp_rows's bits."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((300, 8)).astype(np.float32)
    pos = rng.uniform(0, 299, 4000)
    pos[::3] = np.rint(pos[::3])
    return torch.from_numpy(x), RowPlan.lerp(300, pos), bits(torch.from_numpy(lerp_rows(x, pos)))


def threaded_gather_matches(seed):
    x, plan, expected = threaded_case(seed)
    return all(torch.equal(bits(gather(x, plan, finite=finite)), expected)
               for finite in (False, True))


def test_threaded_cpu_gather_equals_one_thread(monkeypatch):
    """The CPU gather's chunks shared out among threads give the one-thread bits, also in a
    forked child (a DataLoader worker) after the parent's pool has run."""
    monkeypatch.setattr("engine.store.CPU_CHUNK_ROWS", 4)       # 1000 chunks: every thread works
    monkeypatch.setattr(torch, "get_num_threads", lambda: 4)
    x, plan, expected = threaded_case()
    for threads in (1, 2, 4):
        monkeypatch.setattr("engine.store.CPU_GATHER_THREADS", threads)
        for finite in (False, True):
            assert torch.equal(bits(gather(x, plan, finite=finite)), expected), (threads, finite)
    assert any(t.name.startswith("gather") for t in threading.enumerate())  # the pool ran
    with multiprocessing.get_context("fork").Pool(1) as pool:
        assert pool.apply_async(threaded_gather_matches, (0,)).get(timeout=120)


def test_non_finite_features_are_copied_exactly():
    """With an inf or NaN in the store, rows on grid nodes are still plain copies (the
    whole-chunk interpolation, x * 1 + x * 0, would turn inf into NaN)."""
    x = np.array([[1.0, np.inf], [-0.0, 2.0], [np.nan, 3.0]], dtype=np.float32)
    source = torch.from_numpy(x)
    plan = RowPlan.lerp(3, [0.0, 1.0, 0.5, 2.0])
    store = FeatureStore(torch.cat([source, torch.zeros(1, 2)]), {"v": 0}, {"v": 3}, "cpu")
    assert not store.finite
    out = store.gather(plan, (4, 2))
    assert torch.equal(bits(out), bits(torch.from_numpy(lerp_rows(x, [0.0, 1.0, 0.5, 2.0]))))
    assert out[0, 1] == float("inf") and torch.isnan(out[3, 0])
