"""Full-resolution edges from a low-resolution matte.

A fast colour guided filter (He & Sun, 2015): in each small window of the matte it
fits ``alpha ≈ a · rgb + b`` against the frame's own colours, at the matte's
resolution; the coefficients are then upsampled and applied to the full-resolution
frame, so the matte's edges follow the edges of the image instead of a blurry
bilinear ramp. Colour, not grey, because a person and a background of the same
brightness are told apart by hue. The costly work is at the matte's size; at full
size it is two resizes and one per-pixel dot product.

On the dev clips (int8 MODNet at 256, 720p, no temporal smoothing) it lowers MAD from
8.06 to 7.59 and dtSSD from 4.63 to 4.33 with radius 1 and eps 1e-3; larger windows or
eps smooth edges away.
"""

from __future__ import annotations

import cv2
import numpy as np

from vbg.imaging import shrink

_PAIRS = ((0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 2))
_SUM_CHANNELS = np.ones((1, 3), np.float32)


def _box(image: np.ndarray, radius: int) -> np.ndarray:
    return cv2.boxFilter(image, -1, (2 * radius + 1, 2 * radius + 1), borderType=cv2.BORDER_REFLECT)


class GuidedUpsampler:
    """Brings a low-resolution matte to the frame's resolution along the frame's edges."""

    def __init__(self, radius: int = 1, eps: float = 1e-3) -> None:
        self.radius = radius
        self.eps = eps
        # Full-resolution scratch arrays, kept between calls: allocating ~20 MB afresh for
        # every matte costs more in page faults than the arithmetic done in them.
        self._scratch: dict[str, np.ndarray] = {}

    def _buffer(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        buffer = self._scratch.get(name)
        if buffer is None or buffer.shape != shape:
            buffer = self._scratch[name] = np.empty(shape, np.float32)
        return buffer

    def coefficients(self, alpha: np.ndarray, guide: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per-pixel (a, b) at the matte's resolution; ``guide`` is the frame there, float RGB in [0, 1]."""
        r = self.radius
        planes = cv2.split(guide)  # contiguous colour planes: much faster arithmetic than strided channels
        mean_i = [_box(plane, r) for plane in planes]
        mean_p = _box(alpha, r)
        cx, cy, cz = (_box(plane * alpha, r) - mean * mean_p for plane, mean in zip(planes, mean_i))
        var = {(i, j): _box(planes[i] * planes[j], r) - mean_i[i] * mean_i[j] for i, j in _PAIRS}
        for i in range(3):
            var[i, i] += self.eps
        # Inverse of each symmetric 3x3 covariance by its adjugate (vectorised over pixels).
        s00, s01, s02, s11, s12, s22 = (var[pair] for pair in _PAIRS)
        c00, c01, c02 = s11 * s22 - s12 * s12, s02 * s12 - s01 * s22, s01 * s12 - s02 * s11
        c11, c12, c22 = s00 * s22 - s02 * s02, s01 * s02 - s00 * s12, s00 * s11 - s01 * s01
        inv_det = 1.0 / (s00 * c00 + s01 * c01 + s02 * c02)
        a = [(c00 * cx + c01 * cy + c02 * cz) * inv_det,
             (c01 * cx + c11 * cy + c12 * cz) * inv_det,
             (c02 * cx + c12 * cy + c22 * cz) * inv_det]
        b = mean_p - a[0] * mean_i[0] - a[1] * mean_i[1] - a[2] * mean_i[2]
        return _box(cv2.merge(a), r), _box(b, r)

    def __call__(self, alpha: np.ndarray, frame: np.ndarray, small: np.ndarray | None = None) -> np.ndarray:
        """The matte at ``frame``'s resolution (``frame``: BGR uint8, any size; ``small``: the
        same frame at the matte's size, where the caller already has it)."""
        h, w = alpha.shape
        if small is None:
            small = shrink(frame, (w, h))
        guide = small.astype(np.float32) * (1.0 / 255.0)
        a, b = self.coefficients(alpha, guide)
        height, width = frame.shape[:2]
        a_full = cv2.resize(a, (width, height), dst=self._buffer("a", (height, width, 3)),
                            interpolation=cv2.INTER_LINEAR)
        b_full = cv2.resize(b, (width, height), dst=self._buffer("b", (height, width)),
                            interpolation=cv2.INTER_LINEAR)
        weighted = cv2.multiply(a_full, frame, dst=self._buffer("weighted", (height, width, 3)),
                                scale=1.0 / 255.0, dtype=cv2.CV_32F)
        alpha_full = cv2.transform(weighted, _SUM_CHANNELS)  # sum over colours; a new array, the caller keeps it
        cv2.add(alpha_full, b_full, dst=alpha_full)
        return np.clip(alpha_full, 0.0, 1.0, out=alpha_full)
