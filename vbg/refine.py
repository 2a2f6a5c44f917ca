"""Full-resolution edges from a low-resolution matte.

A fast guided filter (He & Sun, 2015) fits, in each small window of the matte, a
linear model ``alpha ≈ a * gray + b`` against the frame's own brightness, at the matte's
resolution; the coefficients are then upsampled and applied to the full-resolution
frame, so the matte's edges follow the edges of the image instead of a blurry bilinear
ramp. The costly work is at the matte's size; at full size it is two resizes and one
multiply-add.
"""

from __future__ import annotations

import cv2
import numpy as np


def box(image: np.ndarray, radius: int) -> np.ndarray:
    return cv2.boxFilter(image, -1, (2 * radius + 1, 2 * radius + 1), borderType=cv2.BORDER_REFLECT)


class GuidedUpsampler:
    """Upsamples a matte to the frame's size along the frame's edges.

    ``radius`` is the window radius at matte resolution; ``eps`` the regularisation
    (larger: smoother, closer to plain upsampling; smaller: follows image edges harder).
    """

    def __init__(self, radius: int = 2, eps: float = 1e-3) -> None:
        self.radius = radius
        self.eps = eps

    def __call__(self, alpha: np.ndarray, guide_small: np.ndarray, guide_full: np.ndarray) -> np.ndarray:
        r = self.radius
        mean_i = box(guide_small, r)
        mean_p = box(alpha, r)
        cov_ip = box(guide_small * alpha, r) - mean_i * mean_p
        var_i = box(guide_small * guide_small, r) - mean_i * mean_i
        a = cov_ip / (var_i + self.eps)
        b = mean_p - a * mean_i
        h, w = guide_full.shape[:2]
        mean_a = cv2.resize(box(a, r), (w, h), interpolation=cv2.INTER_LINEAR)
        mean_b = cv2.resize(box(b, r), (w, h), interpolation=cv2.INTER_LINEAR)
        return np.clip(cv2.multiply(mean_a, guide_full) + mean_b, 0.0, 1.0, out=mean_b)
