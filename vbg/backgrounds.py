"""What goes behind the person: an image, a looped video, a blur of the frame, a colour.

Each background renders one BGR uint8 image of the output size per frame
(:meth:`render`); ``needs_matte`` is False only for passthrough, which skips
inference altogether.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from vbg.config import Settings, parse_color
from vbg.errors import VbgError
from vbg.files import not_regular
from vbg.imaging import cover_fit, shrink
from vbg.sources import VideoFileSource, is_image_file, read_image


class Background(Protocol):
    name: str
    needs_matte: bool

    def render(self, frame: np.ndarray, small: np.ndarray | None = None) -> np.ndarray:
        """The background for ``frame``; ``small``: the frame already shrunk (the matte's size),
        where the caller has it, for a background made from the frame at a reduced size."""
        ...

    def close(self) -> None: ...


class _Static:
    """A background that is the same image on every frame."""

    needs_matte = True

    def __init__(self, name: str, image: np.ndarray) -> None:
        self.name = name
        self._image = image

    def render(self, frame: np.ndarray, small: np.ndarray | None = None) -> np.ndarray:
        return self._image

    def close(self) -> None:
        pass


def image_background(path: Path, size: tuple[int, int]) -> _Static:
    return _Static(f"image {path.name}", np.ascontiguousarray(cover_fit(read_image(path), size)))


def color_background(color: str, size: tuple[int, int]) -> _Static:
    image = np.empty((size[1], size[0], 3), np.uint8)
    image[:] = parse_color(color)
    return _Static(f"colour {color}", image)


class VideoBackground:
    """A video file behind the person, looped, one background frame per output frame.

    It may be closed while the compositor still renders it (replaced while running):
    the capture is released at once and a render after that repeats the last image.
    """

    needs_matte = True

    def __init__(self, path: Path, size: tuple[int, int]) -> None:
        self.name = f"video {path.name}"
        self._video: VideoFileSource | None = VideoFileSource(path, loop=True)
        self._size = size
        self._last: np.ndarray | None = None
        self._lock = threading.Lock()

    def render(self, frame: np.ndarray, small: np.ndarray | None = None) -> np.ndarray:
        with self._lock:
            image = self._video.read() if self._video is not None else None
            if image is not None:
                self._last = cover_fit(image, self._size)
            elif self._video is not None or self._last is None:  # stopped decoding mid-way: go black
                self._last = np.zeros_like(frame)
            return self._last

    def close(self) -> None:
        with self._lock:
            if self._video is not None:
                self._video.close()
                self._video = None


class BlurBackground:
    """The frame itself, blurred; blurred on a downscaled copy so strong blur stays cheap."""

    needs_matte = True

    def __init__(self, strength: float) -> None:
        self.name = f"blur {strength:g}"
        self._sigma = float(strength)
        self._shrink = max(1, int(self._sigma // 3))  # sigma on the small image stays near 3

    def render(self, frame: np.ndarray, small: np.ndarray | None = None) -> np.ndarray:
        """Shrunk from ``small`` where that is at least the size the blur is made at (the hybrid's
        256x144 is for a 720p frame and strength 15), else from ``frame``."""
        h, w = frame.shape[:2]
        size = (max(1, w // self._shrink), max(1, h // self._shrink))
        start = frame if small is None or small.shape[1] < size[0] or small.shape[0] < size[1] else small
        blurred = cv2.GaussianBlur(shrink(start, size), (0, 0), self._sigma * size[0] / w)
        return cv2.resize(blurred, (w, h), interpolation=cv2.INTER_LINEAR)

    def close(self) -> None:
        pass


class Passthrough:
    """No background change: the camera image as it is, no inference."""

    needs_matte = False
    name = "passthrough"

    def render(self, frame: np.ndarray, small: np.ndarray | None = None) -> np.ndarray:
        return frame

    def close(self) -> None:
        pass


VIDEO_SUFFIXES = {".mp4", ".mov", ".m4v", ".webm", ".mkv", ".avi"}


def background_choices(settings: Settings) -> list[str]:
    """Background files to pick from: those in the ``backgrounds`` folder, and the current one."""
    choices = []
    if settings.backgrounds:
        folder = Path(settings.backgrounds).expanduser()
        if folder.is_dir():  # regular files only (no FIFO), and no link pointing out of the folder
            inside = folder.resolve()
            choices = [str(p) for p in sorted(folder.iterdir())
                       if p.is_file() and (is_image_file(p) or p.suffix.lower() in VIDEO_SUFFIXES)
                       and p.resolve().is_relative_to(inside)]
    if settings.background and settings.background not in choices:
        choices.insert(0, settings.background)
    return choices


def open_background(settings: Settings, size: tuple[int, int]) -> Background:
    """The background chosen by ``settings.mode`` for output frames of ``size`` (width, height)."""
    if settings.mode == "passthrough":
        return Passthrough()
    if settings.mode == "blur":
        return BlurBackground(settings.blur)
    if settings.mode == "color":
        return color_background(settings.color, size)
    path = background_path(settings)
    return image_background(path, size) if is_image_file(path) else VideoBackground(path, size)


def background_path(settings: Settings) -> Path:
    """The background file of mode 'image', checked to exist (cheap: done before a camera opens)."""
    if not settings.background:
        raise VbgError("mode 'image' needs a background: pass --bg IMAGE_OR_VIDEO")
    path = Path(settings.background).expanduser()
    if path.is_dir():
        raise VbgError(f"background {path} is a folder; pass one image or video file to --bg, "
                       "or the folder to --backgrounds to choose from it while running")
    if not path.is_file():
        problem = not_regular(path) if path.exists() else "does not exist"
        raise VbgError(f"background {path} {problem}; pass an image or video file to --bg")
    return path
