"""Frame sinks: the virtual camera, the PipeWire camera (:mod:`vbg.pipewire`), a video file, a
preview window, nothing.

Every sink has the same small surface (:class:`Sink`): ``write(frame)`` takes one BGR
uint8 frame of the output size and returns False when the person asked to stop
(closing the preview); ``close()`` releases the device or file.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np
import pyvirtualcam

from vbg.errors import VbgError
from vbg.pipewire import PIPEWIRE_START, PipeWireSink, daemon_running

log = logging.getLogger(__name__)

V4L2LOOPBACK_SETUP = "sudo modprobe v4l2loopback devices=1 video_nr=10 card_label=vbg exclusive_caps=1"
READERS_CHECK_S = 1.0
VIDEO_FOURCCS = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".avi": "MJPG", ".mkv": "XVID"}


class Sink(Protocol):
    """What the pipeline needs of a frame sink."""

    name: str
    live: bool  # consumes frames in real time (so the pipeline may drop, never stall)

    def write(self, frame: np.ndarray) -> bool: ...

    def close(self) -> None: ...


class VirtualCameraSink:
    """A virtual camera through pyvirtualcam (v4l2loopback on Linux, OBS on Windows/macOS)."""

    live = True

    def __init__(self, size: tuple[int, int], fps: float, *, device: str | None = None,
                 backend: str | None = None) -> None:
        if backend is not None and backend not in pyvirtualcam.camera.BACKENDS:
            known = ", ".join(pyvirtualcam.camera.BACKENDS) or "none on this system"
            raise VbgError(f"unknown virtual camera backend '{backend}'; available: {known}")
        try:
            self._camera = pyvirtualcam.Camera(size[0], size[1], fps, fmt=pyvirtualcam.PixelFormat.BGR,
                                               device=device, backend=backend)
        except Exception as exc:  # pyvirtualcam reports every backend's failure as one RuntimeError
            reason = " ".join(str(exc).split())
            hint = (f"load v4l2loopback with `{V4L2LOOPBACK_SETUP}` and pass --vcam-device /dev/video10 "
                    "(`vbg doctor` checks the set-up)"
                    if sys.platform.startswith("linux") else "install OBS Studio and start its virtual camera once")
            raise VbgError(f"no virtual camera device ({reason}); {hint}; or use --output FILE|null") from None
        self.name = f"virtual camera {self._camera.device} ({self._camera.backend})"
        self._readers: int | None = None
        self._readers_checked = float("-inf")

    def write(self, frame: np.ndarray) -> bool:
        self._camera.send(frame)
        return True

    def readers(self) -> int | None:
        """How many other programs have the device open (None where the platform cannot tell)."""
        now = time.monotonic()
        if now - self._readers_checked > READERS_CHECK_S:
            self._readers_checked = now
            self._readers = processes_with_open(self._camera.device) if sys.platform.startswith("linux") else None
        return self._readers

    def close(self) -> None:
        self._camera.close()


def processes_with_open(path: str) -> int | None:
    """Other processes holding ``path`` open, read from /proc (None if it is not a file here)."""
    try:
        target = os.path.realpath(path)
        if not os.path.exists(target):
            return None
    except OSError:
        return None
    me, count = os.getpid(), 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == me:
            continue
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:  # gone, or not ours to look at
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") == target:
                    count += 1
                    break
            except OSError:
                continue
    return count


class VideoFileSink:
    """A video file written by OpenCV (FFmpeg); the container follows the suffix."""

    live = False

    def __init__(self, path: Path, size: tuple[int, int], fps: float) -> None:
        if path.is_dir():
            raise VbgError(f"cannot write video {path}: it is a folder; name a file in it, e.g. {path / 'out.mp4'}")
        suffix = path.suffix.lower()
        if suffix not in VIDEO_FOURCCS:
            raise VbgError(f"cannot write video {path}: use one of {', '.join(VIDEO_FOURCCS)}")
        if not path.parent.is_dir():
            raise VbgError(f"cannot write video {path}: folder {path.parent} does not exist")
        try:  # first ourselves: OpenCV's failure says neither why nor quietly
            path.open("ab").close()
        except OSError as exc:
            raise VbgError(f"cannot write video {path}: {(exc.strerror or str(exc)).lower()}; choose another --output") from None
        self._writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*VIDEO_FOURCCS[suffix]), fps, size)
        if not self._writer.isOpened():
            raise VbgError(f"cannot write video {path}: OpenCV could not open it for writing")
        self.path = path
        self.name = f"video {path}"

    def write(self, frame: np.ndarray) -> bool:
        self._writer.write(frame)
        return True

    def close(self) -> None:
        self._writer.release()

    def discard(self) -> None:
        """Close and delete the file of a run that failed part-way: an unfinished video has no
        index, and players reject it."""
        self.close()
        self.path.unlink(missing_ok=True)


def discard_unfinished(sinks: list[Sink]) -> list[Path]:
    """Delete the video files of a run that failed part-way; returns their paths."""
    files = [sink for sink in sinks if isinstance(sink, VideoFileSink)]
    for sink in files:
        sink.discard()
    return [sink.path for sink in files]


class PreviewSink:
    """A window showing the output; 'q', Esc or closing the window stops vbg.

    Other keys go to ``on_key`` (the pipeline sets it): b blur, n next background,
    m mirror, space passthrough on/off.
    """

    live = True
    name = "preview window"
    _TITLE = "vbg preview (q quit, b blur, n next background, m mirror, space passthrough)"
    on_key: Callable[[str], None] | None = None

    def __init__(self) -> None:
        headless = sys.platform.startswith("linux") and not any(
            os.environ.get(v) for v in ("DISPLAY", "WAYLAND_DISPLAY"))
        if headless:
            raise VbgError("--preview needs a display (DISPLAY is not set); drop --preview or run it in a desktop session")
        cv2.namedWindow(self._TITLE, cv2.WINDOW_NORMAL)
        self._shown = False

    def write(self, frame: np.ndarray) -> bool:
        cv2.imshow(self._TITLE, frame)
        key = cv2.waitKey(1) & 0xFF
        # A window not mapped yet (no window manager, a busy desktop) is not one the person closed:
        # only a window that was visible and no longer is counts as closed.
        visible = cv2.getWindowProperty(self._TITLE, cv2.WND_PROP_VISIBLE) >= 1
        closed, self._shown = self._shown and not visible, self._shown or visible
        if key in (ord("q"), 27) or closed:
            return False
        if key != 0xFF and self.on_key is not None:
            self.on_key(chr(key))
        return True

    def close(self) -> None:
        cv2.destroyWindow(self._TITLE)


class NullSink:
    """Discards frames (benchmarks, dry runs)."""

    live = False
    name = "null"

    def write(self, frame: np.ndarray) -> bool:
        return True

    def close(self) -> None:
        pass


def output_names(output: str | list[str]) -> list[str]:
    """``--output`` as a list: repeated options and comma-separated words (``vcam,pipewire``)."""
    items = [output] if isinstance(output, str) else list(output)
    names = [part.strip() for item in items for part in item.split(",") if part.strip()]
    if not names:
        raise VbgError("--output is empty; give auto, vcam, pipewire, null or a video file")
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise VbgError(f"--output names {', '.join(twice)} twice; give each output once")
    return names


def live_output(output: str | list[str]) -> bool:
    """Whether an output consumes frames in real time (so the source is paced like a camera)."""
    return any(name in ("auto", "vcam", "pipewire") for name in output_names(output))


def open_outputs(output: str | list[str], size: tuple[int, int], fps: float, *, vcam_device: str | None = None,
                 vcam_backend: str | None = None, pipewire_name: str = "vbg") -> list[Sink]:
    """The sinks for ``--output`` (one pipeline feeds them all); on failure, those opened are closed."""
    sinks: list[Sink] = []
    try:
        for name in output_names(output):
            sinks.append(open_output(name, size, fps, vcam_device=vcam_device, vcam_backend=vcam_backend,
                                     pipewire_name=pipewire_name))
    except BaseException:
        for sink in sinks:
            sink.close()
        raise
    return sinks


def open_output(output: str, size: tuple[int, int], fps: float, *, vcam_device: str | None = None,
                vcam_backend: str | None = None, pipewire_name: str = "vbg") -> Sink:
    """The sink for one ``--output`` word: 'auto', 'vcam', 'pipewire', 'null' or a video file path."""
    if output == "auto":
        return _default_camera(size, fps, vcam_device, vcam_backend, pipewire_name)
    if output == "vcam":
        return VirtualCameraSink(size, fps, device=vcam_device, backend=vcam_backend)
    if output == "pipewire":
        return PipeWireSink(size, fps, name=pipewire_name)
    if output == "null":
        return NullSink()
    return VideoFileSink(Path(output).expanduser(), size, fps)


def _default_camera(size: tuple[int, int], fps: float, vcam_device: str | None, vcam_backend: str | None,
                    pipewire_name: str) -> Sink:
    """The default output: the virtual camera device where there is one (or one was named), else
    a PipeWire camera where a PipeWire daemon runs, else the error naming both set-ups."""
    try:
        return VirtualCameraSink(size, fps, device=vcam_device, backend=vcam_backend)
    except VbgError as exc:
        if vcam_device or vcam_backend or not sys.platform.startswith("linux"):
            raise
        if not daemon_running():
            raise VbgError(f"{exc}; or start PipeWire (`{PIPEWIRE_START}`) for a PipeWire camera") from None
        log.info("no v4l2loopback camera opened (`vbg doctor` says why): the output is a PipeWire camera")
        log.debug("v4l2loopback: %s", exc)
    return PipeWireSink(size, fps, name=pipewire_name)
