"""Live behaviour: a camera that vanishes mid-call, and Ctrl-C / SIGTERM."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from conftest import FRAME_SIZE, person_frame, read_video
from vbg import Settings, VbgError
from vbg import run as run_settings
from vbg.backgrounds import color_background
from vbg.pipeline import Pipeline
from vbg.registry import get_spec
from vbg.session import MattingSession
from vbg.sinks import NullSink, VirtualCameraSink
from vbg.sources import SyntheticSource


class UnpluggedCamera:
    """A camera that delivers ``fail_after`` frames, then nothing until it has been asked to
    reopen ``reopen_attempts`` times (unplugged, or taken by another app), then delivers again."""

    live = True
    paced = False
    reconnectable = True
    fps = 30.0
    size = FRAME_SIZE
    name = "test camera"

    def __init__(self, fail_after: int, reopen_attempts: int) -> None:
        self.fail_after = fail_after
        self.reopen_attempts = reopen_attempts
        self.served = 0
        self.reopens = 0
        self.down = False
        self.closed = False
        self._frames = [person_frame(i) for i in range(8)]

    def read(self) -> np.ndarray | None:
        if self.served == self.fail_after and self.reopens == 0:
            self.down = True
        if self.down:
            return None
        time.sleep(1 / self.fps)
        self.served += 1
        return self._frames[self.served % len(self._frames)]

    def reopen(self) -> bool:
        self.reopens += 1
        self.down = self.reopens < self.reopen_attempts
        return not self.down

    def close(self) -> None:
        self.closed = True


def test_a_camera_that_vanishes_is_survived_and_reconnected(recording_vcam, modnet_path, caplog):
    caplog.set_level(logging.WARNING)
    settings = Settings(frames=30)
    camera = UnpluggedCamera(fail_after=10, reopen_attempts=2)
    sink = VirtualCameraSink(FRAME_SIZE, 30, backend="recording")
    session = MattingSession(get_spec("modnet"), modnet_path)
    pipeline = Pipeline(settings, camera, [sink], color_background("#0000ff", FRAME_SIZE), session, FRAME_SIZE)
    try:
        stats = pipeline.run()
    finally:
        pipeline.close()
    (vcam,) = recording_vcam
    assert stats.frames_out == 30 and stats.reconnects == 1
    assert stats.repeated >= 3  # about two seconds without a camera, the last frame re-sent
    # A black frame at the open (call apps list the camera at once), then every frame; never closed in between.
    assert len(vcam.frames) == 1 + stats.frames_out + stats.repeated and not vcam.images()[0].any()
    assert vcam.closed and camera.closed
    assert caplog.text.count("stopped delivering frames") == 1  # said once, not per frame
    assert "test camera is back" in caplog.text
    # The repeats are the last good frame, unchanged.
    images = vcam.images()
    repeats = sum(np.array_equal(a, b) for a, b in zip(images, images[1:]))
    assert repeats >= stats.repeated


def test_nobody_watching_closes_the_camera_and_a_viewer_reopens_it(recording_vcam, modnet_path):
    """The pipeline's side of the pause (tests/test_device.py checks it on a real device): while
    idle the camera is closed, so its light goes off, and nothing is read; a viewer reopens it."""
    camera = UnpluggedCamera(fail_after=10**6, reopen_attempts=1)
    sink = VirtualCameraSink(FRAME_SIZE, 30, backend="recording")
    session = MattingSession(get_spec("modnet"), modnet_path)
    pipeline = Pipeline(Settings(frames=20), camera, [sink], color_background("#0000ff", FRAME_SIZE), session,
                        FRAME_SIZE)
    watching = threading.Event()
    pipeline.idle = lambda: not watching.is_set()
    running = threading.Thread(target=pipeline.run)
    running.start()
    try:
        time.sleep(1.0)
        assert camera.closed and camera.served == 0 and camera.reopens == 0
        watching.set()
        running.join(60)
        assert camera.reopens == 1 and pipeline.stats.frames_out == 20
    finally:
        pipeline.abort()
        running.join()
        pipeline.close()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signals_stop_cleanly(person_video, modnet_path, sig):
    process = subprocess.Popen(
        [sys.executable, "-m", "vbg", "--input", str(person_video), "--loop", "--color", "#000000",
         "--output", "null"], stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    for line in process.stderr:  # wait until it runs
        if "model:" in line or time.time() > deadline:
            break
    time.sleep(1.0)
    process.send_signal(sig)
    _, rest = process.communicate(timeout=30)
    assert process.returncode == 0, rest
    assert "frames out" in rest and "Traceback" not in rest


@pytest.fixture
def virtual_display(monkeypatch):
    """A real X display (Xvfb) for the preview window; skipped where Xvfb is not installed."""
    import shutil
    if not shutil.which("Xvfb"):
        pytest.skip("Xvfb is not installed (.ci/run installs it)")
    display = ":87"
    server = subprocess.Popen(["Xvfb", display, "-screen", "0", "1024x768x24"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)
    monkeypatch.setenv("DISPLAY", display)
    yield display
    server.terminate()
    server.wait(10)


def test_preview_window_shows_the_output(virtual_display, person_video, tmp_path):
    # In a process of its own: the window's X connection must end with it. OpenCV's X client ends the
    # whole process with status 1 once its server is gone, even minutes later: in-process, this test's
    # Xvfb stopping ended two full CI runs of pytest during the PipeWire tests, with no summary.
    # Looped: a preview makes the run live, and a busy machine may drop most of the short clip
    # while the first matte is made.
    out = tmp_path / "out.avi"
    result = subprocess.run([sys.executable, "-m", "vbg", "--input", str(person_video), "--loop", "--color",
                             "#000000", "--preview", "--output", str(out), "--frames", "5"],
                            capture_output=True, text=True, timeout=180, env={**os.environ, "DISPLAY": virtual_display})
    assert result.returncode == 0, result.stderr
    assert "preview window" in result.stderr
    assert len(read_video(out)) == 5


def test_preview_without_a_display_is_a_clear_error(monkeypatch, person_video):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    with pytest.raises(VbgError, match="--preview needs a display"):
        run_settings(Settings(input=str(person_video), preview=True, output="null", frames=1))


class BrokenModel:
    """Stands in for a session whose inference fails (a GPU driver crash, say)."""

    provider = "BrokenExecutionProvider"
    every_frame = False

    def go_live(self, live, clock=None):
        pass

    def close(self):
        pass

    def input_shape(self, frame_hw):
        return frame_hw

    def prepare(self, frame, source=None):
        return {}

    def run(self, feeds):
        raise RuntimeError("inference exploded")

    def reset(self):
        pass


def test_a_failing_stage_stops_the_run_and_reports_its_error(recording_vcam):
    camera = UnpluggedCamera(fail_after=10_000, reopen_attempts=1)
    sink = VirtualCameraSink(FRAME_SIZE, 30, backend="recording")
    pipeline = Pipeline(Settings(), camera, [sink], color_background("#000000", FRAME_SIZE), BrokenModel(),
                        FRAME_SIZE)
    started = time.perf_counter()
    with pytest.raises(RuntimeError, match="inference exploded"):
        pipeline.run()
    pipeline.close()
    assert time.perf_counter() - started < 10  # nothing hangs waiting for a matte that never comes
    assert recording_vcam[0].closed


class CostlyMattes:
    """A session whose mattes cost 5 ms, or ``fine_s`` once made :meth:`finer`."""

    provider = "test"
    every_frame = True

    def __init__(self, fine_s: float) -> None:
        self.fine_s = fine_s
        self.fine = False
        self.sizes: list[tuple[int, int]] = []

    def go_live(self, live, clock=None):
        pass

    def close(self):
        pass

    def reset(self):
        pass

    def input_shape(self, frame_hw):
        return (72, 128) if self.fine else (36, 64)

    def prepare(self, frame, source=None):
        return {"frame": frame}

    def run(self, feeds):
        time.sleep(self.fine_s if self.fine else 0.005)
        self.sizes.append(feeds["frame"].shape[:2])
        return np.ones(feeds["frame"].shape[:2], np.float32)

    def finer(self, fine):
        self.fine, was = fine, self.fine
        return fine != was


class SlowFirstMatte(CostlyMattes):
    """Mattes that cost 5 ms each but the first, 0.6 s (the hybrid's first after a reset is MODNet's own)."""

    def __init__(self) -> None:
        super().__init__(fine_s=0.005)
        self.first = True

    def run(self, feeds):
        if self.first:
            self.first = False
            time.sleep(0.6)
        return super().run(feeds)


@pytest.mark.parametrize("warm", [False, True])
def test_a_warm_start_shows_every_frame_of_a_short_clip_from_a_model_that_mattes_each_frame(warm):
    """`vbg eval --live` scores each clip as part of a running call: capture waits for the first
    matte. With a session that mattes every frame itself (the hybrid) it did not, and the frames
    captured meanwhile were dropped, never shown nor scored (6 at each dev clip's start)."""
    source = SyntheticSource((320, 180), 10.0, frames=15)
    pipeline = Pipeline(Settings(mode="color"), source, [NullSink()], color_background("#00ff00", (320, 180)),
                        SlowFirstMatte(), (320, 180))
    pipeline.warm_start = warm
    shown: list[int] = []
    pipeline.taps.append(lambda packet: shown.append(packet.index))
    try:
        stats = pipeline.run()
    finally:
        pipeline.close()
    if warm:
        assert shown == list(range(15)) and stats.dropped == 0
    else:  # what a camera's first second costs: frames captured while the first matte is made
        assert len(shown) < 15 and stats.dropped > 0


@pytest.mark.parametrize("fine_s, fine_at_end", [(0.06, False), (0.005, True)])
def test_finer_mattes_where_the_cpu_affords_them_and_coarse_for_good_where_not(fine_s, fine_at_end, caplog):
    """The hybrid makes live mattes at the fast model's size, and at the detail model's once the
    pipeline sees its matte thread mostly idle; where those drop frames (a slow CPU), it goes back
    and stays there."""
    session = CostlyMattes(fine_s)
    pipeline = Pipeline(Settings(mode="color", frames=150), SyntheticSource((320, 180), 30.0, frames=150),
                        [NullSink()], color_background("#00ff00", (320, 180)), session, (320, 180))
    with caplog.at_level(logging.INFO, logger="vbg.pipeline"):
        stats = pipeline.run()
    pipeline.close()
    assert session.sizes[0] == (36, 64) and (72, 128) in session.sizes  # coarse first, then finer was tried
    assert session.fine is fine_at_end and stats.fine_mattes is fine_at_end
    assert "live mattes at 128x72 instead of 64x36" in caplog.text
    assert ("cost more than this CPU has between two frames" in caplog.text) is not fine_at_end
    switches = sum(size != before for before, size in zip(session.sizes, session.sizes[1:]))
    assert switches == (1 if fine_at_end else 2)  # once refused, never tried again


class ListSink:
    name = "list"
    live = False

    def __init__(self) -> None:
        self.frames: list[np.ndarray] = []

    def write(self, frame: np.ndarray) -> bool:
        self.frames.append(frame)
        return True

    def close(self) -> None:
        pass


def test_a_file_gets_each_frame_once_however_long_a_matte_takes():
    """A live output repeats the last frame while the next is late (a camera must stay fed); a file
    must not: on a slow CPU a 90-frame clip became 141-153 frames."""
    session = CostlyMattes(0.4)  # longer than the 0.25 s after which live output repeats a frame
    session.fine = True
    sink = ListSink()
    pipeline = Pipeline(Settings(mode="color"), SyntheticSource((320, 180), 30.0, frames=3, paced=False), [sink],
                        color_background("#00ff00", (320, 180)), session, (320, 180))
    stats = pipeline.run()
    pipeline.close()
    assert not pipeline.live and stats.frames_out == 3
    assert len(sink.frames) == 3


def test_beside_a_live_output_a_file_gets_no_repeated_frames():
    """The camera is kept fed with repeats while a frame is late; a file recorded beside it (or a
    preview) gets each frame once."""
    session = CostlyMattes(0.4)
    session.fine = True
    camera, recording = ListSink(), ListSink()
    camera.live = True
    pipeline = Pipeline(Settings(mode="color"), SyntheticSource((320, 180), 30.0, frames=12), [camera, recording],
                        color_background("#00ff00", (320, 180)), session, (320, 180))
    stats = pipeline.run()
    pipeline.close()
    assert pipeline.live and stats.repeated > 0
    assert len(recording.frames) == stats.frames_out and len(camera.frames) == stats.frames_out + stats.repeated
