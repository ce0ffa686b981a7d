"""engine/heldout.py: --val_videos parsing and the stratified, seeded choice (quotas against the
loop of tests/oracles/heldout_loop.py)."""
import json

import numpy as np
import pytest

from engine.heldout import choose_held_out, parse_amount, read_id_file, strata, stratum_quotas
from oracles.heldout_loop import quotas_loop
from utils import UserError


def test_parse_amount(tmp_path):
    assert parse_amount("", 100) is None and parse_amount("0", 100) is None
    assert parse_amount("20", 100) == ("count", 20)
    # round half even
    assert parse_amount("0.2", 100) == ("count", 20) and parse_amount("0.25", 10) == ("count", 2)
    ids = tmp_path / "ids.txt"
    ids.write_text("a\n")
    assert parse_amount(str(ids), 100) == ("file", str(ids))
    for bad in ("1.0", "1.5", "-3", "100", "abc", "0.001"):
        with pytest.raises(UserError, match="--val_videos"):
            parse_amount(bad, 100)


def test_read_id_file_checks_ids(tmp_path):
    path = tmp_path / "ids.txt"
    path.write_text("c\na\n\n")
    assert read_id_file(path, ["a", "b", "c"]) == ["a", "c"]                   # training list order
    path.write_text("a\nzz\n")
    with pytest.raises(UserError, match="zz is not a video of split_train.txt"):
        read_id_file(path, ["a", "b"])
    path.write_text("a\nb\n")
    with pytest.raises(UserError, match="between 1 and 1"):
        read_id_file(path, ["a", "b"])


def test_strata_rarest_label_by_hand():
    # A: 3 videos, B: 2, C: 1
    labels = [["A"], ["A", "B"], ["B"], ["C"], ["A", "A"], []]
    assert strata(labels, ["A", "B", "C"]).tolist() == [0, 1, 1, 2, 0, 3]
    # tie: class list order
    assert strata([["A", "B"], ["A", "B"]], ["B", "A"]).tolist() == [0, 0]


def test_stratum_quotas_by_hand_and_against_loop():
    # exact 1.5 .9 .6: floors 1 0 0, then .9, .6
    assert stratum_quotas([5, 3, 2], 3).tolist() == [1, 1, 1]
    # a one-video stratum keeps its video
    assert stratum_quotas([1, 9], 5).tolist() == [0, 5]
    with pytest.raises(UserError, match="at most 8"):
        stratum_quotas([1, 9], 9)
    rng = np.random.default_rng(5)
    for _ in range(200):
        sizes = rng.integers(1, 12, size=rng.integers(1, 8)).tolist()
        total = int(rng.integers(0, sum(sizes) - len(sizes) + 1))
        quotas = stratum_quotas(sizes, total)
        assert quotas.tolist() == quotas_loop(sizes, total)
        assert quotas.sum() == total and (quotas <= np.asarray(sizes) - 1).all()


def test_choice_is_stratified_and_seeded(shared_data):
    """On the real THUMOS training labels: 20 % of every rarest-label stratum, a draw per seed."""
    database = json.loads((shared_data / "THUMOS14" / "gt.json").read_text())["database"]
    classes = (shared_data / "THUMOS14" / "classes.txt").read_text().split()
    names = (shared_data / "THUMOS14" / "split_train.txt").read_text().split()
    labels = [[ann["label"] for ann in database[vid]["annotations"]] for vid in names]
    chosen = choose_held_out(names, labels, classes, 40, seed=2)
    assert len(chosen) == 40 and chosen == [vid for vid in names if vid in set(chosen)]
    assert choose_held_out(names, labels, classes, 40, seed=2) == chosen
    assert choose_held_out(names, labels, classes, 40, seed=3) != chosen
    group = strata(labels, classes)
    held = np.isin(names, chosen)
    for g in np.unique(group):
        size = int((group == g).sum())
        assert abs(held[group == g].sum() - 0.2 * size) < 1 and held[group == g].sum() < size
    for c, name in enumerate(classes):               # every class keeps most of its training videos
        having = np.array([name in set(x) for x in labels])
        assert held[having].sum() <= np.ceil(0.2 * having.sum()) + 2 and (having & ~held).any()
