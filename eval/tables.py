"""mAP and per-class AP tables of an evaluation: aligned text (percent) and CSV."""
from collections.abc import Mapping

import numpy as np

from utils import atomic_write_text


def ordered_names(class_names, num_cols):
    """Class names in `ap` column order; accepts a list or a {name: column} mapping."""
    if isinstance(class_names, Mapping):
        names = [n for n, _ in sorted(class_names.items(), key=lambda kv: kv[1])]
    else:
        names = list(class_names)
    if len(names) != num_cols:
        raise ValueError(f"{len(names)} class names for an AP table with {num_cols} columns")
    return names


def in_class_list_order(activity_index, ap, class_names):
    """(names, ap) with the columns of ap (thresholds, classes), indexed by activity_index
    {name: column} (the evaluator's order of first appearance), put in the order of class_names
    (the class list); classes outside the list follow in their own order."""
    listed = [name for name in class_names if name in activity_index]
    others = [name for name in sorted(activity_index, key=activity_index.get)
              if name not in set(class_names)]
    columns = [activity_index[name] for name in listed + others]
    return listed + others, np.atleast_2d(np.asarray(ap, dtype=np.float64))[:, columns]


def per_class_rows(class_names, tiou_thresholds, ap, num_tiou_for_average=None):
    """(header, rows): one row per class, [name, AP at each tIoU..., average over the first N]."""
    ap = np.atleast_2d(np.asarray(ap, dtype=np.float64))               # (thresholds, classes)
    tious = [float(x) for x in tiou_thresholds]
    n_avg = len(tious) if num_tiou_for_average is None else int(num_tiou_for_average)
    names = ordered_names(class_names, ap.shape[1])
    header = (["class"] + [f"AP@{x:.2f}" for x in tious]
              + [f"avg({tious[0]:.2f}-{tious[n_avg - 1]:.2f})"])
    avg = ap[:n_avg].mean(axis=0)                                       # (classes,)
    rows = [[name] + list(ap[:, c]) + [avg[c]] for c, name in enumerate(names)]
    return header, rows


def per_class_csv(class_names, tiou_thresholds, ap, num_tiou_for_average=None):
    """CSV text: one row per class, a column per tIoU, then the average over the first N."""
    header, rows = per_class_rows(class_names, tiou_thresholds, ap, num_tiou_for_average)
    lines = [",".join(header)]
    for row in rows:
        name = '"' + row[0].replace('"', '""') + '"' if ("," in row[0] or '"' in row[0]) else row[0]
        lines.append(",".join([name] + [f"{v:.6f}" for v in row[1:]]))
    return "\n".join(lines) + "\n"


def write_per_class_ap_csv(path, class_names, tiou_thresholds, ap, num_tiou_for_average=None):
    atomic_write_text(path, per_class_csv(class_names, tiou_thresholds, ap, num_tiou_for_average))


def format_per_class_table(class_names, tiou_thresholds, ap, num_tiou_for_average=None):
    """Fixed-width per-class AP table (in %) with a mean row, for stdout and the log."""
    header, rows = per_class_rows(class_names, tiou_thresholds, ap, num_tiou_for_average)
    widths = [max(len(h), 6) for h in header[1:]]
    name_w = max([len(r[0]) for r in rows] + [len(header[0]), len("mean")])

    def line(name, values):
        return " ".join([name.ljust(name_w)]
                        + [f"{100 * v:{w}.2f}" for v, w in zip(values, widths)])

    out = [" ".join([header[0].ljust(name_w)] + [h.rjust(w) for h, w in zip(header[1:], widths)])]
    out.append("-" * len(out[0]))
    out.extend(line(row[0], row[1:]) for row in rows)
    if rows:
        out.append("-" * len(out[0]))
        out.append(line("mean", np.mean([r[1:] for r in rows], axis=0)))
    return "\n".join(out)


def format_report(thresholds, mAP, ap, class_names, num_for_average, per_class=True):
    """mAP per threshold + average (+ per-class AP rows) as an aligned text table (percent)."""
    head = "".join(f"{t:>7.2f}" for t in thresholds)
    lines = [f"{'tIoU':<24}{head}{'avg':>8}",
             f"{'mAP':<24}" + "".join(f"{100 * m:>7.2f}" for m in mAP)
             + f"{100 * np.mean(mAP[:num_for_average]):>8.2f}"]
    n_avg = min(num_for_average, len(thresholds))
    lines.append(f"(average over the first {n_avg} of {len(thresholds)} thresholds)")
    if per_class:
        lines.append("per-class AP")
        for row in per_class_rows(class_names, thresholds, ap, n_avg)[1]:
            lines.append(f"{row[0][:23]:<24}" + "".join(f"{100 * v:>7.2f}" for v in row[1:]))
    return "\n".join(lines)
