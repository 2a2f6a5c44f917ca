"""Each metric against values worked out by hand on tiny arrays."""

import numpy as np
import pytest

from vbg import metrics


def test_mad_and_mse():
    true = np.zeros((2, 2), np.float32)
    pred = np.array([[0.1, 0.0], [0.0, 0.3]], np.float32)
    assert metrics.mad(pred, true) == pytest.approx((0.1 + 0.3) / 4 * 1e3)
    assert metrics.mse(pred, true) == pytest.approx((0.01 + 0.09) / 4 * 1e3)


def test_dtssd_is_zero_when_the_change_matches_and_rms_otherwise():
    a = np.zeros((2, 2), np.float32)
    b = np.full((2, 2), 0.5, np.float32)
    assert metrics.dtssd(b, a, b, a) == 0.0  # the prediction changed exactly as the truth did
    # The truth stays still, the prediction flickers by 0.2 on one pixel of four:
    flicker = a.copy()
    flicker[0, 0] = 0.2
    assert metrics.dtssd(flicker, a, a, a) == pytest.approx(np.sqrt(0.04 / 4) * 1e2)


def test_grad_is_zero_for_equal_mattes_and_counts_a_missing_edge():
    true = np.zeros((9, 9), np.float32)
    true[:, 5:] = 1.0
    assert metrics.grad(true, true) == 0.0
    flat = np.zeros_like(true)
    # No edge in the prediction: the error is the whole true gradient energy.
    assert metrics.grad(flat, true) == pytest.approx(
        (metrics._gradient_magnitude(true, 1.4) ** 2).sum() / 1e3, rel=1e-5)
    assert metrics.grad(flat, true) > 0


def test_conn_by_hand():
    true = np.array([[1, 1, 0, 0.6]], np.float32)
    assert metrics.conn(true, true) == 0.0
    # The isolated 0.6 pixel is not connected to the main body in either matte: at every
    # threshold above 0 it falls outside the largest component, so its round-down value is 0,
    # its difference 0.6 counts, and phi = 1 - 0.6 = 0.4 in both -> no error.
    # A prediction that drops it to 0 has phi = 1 there (diff 0 < 0.15): error |0.4 - 1| = 0.6.
    pred = np.array([[1, 1, 0, 0.0]], np.float32)
    assert metrics.conn(pred, true) == pytest.approx(0.6 / 1e3)
