"""Timeline statistics of a gt.json: the numbers that shape a WTAL benchmark.

The same function measures the real annotations (../shared/data) and a generated demo set, so
the README can show both side by side:

    python bench/annotation_stats.py ../shared/data/THUMOS14/gt.json:validation \\
        data/synthetic_THUMOS14/gt.json:validation
    python bench/annotation_stats.py ../shared/data/ActivityNet13/gt.json:train

Each argument is GT_JSON[:SUBSET] (default: every video). Statistics per video: duration (s),
instances, classes, fraction of snippets inside actions; per instance: length (s and as a
fraction of its video); per gap between consecutive instances (sorted by start, overlaps
merged first): its length (s).
"""
import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

R = 25 / 16                                  # snippets per second (docs/method.md notation)
QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)
ROWS = [("duration_s", "video duration (s)"), ("instances", "instances per video"),
        ("classes", "classes per video"), ("inside_frac", "fraction of snippets inside actions"),
        ("length_s", "instance length (s)"), ("length_frac", "instance length / video duration"),
        ("gap_s", "gap between instances (s)")]


def _merged(segments):
    """Union of [s, e] intervals as a sorted list of disjoint intervals."""
    out = []
    for s, e in sorted(segments):
        if out and s <= out[-1][1]:
            out[-1][1] = max(out[-1][1], e)
        else:
            out.append([s, e])
    return out


def video_statistics(entry):
    """Per-video numbers and per-instance / per-gap lists of one gt.json database entry."""
    duration = float(entry["duration"])
    segments = [(float(a["segment"][0]), float(a["segment"][1])) for a in entry["annotations"]]
    T = max(int(round(duration * R)), 1)
    centres = (np.arange(T) + 0.5) / R                          # (T,) snippet centres (s)
    inside = np.zeros(T, bool)
    if segments:
        s, e = np.array(segments).T                                             # (N,), (N,)
        inside = ((centres[:, None] >= s) & (centres[:, None] <= e)).any(1)     # (T,)
    merged = _merged(segments)
    lengths = [e - s for s, e in segments]
    return {"duration_s": duration, "instances": len(segments),
            "classes": len({a["label"] for a in entry["annotations"]}),
            "inside_frac": float(inside.mean()), "length_s": lengths,
            "length_frac": [x / duration for x in lengths] if duration > 0 else [],
            "gap_s": [b[0] - a[1] for a, b in zip(merged[:-1], merged[1:])]}


def annotation_statistics(gt, subset=None):
    """{statistic: float64 array of its values} over the videos of `subset` (all if None).

    gt: a gt.json path or its parsed dict. Videos without annotations are counted (0 instances).
    """
    if not isinstance(gt, dict):
        with open(gt) as handle:
            gt = json.load(handle)
    values = {key: [] for key, _ in ROWS}
    for entry in gt["database"].values():
        if subset is not None and entry.get("subset") != subset:
            continue
        for key, value in video_statistics(entry).items():
            values[key].extend(value if isinstance(value, list) else [value])
    return {key: np.asarray(vals, dtype=np.float64) for key, vals in values.items()}


def summarize(values):
    """{statistic: {mean, q10, q25, q50, q75, q90, n}} of annotation_statistics' output."""
    out = {}
    for key, vals in values.items():
        row = {"n": int(len(vals)), "mean": float(vals.mean()) if len(vals) else float("nan")}
        for q in QUANTILES:
            row[f"q{round(100 * q)}"] = float(np.quantile(vals, q)) if len(vals) else float("nan")
        out[key] = row
    return out


def _cell(row):
    small = max(abs(row["q90"]), abs(row["mean"])) < 10
    fmt = (lambda x: f"{x:.2f}") if small else (lambda x: f"{x:.1f}")
    return f"{fmt(row['mean'])} ({fmt(row['q10'])} / {fmt(row['q50'])} / {fmt(row['q90'])})"


def markdown_table(named_summaries):
    """Side-by-side table: one column per (name, summary); cells 'mean (q10 / median / q90)'."""
    names = [name for name, _ in named_summaries]
    lines = ["| statistic: mean (10 % / median / 90 %) | " + " | ".join(names) + " |",
             "|---|" + "---|" * len(names)]
    videos = " | ".join(str(s["duration_s"]["n"]) for _, s in named_summaries)
    lines.append(f"| videos | {videos} |")
    for key, label in ROWS:
        lines.append(f"| {label} | " + " | ".join(_cell(s[key]) for _, s in named_summaries) + " |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sources", nargs="+", help="GT_JSON[:SUBSET]")
    opts = parser.parse_args(argv)
    named = []
    for source in opts.sources:
        path, _, subset = source.partition(":")
        if not os.path.isfile(path):
            sys.exit(f"error: {path} not found")
        name = f"{os.path.basename(os.path.dirname(os.path.abspath(path)))} {subset or 'all'}"
        named.append((name, summarize(annotation_statistics(path, subset or None))))
    print(markdown_table(named))


if __name__ == "__main__":
    main()
