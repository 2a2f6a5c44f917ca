"""Alpha-matte quality metrics, as the video-matting literature defines them.

All take float32 mattes in [0, 1] of equal shape. Scales follow the published
tables: MAD and MSE ×1e3, Grad and Conn ÷1e3 (sums over the image), dtSSD ×1e2.
"""

from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np


def mad(pred: np.ndarray, true: np.ndarray) -> float:
    """Mean absolute difference, ×1e3."""
    return float(np.abs(pred - true).mean() * 1e3)


def mse(pred: np.ndarray, true: np.ndarray) -> float:
    """Mean squared error, ×1e3."""
    return float(((pred - true) ** 2).mean() * 1e3)


@lru_cache(maxsize=4)
def _gaussian_derivative_filters(sigma: float, epsilon: float = 1e-2) -> tuple[np.ndarray, np.ndarray]:
    """First-derivative-of-Gaussian kernels (x, y), unit L2 norm."""
    half = int(np.ceil(sigma * np.sqrt(-2 * np.log(np.sqrt(2 * np.pi) * sigma * epsilon))))
    offsets = np.arange(-half, half + 1, dtype=np.float64)
    gauss = np.exp(-offsets ** 2 / (2 * sigma ** 2)) / (sigma * np.sqrt(2 * np.pi))
    dgauss = -offsets * gauss / sigma ** 2
    kernel_x = np.outer(gauss, dgauss)
    kernel_x /= np.sqrt((kernel_x ** 2).sum())
    return kernel_x.astype(np.float32), kernel_x.T.copy().astype(np.float32)


def _gradient_magnitude(alpha: np.ndarray, sigma: float) -> np.ndarray:
    normed = cv2.normalize(alpha.astype(np.float32), None, 1.0, 0.0, cv2.NORM_MINMAX)
    kx, ky = _gaussian_derivative_filters(sigma)
    gx = cv2.filter2D(normed, -1, kx, borderType=cv2.BORDER_REPLICATE)
    gy = cv2.filter2D(normed, -1, ky, borderType=cv2.BORDER_REPLICATE)
    return np.sqrt(gx ** 2 + gy ** 2)


def grad(pred: np.ndarray, true: np.ndarray, sigma: float = 1.4) -> float:
    """Gradient error: squared difference of Gaussian-gradient magnitudes, summed, ÷1e3."""
    return float(((_gradient_magnitude(pred, sigma) - _gradient_magnitude(true, sigma)) ** 2).sum() / 1e3)


def conn(pred: np.ndarray, true: np.ndarray, step: float = 0.1) -> float:
    """Connectivity error, ÷1e3: how much each matte's values are cut off from the main
    connected body of the foreground, compared between prediction and truth."""
    thresholds = np.arange(0.0, 1.0 + step, step)
    round_down = np.full(true.shape, -1.0, np.float32)
    for previous, threshold in zip(thresholds[:-1], thresholds[1:]):
        both = ((true >= threshold) & (pred >= threshold)).astype(np.uint8)
        count, labels, stats, _ = cv2.connectedComponentsWithStats(both, connectivity=4)
        largest = np.zeros(true.shape, bool)
        if count > 1:
            largest = labels == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
        newly_cut = (round_down == -1) & ~largest
        round_down[newly_cut] = previous
    round_down[round_down == -1] = 1.0
    true_diff, pred_diff = true - round_down, pred - round_down
    true_phi = 1 - true_diff * (true_diff >= 0.15)
    pred_phi = 1 - pred_diff * (pred_diff >= 0.15)
    return float(np.abs(true_phi - pred_phi).sum() / 1e3)


def dtssd(pred: np.ndarray, pred_prev: np.ndarray, true: np.ndarray, true_prev: np.ndarray) -> float:
    """Temporal coherence, ×1e2: RMS of the difference between predicted and true
    frame-to-frame change of alpha. Flicker raises it; a still, exact matte gives 0."""
    change = (pred - pred_prev) - (true - true_prev)
    return float(np.sqrt((change ** 2).sum() / true.size) * 1e2)
