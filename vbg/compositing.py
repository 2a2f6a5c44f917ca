"""Putting the person over the new background, with clean edges.

At the person's edge (hair, a blurred moving hand) a camera pixel is a mix:
``frame = α·F + (1−α)·B_old``. Pasting that pixel as it is, ``α·frame + (1−α)·B_new``,
carries a share of the old room into the new background: the halo users complain of.
Here the old background's colour ``B_old`` is estimated near the edge from the nearby
pixels that are plain background (blur fusion, Forte & Pitié 2021), and the person's
own share is what is left: ``α·F = frame − (1−α)·B_old``, kept within ``[0, α·255]`` so
a poor estimate can never add colour that was not in the frame. The composite is then
``α·F + (1−α)·B_new``.

Light wrap (optional) lets a little of the new background's light spill over the
person's edge, as it would if they really stood in front of it.

Only the edge band (a few percent of the pixels) needs either; with unmixing the band holds
every mixed pixel, and the rest is copied from the frame or the new background. The estimate
is made once per matte, at a quarter of the frame size or less (from the frame at the
matte's size, where the matte path has it).
"""

from __future__ import annotations

import functools

import cv2
import numpy as np

from vbg.imaging import shrink, shrink_to_width

EDGE = 0.01  # alpha above this and below 1 - EDGE is a mixed pixel
ESTIMATE_SCALE = 4  # the old background is estimated at (at most) 1/4 of the frame's size
ESTIMATE_REACH = 32  # frame px: from the edge into plain background
PLAIN = 0.02  # alpha below this (at that size) is plain background
WRAP_SIGMA = 0.01  # light wrap reach and background blur, as a fraction of the frame width


class Edges:
    """What one matte needs for every frame composited with it: its edge band and, there,
    alpha and the old background's estimated colour (and the light wrap's reach)."""

    def __init__(self, alpha: np.ndarray, frame: np.ndarray, unmix: bool, wrap: bool,
                 estimate: np.ndarray | None = None) -> None:
        """``estimate``: the old background's :func:`background_estimate` where the caller has one
        (made from the frame and matte at the matte's size, or kept by a matte moved onto a later
        frame: the room behind hardly changes)."""
        self.matte = alpha
        self.settings = (unmix, wrap)
        h, w = alpha.shape
        small_size = (max(1, w // ESTIMATE_SCALE), max(1, h // ESTIMATE_SCALE))
        band = (alpha > EDGE) & (alpha < 1.0 - EDGE) if unmix else np.zeros(alpha.shape, bool)
        self.wrap = None
        if wrap:  # inside the person, near the edge: how much of the background's light reaches there
            sigma = WRAP_SIGMA * w / ESTIMATE_SCALE
            outside = cv2.GaussianBlur(1.0 - shrink(alpha, small_size), (0, 0), sigma)
            reach = alpha * np.clip(2.0 * cv2.resize(outside, (w, h), interpolation=cv2.INTER_LINEAR), 0.0, 1.0)
            band |= reach > 1.0 / 255.0
        self.index = np.flatnonzero(band)  # pixels, into a frame viewed as N x 3
        # Outside the band (unmixing: alpha within EDGE of 0 or 1) the person is where this mask is set.
        self.opaque = (alpha >= 0.5).view(np.uint8) if unmix else None
        self.channels = (self.index[:, None] * 3 + np.arange(3)).reshape(-1)  # their values, into the flat frame
        self.alpha = alpha.reshape(-1)[self.index][:, None]
        self.uncovered = 1.0 - self.alpha  # the old (and new) background's share of each edge pixel
        self.ceiling = 255.0 * self.alpha  # the most the person can contribute: α·255
        if wrap:
            self.wrap = reach.reshape(-1)[self.index][:, None]
        self.old_share = None  # (1−α)·B_old: what the old background put into each edge pixel
        self.estimate = None
        if unmix:
            self.estimate = background_estimate(frame, alpha) if estimate is None else estimate
            self.old_share = self.uncovered * _old_background(self.estimate, alpha.shape, self.index)


def background_estimate(frame: np.ndarray, alpha: np.ndarray, frame_width: int | None = None) -> np.ndarray:
    """The colour the background behind each pixel probably has, float32 BGR at 1/ESTIMATE_SCALE
    of the frame's size or less: a local average of ``frame`` weighted by how much background
    each pixel shows by ``alpha``. Both are of one size: the frame's, or a reduced one (the
    matte's, which spares shrinking the frame) with ``frame_width`` the frame's own width. Where
    no background is near, it falls back to the frame's own colour (no correction). Smooth
    enough at that size to be read back at the nearest pixel."""
    frame_width = frame_width or frame.shape[1]
    image = shrink_to_width(frame, max(1, frame_width // ESTIMATE_SCALE)).astype(np.float32)
    weight = (shrink(alpha, image.shape[1::-1]) < PLAIN).astype(np.float32)  # pixels that show plain background
    radius = max(1, round(ESTIMATE_REACH * image.shape[1] / frame_width))
    size = (2 * radius + 1, 2 * radius + 1)
    weighted_sum = cv2.blur(image * weight[..., None], size)
    weight_sum = cv2.blur(weight, size)[..., None]
    fallback = 1e-3
    return (weighted_sum + fallback * image) / (weight_sum + fallback)


def _old_background(estimate: np.ndarray, shape: tuple[int, int], index: np.ndarray) -> np.ndarray:
    """:func:`background_estimate` read back at the pixels ``index`` (flat indices into a frame of
    ``shape``), float32 Nx3."""
    return np.take(estimate.reshape(-1, 3), _nearest_lookup(shape, estimate.shape[:2])[index], axis=0)


@functools.lru_cache(maxsize=4)
def _nearest_lookup(shape: tuple[int, int], small_shape: tuple[int, int]) -> np.ndarray:
    """For each pixel of an image of ``shape`` (flat), the flat index of its nearest pixel in one
    of ``small_shape``: made once per pair of sizes, it turns the read-back into one gather."""
    (h, w), (small_h, small_w) = shape, small_shape
    rows = np.minimum(np.arange(h) * small_h // h, small_h - 1).astype(np.int32)
    cols = np.minimum(np.arange(w) * small_w // w, small_w - 1).astype(np.int32)
    return (rows[:, None] * small_w + cols[None, :]).reshape(-1)


def _gather(image: np.ndarray, edges: Edges) -> np.ndarray:
    """``image``'s values at the edge pixels, float32 Nx3."""
    return np.take(image.reshape(-1, 3), edges.index, axis=0).astype(np.float32)


def _scatter(values: np.ndarray, edges: Edges, out: np.ndarray) -> np.ndarray:
    """``out`` with its edge pixels set to ``values`` (Nx3 floats, rounded into uint8)."""
    out.reshape(-1)[edges.channels] = np.clip(values + 0.5, 0.0, 255.0).astype(np.uint8).reshape(-1)
    return out


def _person(edges: Edges, pixels: np.ndarray) -> np.ndarray:
    """α·F at the edge pixels: the frame's ``pixels`` less the old background's share, kept
    within [0, α·255] (without an estimate: α·frame, the plain paste)."""
    if edges.old_share is None:
        return edges.alpha * pixels
    return np.clip(pixels - edges.old_share, 0.0, edges.ceiling)


class Compositor:
    """``frame`` over ``background`` through ``alpha``, with the old background's colour
    taken out of the edges (``unmix``) and ``light_wrap`` (0 to 1) of the new background's
    light over them. The work that depends only on the matte is done once per matte, by
    :meth:`edges` (which may run on the matte's own thread) or on first use."""

    def __init__(self, unmix: bool = True, light_wrap: float = 0.0) -> None:
        self.unmix = unmix
        self.light_wrap = light_wrap
        self._edges: Edges | None = None
        self._wrap_source: np.ndarray | None = None
        self._wrap_light: np.ndarray | None = None

    def edges(self, alpha: np.ndarray, frame: np.ndarray, like: Edges | None = None,
              reduced: tuple[np.ndarray, np.ndarray] | None = None) -> Edges | None:
        """The per-matte work for the current settings (None: nothing to do). It keeps no
        state, so the matte's thread can do it and spare the compositing thread. ``like``:
        the edges of the matte ``alpha`` was moved from; its background estimate is reused.
        ``reduced``: the frame and its matte at a reduced size (the matte's own), where the caller
        has them: the background is estimated from them instead of shrinking the full frame."""
        wrap = self.light_wrap > 0.0
        if not (self.unmix or wrap):
            return None
        estimate = None
        if like is not None:
            estimate = like.estimate
        elif reduced is not None and self.unmix:
            estimate = background_estimate(*reduced, frame_width=frame.shape[1])
        return Edges(alpha, frame, self.unmix, wrap, estimate)

    def __call__(self, frame: np.ndarray, alpha: np.ndarray, background: np.ndarray,
                 edges: Edges | None = None) -> np.ndarray:
        """The composite of ``frame`` (BGR uint8) over ``background`` through ``alpha``;
        ``edges``: from :meth:`edges` for this matte, if already made."""
        wrap = self.light_wrap > 0.0
        if not (self.unmix or wrap):
            return cv2.blendLinear(frame, background, alpha, 1.0 - alpha)  # frame·α + background·(1−α), uint8
        edges = self._edges_of(alpha, frame, self.unmix, wrap, edges)
        if self.unmix:  # every mixed pixel is in the band, made below: outside it a copy is exact to 1 %
            out = background.copy()
            cv2.copyTo(frame, edges.opaque, out)  # a tenth of the blend's time at 720p
        else:  # the band is only the light wrap's: every pixel blended first
            out = cv2.blendLinear(frame, background, alpha, 1.0 - alpha)
        if edges.index.size == 0:
            return out
        result = _person(edges, _gather(frame, edges)) + edges.uncovered * _gather(background, edges)
        if edges.wrap is not None:
            result += (self.light_wrap * edges.wrap) * (_gather(self._light(background), edges) - result)
        return _scatter(result, edges, out)

    def foreground(self, frame: np.ndarray, alpha: np.ndarray, edges: Edges | None = None) -> np.ndarray:
        """The person's own colour F: ``frame`` with the old background taken out of its
        edges, for outputs that carry alpha and are composited elsewhere (the OBS page).
        ``edges``: made for this matte by :meth:`edges`; any with unmixing on will do."""
        if not self.unmix:
            return frame
        if edges is None or edges.matte is not alpha or edges.old_share is None:
            edges = self._edges_of(alpha, frame, unmix=True, wrap=False)
        if edges.index.size == 0:
            return frame
        return _scatter(_person(edges, _gather(frame, edges)) / edges.alpha, edges, frame.copy())

    def _edges_of(self, alpha: np.ndarray, frame: np.ndarray, unmix: bool, wrap: bool,
                  ready: Edges | None = None) -> Edges:
        """The edge data of ``alpha`` for these settings: ``ready`` if it fits, else the last
        one made if it fits, else made now."""
        for candidate in (ready, self._edges):
            if candidate is not None and candidate.matte is alpha and candidate.settings == (unmix, wrap):
                self._edges = candidate
                return candidate
        self._edges = Edges(alpha, frame, unmix, wrap)
        return self._edges

    def _light(self, background: np.ndarray) -> np.ndarray:
        """The new background, blurred: the light it casts (kept while the same image is reused)."""
        if background is not self._wrap_source:
            h, w = background.shape[:2]
            small = shrink(background, (max(1, w // ESTIMATE_SCALE), max(1, h // ESTIMATE_SCALE)))
            small = cv2.GaussianBlur(small, (0, 0), 2 * WRAP_SIGMA * small.shape[1])
            self._wrap_source = background
            self._wrap_light = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
        return self._wrap_light
