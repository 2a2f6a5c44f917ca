"""The pipeline: capture → infer → temporal smooth → composite → output.

Each stage is a thread; stages are joined by bounded :class:`RingBuffer` s. While
it runs, :meth:`Pipeline.apply` changes how the output looks (web panel, config
reload, preview keys), and it pauses while :attr:`Pipeline.idle` says nobody watches
(:mod:`vbg.live` attaches the server and the config watcher).

* **Live** (a camera, or a file paced for a live output): capture never waits.
  A model fast enough for every frame (``every_frame`` in the registry, or any model
  on a GPU) mattes each frame in turn on its own thread while the compositor shows the
  one before, so each frame is shown with its own matte; when it falls behind, the
  newest frame is its next. A slower model gets the newest frame through a one-slot
  buffer while every frame goes to the compositor, which blends it with the newest
  matte (:class:`Latest`), so a slow model lowers the matte rate, not the output rate.
  That matte, made from an earlier frame, is moved onto the frame along the optical flow
  (:mod:`vbg.propagation`) unless ``propagate`` is off; ``hold`` lets a frame wait a
  bounded time for its own matte. A full buffer drops its oldest frame and counts it.
* **Lossless** (a file into a file or into nothing): every buffer blocks, every
  frame gets its own matte, and every input frame yields exactly one output
  frame, in order.

The output stage runs on the calling thread (GUI toolkits want the main thread).
A camera that stops delivering is reconnected once a second while the output
keeps repeating the last frame, so the virtual camera never disappears from a call.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from vbg.backgrounds import (
    Background,
    background_choices,
    background_path,
    open_background,
)
from vbg.compositing import Compositor, Edges
from vbg.config import Settings, output_size, parse_size
from vbg.errors import VbgError
from vbg.imaging import cover_fit
from vbg.matting import Matter
from vbg.propagation import Propagator
from vbg.registry import get_spec
from vbg.ringbuffer import Closed, Latest, RingBuffer
from vbg.inference import open_session
from vbg.session import Session
from vbg.sinks import PreviewSink, Sink, live_output, open_outputs
from vbg.sources import CameraSource, Source, open_input
from vbg.timing import Pacer, StageClock

log = logging.getLogger(__name__)

RECONNECT_INTERVAL_S = 1.0
IDLE_POLL_S = 0.2
LIVE_SETTINGS = frozenset({"mode", "background", "blur", "color", "mirror", "smoothing", "unmix", "light_wrap"})
REPEAT_AFTER_S = 0.25  # live output with no new frame for this long repeats the last one
WARM_FRAMES = 150  # memory is compared from this frame on: allocations before it are warm-up
# Frames out within this long of the start wait for the model's first matte (the hybrid's first is
# MODNet's own, ~250 ms on 2 cores) and catch up after it: their latency is reported apart.
STARTUP_S = 1.0
# Live, a session that can make finer mattes at a higher cost (the hybrid at the detail model's size,
# see HybridSession.finer) is told to once a second after start-up if its matte thread was busy less
# than this share of the time (fine costs about 1.5 times as much: `vbg bench`, doctor.mp4 at 720p on a
# 2-core AVX2 EPYC, alternating: 20 -> 30 ms a frame, so about 0.75 busy at fine) ...
AFFORDS_FINER = 0.5
# ... and back for good once its matte thread drops more than this share of the frames in a second
# (that CPU, busy 0.6 coarse, at fine: 5-26 % dropped, 24-28 fps out).
TOO_MANY_DROPPED = 0.1


@dataclass
class Packet:
    """One frame on its way through the stages."""

    index: int
    captured_at: float
    frame: np.ndarray
    alpha: np.ndarray | None = None  # model resolution after infer, frame resolution after smooth
    small: np.ndarray | None = None  # the frame at the model's input size, from infer to smooth
    grey: np.ndarray | None = None  # the frame, grey at the flow's size, once its matte is finished
    reduced: tuple[np.ndarray, np.ndarray] | None = None  # the frame and its finished matte at the matte's size
    edges: Edges | None = None  # the compositor's per-matte work, done on the matte's thread
    matte_index: int | None = None  # the frame the composited matte was computed from
    matte_captured_at: float | None = None  # and when that frame was captured
    image: np.ndarray | None = None  # the composited output


@dataclass
class RunStats:
    """What a run did; the CLI prints it and the tests and benchmarks read it."""

    source: str = ""
    outputs: list[str] = field(default_factory=list)
    provider: str = "none (passthrough)"
    size: tuple[int, int] = (0, 0)
    fps: float = 0.0
    live: bool = False
    frames_captured: int = 0
    frames_out: int = 0
    mattes: int = 0
    dropped: int = 0  # frames a live run discarded because a stage was behind
    repeated: int = 0  # frames re-sent while the source was lost
    reconnects: int = 0
    elapsed_s: float = 0.0
    paused_s: float = 0.0  # of elapsed_s, paused while nobody watched (see Pipeline.idle)
    cpu_s: float = 0.0  # process CPU time (all threads) over the run
    rss_mb_start: float = 0.0
    rss_mb_warm: float = 0.0  # after WARM_FRAMES output frames: buffers and arenas allocated
    rss_mb_end: float = 0.0
    latencies_ms: deque = field(default_factory=lambda: deque(maxlen=3_000))  # the last ~100 s, after start-up
    startup_latencies_ms: list[float] = field(default_factory=list)  # frames out in the first STARTUP_S
    # Per output frame: its capture time minus that of the frame its matte was computed from.
    matte_ages_ms: deque = field(default_factory=lambda: deque(maxlen=3_000))
    fine_mattes: bool = False  # live mattes at the end were the finer, costlier ones (see AFFORDS_FINER)
    output_times: deque = field(default_factory=lambda: deque(maxlen=31))
    stages: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def current_fps(self) -> float:
        """Output rate over the last 30 frames (0 when fewer, or stalled for a second)."""
        times = list(self.output_times)
        if len(times) < 2 or time.perf_counter() - times[-1] > 1.0:
            return 0.0
        return (len(times) - 1) / (times[-1] - times[0])

    @property
    def running_s(self) -> float:
        """The time the run worked: its elapsed time less its pauses."""
        return max(0.0, self.elapsed_s - self.paused_s)

    @property
    def output_fps(self) -> float:
        """Frames out per second of :attr:`running_s` (a pause sends none and is left out)."""
        return self.frames_out / self.running_s if self.running_s > 0 else 0.0

    @property
    def matte_fps(self) -> float:
        return self.mattes / self.running_s if self.running_s > 0 else 0.0

    @property
    def cpu_percent(self) -> float:
        """CPU use as `top` shows it: 100 is one core fully busy."""
        return 100.0 * self.cpu_s / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def add_latency(self, latency_ms: float, since_start_s: float) -> None:
        """One output frame's latency, ``since_start_s`` after the run started."""
        (self.startup_latencies_ms if since_start_s < STARTUP_S else self.latencies_ms).append(latency_ms)

    def latency_ms(self, percentile: float) -> float:
        """Of the frames after start-up (a run shorter than that: of all its frames)."""
        latencies = self.latencies_ms or self.startup_latencies_ms
        return float(np.percentile(latencies, percentile)) if latencies else 0.0

    @property
    def startup_latency_ms(self) -> float:
        """The longest latency in the first :data:`STARTUP_S` (0 when no frame came out then)."""
        return max(self.startup_latencies_ms, default=0.0)

    def matte_age_ms(self, percentile: float) -> float:
        return float(np.percentile(self.matte_ages_ms, percentile)) if self.matte_ages_ms else 0.0


def rss_mb() -> float:
    """Resident memory of this process in MB (0 where /proc is not available)."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6
    except (OSError, ValueError):
        return 0.0


def open_source(settings: Settings, *, paced: bool) -> Source:
    if settings.input:
        return open_input(settings.input, loop=settings.loop, paced=paced)
    return CameraSource(settings.camera, parse_size(settings.camera_size, "--camera-size"),
                        settings.camera_fps, settings.fourcc)


class AdaptiveFineness:
    """Live, once a second after start-up: a session that can make finer mattes at a higher cost
    (the hybrid's ``finer``) is told to while the matte thread was mostly idle (:data:`AFFORDS_FINER`),
    and to make coarse ones for good once finer ones drop frames (:data:`TOO_MANY_DROPPED`)."""

    def __init__(self, session: Session | None, frame_hw: tuple[int, int]) -> None:
        self._session = session
        self._finer = getattr(session, "finer", None)  # None: the session has one size
        self._frame_hw = frame_hw
        self._started = 0.0
        self._window = (0.0, 0, 0)  # since when; frames captured and dropped by then
        self._busy_s = 0.0  # the matte thread's work since then
        self._refused = False

    @property
    def fine(self) -> bool:
        return self._finer is not None and self._session.fine

    def start(self, now: float) -> None:
        self._started, self._window = now, (now, 0, 0)

    def worked(self, seconds: float) -> None:
        """The matte thread spent ``seconds`` on one matte."""
        self._busy_s += seconds

    def pick(self, captured: int, dropped: int) -> None:
        """Before each matte, with the frames captured so far and those the matte thread dropped."""
        finer, session = self._finer, self._session
        now = time.perf_counter()
        since, captured_then, dropped_then = self._window
        if finer is None or now - since < 1.0:
            return
        busy, self._busy_s = self._busy_s / (now - since), 0.0
        self._window = (now, captured, dropped)
        new, lost = captured - captured_then, dropped - dropped_then
        if since - self._started < STARTUP_S or not new:
            return
        before = session.input_shape(self._frame_hw)
        if session.fine and lost / new > TOO_MANY_DROPPED and finer(False):
            self._refused = True
            after = session.input_shape(self._frame_hw)
            log.info("live mattes at %dx%d cost more than this CPU has between two frames (%d of %d dropped): "
                     "at %dx%d from now on", before[1], before[0], lost, new, after[1], after[0])
        elif not session.fine and not self._refused and busy < AFFORDS_FINER and finer(True):
            after = session.input_shape(self._frame_hw)
            log.info("live mattes at %dx%d instead of %dx%d: the matte thread was busy %.0f %% of the time",
                     after[1], after[0], before[1], before[0], 100 * busy)


class Pipeline:
    """Wires one source, one background, one model and its sinks into stage threads."""

    def __init__(self, settings: Settings, source: Source, sinks: list[Sink], background: Background,
                 session: Session | None, size: tuple[int, int]) -> None:
        self.settings = settings
        self.source = source
        self.sinks = sinks
        self.background = background
        self.session = session
        self.taps: list[Callable[[Packet], None]] = []  # see every output packet; must not block
        self.idle: Callable[[], bool] | None = None  # True while nobody watches: capture and inference pause
        # True: capture waits for the first matte before the second frame, as if the call had been
        # running already (`vbg eval --live`, whose clips are too short to spend on the start).
        self.warm_start = False
        self._change_lock = threading.Lock()
        self._mode_before_passthrough = "blur" if settings.mode == "passthrough" else settings.mode
        for sink in sinks:
            if hasattr(sink, "on_key"):
                sink.on_key = self._on_key
        self.size = size
        self.live = source.live
        self.stats = RunStats(source=source.name, outputs=[s.name for s in sinks], size=size,
                              fps=settings.fps or source.fps, live=self.live,
                              provider=session.provider if session else RunStats.provider)
        self._stop = threading.Event()
        self._started = time.perf_counter()  # reset when run() starts the threads
        self._errors: list[BaseException] = []
        self.clock = StageClock()
        if session is not None:
            session.go_live(self.live, self.clock)
        # Live with a model fast enough for every frame: each frame is matted in turn on one thread
        # while the one before is composited on another; its matte is its own.
        self._every_frame = self.live and session is not None and session.every_frame
        self._matter = Matter(session, settings.smoothing, self.clock, settings.refine) if session else None
        self._compositor = Compositor(settings.unmix, settings.light_wrap)
        self._propagator = Propagator() if (self.live and settings.propagate and not self._every_frame) else None
        policy, capacity = ("drop_oldest", 2) if self.live else ("block", 4)
        self._frames: RingBuffer[Packet] = RingBuffer(capacity, policy)  # capture → composite (live)
        self._to_infer: RingBuffer[Packet] = RingBuffer(1 if self.live else capacity, policy)
        # Live: only the newest inferred matte is worth finishing; an older one waiting would add its age.
        self._inferred: RingBuffer[Packet] = RingBuffer(1 if self.live else capacity, policy)
        # smooth → composite (lossless; live: every frame with its own matte, one waiting at most)
        self._smoothed: RingBuffer[Packet] = (RingBuffer(1, "block") if self._every_frame
                                              else RingBuffer(capacity, policy))
        self._composited: RingBuffer[Packet] = RingBuffer(capacity, policy)
        self._fineness = AdaptiveFineness(session, (size[1], size[0]))
        self._latest_matte: Latest[Packet] = Latest()  # live: the packet of the newest finished matte
        self._buffers = [self._frames, self._to_infer, self._inferred, self._smoothed, self._composited]

    # -- stages ---------------------------------------------------------------------------

    def _prepare(self, frame: np.ndarray) -> np.ndarray:
        frame = cover_fit(frame, self.size)
        return cv2.flip(frame, 1) if self.settings.mirror else frame

    def _capture(self) -> None:
        # The compositor reads the capture directly unless it must wait for each frame's matte.
        to_composite = self._frames if (self.live or not self.background.needs_matte) else None
        limit = self.settings.frames if not self.live else None
        pacer = Pacer(self.source.fps) if self.source.paced else None
        index, lost, paused = 0, False, False
        paused_at = 0.0
        while not self._stop.is_set() and (limit is None or index < limit):
            if self.idle is not None and self.idle() != paused:
                paused = not paused
                if paused:
                    paused_at = time.perf_counter()
                    self._pause_capture()
                else:
                    self.stats.paused_s += time.perf_counter() - paused_at
                    self._resume_capture()
            if paused:
                self._stop.wait(IDLE_POLL_S)
                continue
            if pacer:
                pacer.wait()
            started = time.perf_counter()
            raw = self.source.read()
            if raw is None:
                if not self.source.reconnectable:
                    break  # end of the file
                if not lost:
                    log.warning("%s stopped delivering frames: repeating the last frame and reconnecting "
                                "every %g s", self.source.name, RECONNECT_INTERVAL_S)
                    lost = True
                if not self._stop.wait(RECONNECT_INTERVAL_S) and self.source.reopen():
                    log.warning("%s is back", self.source.name)
                    self.stats.reconnects += 1
                    if self._matter:
                        self._matter.reset()
                    lost = False
                continue
            packet = Packet(index, started, self._prepare(raw))
            self.clock.record("capture", time.perf_counter() - started)
            index += 1
            self.stats.frames_captured = index
            # Its own packet on each path: the matte's thread must never write into the frame being shown.
            if self._every_frame:  # the matte thread takes every frame (the newest, when it is behind)
                if not self._to_infer.put(packet):
                    break
            else:
                if self.background.needs_matte and not self._to_infer.put(dataclasses.replace(packet)):
                    break
                if to_composite is not None and not to_composite.put(packet):
                    break
            if index == 1 and self.warm_start and self.background.needs_matte:
                self._latest_matte.wait()
                pacer = Pacer(self.source.fps) if self.source.paced else None  # from now on, not to catch up
        if paused:  # stopped while nobody watched
            self.stats.paused_s += time.perf_counter() - paused_at

    def _pause_capture(self) -> None:
        """Nobody watches: a camera is closed, so that its light goes off and other apps may have it."""
        if self.source.reconnectable:
            self.source.close()
            log.info("nobody is watching: capture and inference pause, %s released", self.source.name)
        else:
            log.info("nobody is watching: capture and inference pause")

    def _resume_capture(self) -> None:
        """A viewer is back: the camera is opened again (if it cannot be, the reconnect loop retries)."""
        reopened = self.source.reconnectable and self.source.reopen()
        log.info("a viewer is back: resuming%s", f", {self.source.name} reopened" if reopened else "")

    def _infer(self, packet: Packet) -> Packet:
        packet.alpha, packet.small = self._matter.infer(packet.frame)
        self.stats.mattes += 1
        return packet

    def _finish(self, packet: Packet) -> Packet:
        packet.alpha = self._matter.finish(packet.alpha, packet.frame, packet.small)
        packet.small, packet.grey, packet.reduced = None, self._matter.grey, self._matter.reduced
        packet.matte_index, packet.matte_captured_at = packet.index, packet.captured_at
        return packet

    def _smooth(self, packet: Packet) -> Packet:
        """The matte finished, with the compositor's per-matte work done here, off its thread."""
        packet = self._finish(packet)
        with self.clock.time("edges"):
            packet.edges = self._compositor.edges(packet.alpha, packet.frame, reduced=packet.reduced)
        if self.live:
            self._latest_matte.publish(packet)
        return packet

    def _matte_every_frame(self, packet: Packet) -> Packet:
        """Live with a model fast enough for every frame: this frame's own matte, finished (its
        edges are left to the compositor's thread, which has the lighter share of the work)."""
        if not self.background.needs_matte:
            return packet
        self._fineness.pick(self.stats.frames_captured, self._to_infer.dropped)
        self.stats.fine_mattes = self._fineness.fine
        started = time.perf_counter()
        packet = self._finish(self._infer(packet))
        self._fineness.worked(time.perf_counter() - started)
        if self.warm_start:  # capture waits for the first; each frame is composited with its own matte
            self._latest_matte.publish(packet)
        return packet

    def _matte_for(self, packet: Packet) -> Packet | None:
        """Live: the newest finished matte's packet; with ``hold``, waits up to that long for the
        matte of ``packet``'s own frame. None when stopped before the first matte."""
        matte, version = self._latest_matte.wait_newer(0)  # only the first matte is waited for
        hold = self.settings.hold / 1e3
        if matte is None or hold <= 0 or matte.index >= packet.index:
            return matte
        with self.clock.time("hold"):
            deadline = time.perf_counter() + hold
            while matte.index < packet.index and (left := deadline - time.perf_counter()) > 0:
                newer, version = self._latest_matte.wait_newer(version, left)
                if newer is None or newer is matte:  # closed, or timed out
                    break
                matte = newer
        return matte

    def _composite(self, packet: Packet) -> Packet:
        # (every frame: no matte when matting was switched on after this frame's turn)
        if not self.background.needs_matte or (self._every_frame and packet.alpha is None):
            packet.image = packet.frame
            return packet
        if self._every_frame:
            with self.clock.time("edges"):
                packet.edges = self._compositor.edges(packet.alpha, packet.frame, reduced=packet.reduced)
        elif self.live:
            matte = self._matte_for(packet)
            if matte is None:  # stopped before the first matte
                return packet
            packet.alpha, packet.edges = matte.alpha, matte.edges
            packet.matte_index, packet.matte_captured_at = matte.index, matte.captured_at
            # Moved only while the compositor keeps up: with a newer frame already waiting, moving
            # this one's matte would cost a dropped frame, which the viewer notices more.
            if (self._propagator is not None and matte.index != packet.index and matte.grey is not None
                    and not len(self._frames)):
                with self.clock.time("propagation"):
                    packet.alpha = self._propagator(matte.alpha, matte.grey, packet.frame)
                with self.clock.time("moved edges"):  # the band moved; the old room's colour is the matte's
                    packet.edges = self._compositor.edges(packet.alpha, packet.frame, like=matte.edges)
        with self.clock.time("composite"):
            small = packet.reduced[0] if packet.reduced is not None else None  # a frame matted itself has one
            packet.image = self._compositor(packet.frame, packet.alpha, self.background.render(packet.frame, small),
                                            packet.edges)
        return packet

    def _output(self) -> None:
        limit = self.settings.frames
        # Live, a device is never left without frames: a reader that opens it while vbg starts or
        # pauses (nobody watched) gets black, later the last frame, every REPEAT_AFTER_S, not
        # nothing (Chromium closed a camera that sent nothing, which paused vbg again).
        last = np.zeros((self.size[1], self.size[0], 3), np.uint8) if self.live else None
        while limit is None or self.stats.frames_out < limit:
            try:
                packet = self._composited.get(timeout=REPEAT_AFTER_S)
            except Closed:
                return
            if packet is None:
                if self._stop.is_set():
                    return
                if last is not None:  # starting, paused or the source lost: keep the camera fed
                    self._write(last, repeat=True)
                    self.stats.repeated += 1
                continue
            if self.live:  # a file gets each frame once, however long the next one takes
                last = packet.image
            if not self._write(packet.image):
                return
            for tap in self.taps:
                tap(packet)
            self.stats.frames_out += 1
            now = time.perf_counter()
            self.stats.output_times.append(now)
            if self.stats.frames_out == WARM_FRAMES:
                self.stats.rss_mb_warm = rss_mb()
            self.stats.add_latency((now - packet.captured_at) * 1e3, now - self._started)
            if packet.matte_captured_at is not None:
                self.stats.matte_ages_ms.append((packet.captured_at - packet.matte_captured_at) * 1e3)

    def _write(self, image: np.ndarray, repeat: bool = False) -> bool:
        """``image`` into every sink; a ``repeat`` (keeping a camera fed) only into live ones: a file
        beside a preview gets each frame once."""
        with self.clock.time("output"):
            return all([sink.write(image) for sink in self.sinks if sink.live or not repeat])

    # -- changes while running -------------------------------------------------------------

    def apply(self, **changes: Any) -> Settings:
        """Change how the output looks while running (web panel, config reload, preview keys).

        Only the settings in :data:`LIVE_SETTINGS` can change; values are validated like
        config keys and a bad one raises :class:`VbgError` with nothing changed.
        """
        fixed = sorted(set(changes) - LIVE_SETTINGS)
        if fixed:
            raise VbgError(f"setting '{fixed[0]}' cannot change while vbg runs; restart with the new value "
                           f"(live: {', '.join(sorted(LIVE_SETTINGS))})")
        with self._change_lock:
            new = self.settings.replace(**changes)
            if new.mode == "image" and not new.background:
                raise VbgError("mode 'image' needs a background: choose one first")
            look = ("mode", "background", "blur", "color")
            background = self.background
            if any(getattr(new, key) != getattr(self.settings, key) for key in look):
                background = open_background(new, self.size)
                if background.needs_matte and self._matter is None:
                    background.close()
                    raise VbgError("this run started in passthrough without a model; restart with a background")
                if background.needs_matte != self.background.needs_matte and not self.live:
                    background.close()
                    raise VbgError("a file-to-file run cannot switch between passthrough and matting")
            if self._matter is not None:
                self._matter.smoother.strength = new.smoothing
            self._compositor.unmix, self._compositor.light_wrap = new.unmix, new.light_wrap
            if background is not self.background:
                self.background, replaced = background, self.background
                replaced.close()  # safe while a stage still renders it; its file or capture is released now
            self.settings = new
        log.info("now: %s%s", background.name, ", mirrored" if new.mirror else "")
        return new

    def _on_key(self, key: str) -> None:
        """Preview window keys: b blur, n next background, m mirror, space passthrough on/off."""
        current = self.settings
        try:
            if key == "b":
                self.apply(mode="blur")
            elif key == "m":
                self.apply(mirror=not current.mirror)
            elif key == " ":
                if current.mode == "passthrough":
                    self.apply(mode=self._mode_before_passthrough)
                else:
                    self._mode_before_passthrough = current.mode
                    self.apply(mode="passthrough")
            elif key == "n":
                choices = background_choices(current)
                if choices:
                    position = choices.index(current.background) + 1 if current.background in choices else 0
                    self.apply(mode="image", background=choices[position % len(choices)])
        except VbgError as exc:
            log.warning("%s", exc)

    # -- threads ----------------------------------------------------------------------------

    def _guarded(self, work: Callable[[], None], outbox: RingBuffer | None) -> Callable[[], None]:
        def body() -> None:
            try:
                work()
            except BaseException as exc:  # noqa: BLE001 - reported by run() on the main thread
                self._errors.append(exc)
                self.abort()
            finally:
                if outbox is not None:
                    outbox.close()
        return body

    def _stage(self, step: Callable[[Packet], Packet], inbox: RingBuffer,
               outbox: RingBuffer | None) -> Callable[[], None]:
        def work() -> None:
            while True:
                try:
                    packet = inbox.get()
                except Closed:
                    return
                packet = step(packet)
                if outbox is not None and not outbox.put(packet):
                    return
        return work

    def _capture_then_close(self) -> None:
        try:
            self._capture()
        finally:  # closing lets the later stages drain what is left, in order
            self._frames.close()
            self._to_infer.close()

    def abort(self) -> None:
        """Stop every stage now (Ctrl-C, an error, the viewer closing the preview)."""
        self._stop.set()
        for buffer in self._buffers:
            buffer.close()
        self._latest_matte.close()

    def run(self) -> RunStats:
        """Run until the source ends, ``settings.frames`` are out, or :meth:`abort`."""
        workers: list[tuple[str, Callable[[], None], RingBuffer | None]] = [
            ("capture", self._capture_then_close, None)]
        if self._every_frame:
            workers.append(("matte", self._stage(self._matte_every_frame, self._to_infer, self._smoothed),
                            self._smoothed))
        elif self._matter is not None:
            # Live: the smoothed matte is published to the compositor, not queued per frame.
            smoothed = None if self.live else self._smoothed
            workers += [("infer", self._stage(self._infer, self._to_infer, self._inferred), self._inferred),
                        ("smooth", self._stage(self._smooth, self._inferred, smoothed), smoothed)]
        composite_in = self._smoothed if (self._every_frame or (self.background.needs_matte and not self.live)) \
            else self._frames
        workers.append(("composite", self._stage(self._composite, composite_in, self._composited),
                        self._composited))
        threads = [threading.Thread(target=self._guarded(work, outbox), name=name, daemon=True)
                   for name, work, outbox in workers]
        self.stats.rss_mb_start = rss_mb()
        self._started = started = time.perf_counter()
        self._fineness.start(started)
        cpu_started = time.process_time()
        for thread in threads:
            thread.start()
        try:
            self._guarded(self._output, None)()
        finally:
            self.abort()
            for thread in threads:
                thread.join()
            self.stats.elapsed_s = time.perf_counter() - started
            self.stats.cpu_s = time.process_time() - cpu_started
            self.stats.rss_mb_end = rss_mb()
            self.stats.stages = self.clock.summary()
            self.stats.dropped = self._frames.dropped + self._composited.dropped
            if self._every_frame:  # every frame was meant for the matte thread
                self.stats.dropped += self._to_infer.dropped
        if self._errors:
            raise self._errors[0]
        return self.stats

    def close(self) -> None:
        """Release the camera, the sinks, the background and the model's threads (each exactly once)."""
        for resource in (self.source, *self.sinks, self.background, *([self.session] if self.session else [])):
            try:
                resource.close()
            except Exception:  # noqa: BLE001 - one failing release must not keep the others open
                log.exception("closing %s failed", getattr(resource, "name", resource))


def build(settings: Settings, source: Source | None = None) -> Pipeline:
    """Open the model, source, background and sinks that ``settings`` ask for.

    ``source`` replaces the one ``settings`` name (benchmarks, tests). Every
    :class:`VbgError` a person can fix surfaces here, before any thread starts, and
    the source, background and output are checked before the model, which a first
    run downloads and makes (minutes); whatever was opened before the failure is
    released again.
    """
    if settings.mode == "image":
        background_path(settings)  # a typo in --bg is reported before the camera is opened
    with contextlib.ExitStack() as opened:
        if source is None:
            source = open_source(settings, paced=live_output(settings.output) or settings.preview or settings.serve)
        opened.callback(source.close)
        size = output_size(settings.size) if settings.size else source.size
        fps = settings.fps or source.fps
        background = open_background(settings, size)
        opened.callback(background.close)
        sinks: list[Sink] = open_outputs(settings.output, size, fps, vcam_device=settings.vcam_device,
                                         vcam_backend=settings.vcam_backend, pipewire_name=settings.pipewire_name)
        for sink in sinks:
            opened.callback(sink.close)
        if settings.preview:
            sinks.append(PreviewSink())
            opened.callback(sinks[-1].close)
        session = None
        if settings.mode != "passthrough" or source.live:  # a live run may switch to a background later
            session = open_session(get_spec(settings.model), device=settings.device, matte_size=settings.matte_size)
            session.warm_up(size[::-1])  # before the first frame is captured: no stall in the call
        pipeline = Pipeline(settings, source, sinks, background, session, size)
        opened.pop_all()
    log.info("source: %s%s", source.name, f" ({source.delivered})" if hasattr(source, "delivered") else "")
    log.info("output: %s, %dx%d @ %g fps, %s", ", ".join(s.name for s in sinks), *size, fps, background.name)
    if session:
        log.info("model: %s at matte size %s, provider %s", session.spec.name,
                 "x".join(map(str, session.input_shape(size[::-1]))), session.provider)
    return pipeline
