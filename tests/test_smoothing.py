"""Temporal smoothing: less flicker on a still scene, no dragging of a moving edge."""

import numpy as np

from vbg.smoothing import TemporalSmoother


def flicker(mattes):
    return float(np.mean([np.abs(b - a).mean() for a, b in zip(mattes, mattes[1:])]))


def soft_edge(position: float, width: int = 64) -> np.ndarray:
    """A 1x``width`` matte rising from 0 to 1 over 4 px centred at ``position``."""
    x = np.arange(width, dtype=np.float32)
    return np.clip((x - position) / 4 + 0.5, 0, 1)[None, :].repeat(8, axis=0)


def edge_position(alpha: np.ndarray) -> float:
    """Where the middle row first reaches 0.5, interpolated."""
    row = alpha[4]
    i = int(np.argmax(row >= 0.5))
    return i - 1 + (0.5 - row[i - 1]) / (row[i] - row[i - 1])


def test_smoothing_lowers_flicker_on_a_still_scene():
    rng = np.random.default_rng(0)
    truth = soft_edge(30)
    noisy = [np.clip(truth + rng.normal(0, 0.05, truth.shape).astype(np.float32), 0, 1) for _ in range(60)]
    smoother = TemporalSmoother(0.5)
    smoothed = [smoother(m) for m in noisy]
    assert flicker(smoothed) < 0.6 * flicker(noisy)
    assert np.abs(smoothed[-1] - truth).mean() < np.abs(noisy[-1] - truth).mean()


def test_a_moving_edge_lags_by_at_most_half_a_pixel():
    smoother = TemporalSmoother(0.5)
    for t in range(20):
        moved = 10 + 2 * t  # 2 px per frame, a brisk head movement at matte resolution
        out = smoother(soft_edge(moved))
    assert abs(edge_position(out) - edge_position(soft_edge(moved))) <= 0.5


def test_zero_strength_and_reset_pass_the_matte_through():
    off = TemporalSmoother(0.0)
    a, b = soft_edge(10), soft_edge(12)
    off(a)
    assert np.array_equal(off(b), b)
    on = TemporalSmoother(0.9)
    on(a)
    on.reset()
    assert np.array_equal(on(b), b)
