"""I3D-like features generated from a video's timeline (for tests and the --demo data).

Each video mixes, in a low-rank latent space projected to D dims and passed through a ReLU:
a class scene context present through the whole video (confusable classes share part of it),
a two-phase action signal inside each instance with soft (sigmoid) boundaries, a slowly drifting
background, temporally smooth noise and white noise. RGB (first half) carries more scene,
flow (second half) more motion. Deterministic for a seed (per-video generators), and
bit-identical on every generation: the arithmetic is float64 in a fixed summation order (no BLAS,
whose float32 products change with its thread count and memory alignment), cast to float32 once.
synthetic_data.py lays such features out as a dataset.
"""
import numpy as np

from sampling import R           # snippets per second of the generated features

KNOWN_PAIRS = [("CliffDiving", "Diving"), ("CricketBowling", "CricketShot"),
               ("HammerThrow", "ThrowDiscus"), ("HighJump", "LongJump"),
               ("JavelinThrow", "Shotput"), ("BasketballDunk", "VolleyballSpiking"),
               ("GolfSwing", "TennisSwing"), ("BaseballPitch", "SoccerPenalty")]


def confusable_partners(class_names):
    """Confusable partner of each class (known pairs, then neighbours in list order)."""
    index = {name: i for i, name in enumerate(class_names)}
    partner = np.full(len(class_names), -1)
    for a, b in KNOWN_PAIRS:
        if a in index and b in index:
            partner[index[a]], partner[index[b]] = index[b], index[a]
    free = np.flatnonzero(partner < 0)
    for a, b in zip(free[0::2], free[1::2]):
        partner[a], partner[b] = b, a
    return partner


def feature_bank(class_names, D, seed, n_bg=8, n_noise=24):
    """Projection rows (latent → D): action phases A/B, scene context, background, smooth noise."""
    rng = np.random.default_rng([seed, 7919])
    C = len(class_names)
    partner = confusable_partners(class_names)
    group = np.where(partner >= 0, np.minimum(np.arange(C), partner), np.arange(C))   # pair id
    rgb = np.r_[np.ones(D // 2), np.zeros(D - D // 2)]

    def mixed(shared_frac):
        shared, own = rng.standard_normal((C, D)), rng.standard_normal((C, D))
        return np.sqrt(shared_frac) * shared[group] + np.sqrt(1 - shared_frac) * own

    act_a, act_b, ctx = mixed(0.5), mixed(0.5), mixed(0.6)
    motion, scene = 0.55 + 0.45 * (1 - rgb), 0.35 + 0.65 * rgb      # flow carries motion, RGB scene
    rows = [0.6 * act_a * motion, 0.6 * act_b * motion, 0.35 * ctx * scene,
            0.35 * rng.standard_normal((n_bg, D)) * (0.5 + 0.5 * rgb),
            0.25 * rng.standard_normal((n_noise, D))]
    bias = -0.3 + 0.1 * rng.standard_normal(D)
    return np.concatenate(rows).astype(np.float32), bias.astype(np.float32), partner


def _smooth(x, sigma):
    """Gaussian smoothing along time (axis 0) by convolution with a short kernel, tap by tap."""
    half = max(int(3 * sigma), 1)
    k = np.exp(-0.5 * (np.arange(-half, half + 1) / sigma) ** 2)
    k /= k.sum()
    padded = np.pad(x, ((half, half), (0, 0)), mode="edge")
    out = np.zeros(x.shape)
    for j, weight in enumerate(k):      # fixed summation order (see the module docstring)
        out += weight * padded[j:j + len(x)]
    return out


def _project(latent, W, bias):
    """bias + latent @ W in float64, one latent column after another; all-zero columns add nothing.
    latent (T, L), W (L, D), bias (D,) -> (T, D)."""
    out = np.repeat(np.asarray(bias, dtype=np.float64)[None, :], latent.shape[0], axis=0)   # (T, D)
    for col in np.flatnonzero(latent.any(axis=0)):
        out += latent[:, col:col + 1] * W[col].astype(np.float64)
    return out


def video_features(T, annotations, bank, rng):
    """(T, D) float32 features of one video from its annotations [(start_s, end_s, class_id)]."""
    W, bias, partner = bank
    C, D = len(partner), W.shape[1]
    t = np.arange(T, dtype=np.float64)[None, :] + 0.5                   # snippet centres
    env_a, env_b = np.zeros((T, C)), np.zeros((T, C))
    if annotations:
        s, e, cls = (np.array(v) for v in zip(*annotations))
        s, e = s[:, None] * R, e[:, None] * R
        tau = rng.uniform(0.4, 1.2, (len(cls), 1))
        # (N, T) soft sigmoid edges
        box = (1 + np.tanh((t - s) / (2 * tau))) * (1 + np.tanh((e - t) / (2 * tau))) / 4
        box *= rng.uniform(0.5, 1.5, (len(cls), 1))                     # weak and strong instances
        phase = np.clip((t - s) / np.maximum(e - s, 1e-3), 0, 1)
        for n, c in enumerate(cls):                                     # instance by instance
            env_a[:, c] += box[n] * (1 - phase[n])                      # (T,)
            env_b[:, c] += box[n] * phase[n]
    ctx = np.zeros(C)
    present = sorted({c for _, _, c in annotations})
    ctx[present] = rng.uniform(0.6, 1.2, len(present))
    for c in present:                                   # scenes of confusable classes look alike
        if partner[c] >= 0 and rng.random() < 0.3:
            ctx[partner[c]] = max(ctx[partner[c]], rng.uniform(0.2, 0.5))
    ctx = ctx[None, :] * (1 + 0.3 * _smooth(rng.standard_normal((T, 1)), 6.0))
    n_bg, n_noise = W.shape[0] - 3 * C - 24, 24
    bg = np.maximum(_smooth(rng.standard_normal((T, n_bg)), 8.0) * 3 + 0.3, 0)
    noise = _smooth(rng.standard_normal((T, n_noise)), 1.5) * 1.5
    latent = np.concatenate([env_a, env_b, ctx, bg, noise], axis=1)     # (T, L)
    pre = (_project(latent, W, bias)
           + rng.standard_normal((T, D), dtype=np.float32) * np.float32(0.45))
    pre[1:-1] = 0.5 * pre[1:-1] + 0.25 * (pre[:-2] + pre[2:])           # overlapping snippets
    return np.where(pre > 0, pre, 0.0).astype(np.float32)               # ReLU, one cast
