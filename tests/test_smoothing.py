"""Temporal smoothing: less flicker on a still scene, one-frame flips removed, no dragging of a moving edge."""

from itertools import pairwise

import numpy as np

from vbg.smoothing import TemporalSmoother

HEIGHT, WIDTH = 96, 160


def flicker(mattes):
    return float(np.mean([np.abs(b - a).mean() for a, b in pairwise(mattes)]))


def textured(seed: int) -> np.ndarray:
    """A BGR texture with detail at several scales, as real walls and clothes have."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (HEIGHT // 8, WIDTH // 8, 3), dtype=np.uint8)
    fine = rng.integers(-40, 40, (HEIGHT, WIDTH, 3))
    big = np.kron(coarse, np.ones((8, 8, 1), np.uint8)).astype(int)
    return np.clip(big + fine, 0, 255).astype(np.uint8)


WALL, SHIRT = textured(1), textured(2)


def scene(edge: float) -> tuple[np.ndarray, np.ndarray]:
    """A textured person left of ``edge`` (moving with it) over a still wall, and the
    true matte: a ramp from 1 to 0 over 4 px centred at ``edge``."""
    x = np.arange(WIDTH, dtype=np.float32)
    alpha = np.clip((edge - x) / 4 + 0.5, 0, 1)[None, :].repeat(HEIGHT, axis=0)
    shirt = np.roll(SHIRT, round(edge), axis=1)  # the person's texture moves with the person
    frame = (shirt * alpha[..., None] + WALL * (1 - alpha[..., None])).astype(np.uint8)
    return frame, alpha


def edge_position(alpha: np.ndarray) -> float:
    """Where the middle row first falls to 0.5, interpolated."""
    row = alpha[HEIGHT // 2]
    i = int(np.argmax(row <= 0.5))
    return i - 1 + (row[i - 1] - 0.5) / (row[i - 1] - row[i])


def test_smoothing_lowers_flicker_on_a_still_scene():
    rng = np.random.default_rng(0)
    frame, truth = scene(80)
    noisy = [np.clip(truth + rng.normal(0, 0.05, truth.shape).astype(np.float32), 0, 1) for _ in range(60)]
    smoother = TemporalSmoother(0.6)
    smoothed = [smoother(m, frame) for m in noisy]
    assert flicker(smoothed) < 0.6 * flicker(noisy)
    assert np.abs(smoothed[-1] - truth).mean() < np.abs(noisy[-1] - truth).mean()


def test_a_hole_the_model_opens_for_one_frame_stays_shut():
    """The flicker users notice most: a patch of the person vanishing for a single frame."""
    frame, truth = scene(120)
    smoother = TemporalSmoother(0.6)
    for _ in range(5):
        smoother(truth, frame)
    holed = truth.copy()
    holed[30:60, 20:60] = 0.0  # the model loses a patch of the shirt
    out = smoother(holed, frame)
    assert out[30:60, 20:60].mean() > 0.9
    assert np.abs(smoother(truth, frame) - truth).max() < 0.05  # and nothing of it lingers after


def test_a_moving_edge_lags_by_at_most_half_a_pixel():
    smoother = TemporalSmoother(0.6)
    for t in range(20):
        edge = 40 + 3 * t  # 3 px per matte: a brisk movement at matte resolution
        frame, truth = scene(edge)
        out = smoother(truth, frame)
    assert abs(edge_position(out) - edge_position(truth)) <= 0.5


def test_zero_strength_and_reset_pass_the_matte_through():
    frame_a, a = scene(60)
    frame_b, b = scene(62)
    off = TemporalSmoother(0.0)
    off(a, frame_a)
    assert np.array_equal(off(b, frame_b), b)
    on = TemporalSmoother(0.9)
    on(a, frame_a)
    on.reset()
    assert np.array_equal(on(b, frame_b), b)


def test_mattes_at_frame_size_get_their_motion_at_a_reduced_size():
    """RVM returns mattes as large as the frame; the flow is found smaller and scaled back up."""
    big_frame = np.kron(scene(80)[0], np.ones((5, 5, 1), np.uint8))  # 800 px wide
    big_truth = np.kron(scene(80)[1], np.ones((5, 5), np.float32))
    smoother = TemporalSmoother(0.6)
    smoother(big_truth, big_frame)
    out = smoother(big_truth, big_frame)
    assert out.shape == big_truth.shape
    assert np.abs(out - big_truth).mean() < 0.01


def test_mattes_too_small_for_optical_flow_pass_through():
    tiny_frame, tiny = np.zeros((8, 8, 3), np.uint8), np.full((8, 8), 0.5, np.float32)
    smoother = TemporalSmoother(0.6)
    smoother(tiny, tiny_frame)
    assert np.array_equal(smoother(tiny * 0.5, tiny_frame), tiny * 0.5)
