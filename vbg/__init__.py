"""vbg: real-time webcam virtual background.

The public surface is small: :func:`run` drives the whole pipeline from a
:class:`Settings`, and sources, sinks and models each sit behind one small protocol
(:mod:`vbg.sources`, :mod:`vbg.sinks`, :mod:`vbg.registry`).
"""

from vbg.config import Settings, load_settings
from vbg.errors import VbgError
from vbg.live import run

__all__ = ["Settings", "VbgError", "load_settings", "run"]
__version__ = "0.1.0"
