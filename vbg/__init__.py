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

from vbg.config import Settings, load_settings  # noqa: E402
from vbg.errors import VbgError  # noqa: E402
from vbg.live import run  # noqa: E402

__all__ = ["Settings", "VbgError", "load_settings", "run"]
__version__ = "0.1.0"
