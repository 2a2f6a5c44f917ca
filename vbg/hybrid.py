"""A hybrid matte: a fast coarse model says where the person is now, a slow fine one gives the edges.

On a plain CPU MODNet manages a few mattes a second, so a live matte is up to ~200 ms old
and a moving arm is cut off; the MediaPipe selfie model runs every frame in a few ms but
its edges are coarse. The hybrid runs both:

* the *detail* model (MODNet) on a background thread of low priority, at whatever rate
  the CPU leaves it but computing at most half the time (:data:`DETAIL_DUTY`), always on
  the newest frame;
* for every frame, the *fast* model (selfie), and the newest detail matte moved onto the
  frame along the optical flow (:mod:`vbg.propagation`);
* :func:`fuse`: the moved detail matte, except where the fast model is sure of itself now
  and either its own matte changed since the detail model's frame more than the flow
  explains (an arm swung where the flow could not follow it), or the flow does not explain
  this frame there (an occlusion, a blur) and the fast model disagrees with the moved detail
  matte: there the fast model's matte of this frame is taken. The decision is made at the
  fast model's size; the live matte has that size too, or where the CPU affords 1.5 times the
  per-frame work (the pipeline decides, :meth:`HybridSession.finer`) the detail model's, so that
  where nothing moves it is the detail model's own, as offline (dev clips, simulated with detail
  mattes 2-4 frames old: MAD 10.02 → 9.23, dev00_still 6.22 → 5.67 against 5.50 offline).

Offline (every frame gets its own matte) the detail matte is never stale, so it is used
as it is: `vbg eval` of the hybrid is the detail model's own score. Which models form a
hybrid is registry data (``[NAME.hybrid]``, ``fast`` and ``detail``).
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
import weakref
from dataclasses import dataclass

import cv2
import numpy as np

from vbg.flow import FLOW_MAX_WIDTH, flow_grey
from vbg.imaging import shrink
from vbg.propagation import Propagator
from vbg.registry import ModelSpec
from vbg.session import MattingSession
from vbg.timing import StageClock

log = logging.getLogger(__name__)

FRAME = "frame"  # the "tensors" a hybrid is fed: the BGR frame at the live matte's size
SOURCE = "source"  # and the frame it was shrunk from
AGREE = 0.3  # a difference of mattes up to this: the fast model's coarse edge, the detail matte is kept
DISAGREE = 0.6  # from this on: the detail matte is stale there, the fast model's matte is taken
# How well the flow explains a pixel: the detail model's frame, moved along it, against this frame (grey, 0-1).
STEADY = 0.01  # up to this: it does, and the moved detail matte holds even where the fast model disagrees
UNSTEADY = 0.03  # from this on: it does not, and the moved detail matte is unproven there
# A change of light (auto exposure, a lamp) is smooth over the frame, a move the flow missed is not:
# the smooth part of the difference (Gaussian, this sigma in px of the matte) is left out of it.
LIGHT_SIGMA = 4.0
# How sure the fast model must be of this frame's matte (|2 alpha - 1|) before its change counts:
# its confidence in a still body wavers between frames (0.96 → 0.28 on a white suit), which is no motion.
UNSURE = 0.5  # from 0.25 to 0.75 alpha: its change is ignored
SURE = 0.9  # below 0.05 or above 0.95: its change counts in full
# The detail thread computes at most this share of the time and rests the rest: on 2 cores it
# otherwise slows the per-frame work enough to drop frames (bench: 28.4 → 29.3 fps out at 0.5,
# with live MAD 12.65 → 12.43, as fresher frames outweigh a slightly older detail matte).
DETAIL_DUTY = 0.5
DETAIL_NICE = 10  # where SCHED_IDLE is refused: the detail thread yields the CPU by its nice value
# The flow that moves the detail matte is found this wide (at most the live matte's width): at
# the detail model's 448 against 256, the truth moved 4 frames of the dev clips along it is off by
# MAD 5.2 instead of 6.4, and the live matte (simulated, detail matte 2-4 frames old) 9.23 instead
# of 9.49; +3 ms a frame.
FLOW_WIDTH = 448
# Live, the temporal smoothing finds its flow at most this wide, whatever the live matte's size: at the
# detail model's 448 it cost 5.5 ms a frame more (two flows) for nothing live (dev clips simulated,
# detail mattes 8-16 frames old: MAD 11.43 / dtSSD 4.38 against 11.44 / 4.39), since the moved matte
# already holds still; offline (MODNet's own mattes, which flicker) 448 is kept: 7.28 / 3.46 against 7.35 / 3.49.
LIVE_SMOOTHING_FLOW_WIDTH = 256


def _ramp(value: np.ndarray, low: float, high: float) -> np.ndarray:
    """0 up to ``low``, 1 from ``high`` on, linear between."""
    return np.clip((value - low) * (1.0 / (high - low)), 0.0, 1.0)


def fuse(detail: np.ndarray, fast: np.ndarray, fast_then: np.ndarray, mismatch: np.ndarray,
         fine: np.ndarray | None = None) -> np.ndarray:
    """``detail`` (the detail model's matte, moved onto this frame), except where the fast model is
    sure of this frame (:data:`UNSURE` to :data:`SURE`) and either
    - its matte changed since the detail model's frame (``fast_then``, moved the same way) by more
      than the flow explains: the person moved in a way the flow missed; or
    - the flow does not explain this frame (``mismatch``, the detail model's frame moved along it
      against this one, :data:`STEADY` to :data:`UNSTEADY`) and the fast model disagrees with
      the moved detail matte: the move is unproven there (an occlusion, or a body part the detail
      model lost in its frame; dev clips live, alternating: MAD 12.3 → 11.7);
    there ``fast`` (this frame's) is taken (both differences ramp from :data:`AGREE` to
    :data:`DISAGREE`). Where the two models merely disagree about a still scene, or the fast
    model's confidence wavers, the detail model is trusted (the fast model is the coarser one).
    All float32 in [0, 1], one shape; ``fine``: the same moved detail matte at a higher resolution,
    which the result then has (the decision is made at the fast model's, applied at this one)."""
    changed = _ramp(cv2.absdiff(fast, fast_then), AGREE, DISAGREE)
    unproven = _ramp(mismatch, STEADY, UNSTEADY) * _ramp(cv2.absdiff(fast, detail), AGREE, DISAGREE)
    weight = cv2.max(changed, unproven) * _ramp(np.abs(fast - 0.5) * 2.0, UNSURE, SURE)
    if fine is not None and fine.shape != detail.shape:
        size = fine.shape[::-1]
        weight = cv2.resize(weight, size, interpolation=cv2.INTER_LINEAR)
        fast = cv2.resize(fast, size, interpolation=cv2.INTER_LINEAR)
        detail = fine
    return detail + weight * (fast - detail)


def _unexplained(moved_shade: np.ndarray, shade: np.ndarray) -> np.ndarray:
    """How far the detail model's frame, moved along the flow (``moved_shade``), differs from this
    frame (``shade``), less any smooth change of light (:data:`LIGHT_SIGMA`)."""
    change = cv2.subtract(moved_shade, shade)
    return cv2.absdiff(change, cv2.GaussianBlur(change, (0, 0), LIGHT_SIGMA))


def _shade(grey: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A frame's flow grey (:func:`~vbg.flow.flow_grey`) as float32 in [0, 1] at the matte's ``shape``."""
    return shrink(grey, shape[::-1]).astype(np.float32) * (1.0 / 255.0)


@dataclass(frozen=True)
class _DetailMatte:
    """The detail model's newest matte, with what moves it onto later frames."""

    at_fast_size: np.ndarray  # merged with the fast model's matte and the shade of its frame: one flow moves all three
    grey: np.ndarray  # its frame's flow grey
    at_live_size: np.ndarray | None  # None: made at the live size before finer(); at_fast_size's stands in


@dataclass(frozen=True)
class _DetailJob:
    """A frame waiting for the detail model, with what its matte is to be merged with."""

    source: np.ndarray  # the detail model's input
    fast: np.ndarray  # the fast model's matte of the frame
    shade: np.ndarray
    grey: np.ndarray
    live_shape: tuple[int, int]  # (height, width) of the live matte

    def matte(self, alpha: np.ndarray) -> _DetailMatte:
        """The detail model's ``alpha`` of this frame, ready to be moved onto later ones."""
        at_live_size = shrink(alpha, self.live_shape[::-1])
        return _DetailMatte(cv2.merge([shrink(alpha, self.fast.shape[::-1]), self.fast, self.shade]), self.grey,
                            at_live_size)


_OPEN: weakref.WeakSet[HybridSession] = weakref.WeakSet()  # weak: a session nobody holds is freed


@atexit.register
def _close_open_sessions() -> None:
    for session in list(_OPEN):
        session.close()


def _yield_cpu() -> None:
    """Lower the calling thread's priority: Linux's SCHED_IDLE runs it only on CPU time no other
    thread wants (bench on 2 cores, against nice 10: 29.5 against 28.8 fps out, latency p95 81
    against 86 ms); where that is refused, nice 10; elsewhere it keeps normal priority."""
    thread = threading.get_native_id()
    try:
        os.sched_setscheduler(thread, os.SCHED_IDLE, os.sched_param(0))
        return
    except (AttributeError, OSError):
        pass
    try:
        os.setpriority(os.PRIO_PROCESS, thread, DETAIL_NICE)
    except (AttributeError, OSError):
        pass


class HybridSession:
    """A :class:`~vbg.session.Session` of two models.

    Live (:meth:`go_live`): the detail model runs on its own thread and each matte fuses its
    newest result with the fast model's; otherwise every matte is the detail model's own.
    The first matte after :meth:`reset` is always the detail model's own, so a call starts
    with a good matte.
    """

    def __init__(self, spec: ModelSpec, fast: MattingSession, detail: MattingSession) -> None:
        self.spec = spec
        self.fast = fast
        self.detail = detail
        self.matte_size = detail.matte_size
        self.provider = detail.provider
        self.every_frame = spec.every_frame
        self._live = False
        self.fine = False  # live mattes at the detail model's size (see finer)
        self._clock = StageClock()
        self._propagator = Propagator(FLOW_WIDTH)
        self._lock = threading.Condition()
        self._newest: _DetailMatte | None = None
        self._pending: _DetailJob | None = None  # the next frame for the detail model
        self._generation = 0  # bumped by reset: a detail matte of an earlier scene is dropped
        self._worker: threading.Thread | None = None
        self._closed = False
        _OPEN.add(self)  # closed at exit: an inference cut off by the interpreter's exit prints errors

    def go_live(self, live: bool, clock: StageClock | None = None) -> None:
        """Live: the detail model runs on its own thread; ``clock`` gets its time as stage "detail"."""
        self._live = live
        self._clock = clock or StageClock()

    @property
    def smoothing_flow_width(self) -> int:
        """How wide the matte path's temporal smoothing finds its flow (:data:`LIVE_SMOOTHING_FLOW_WIDTH`)."""
        return LIVE_SMOOTHING_FLOW_WIDTH if self._live else FLOW_MAX_WIDTH

    def input_shape(self, frame_hw: tuple[int, int]) -> tuple[int, int]:
        """Live the fast model's, or the detail model's where the CPU affords it (:meth:`finer`);
        offline the detail model's. The fast model's input is shrunk from it."""
        return (self.fast if self._live and not self.fine else self.detail).input_shape(frame_hw)

    def finer(self, fine: bool) -> bool:
        """Live mattes at the detail model's size (``fine``: where nothing moves the live matte is
        then the detail model's own, as offline), or at the fast model's, where the per-frame work
        costs two thirds; the pipeline decides by what this CPU affords. True if that changed."""
        with self._lock:
            if fine == self.fine:
                return False
            self.fine = fine
            self._generation += 1  # a detail matte in the making has the old size
            self._pending = None
            if self._newest is not None:  # kept, at the new size: no wait for a new first matte
                self._newest = _DetailMatte(self._newest.at_fast_size, self._newest.grey, None)
        return True

    def prepare(self, frame_bgr: np.ndarray, source: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """``source``: the frame ``frame_bgr`` was shrunk from; the detail model's input is made from
        it where the live matte is smaller than that input (not :meth:`finer`)."""
        h, w = self.input_shape(frame_bgr.shape[:2])
        small = frame_bgr if (h, w) == frame_bgr.shape[:2] else shrink(frame_bgr, (w, h))
        return {FRAME: small, SOURCE: frame_bgr if source is None else source}

    def infer(self, frame_bgr: np.ndarray) -> np.ndarray:
        return self.run(self.prepare(frame_bgr))

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """The matte of the frame in ``feeds`` (from :meth:`prepare`), at its size: offline the
        detail model's own; live its newest, moved onto this frame and fused with the fast model's
        of this frame (the decision made at the fast model's size)."""
        small = feeds[FRAME]
        if not self._live:
            return self.detail.infer(small)
        detail_input = small if self.fine else feeds[SOURCE]
        h, w = self.fast.input_shape(small.shape[:2])
        fast = self.fast.infer(shrink(small, (w, h)))
        grey = flow_grey(small, small.shape[:2])
        shade = _shade(grey, (h, w))
        with self._lock:
            newest = self._newest
        job = _DetailJob(detail_input, fast, shade, grey, small.shape[:2])
        if newest is None:  # a new call or scene: its first matte is the detail model's own
            newest = job.matte(self.detail.infer(detail_input))
            with self._lock:
                self._newest = newest
            return newest.at_live_size
        self._submit(job)
        flow = self._propagator.flow(newest.grey, small)  # one flow moves both resolutions
        detail, fast_then, shade_then = cv2.split(self._propagator.move(newest.at_fast_size, flow))
        detail_then = newest.at_live_size
        if detail_then is None:  # made at the size before finer(): its fast-size copy stands in
            detail_then = cv2.resize(newest.at_fast_size[..., 0], small.shape[1::-1], interpolation=cv2.INTER_LINEAR)
        return fuse(detail, fast, fast_then, _unexplained(shade_then, shade), self._propagator.move(detail_then, flow))

    def warm_up(self, frame_hw: tuple[int, int]) -> None:
        """Both models, each at the shape it runs at for frames of ``frame_hw``."""
        self.fast.warm_up(frame_hw)
        self.detail.warm_up(frame_hw)

    def reset(self) -> None:
        """A new scene or source: the detail model's newest matte belongs to the old one."""
        with self._lock:
            self._generation += 1
            self._newest = self._pending = None
        self.fast.reset()
        self.detail.reset()

    def close(self) -> None:
        """Stop the detail model's thread (after the matte it is making); the next live matte
        starts it again (`vbg eval --live` runs one pipeline per clip on one session)."""
        with self._lock:
            self._closed = True
            self._lock.notify_all()
            worker, self._worker = self._worker, None
        if worker is not None:
            worker.join()

    # -- the detail model's thread -------------------------------------------------------------

    def _submit(self, job: _DetailJob) -> None:
        with self._lock:
            self._pending = job  # an older frame still waiting is replaced
            self._lock.notify_all()
            if self._worker is None:
                self._closed = False
                self._worker = threading.Thread(target=self._detail_loop, name="detail", daemon=True)
                self._worker.start()

    def _detail_loop(self) -> None:
        _yield_cpu()
        while True:
            with self._lock:
                self._lock.wait_for(lambda: self._pending is not None or self._closed)
                if self._closed:
                    return
                job, self._pending = self._pending, None
                generation = self._generation
            started = time.perf_counter()
            alpha = self.detail.infer(job.source)
            took = time.perf_counter() - started
            self._clock.record("detail", took)
            newest = job.matte(alpha)
            with self._lock:
                if generation == self._generation:
                    self._newest = newest
                self._lock.wait_for(lambda: self._closed, took * (1.0 / DETAIL_DUTY - 1.0))
