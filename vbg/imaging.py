"""Small image operations shared by sources, backgrounds, the matte path and the compositor."""

from __future__ import annotations

import cv2
import numpy as np


def cover_fit(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Scale ``image`` to cover ``size`` (width, height) and crop the centre, keeping aspect."""
    width, height = size
    h, w = image.shape[:2]
    if (w, h) == (width, height):
        return image
    scale = max(width / w, height / h)
    new_w, new_h = max(width, round(w * scale)), max(height, round(h * scale))
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    resized = cv2.resize(image, (new_w, new_h), interpolation=interpolation)
    x0, y0 = (new_w - width) // 2, (new_h - height) // 2
    return resized[y0:y0 + height, x0:x0 + width]


def shrink(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Downscale ``image`` to ``size`` (width, height) without aliasing, cheaply.

    Halving with ``pyrDown`` while the image is at least twice the target, then an
    area resize for the rest, costs about half of one area resize from full size.
    """
    width, height = size
    while image.shape[1] >= 2 * width and image.shape[0] >= 2 * height:
        image = cv2.pyrDown(image)
    if image.shape[1::-1] == (width, height):
        return image
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)


def size_within(shape: tuple[int, int], max_width: int) -> tuple[int, int]:
    """(width, height) of an image of ``shape`` (height, width) brought to at most ``max_width``
    wide, aspect kept (its own size if narrower)."""
    h, w = shape[:2]
    if w <= max_width:
        return w, h
    return max_width, max(1, round(h * max_width / w))


def shrink_to_width(image: np.ndarray, max_width: int) -> np.ndarray:
    """``image`` shrunk (:func:`shrink`) to at most ``max_width`` wide, aspect kept; as it is if narrower."""
    return shrink(image, size_within(image.shape, max_width))


def to_bgr(image: np.ndarray) -> np.ndarray:
    """Any image OpenCV reads (gray, BGR, BGRA; 8 or 16 bit) as BGR uint8."""
    if image.dtype != np.uint8:
        image = cv2.convertScaleAbs(image, alpha=255.0 / np.iinfo(image.dtype).max)
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    return image

