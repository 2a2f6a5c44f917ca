"""Frame sources: a camera, a video file, a still image, a folder of frames.

Every source has the same small surface (:class:`Source`): ``read()`` returns the
next BGR uint8 frame, or ``None`` when there is none. For a source that can
reconnect (a camera) ``None`` means "lost for now" and the pipeline calls
``reopen()`` until it returns True; for the others ``None`` is the end.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, Protocol

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from vbg.errors import VbgError
from vbg.files import open_regular
from vbg.imaging import to_bgr

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
DEFAULT_STILL_FPS = 30.0
# Checked in the header, before decoding: e.g. 10000x8000, 240 MB decoded (and below Pillow's own bomb warning).
MAX_IMAGE_PIXELS = 80_000_000


class Source(Protocol):
    """What the pipeline needs of a frame source."""

    name: str
    fps: float
    size: tuple[int, int]  # (width, height) of the frames it delivers
    live: bool  # frames come at their own pace; a slow pipeline must drop, not block
    paced: bool  # the pipeline must release frames at ``fps`` (a file standing in for a camera)
    reconnectable: bool  # ``read() is None`` means lost, not ended

    def read(self) -> np.ndarray | None: ...

    def reopen(self) -> bool: ...

    def close(self) -> None: ...


def _fourcc_text(code: float) -> str:
    value = int(code)
    return "".join(chr((value >> 8 * i) & 0xFF) for i in range(4)).strip("\0 ") or "?"


def _opencv_errors_only() -> None:
    if hasattr(cv2.utils, "logging"):  # OpenCV >= 4.13
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    else:  # OpenCV 4.8-4.12, the oldest pyproject.toml allows
        cv2.setLogLevel(2)  # LOG_LEVEL_ERROR


class CameraSource:
    """A webcam through OpenCV (V4L2 on Linux), by index or device path."""

    live = True
    paced = False  # the camera itself delivers at its rate
    reconnectable = True

    def __init__(self, device: str, size: tuple[int, int], fps: float, fourcc: str) -> None:
        self.device = device
        self.name = f"camera {device}"
        self._wanted = (size, fps, fourcc)
        self._capture = self._open()
        if self._capture is None:
            raise VbgError(
                f"camera {device} could not be opened: check it is plugged in and that you may use it "
                "(group 'video'), pick another with --camera N or /dev/videoN, or use --input FILE"
            )
        self._first = self._capture.read()[1]
        if self._first is None:
            self._capture.release()
            raise VbgError(
                f"camera {device} opened but delivers no frames: another app is probably using it; "
                "close that app or pick another --camera"
            )
        cap = self._capture
        self.size = (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
        self.fps = cap.get(cv2.CAP_PROP_FPS) or fps
        self.delivered = f"{self.size[0]}x{self.size[1]} @ {self.fps:g} fps {_fourcc_text(cap.get(cv2.CAP_PROP_FOURCC))}"
        log.info("%s delivers %s (asked for %dx%d @ %g fps %s)", self.name, self.delivered,
                 size[0], size[1], fps, fourcc)

    def _open(self) -> cv2.VideoCapture | None:
        target: int | str = int(self.device) if self.device.isdigit() else self.device
        _opencv_errors_only()  # our message, not OpenCV's
        api = cv2.CAP_V4L2 if sys.platform.startswith("linux") else cv2.CAP_ANY
        capture = cv2.VideoCapture(target, api)
        if not capture.isOpened():
            capture.release()
            return None
        (width, height), fps, fourcc = self._wanted
        capture.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter_fourcc(*fourcc.ljust(4)[:4]))
        capture.set(cv2.CAP_PROP_FRAME_WIDTH, width)
        capture.set(cv2.CAP_PROP_FRAME_HEIGHT, height)
        capture.set(cv2.CAP_PROP_FPS, fps)
        capture.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # the newest frame, not a queue of old ones
        return capture

    def read(self) -> np.ndarray | None:
        if self._first is not None:
            frame, self._first = self._first, None
            return frame
        if self._capture is None:
            return None
        ok, frame = self._capture.read()
        return frame if ok else None

    def reopen(self) -> bool:
        self.close()
        self._capture = self._open()
        if self._capture is None:
            return False
        ok, self._first = self._capture.read()
        return bool(ok)

    def close(self) -> None:
        if self._capture is not None:
            self._capture.release()
            self._capture = None


class _FileSource:
    """Shared looping for sources that read from files.

    ``paced``: the frames stand in for a camera (a live output), so the pipeline
    releases them at ``fps`` and may drop; unpaced, they are read as fast as the
    pipeline takes them and nothing is dropped.
    """

    reconnectable = False

    def __init__(self, name: str, fps: float, loop: bool, paced: bool) -> None:
        self.name = name
        self.fps = fps
        self.loop = loop
        self.live = self.paced = paced

    def _next_frame(self) -> np.ndarray | None:
        raise NotImplementedError

    def _rewind(self) -> bool:
        raise NotImplementedError

    def read(self) -> np.ndarray | None:
        frame = self._next_frame()
        if frame is None and self.loop and self._rewind():
            frame = self._next_frame()
        return frame

    def reopen(self) -> bool:
        return False

    def close(self) -> None:
        pass


class VideoFileSource(_FileSource):
    """A video file decoded by OpenCV (FFmpeg)."""

    def __init__(self, path: Path, *, loop: bool = False, paced: bool = False) -> None:
        with opencv_name(path, "video") as name:
            self._capture = cv2.VideoCapture(name)
        first = self._capture.read()[1] if self._capture.isOpened() else None
        if first is None:
            self._capture.release()
            raise VbgError(f"cannot decode video {path}: OpenCV/FFmpeg found no frame in it; it is truncated "
                           "(an unfinished download or recording) or not a video")
        fps = self._capture.get(cv2.CAP_PROP_FPS)
        super().__init__(f"video {path.name}", fps if 1 <= fps <= 240 else DEFAULT_STILL_FPS, loop, paced)
        self.path = path
        self.size = (first.shape[1], first.shape[0])
        self._first: np.ndarray | None = first

    def _next_frame(self) -> np.ndarray | None:
        if self._first is not None:
            frame, self._first = self._first, None
            return frame
        ok, frame = self._capture.read()
        return frame if ok else None

    def _rewind(self) -> bool:
        return self._capture.set(cv2.CAP_PROP_POS_FRAMES, 0)

    def close(self) -> None:
        self._capture.release()


class ImagesSource(_FileSource):
    """A still image (repeated when ``loop``) or a folder of frames (in name order).

    ``preload``: every frame is decoded before the first is delivered, so delivering one costs
    what a camera's costs, not a PNG decode (`vbg eval --live` on short clips)."""

    def __init__(self, paths: list[Path], name: str, *, loop: bool = False, paced: bool = False,
                 fps: float = DEFAULT_STILL_FPS, preload: bool = False) -> None:
        super().__init__(name, fps, loop, paced)
        self._paths = paths
        self._position = 0
        first = read_image(paths[0])
        self.size = (first.shape[1], first.shape[0])
        # Frames kept decoded: a still image (delivered again and again) or every frame when preloaded.
        self._decoded = [first, *map(read_image, paths[1:])] if (preload or len(paths) == 1) else None

    def _next_frame(self) -> np.ndarray | None:
        if self._position >= len(self._paths):
            return None
        self._position += 1
        if self._decoded is not None:
            return self._decoded[self._position - 1].copy()
        return read_image(self._paths[self._position - 1])

    def _rewind(self) -> bool:
        self._position = 0
        return True


class SyntheticSource(_FileSource):
    """A generated clip: a bright disc sweeping over a colour gradient, ``frames`` long
    (endless if None). For benchmarks without a camera or media, and for tests."""

    def __init__(self, size: tuple[int, int] = (1280, 720), fps: float = 30.0, *, frames: int | None = None,
                 paced: bool = True) -> None:
        super().__init__(f"synthetic {size[0]}x{size[1]}", fps, False, paced)
        self.size = size
        self.frames = frames
        self._index = 0
        w, h = size
        x = np.linspace(0, 255, w, dtype=np.float32)[None, :]
        y = np.linspace(0, 255, h, dtype=np.float32)[:, None]
        self._backdrop = np.dstack([np.broadcast_to(x, (h, w)), np.broadcast_to(y, (h, w)),
                                    np.broadcast_to((x + y) / 2, (h, w))]).astype(np.uint8)

    def _next_frame(self) -> np.ndarray | None:
        if self.frames is not None and self._index >= self.frames:
            return None
        w, h = self.size
        frame = self._backdrop.copy()
        centre = (int(w / 2 + w / 3 * np.sin(self._index / 20)), h // 2)
        cv2.circle(frame, centre, h // 4, (230, 220, 210), -1)
        self._index += 1
        return frame

    def _rewind(self) -> bool:
        return False


def _truncation(data: bytes) -> str:
    """What shows that a JPEG or PNG file ends early ('' when nothing does): their decoders
    draw the missing part grey or fail with a line of their own on stderr, so it is checked first.
    A JPEG ends with its end-of-image marker (a motion photo's video may follow it); a PNG with IEND."""
    if data.startswith(b"\xff\xd8\xff"):
        end = data.rfind(b"\xff\xd9")
        ends = end >= 0 and (not data[end + 2:].strip(b"\0\r\n\t ") or data[end + 6:end + 10] == b"ftyp")
        return "" if ends else "it ends before JPEG's end-of-image marker"
    if data.startswith(b"\x89PNG\r\n\x1a\n") and b"IEND" not in data[-12:]:
        return "it ends before PNG's IEND chunk"
    return ""


def image_size(file: BinaryIO) -> tuple[int, int]:
    """(width, height) from an open image file's header, read by Pillow without decoding the pixels."""
    with warnings.catch_warnings():  # Pillow's bomb warning: the caller applies its own, lower limit
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with Image.open(file) as image:
            return image.size


@contextlib.contextmanager
def _image_file(path: Path) -> Iterator[BinaryIO]:
    """``path`` opened, once it is known to be a regular file whose header names an image of
    at most :data:`MAX_IMAGE_PIXELS` (a small PNG can hold 20000x20000, gigabytes decoded)."""
    with os.fdopen(open_regular(path, "image"), "rb") as file:
        limit = f"over the {MAX_IMAGE_PIXELS // 1_000_000} megapixels vbg decodes; save a smaller copy"
        try:
            width, height = image_size(file)
        except Image.DecompressionBombError:  # Pillow's own limit, far above ours
            raise VbgError(f"image {path} is {limit}") from None
        except (UnidentifiedImageError, OSError, ValueError):
            raise VbgError(f"cannot read image {path}: not an image format vbg can decode") from None
        if width * height > MAX_IMAGE_PIXELS:
            raise VbgError(f"image {path} is {width}x{height}, {limit}")
        file.seek(0)
        yield file


def check_image(path: Path) -> None:
    """Raise the :class:`VbgError` that :func:`read_image` would, from the header alone (cheap)."""
    with _image_file(path):
        pass


def read_image(path: Path) -> np.ndarray:
    """A BGR uint8 image from disk, or a :class:`VbgError` naming the file (a truncated one too).

    Decoded from the file's bytes: OpenCV's own file functions crash on a name that is not
    valid UTF-8.
    """
    with _image_file(path) as file:
        data = file.read()
    truncated = _truncation(data)
    if truncated:
        raise VbgError(f"image {path} is truncated ({truncated}): an unfinished download or copy; "
                       "save or copy it again")
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise VbgError(f"cannot read image {path}: not an image format OpenCV can decode")
    return to_bgr(image)


@contextlib.contextmanager
def opencv_name(path: Path, what: str) -> Iterator[str]:
    """A name under which OpenCV (FFmpeg) can open the regular file ``path``, valid while in use.

    OpenCV crashes on a name that is not valid UTF-8 (undecodable bytes in a file name), so
    such a file is handed over as this process's own open descriptor of it (/proc/self/fd/N,
    Linux); elsewhere it is refused. A FIFO in a file's place is refused (FFmpeg would block).
    """
    fd = open_regular(path, what)
    try:
        name = str(path)
        if not is_utf8(name):
            if not os.path.isdir("/proc/self/fd"):
                raise VbgError(f"{what} {path}: OpenCV cannot open a file whose name is not valid UTF-8; "
                               "rename it")
            name = f"/proc/self/fd/{fd}"
        yield name
    finally:
        os.close(fd)


def is_utf8(name: str) -> bool:
    """False for a name holding undecodable bytes of a file name (Python's surrogate escapes)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def open_input(path_text: str, *, loop: bool, paced: bool) -> Source:
    """A source for ``--input``: a folder of frames, a still image or a video file."""
    path = Path(path_text).expanduser()
    if not path.exists():
        raise VbgError(f"input {path} does not exist; give a video file, an image or a folder of frames")
    if path.is_dir():
        frames = sorted(p for p in path.iterdir() if is_image_file(p))
        if not frames:
            raise VbgError(f"input folder {path} holds no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
        return ImagesSource(frames, f"folder {path.name}", loop=loop, paced=paced)
    if is_image_file(path):
        # A still image into a live output repeats, as a camera pointed at a photo would.
        return ImagesSource([path], f"image {path.name}", loop=loop or paced, paced=paced)
    return VideoFileSource(path, loop=loop, paced=paced)
