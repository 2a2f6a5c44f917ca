"""Backgrounds: a blurred background may start from the matte path's reduced copy of the frame."""

import cv2
import numpy as np
from skimage import data

from vbg.backgrounds import BlurBackground
from vbg.imaging import shrink


def test_blur_from_the_matte_size_copy_looks_like_blur_from_the_frame():
    frame = cv2.resize(cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR), (640, 360))
    blur = BlurBackground(15)  # made at a fifth of the frame: 128x72
    direct = blur.render(frame).astype(np.float32)
    from_copy = blur.render(frame, shrink(frame, (160, 90))).astype(np.float32)
    assert from_copy.shape == direct.shape
    assert np.abs(from_copy - direct).mean() < 1.0  # grey levels
    assert np.abs(direct - frame).mean() > 10  # and it is a blur


def test_a_copy_smaller_than_the_blur_is_made_at_is_not_used():
    frame = cv2.resize(cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR), (640, 360))
    blur = BlurBackground(15)
    coarse = np.zeros((36, 64, 3), np.uint8)  # a black thumbnail: were it used, the blur would be black
    assert np.array_equal(blur.render(frame, coarse), blur.render(frame))
