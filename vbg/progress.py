"""Progress bars for the steps of a first run that take more than a few seconds (downloading a
wheel, calibrating int8), on stderr where that is a terminal and nowhere else (a log, a pipe)."""

from __future__ import annotations

import os
import sys

from tqdm import tqdm

FALLBACK_SIZE = (80, 24)  # columns, lines


def _terminal_size() -> tuple[int, int]:
    try:
        size = os.get_terminal_size(sys.stderr.fileno())
    except (AttributeError, OSError, ValueError):
        return 0, 0
    return size.columns, size.lines


def bar(desc: str, total: float | None = None, unit: str = "it", unit_scale: bool = False) -> tqdm:
    """A bar that vanishes when done. A terminal that reports its size as 0x0 (a pty made by
    `script`, some IDE consoles) gets none from tqdm at all: it is given 80x24 instead."""
    columns, lines = _terminal_size()
    return tqdm(total=total, desc=desc, unit=unit, unit_scale=unit_scale, leave=False, disable=None,
                file=sys.stderr, ncols=None if columns else FALLBACK_SIZE[0],
                nrows=None if lines else FALLBACK_SIZE[1])
