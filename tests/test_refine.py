"""Guided upsampling: a blurred low-resolution edge comes back sharp where the image has its edge."""

import cv2
import numpy as np

from vbg.refine import GuidedUpsampler


def scene(width: int = 320, height: int = 180, edge: int = 157):
    """A person-coloured region left of ``edge`` over a blue wall, and its exact alpha."""
    frame = np.empty((height, width, 3), np.uint8)
    frame[:] = (200, 120, 40)  # the wall (BGR)
    frame[:, :edge] = (90, 140, 220)  # skin-ish tones
    truth = np.zeros((height, width), np.float32)
    truth[:, :edge] = 1.0
    return frame, truth


def test_guided_upsampling_moves_a_blurred_edge_onto_the_true_edge():
    frame, truth = scene()
    low = cv2.resize(truth, (80, 45), interpolation=cv2.INTER_AREA)  # what a model at 1/4 resolution sees
    plain = cv2.resize(low, (320, 180), interpolation=cv2.INTER_LINEAR)
    guided = GuidedUpsampler()(low, frame)
    band = slice(140, 175)  # around the edge
    assert guided.shape == truth.shape and guided.dtype == np.float32
    assert np.abs(guided - truth)[:, band].mean() < 0.5 * np.abs(plain - truth)[:, band].mean()
    assert 0.0 <= guided.min() and guided.max() <= 1.0


def test_flat_mattes_stay_flat():
    frame, _ = scene()
    ones = np.ones((45, 80), np.float32)
    assert np.allclose(GuidedUpsampler()(ones, frame), 1.0, atol=1e-3)
