"""The per-frame matte path, shared by live mode and `vbg eval`.

model (at the matte size) → temporal smoothing → full-resolution matte. Keeping it in
one place guarantees that what `vbg eval` measures is what a call participant sees.
"""

from __future__ import annotations

import cv2
import numpy as np

from vbg.session import MattingSession
from vbg.smoothing import TemporalSmoother


class Matter:
    """Turns BGR frames into full-resolution float32 alpha mattes, frame after frame."""

    def __init__(self, session: MattingSession, smoothing: float) -> None:
        self.session = session
        self.smoother = TemporalSmoother(smoothing)

    def infer(self, frame: np.ndarray) -> np.ndarray:
        """The model's raw matte of ``frame`` (at its own resolution)."""
        return self.session.infer(frame)

    def finish(self, alpha: np.ndarray, frame: np.ndarray) -> np.ndarray:
        """Smooth ``alpha`` over time and bring it to ``frame``'s resolution."""
        alpha = self.smoother(alpha)
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
