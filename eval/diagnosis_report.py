"""Text tables, CSV, JSON and PNG plots of a `eval.diagnosis.Diagnosis`.

Files (each written atomically; `prefix` e.g. "test_" and a step suffix come from the caller):
{prefix}diagnosis_bins.csv, {prefix}diagnosis_fp.csv, {prefix}diagnosis.json,
{prefix}diagnosis_bins.png (per-bin average mAP bars), {prefix}diagnosis_fp.png (stacked
false-positive shares over k). matplotlib is imported lazily with the headless Agg backend.
"""
import math
import os

from eval.diagnosis import ERROR_TYPES
from utils import atomic_write_json, atomic_write_text, jsonable, pyplot, save_figure

FP_COLORS = ("#33a02c", "#b2df8a", "#1f78b4", "#fb9a99", "#e31a1c", "#a6cee3")   # DETAD's palette
BIN_COLORS = {"all": "#555555", "length": "#f0027f", "coverage": "#386cb0", "instances": "#bf5b17"}


def _missing(value):
    """None or NaN: pandas stores an empty bin's None as NaN in float columns."""
    return value is None or (isinstance(value, float) and math.isnan(value))


def _pct(value, width=7):
    return f"{'empty':>{width}}" if _missing(value) else f"{100 * value:>{width}.2f}"


def format_diagnosis(diag):
    """Both tables as aligned text, values in percent; empty bins say 'empty'."""
    table = diag.by_characteristic
    map_cols = [c for c in table.columns if c.startswith("mAP@")]
    n_avg = min(diag.num_tiou_for_average, len(map_cols))
    head = (f"{'characteristic':<15}{'bin':<4}{'range':<16}{'#GT':>6}"
            + "".join(f"{c[4:]:>7}" for c in map_cols))
    rule = "at every tIoU once at one, as DETAD's code" if diag.ignore_any_tiou else "at that tIoU"
    lines = [f"mAP (%) by GT characteristic (predictions matched to GT outside a bin are ignored "
             f"{rule}; avg over the first {n_avg} tIoU; AP_N with N = {diag.normalizer:.1f}; "
             f"recall / miss rate at tIoU {diag.fp_tiou:g})",
             head + f"{'avg':>8}{'avg_N':>8}{'recall':>8}{'miss':>7}"]
    for row in table.to_dict("records"):
        lines.append(f"{row['characteristic']:<15}{row['bin']:<4}{row['range']:<16}{row['gt_count']:>6}"
                     + "".join(_pct(row[c]) for c in map_cols) + _pct(row["avg_mAP"], 8)
                     + _pct(row["avg_mAP_N"], 8) + _pct(row["recall"], 8) + _pct(row["miss_rate"]))
    lines.append(f"false-positive profile at tIoU {diag.fp_tiou:g} "
                 f"(% of the predictions of rank slice k*G)")
    lines.append(f"{'k':>3}{'preds':>8}" + "".join(f"{name:>17}" for name in ERROR_TYPES))
    for row in diag.fp_breakdown.to_dict("records"):
        lines.append(f"{row['k']:>3}{row['predictions']:>8}"
                     + "".join(_pct(row[name], 17) for name in ERROR_TYPES))
    return "\n".join(lines)


def diagnosis_to_dict(diag):
    """Plain dict (JSON-ready; empty values are null)."""
    return {"tiou_thresholds": [float(t) for t in diag.tiou_thresholds],
            "num_tiou_for_average": int(diag.num_tiou_for_average), "fp_tiou": diag.fp_tiou,
            "average_mAP": diag.average_mAP, "normalizer_N": diag.normalizer,
            "ignore_any_tiou": diag.ignore_any_tiou,
            "by_characteristic": jsonable(diag.by_characteristic.to_dict("records")),
            "fp_breakdown": jsonable(diag.fp_breakdown.to_dict("records"))}


def plot_bins(diag, path, title=""):
    """Bars of average mAP and AP_N (%) per bin, grouped by characteristic; empty bins have no
    bar."""
    plt = pyplot()
    rows = diag.by_characteristic.to_dict("records")
    fig, axes = plt.subplots(2, 1, figsize=(13, 6.5), sharex=True)
    x = list(range(len(rows)))
    for ax, key, label in ((axes[0], "avg_mAP", "avg mAP (%)"),
                           (axes[1], "avg_mAP_N", "avg mAP$_N$ (%)")):
        for i, row in enumerate(rows):
            if _missing(row[key]):
                ax.text(i, 1, "empty", ha="center", fontsize=8, rotation=90)
                continue
            ax.bar(i, 100 * row[key], color=BIN_COLORS.get(row["characteristic"], "#999999"))
            ax.text(i, 100 * row[key], f"{100 * row[key]:.1f}", ha="center", va="bottom",
                    fontsize=8)
        ax.set_ylabel(label)
        ax.grid(axis="y", linestyle=":")
    short = {"length": "len", "coverage": "cov", "instances": "inst"}
    axes[1].set_xticks(x, [f"{short.get(r['characteristic'], r['characteristic'])} {r['bin']}\n"
                           f"{r['range'].replace(', ', ',')}\nn={r['gt_count']}" for r in rows],
                       fontsize=7)
    n_avg = min(diag.num_tiou_for_average, len(diag.tiou_thresholds))
    axes[0].set_title(f"{title}mAP by GT length (s), coverage and instances per video "
                      f"(avg over the first {n_avg} tIoU)".strip())
    save_figure(fig, path, bbox_inches="tight")


def plot_fp(diag, path, title=""):
    """Stacked shares (%) of true positives and each error type over k = 1..K."""
    plt = pyplot()
    table = diag.fp_breakdown
    fig, ax = plt.subplots(figsize=(8, 5))
    bottom = [0.0] * len(table)
    for name, color in zip(ERROR_TYPES, FP_COLORS):
        values = [0.0 if _missing(v) else 100 * v for v in table[name]]
        ax.bar(table["k"], values, bottom=bottom, color=color, label=name)
        bottom = [b + v for b, v in zip(bottom, values)]
    ax.set_xticks(table["k"], [f"{k}G" for k in table["k"]])
    ax.set_xlabel("rank slice of each class's predictions (G = its GT count)")
    ax.set_ylabel("share (%)")
    ax.set_ylim(0, 100)
    ax.set_title(f"{title}false-positive profile at tIoU {diag.fp_tiou:g}".strip())
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=9)
    save_figure(fig, path, bbox_inches="tight")


def write_diagnosis(diag, folder, prefix="", title=""):
    """CSV (pandas), JSON and the two PNGs into `folder`; returns the written paths."""
    paths = {name: os.path.join(folder, f"{prefix}{name}") for name in
             ("diagnosis_bins.csv", "diagnosis_fp.csv", "diagnosis.json", "diagnosis_bins.png",
              "diagnosis_fp.png")}
    atomic_write_text(paths["diagnosis_bins.csv"], diag.by_characteristic.to_csv(index=False))
    atomic_write_text(paths["diagnosis_fp.csv"], diag.fp_breakdown.to_csv(index=False))
    atomic_write_json(paths["diagnosis.json"], diagnosis_to_dict(diag), indent=1)
    plot_bins(diag, paths["diagnosis_bins.png"], title)
    plot_fp(diag, paths["diagnosis_fp.png"], title)
    return list(paths.values())


def diagnose_evaluation(detector, ground_truth_file, folder, prefix, title="",
                        ignore_any_tiou=False):
    """Diagnose an evaluated ANETDetection, write its files into `folder`, return the text tables.

    The hook of training and test mode (`--diagnose [--ignore_any_tiou]`): one call per evaluated
    step."""
    from eval.diagnosis import diagnose_detector
    diag = diagnose_detector(detector, ground_truth_file, ignore_any_tiou=ignore_any_tiou)
    write_diagnosis(diag, folder, prefix, title)
    return format_diagnosis(diag)
