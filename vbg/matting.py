"""The per-frame matte path, shared by live mode and `vbg eval`.

model (at the matte size) → temporal smoothing → full-resolution matte. Keeping it in
one place guarantees that what `vbg eval` measures is what a call participant sees.
"""

from __future__ import annotations

import cv2
import numpy as np

from vbg.session import MattingSession
from vbg.smoothing import TemporalSmoother
from vbg.timing import StageClock


class Matter:
    """Turns BGR frames into full-resolution float32 alpha mattes, frame after frame.

    ``clock`` (optional) receives the time of each step: preprocess, inference,
    smoothing, refinement.
    """

    def __init__(self, session: MattingSession, smoothing: float, clock: StageClock | None = None) -> None:
        self.session = session
        self.smoother = TemporalSmoother(smoothing)
        self.clock = clock or StageClock()

    def infer(self, frame: np.ndarray) -> np.ndarray:
        """The model's raw matte of ``frame`` (at its own resolution)."""
        with self.clock.time("preprocess"):
            feeds = self.session.prepare(frame)
        with self.clock.time("inference"):
            return self.session.run(feeds)

    def finish(self, alpha: np.ndarray, frame: np.ndarray) -> np.ndarray:
        """Smooth ``alpha`` over time and bring it to ``frame``'s resolution."""
        with self.clock.time("smoothing"):
            alpha = self.smoother(alpha)
        with self.clock.time("refinement"):
            h, w = frame.shape[:2]
            if alpha.shape != (h, w):
                alpha = cv2.resize(alpha, (w, h), interpolation=cv2.INTER_LINEAR)
        return alpha

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        return self.finish(self.infer(frame), frame)

    def reset(self) -> None:
        """A new scene or source: forget smoothing history and recurrent state."""
        self.smoother.reset()
        self.session.reset()
