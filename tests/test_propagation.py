"""Matte propagation: a matte made for one frame follows the person onto a later frame."""

import numpy as np

from test_smoothing import HEIGHT, edge_position, scene
from vbg.flow import flow_grey
from vbg.propagation import Propagator


def test_a_matte_follows_a_shifted_textured_person():
    frame_then, matte_then = scene(60)
    frame_now, truth_now = scene(68)  # the person moved 8 px right since the matte was made
    moved = Propagator()(matte_then, flow_grey(frame_then, matte_then.shape), frame_now)
    assert abs(edge_position(matte_then) - edge_position(truth_now)) > 7  # what the viewer saw before
    assert abs(edge_position(moved) - edge_position(truth_now)) <= 1.0
    assert np.abs(moved - truth_now)[HEIGHT // 4:-HEIGHT // 4].mean() < 0.25 * np.abs(matte_then - truth_now).mean()


def test_a_full_resolution_matte_moves_with_a_flow_found_small():
    """The live matte is at the frame's resolution; the flow is found at most 512 px wide."""
    frame_then, matte_then = (np.kron(x, np.ones((4, 4, 1)[:x.ndim], x.dtype)) for x in scene(60))
    frame_now, truth_now = (np.kron(x, np.ones((4, 4, 1)[:x.ndim], x.dtype)) for x in scene(66))
    grey = flow_grey(frame_then, (HEIGHT, 160))  # as the matte path keeps it: the matte's size
    moved = Propagator()(matte_then, grey, frame_now)
    assert moved.shape == matte_then.shape
    row = moved.shape[0] // 2
    crossing = lambda a: int(np.argmax(a[row] <= 0.5))  # noqa: E731
    assert abs(crossing(moved) - crossing(truth_now)) <= 4  # one pixel of the flow's size
    assert abs(crossing(matte_then) - crossing(truth_now)) >= 20


def test_a_still_scene_keeps_its_matte():
    frame, matte = scene(80)
    assert np.abs(Propagator()(matte, flow_grey(frame, matte.shape), frame) - matte).max() < 0.02


def test_a_matte_moved_back_and_forth_keeps_its_soft_edge_and_its_range():
    """A live matte is moved along the flow frame after frame: each sub-pixel move must not blur its
    edge (bilinear moves lose 0.18 of this edge in four round trips) or push alpha out of [0, 1]."""
    x = np.arange(64, dtype=np.float32)
    matte = np.tile(np.clip((x - 31.5) / 3 + 0.5, 0, 1), (32, 1)).astype(np.float32)  # a 3 px soft edge
    propagator, moved = Propagator(), matte
    for _ in range(4):
        for shift in (0.5, -0.5):
            moved = propagator.move(moved, np.dstack([np.full_like(matte, shift), np.zeros_like(matte)]))
    assert np.abs(moved - matte).max() < 0.1
    assert moved.min() >= 0.0 and moved.max() <= 1.0
