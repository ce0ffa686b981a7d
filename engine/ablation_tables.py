"""The tables of an ablation grid: mean +- std over seeds per variant, paired differences to the
reference variant, raw numbers per cell (CSV) and a bar plot."""
import numpy as np

from utils import pyplot, save_figure


def mean_std(values):
    values = np.asarray(values, dtype=np.float64)
    std = values.std(ddof=1) if len(values) > 1 else float("nan")
    return float(values.mean()), float(std)


def fmt(pair):
    mean, std = pair
    return f"{mean:.2f}" if np.isnan(std) else f"{mean:.2f} ± {std:.2f}"


def summarize(cells, reference):
    """Per variant: per-step best avg, final-step tIoU mAP and the paired difference, over seeds."""
    variants = list(dict.fromkeys(cell.variant for cell in cells))
    results = {(c.variant, c.seed): c.result() for c in cells}
    ref = reference if reference in variants else variants[0]
    rows = []
    for name in variants:
        mine = [c for c in cells if c.variant == name and results[(c.variant, c.seed)]]
        if not mine:
            continue
        steps = mine[0].num_steps
        per_step = {k: mean_std([results[(c.variant, c.seed)]["best"][k] for c in mine])
                    for k in range(steps + 1)}
        finals = {c.seed: results[(c.variant, c.seed)]["best"][steps] for c in mine}
        tious = sorted(results[(mine[0].variant, mine[0].seed)]["tiou"][steps])
        per_tiou = {t: mean_std([results[(c.variant, c.seed)]["tiou"][steps][t] for c in mine])
                    for t in tious}
        ref_finals = {c.seed: results[(c.variant, c.seed)]["best"][c.num_steps] for c in cells
                      if c.variant == ref and results[(c.variant, c.seed)]}
        paired = [finals[s] - ref_finals[s] for s in finals if s in ref_finals]
        others = {}
        for kind in ("last", "val"):             # the final step's last epoch / validation-selected
            values = [results[(c.variant, c.seed)].get(kind, {}).get(steps) for c in mine]
            others[kind] = mean_std(values) if values and None not in values \
                else (float("nan"), float("nan"))
        rows.append(dict(variant=name, steps=steps, seeds=sorted(finals), per_step=per_step,
                         final=mean_std(list(finals.values())), per_tiou=per_tiou,
                         paired=mean_std(paired) if paired else (float("nan"), float("nan")),
                         finals=finals, last=others["last"], val=others["val"]))
    return rows, ref


def fmt_or_dash(pair):
    return "—" if np.isnan(pair[0]) else fmt(pair)


def markdown(rows, ref, header):
    max_steps = max(row["steps"] for row in rows)
    with_val = any(not np.isnan(row["val"][0]) for row in rows)
    extra = " | val-selected" if with_val else ""
    lines = [header, "",
             "Best average mAP (%) per step (the best-on-test epoch of each step, the released "
             "protocol), mean ± std over seeds; final = the last step's best, range = its lowest "
             "and highest seed; last epoch = the last step's last evaluation"
             + ("; val-selected = the last step's epoch of best validation mAP (--val_videos), "
                "its test mAP" if with_val else "")
             + f"; Δ = final − {ref}'s final, paired by seed (mean ± std):", "",
             "| variant | seeds | " + " | ".join(f"step {k}" for k in range(max_steps + 1))
             + f" | final | range | last epoch{extra} | Δ vs {ref} |",
             "|---|---|" + "---|" * (max_steps + 5 + with_val)]
    for row in rows:
        cells = [fmt(row["per_step"][k]) if k in row["per_step"] else ""
                 for k in range(max_steps + 1)]
        delta = "—" if row["variant"] == ref else fmt(row["paired"])
        finals = list(row["finals"].values())
        lines.append(f"| {row['variant']} | {len(row['seeds'])} | " + " | ".join(cells)
                     + f" | **{fmt(row['final'])}** | {min(finals):.2f}–{max(finals):.2f} | "
                       f"{fmt_or_dash(row['last'])}"
                     + (f" | {fmt_or_dash(row['val'])}" if with_val else "") + f" | {delta} |")
    tious = list(rows[0]["per_tiou"])
    lines += ["",
              "mAP (%) at each tIoU of the final step's best evaluation, mean ± std over seeds:",
              "", "| variant | " + " | ".join(f"{t:.2f}" for t in tious) + " |",
              "|---|" + "---|" * len(tious)]
    for row in rows:
        lines.append(f"| {row['variant']} | "
                     + " | ".join(fmt(row["per_tiou"].get(t, (np.nan, np.nan))) for t in tious)
                     + " |")
    return "\n".join(lines) + "\n"


def csv_text(rows, cells):
    """One line per finished cell (the raw numbers), then mean and std lines per variant."""
    max_steps = max(row["steps"] for row in rows)
    head = ["variant", "seed", "num_steps"] + [f"step{k}_best" for k in range(max_steps + 1)] + [
        "final_best", "final_last", "final_val_selected", "run_folder"]
    lines = [",".join(head)]
    for cell in cells:
        result = cell.result()
        if result:
            steps = [f"{result['best'][k]:.2f}" if k in result["best"] else ""
                     for k in range(max_steps + 1)]
            others = [f"{result[kind][cell.num_steps]:.2f}"
                      if cell.num_steps in result.get(kind, {}) else ""
                      for kind in ("last", "val")]
            lines.append(",".join([cell.variant, str(cell.seed), str(cell.num_steps)] + steps
                                  + [f"{result['best'][cell.num_steps]:.2f}"] + others
                                  + [cell.save_dir]))
    for row in rows:
        for index, stat in enumerate(("mean", "std")):
            steps = [f"{row['per_step'][k][index]:.4f}" if k in row["per_step"] else ""
                     for k in range(max_steps + 1)]
            others = ["" if np.isnan(row[kind][0]) else f"{row[kind][index]:.4f}"
                      for kind in ("last", "val")]
            lines.append(",".join([row["variant"], stat, str(row["steps"])] + steps
                                  + [f"{row['final'][index]:.4f}"] + others + [""]))
    return "\n".join(lines) + "\n"


def plot(rows, ref, path):
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(max(5, 1.1 * len(rows)), 3.8), layout="constrained")
    x = np.arange(len(rows))
    means = [row["final"][0] for row in rows]
    stds = [0 if np.isnan(row["final"][1]) else row["final"][1] for row in rows]
    ax.bar(x, means, yerr=stds, capsize=4,
           color=["tab:orange" if r["variant"] == ref else "tab:blue" for r in rows])
    for i, row in enumerate(rows):
        ax.plot([i] * len(row["finals"]), list(row["finals"].values()), "k.", ms=4)
    ax.set_xticks(x, [row["variant"] for row in rows], rotation=30, ha="right")
    ax.set_ylabel("best avg mAP (%) of the final step")
    ax.set_title("Ablation: mean ± std over seeds (dots: seeds)")
    ax.grid(axis="y", alpha=0.3)
    save_figure(fig, path, dpi=110)
