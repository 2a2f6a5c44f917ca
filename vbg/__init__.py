"""vbg: real-time webcam virtual background.

The public surface is small: :func:`run` drives the whole pipeline from a
:class:`Settings`, and sources, sinks and models each sit behind one small protocol
(:mod:`vbg.sources`, :mod:`vbg.sinks`, :mod:`vbg.registry`).
"""

import os

# Before anything imports cv2, which reads these once: OpenCV's warnings and FFmpeg's own lines
# ("moov atom not found", a writer's codec probing) reach the terminal beside vbg's one-line
# error that says the same for people. Set either variable yourself to see them again.
os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET

from typing import TYPE_CHECKING  # noqa: E402

from vbg.config import Settings, load_settings  # noqa: E402
from vbg.errors import VbgError  # noqa: E402

if TYPE_CHECKING:
    from vbg.live import run

__all__ = ["Settings", "VbgError", "load_settings", "run"]
__version__ = "0.1.0"


def __getattr__(name: str):
    """``vbg.run`` loads the pipeline (OpenCV, onnxruntime, aiohttp: 0.7 s on a 2-core CPU) when
    first used, so that ``vbg toggle`` from a hotkey, ``vbg get`` and ``vbg --help``, which
    import this package too, answer without it."""
    if name == "run":
        from vbg.live import run
        return run
    raise AttributeError(f"module 'vbg' has no attribute {name!r}")
