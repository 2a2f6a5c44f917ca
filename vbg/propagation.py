"""Matte propagation: the newest matte carried to the current frame between two model runs.

A live run composites each camera frame with the newest finished matte, which was
computed from an earlier frame (by ~200 ms when the model manages 7 mattes a second):
where the person moved since, the new background eats the moving arm and the old room
shows where they were. Propagation finds the optical flow from the current frame back to
the matte's frame (:mod:`vbg.flow`, a few ms at a small size) and moves the matte along
it, so the edges follow the person at the camera's rate even when the model cannot.
"""

from __future__ import annotations

import numpy as np

from vbg.flow import Flow, can_flow, flow_grey, flow_size
from vbg.imaging import shrink

MAX_WIDTH = 256  # the flow is found at most this wide (by default): it runs for every frame, not every matte


class Propagator:
    """Moves a matte made for one frame onto another frame of the same scene.

    Not thread-safe (one DIS instance): use one per thread.
    """

    def __init__(self, max_width: int = MAX_WIDTH) -> None:
        self.max_width = max_width
        self._flow = Flow()
        self._matte_grey: tuple[np.ndarray, np.ndarray] | None = None  # (as given, at the flow's size)

    def __call__(self, alpha: np.ndarray, matte_grey: np.ndarray, frame: np.ndarray) -> np.ndarray:
        """``alpha`` (float32, any resolution, one or more channels) of the frame whose grey flow image is ``matte_grey``
        (:func:`~vbg.flow.flow_grey`), moved onto ``frame`` (BGR uint8, any size)."""
        return self.move(alpha, self.flow(matte_grey, frame))

    def flow(self, matte_grey: np.ndarray, frame: np.ndarray) -> np.ndarray | None:
        """Where each pixel of ``frame`` was in the frame of ``matte_grey`` (None: too small to tell),
        for :meth:`move`: one flow moves mattes of several resolutions."""
        if self._matte_grey is None or self._matte_grey[0] is not matte_grey:  # once per matte
            self._matte_grey = (matte_grey, shrink(matte_grey, flow_size(matte_grey.shape, self.max_width)))
        target = self._matte_grey[1]
        grey = flow_grey(frame, target.shape)
        return self._flow.flow(grey, target) if can_flow(grey) else None

    def move(self, alpha: np.ndarray, flow: np.ndarray | None) -> np.ndarray:
        """``alpha`` (any resolution, values in [0, 1]) moved along a :meth:`flow`, still in [0, 1]."""
        if flow is None:
            return alpha
        moved = self._flow.warp(alpha, flow)
        return np.clip(moved, 0.0, 1.0, out=moved)
