"""Temporal smoothing of the matte: less flicker without dragging moving edges behind."""

from __future__ import annotations

import numpy as np


class TemporalSmoother:
    """Adaptive per-pixel exponential smoothing of successive mattes.

    Where the matte barely changes (sensor noise, model jitter) the new value is
    blended with the previous one by up to ``strength``; where it changes a lot
    (the person moves) the new value is taken nearly as it is, so edges do not lag.
    ``motion_scale`` is the change in alpha at which a pixel counts as moving.
    """

    def __init__(self, strength: float = 0.5, motion_scale: float = 0.2) -> None:
        if not 0.0 <= strength <= 1.0:
            raise ValueError("strength must be in [0, 1]")
        self.strength = strength
        self.motion_scale = motion_scale
        self._previous: np.ndarray | None = None

    def reset(self) -> None:
        self._previous = None

    def __call__(self, alpha: np.ndarray) -> np.ndarray:
        previous = self._previous
        if self.strength == 0.0 or previous is None or previous.shape != alpha.shape:
            self._previous = alpha
            return alpha
        change = np.abs(alpha - previous)
        keep = self.strength * np.clip(1.0 - change / self.motion_scale, 0.0, 1.0)
        smoothed = alpha + keep * (previous - alpha)
        self._previous = smoothed
        return smoothed
