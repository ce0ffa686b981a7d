"""Figures: one video's CAS, attention, proposals and sampling weights; mAP per refinement step.

Pure functions of numpy arrays and lists; the only I/O is the PNG each one is asked to write
(atomically). Time is in seconds: snippet i of a video covers [i/r, (i+1)/r] with
r = frames_per_sec / segment_frames_num.
"""
import numpy as np

from sampling import dynamic_to_original_time
from utils import pyplot, save_figure

FIGSIZE = (12, 7)  # inches; at 100 dpi a 1200 x 700 PNG


# ----------------------------------------------------------------------------- per-video figure
def snippet_times(num_rows, vid_len, frames_per_sec=25, segment_frames_num=16, cum=None):
    """Centre time (s) of each of the model's `num_rows` snippets, as proposals are mapped
    (docs/method.md §11): row j covers [j, j+1] * duration / num_rows of the (possibly dynamic)
    timeline, mapped back to the original video under dynamic sampling."""
    duration = vid_len * segment_frames_num / frames_per_sec
    t = (np.arange(num_rows) + 0.5) / num_rows * duration   # (T,) on the sampled timeline
    return t if cum is None else dynamic_to_original_time(t, cum, duration)


def _class_order(class_names, gt_segments, proposals, max_classes):
    """Classes shown: GT classes (class-list order), then predicted-only ones by best score."""
    index = {name: i for i, name in enumerate(class_names)}
    gt = sorted({g["label"] for g in gt_segments}, key=lambda n: index.get(n, len(index)))
    best = {}
    for p in proposals:
        if p["label"] not in gt:
            best[p["label"]] = max(best.get(p["label"], -np.inf), p["score"])
    pred = sorted(best, key=lambda n: -best[n])[:max(max_classes - len(gt), 0)]
    return gt, pred


def _lanes(items):
    """Greedy lane per item (in the given order) so that overlapping intervals never share one."""
    ends, lanes = [], []
    for item in items:
        s, e = item["segment"]
        lane = next((i for i, end in enumerate(ends) if end <= s), len(ends))
        if lane == len(ends):
            ends.append(e)
        ends[lane] = e
        lanes.append(lane)
    return lanes, max(len(ends), 1)


def _bar_panel(ax, rows, items, colors, scores=None, duration=1.0):
    """Horizontal bars, one row per class (top row = first class); overlapping bars of a class
    are stacked in thin lanes; with `scores`, alpha follows the score and wide bars show it."""
    ypos = {name: len(rows) - 1 - i for i, name in enumerate(rows)}
    top = max([max(s, 0.0) for s in scores], default=0.0) if scores is not None else 0.0
    for name in rows:
        mine = [k for k, it in enumerate(items) if it["label"] == name]
        mine.sort(key=lambda k: items[k]["segment"][0])
        lanes, n_lanes = _lanes([items[k] for k in mine])
        height = 0.8 / n_lanes
        for k, lane in zip(mine, lanes):
            s, e = items[k]["segment"]
            y = ypos[name] + 0.4 - (lane + 0.5) * height
            alpha = 0.85 if scores is None else 0.25 + 0.7 * max(scores[k], 0.0) / (top or 1.0)
            ax.barh(y, max(e - s, 1e-3), left=s, height=height * 0.9, color=colors[name],
                    alpha=alpha, edgecolor="black", linewidth=0.4)
            if scores is not None and e - s > 0.03 * duration and n_lanes <= 3:
                ax.text((s + e) / 2, y, f"{scores[k]:.2f}", ha="center", va="center", fontsize=7)
    ax.set_yticks(list(ypos.values()))
    ax.set_yticklabels(list(ypos.keys()), fontsize=8)
    ax.set_ylim(-0.5, max(len(rows), 1) - 0.5)


def plot_video(path, vid_name, vid_len, class_names, fg_cas, temp_att, proposals, gt_segments,
               frames_per_sec=25, segment_frames_num=16, weights=None, cum=None, title_extra="",
               score_threshold=0.1, max_per_class=6, max_classes=8):
    """Write one PNG of a video: GT, proposals, CAS, foreground attention, sampling weights.

    fg_cas (T, C+1) and temp_att (T, 2) are the model outputs over its T sampled snippets;
    proposals / gt_segments are lists of {label, segment: [s, e] seconds} (+ score);
    weights (vid_len,) and cum (vid_len+1,) come from dynamic sampling (steps >= 1) or are None.
    Shows at most `max_per_class` proposals per class and `max_classes` classes (all GT ones first).
    """
    fg_cas = np.asarray(fg_cas, dtype=np.float64)
    att = np.asarray(temp_att, dtype=np.float64)
    att = att[:, 0] if att.ndim == 2 else att  # (T,) foreground attention
    duration = vid_len * segment_frames_num / frames_per_sec
    r = frames_per_sec / segment_frames_num
    t = snippet_times(len(fg_cas), vid_len, frames_per_sec, segment_frames_num, cum)
    if weights is None and cum is not None and len(cum) == vid_len + 1:
        weights = np.diff(np.asarray(cum, dtype=np.float64))

    shown = [p for p in proposals if p["score"] > score_threshold]
    gt_cls, pred_cls = _class_order(class_names, gt_segments, shown, max_classes)
    rows = gt_cls + pred_cls
    plt = pyplot()
    palette = plt.get_cmap("tab10").colors
    colors = {name: palette[i % len(palette)] for i, name in enumerate(rows)}
    kept = []
    for name in rows:  # top-N proposals per class by score, for readability
        mine = sorted((p for p in shown if p["label"] == name), key=lambda p: -p["score"])
        kept.extend(mine[:max_per_class])

    n_rows = max(len(rows), 1)
    ratios = ([0.5 + 0.3 * n_rows, 0.5 + 0.3 * n_rows, 3.0, 1.6]
              + ([1.3] if weights is not None else []))
    fig, axes = plt.subplots(len(ratios), 1, sharex=True, figsize=FIGSIZE,
                             gridspec_kw=dict(height_ratios=ratios), layout="constrained")
    ax_gt, ax_pr, ax_cas, ax_att = axes[:4]

    _bar_panel(ax_gt, rows, [g for g in gt_segments if g["label"] in colors], colors,
               duration=duration)
    ax_gt.set_ylabel("ground\ntruth", fontsize=9)
    if not gt_segments:
        ax_gt.text(0.5, 0.5, "no ground-truth instances", transform=ax_gt.transAxes,
                   ha="center", va="center", fontsize=9, color="gray")
    _bar_panel(ax_pr, rows, kept, colors, scores=[p["score"] for p in kept], duration=duration)
    ax_pr.set_ylabel(f"proposals\n(score>{score_threshold:g})", fontsize=9)
    if not kept:
        ax_pr.text(0.5, 0.5, "no proposals above the score threshold", transform=ax_pr.transAxes,
                   ha="center", va="center", fontsize=9, color="gray")

    for g in gt_segments:  # light GT shading behind the curves
        if g["label"] in colors:
            for ax in (ax_cas, ax_att):
                ax.axvspan(*g["segment"], color=colors[g["label"]], alpha=0.12, linewidth=0)
    index = {name: i for i, name in enumerate(class_names)}
    for name in rows:
        if name in index:
            style = "-" if name in gt_cls else "--"
            tag = "" if name in gt_cls else " (pred. only)"
            ax_cas.plot(t, fg_cas[:, index[name]], style, color=colors[name], lw=1.6,
                        label=name + tag)
    ax_cas.set_ylabel("CAS", fontsize=9)
    if fg_cas.size and fg_cas.min() >= 0 and fg_cas.max() <= 1:
        ax_cas.set_ylim(0, 1.02)
    if rows:
        ax_cas.legend(loc="upper left", bbox_to_anchor=(1.005, 1.0), fontsize=8, frameon=False,
                      title="class (shade = GT)", title_fontsize=8)

    ax_att.fill_between(t, att, color="0.35", alpha=0.35, linewidth=0)
    ax_att.plot(t, att, color="0.15", lw=1.2)
    ax_att.set_ylabel("fg\nattention", fontsize=9)
    ax_att.set_ylim(0, 1.02)

    if weights is not None:
        ax_w = axes[4]
        w = np.asarray(weights, dtype=np.float64)
        edges = np.arange(len(w) + 1) / r  # snippet boundaries in seconds
        ax_w.stairs(w, edges, fill=True, color="tab:purple", alpha=0.5)
        ax_w.axhline(1.0, color="0.4", lw=0.8, ls=":")
        ax_w.set_ylabel("sampling\nweight", fontsize=9)
        ax_w.set_ylim(0, max(float(w.max()) * 1.1, 1.5))

    axes[-1].set_xlim(0, duration)
    axes[-1].set_xlabel("time (s)")
    for ax in axes:
        ax.grid(axis="x", alpha=0.3)
        ax.tick_params(labelsize=8)
    title = f"{vid_name}  ({duration:.1f} s, {vid_len} snippet{'s' if vid_len != 1 else ''})"
    fig.suptitle(title + (f"  |  {title_extra}" if title_extra else ""), fontsize=11)
    save_figure(fig, path)


# ----------------------------------------------------------------------------- mAP per step
def summary_to_per_step(summary):
    """{"step k": entry} -> {k: (tious, mAP, average)}, the input of plot_map_over_steps."""
    out = {}
    for key, entry in summary.items():
        step = int(str(key).split()[-1])
        out[step] = (entry["tiou_thresholds"], entry["mAP"], entry["average_mAP"])
    return dict(sorted(out.items()))


def plot_map_over_steps(path, per_step_map):
    """Grouped bars of mAP (%) per tIoU, one colour per refinement step, plus the average."""
    steps = sorted(per_step_map, key=lambda k: int(str(k).split()[-1]))
    tious = [float(x) for x in per_step_map[steps[0]][0]] if steps else []
    values = [np.asarray(per_step_map[k][1], dtype=np.float64) for k in steps]
    avgs = [float(per_step_map[k][2]) for k in steps]
    scale = 100.0 if max([v.max() for v in values if v.size] + avgs + [0.0]) <= 1.0 else 1.0
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(9, 4.5), layout="constrained")
    n = max(len(steps), 1)
    width = 0.8 / n
    x = np.arange(len(tious) + 1, dtype=np.float64)
    x[-1] += 0.5  # gap before the average group
    colors = plt.get_cmap("viridis")(np.linspace(0.15, 0.85, n))
    for i, k in enumerate(steps):
        ys = np.append(values[i], avgs[i]) * scale
        bars = ax.bar(x[:len(ys)] + (i - (n - 1) / 2) * width, ys, width, color=colors[i],
                      label=f"step {int(str(k).split()[-1])} (avg {avgs[i] * scale:.1f})")
        ax.bar_label(bars, fmt="%.1f", fontsize=7, padding=1)
    ax.set_xticks(x, [f"{v:.2f}" for v in tious] + ["avg"])
    ax.set_xlabel("tIoU threshold")
    ax.set_ylabel("mAP (%)")
    ax.set_title("Detection mAP per refinement step")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, frameon=False)
    save_figure(fig, path)
