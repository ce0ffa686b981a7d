"""engine/plots.py: the per-video figure (CAS, attention, proposals) and the mAP-over-steps
plot."""
import matplotlib.image as mpimg
import numpy as np
import pytest

from engine import plots

NAMES = ["BaseballPitch", "Billiards", "CliffDiving", "Diving"]


def _synthetic_video(seed=0, vid_len=120, T=96):
    """Smooth random CAS / attention, two GT classes, proposals incl. one below the threshold."""
    rng = np.random.default_rng(seed)
    C = len(NAMES)
    kernel = np.hanning(9) / np.hanning(9).sum()
    noise = rng.random((T + 8, C + 1))
    cas = np.stack([np.convolve(noise[:, c], kernel, mode="valid") for c in range(C + 1)], 1)
    att = np.stack([cas[:, :C].max(1), 1 - cas[:, :C].max(1)], 1)
    gt = [{"label": "Billiards", "segment": [5.0, 20.0]},
          {"label": "Diving", "segment": [40.0, 55.0]}]
    proposals = [{"label": "Billiards", "score": 0.8, "segment": [6.0, 19.0]},
                 {"label": "Billiards", "score": 0.3, "segment": [4.0, 24.0]},
                 {"label": "Diving", "score": 0.5, "segment": [42.0, 52.0]},
                 {"label": "CliffDiving", "score": 0.2, "segment": [60.0, 66.0]},
                 {"label": "BaseballPitch", "score": 0.05, "segment": [1.0, 2.0]}]
    return vid_len, cas[:T], att, proposals, gt


def _check_png(path, width=1200, height=700):
    assert path.is_file()
    img = mpimg.imread(str(path))
    assert img.shape[:2] == (height, width)
    assert img[..., :3].var() > 1e-3  # not a blank canvas
    assert not list(path.parent.glob(".tmp_*"))  # no temp file left behind


@pytest.mark.parametrize("dynamic", [False, True])
def test_plot_video_renders(tmp_path, dynamic):
    vid_len, cas, att, proposals, gt = _synthetic_video()
    weights = cum = None
    if dynamic:
        weights = np.ones(vid_len)
        weights[8:30] = 2.5
        cum = np.concatenate([[0.0], np.cumsum(weights)])
    out = tmp_path / "sub" / "video.png"
    plots.plot_video(out, "video_test_0000001", vid_len, NAMES, cas, att, proposals, gt,
                     weights=weights, cum=cum, title_extra="step 1, mAP 0.42")
    _check_png(out)


def test_plot_video_empty_inputs(tmp_path):
    """No GT, no proposals, a one-snippet video: still a readable, non-blank figure."""
    out = tmp_path / "empty.png"
    plots.plot_video(out, "v", 1, NAMES, np.zeros((2, 5)), np.zeros((2, 2)), [], [])
    _check_png(out)


def test_snippet_times_uniform_and_dynamic():
    # uniform: row j covers [j, j+1] * duration / T, plotted at its centre
    t = plots.snippet_times(4, vid_len=25, frames_per_sec=25, segment_frames_num=16)
    np.testing.assert_allclose(t, (np.arange(4) + 0.5) * 16 / 4)
    # all weights 1: dynamic sampling is the identity, so are the times
    cum = np.arange(26, dtype=np.float64)
    np.testing.assert_allclose(plots.snippet_times(4, 25, cum=cum), t)
    # first half of the video stretched 3x: 3/4 of the rows fall in its first half
    w = np.r_[np.full(10, 3.0), np.ones(10)]
    t = plots.snippet_times(40, 20, 25, 16, cum=np.r_[0.0, np.cumsum(w)])
    assert np.sum(t < 20 * 16 / 25 / 2) == 30
    assert np.all(np.diff(t) > 0)


def test_plot_map_over_steps(tmp_path):
    tious = np.arange(0.1, 1.0, 0.1)
    per_step = {0: (tious, np.linspace(0.5, 0.05, 9), 0.3),
                1: (tious, np.linspace(0.6, 0.1, 9), 0.4),
                2: (tious, np.linspace(0.62, 0.1, 9), 0.41)}
    out = tmp_path / "map_over_steps.png"
    plots.plot_map_over_steps(out, per_step)
    _check_png(out, width=900, height=450)
