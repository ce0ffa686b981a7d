"""Slow loop versions of proposals.py (docs/method.md §11): greedy NMS one kept segment at a
time, and one video's proposals with scipy's interpolation and per-run loops."""
import numpy as np
from scipy.interpolate import interp1d


def loop_nms(segs, scores, thresh):
    """Released-style greedy NMS, one kept segment at a time (stable order on ties)."""
    order = list(np.argsort(-scores, kind="stable"))
    keep = []
    while order:
        i = order.pop(0)
        keep.append(i)
        rest = []
        for j in order:
            inter = max(0.0, min(segs[i, 1], segs[j, 1]) - max(segs[i, 0], segs[j, 0]) + 1)
            union = (segs[i, 1] - segs[i, 0] + 1) + (segs[j, 1] - segs[j, 0] + 1) - inter
            if inter / union < thresh:
                rest.append(j)
        order = rest
    return keep


def loop_video_proposals(fg_cls, temp_att, fg_cas, vid_len, args, pseudo=False, cum=None):
    """[(label, score, start, end)] of one video, after per-class NMS."""
    n_cls = len(args.class_name_lst)
    s = fg_cls[:n_cls]
    pred = [c for c in range(n_cls) if s[c] > args.cls_threshold] or [int(np.argmax(s))]
    scale, n_snip = args.test_upgrade_scale, temp_att.shape[0]
    pos = np.arange(0, n_snip, 1 / scale)
    cas = interp1d(np.arange(n_snip), fg_cas[:, pred], axis=0, fill_value="extrapolate")(pos)
    att = interp1d(np.arange(n_snip), temp_att[:, 0], fill_value="extrapolate")(pos)
    n = len(pos)
    t_factor = (args.segment_frames_num * vid_len) / (args.frames_per_sec * scale * n_snip)
    duration = args.segment_frames_num * vid_len / args.frames_per_sec
    if pseudo:
        branches = [("cas", args.pseudo_cas_thresh, 0.0), ("att", args.pseudo_att_thresh, 0.0)]
    else:
        branches = [("cas", args.cas_thresh, args.oic_gamma_cas),
                    ("att", args.att_thresh, args.oic_gamma_att)]
    w_cas, w_att, lamb = args.fusion_cas_weight, args.fusion_att_weight, args.oic_lamb
    pool = {c: [] for c in pred}
    for branch, thresholds, gamma in branches:
        for theta in thresholds:
            for ci, c in enumerate(pred):
                if branch == "cas":
                    sig = cas[:, ci]
                    smap = w_cas * np.where(sig < theta, 0, sig) + w_att * att
                else:
                    sig = att
                    smap = w_cas * cas[:, ci] + w_att * np.where(att < theta, 0, att)
                idx = np.where(sig >= theta)[0]
                for g in np.split(idx, np.where(np.diff(idx) != 1)[0] + 1):
                    if len(g) < 2:
                        continue
                    length = len(g)
                    inner = np.mean(smap[g])
                    o_s = max(0, int(g[0] - lamb * length))
                    o_e = min(n - 1, int(g[-1] + lamb * length))
                    outer_idx = list(range(o_s, g[0])) + list(range(g[-1] + 1, o_e + 1))
                    outer = np.mean(smap[outer_idx]) if outer_idx else 0
                    start, end = g[0] * t_factor, (g[-1] + 1) * t_factor
                    if cum is not None:
                        xp, fp = cum / cum[-1], np.linspace(0, 1, len(cum))
                        start = np.interp(start / duration, xp, fp) * duration
                        end = np.interp(end / duration, xp, fp) * duration
                    pool[c].append([inner - outer + gamma * s[c], start, end])
    out = []
    for c in pred:
        props = sorted(pool[c], key=lambda p: -p[0])          # stable
        while props:
            best = props.pop(0)
            out.append((args.class_name_lst[c], best[0], best[1], best[2]))
            kept = []
            for p in props:
                inter = max(0.0, min(best[2], p[2]) - max(best[1], p[1]) + 1)
                iou = inter / ((best[2] - best[1] + 1) + (p[2] - p[1] + 1) - inter)
                if iou < args.nms_thresh:
                    kept.append(p)
            props = kept
    return out
