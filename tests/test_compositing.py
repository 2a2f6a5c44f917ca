"""Compositing: no halo of the old background at the person's edges; optional light wrap."""

import numpy as np
import pytest

from vbg.compositing import Compositor
from vbg.imaging import shrink

HEIGHT, WIDTH = 120, 200
SKIN = np.array([90, 140, 220], np.float32)  # BGR
OLD_ROOM = np.array([40, 200, 40], np.float32)  # a green wall behind the person
NEW_BEACH = np.array([220, 160, 30], np.float32)  # the new background: blue sky


def soft_person(edge: int = 100, width: int = 24) -> np.ndarray:
    """Alpha of a person left of ``edge`` whose hair fades out over ``width`` px."""
    x = np.arange(WIDTH, dtype=np.float32)
    return np.clip((edge - x) / width + 0.5, 0, 1)[None, :].repeat(HEIGHT, axis=0)


def filled(colour: np.ndarray) -> np.ndarray:
    return np.broadcast_to(colour, (HEIGHT, WIDTH, 3)).astype(np.uint8).copy()


def camera_frame(alpha: np.ndarray) -> np.ndarray:
    a = alpha[..., None]
    return (SKIN * a + OLD_ROOM * (1 - a) + 0.5).astype(np.uint8)


def truth(alpha: np.ndarray) -> np.ndarray:
    a = alpha[..., None]
    return SKIN * a + NEW_BEACH * (1 - a)


@pytest.mark.parametrize("reduced_by", [None, 5], ids=["estimated from the frame", "from the matte-size copy"])
def test_unmixing_removes_the_old_background_from_soft_edges(reduced_by):
    alpha = soft_person()
    frame, beach = camera_frame(alpha), filled(NEW_BEACH)
    mixed = (alpha > 0.01) & (alpha < 0.99)
    naive = Compositor(unmix=False)(frame, alpha, beach).astype(np.float32)
    compositor = Compositor(unmix=True)
    reduced = None
    if reduced_by:  # what the live matte path hands over: the frame and its matte at the matte's size
        size = (WIDTH // reduced_by, HEIGHT // reduced_by)
        reduced = (shrink(frame, size), shrink(alpha, size))
    clean = compositor(frame, alpha, beach, compositor.edges(alpha, frame, reduced=reduced)).astype(np.float32)
    naive_error = np.abs(naive - truth(alpha))[mixed].mean()
    clean_error = np.abs(clean - truth(alpha))[mixed].mean()
    assert naive_error > 10  # a visible green halo in the naive paste
    assert clean_error < 0.2 * naive_error
    green_cast = (clean[..., 1] - truth(alpha)[..., 1])[mixed]
    assert green_cast.max() < 8


def test_plain_person_and_plain_background_pixels_are_left_alone():
    alpha = soft_person()
    frame, beach = camera_frame(alpha), filled(NEW_BEACH)
    out = Compositor(unmix=True)(frame, alpha, beach)
    assert np.array_equal(out[alpha >= 0.999], frame[alpha >= 0.999])
    assert np.array_equal(out[alpha <= 0.0], beach[alpha <= 0.0])


def test_light_wrap_tints_the_inner_edge_only():
    alpha = soft_person(width=2)
    frame, beach = camera_frame(alpha), filled(NEW_BEACH)
    plain = Compositor(unmix=True, light_wrap=0.0)(frame, alpha, beach).astype(np.float32)
    wrapped = Compositor(unmix=True, light_wrap=1.0)(frame, alpha, beach).astype(np.float32)
    near, deep = (slice(None), slice(96, 99)), (slice(None), slice(0, 40))  # inside the person
    toward_sky = np.abs(plain[near] - NEW_BEACH).mean() - np.abs(wrapped[near] - NEW_BEACH).mean()
    assert toward_sky > 10
    assert np.array_equal(wrapped[deep], plain[deep])


def test_a_matte_reused_for_later_frames_follows_those_frames():
    """Live mode composites every frame with the newest matte; the frame's own pixels must show."""
    alpha = soft_person()
    compositor = Compositor(unmix=True, light_wrap=0.5)
    beach = filled(NEW_BEACH)
    compositor(camera_frame(alpha), alpha, beach)
    brighter = np.clip(camera_frame(alpha).astype(int) + 30, 0, 255).astype(np.uint8)
    out = compositor(brighter, alpha, beach)
    deep = (slice(None), slice(0, 40))  # well inside the person, out of the light wrap's reach
    assert np.array_equal(out[deep], brighter[deep])


@pytest.mark.parametrize("unmix, light_wrap", [(False, 0.0), (True, 0.0), (True, 0.4)])
def test_any_setting_gives_a_frame_sized_uint8_image(unmix, light_wrap):
    alpha = soft_person()
    out = Compositor(unmix, light_wrap)(camera_frame(alpha), alpha, filled(NEW_BEACH))
    assert out.shape == (HEIGHT, WIDTH, 3) and out.dtype == np.uint8


def test_foreground_for_alpha_outputs_is_the_persons_own_colour():
    """The OBS page sends colour and alpha; OBS then composites, so the colour must be F, not the mix."""
    alpha = soft_person()
    frame = camera_frame(alpha)
    colour = Compositor(unmix=True).foreground(frame, alpha).astype(np.float32)
    visible = alpha > 0.2  # where the colour shows enough to matter
    assert np.abs(colour - SKIN)[visible].max() < 12
    assert np.abs(frame.astype(np.float32) - SKIN)[visible].max() > 60  # the raw mix was far off
    assert Compositor(unmix=False).foreground(frame, alpha) is frame


def test_edges_made_on_the_matte_thread_are_used_until_the_settings_change():
    alpha = soft_person()
    frame, beach = camera_frame(alpha), filled(NEW_BEACH)
    compositor = Compositor(unmix=True)
    ready = compositor.edges(alpha, frame)
    assert np.array_equal(compositor(frame, alpha, beach, ready), Compositor(unmix=True)(frame, alpha, beach))
    compositor.unmix = False  # switched off from the control page while this matte is still in use
    assert np.array_equal(compositor(frame, alpha, beach, ready), Compositor(unmix=False)(frame, alpha, beach))
    assert Compositor(unmix=False).edges(alpha, frame) is None


def test_the_obs_foreground_reuses_the_pipelines_edges_even_with_light_wrap_on():
    alpha = soft_person()
    frame = camera_frame(alpha)
    ready = Compositor(unmix=True, light_wrap=0.5).edges(alpha, frame)
    alone = Compositor(unmix=True).foreground(frame, alpha)
    shared = Compositor(unmix=True).foreground(frame, alpha, ready)
    assert np.abs(shared.astype(int) - alone.astype(int)).max() <= 1
