"""bench/pseudo_label_quality.py against a per-snippet loop written from docs/method.md §8
(tests/oracles/pseudo_label_loop.py), and by hand."""
import numpy as np

from bench.pseudo_label_quality import marked_rows, pseudo_label_quality
from oracles.pseudo_label_loop import loop_marked

R = 25 / 16


def test_marked_rows_matches_loop():
    rng = np.random.default_rng(0)
    for _ in range(200):
        T = int(rng.integers(1, 60))
        segments = [tuple(sorted(rng.uniform(-2, T / R + 2, 2)))
                    for _ in range(int(rng.integers(0, 5)))]
        assert np.array_equal(marked_rows(segments, T, R), loop_marked(segments, T, R))


def test_quality_by_hand():
    # duration 6.4 s -> T = 10 snippets; GT class a on rows round(1*1.5625)=2 .. round(3*1.5625)=5
    database = {"v": {"duration": 6.4, "subset": "train",
                      "annotations": [{"segment": [1.0, 3.0], "label": "a"}]},
                "w": {"duration": 6.4, "subset": "val",
                      "annotations": [{"segment": [0.0, 6.0], "label": "a"}]}}
    # pseudo: class a rows round(2.56)=3 .. round(4.6875)=5 and 8..9 (0 rows of GT);
    # class b is not a GT label
    proposals = {"v": [{"label": "a", "score": 1, "segment": [1.64, 3.0]},
                       {"label": "a", "score": 1, "segment": [5.12, 9.0]},
                       {"label": "b", "score": 1, "segment": [0.0, 6.0]}]}
    q = pseudo_label_quality(proposals, database, "train", R)
    # marked rows {3, 4, 5, 8, 9}, GT rows {2, 3, 4, 5}: TP 3, FP 2, FN 1
    assert q["action_precision"] == 3 / 5 and q["action_recall"] == 3 / 4
    assert q["class_precision"] == 3 / 5 and q["class_recall"] == 3 / 4
    assert q["marked_frac"] == 0.5 and q["gt_frac"] == 0.4 and q["snippets"] == 10
