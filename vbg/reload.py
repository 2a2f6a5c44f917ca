"""Hot reload: an edit to the --config file reaches the running pipeline within a second.

A bad edit is reported and ignored (the last good settings stay); settings that
cannot change while running (camera, model, output, ...) are named as needing a restart.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from vbg.config import read_config
from vbg.errors import VbgError

if TYPE_CHECKING:
    from vbg.pipeline import Pipeline

log = logging.getLogger(__name__)

POLL_S = 0.25


class ConfigWatcher:
    """Polls ``path`` and applies changed live settings to ``pipeline``.

    ``pinned`` are the keys given on the command line: they keep winning over the file.
    """

    def __init__(self, path: Path, pipeline: Pipeline, pinned: frozenset[str] = frozenset()) -> None:
        from vbg.pipeline import LIVE_SETTINGS

        self.path = path
        self.pipeline = pipeline
        self.pinned = pinned
        self.live_keys = LIVE_SETTINGS
        self.reloads = 0
        self._seen = self._signature()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="config-watch", daemon=True)

    def _signature(self) -> tuple[int, int] | None:
        try:
            stat = self.path.stat()
        except OSError:
            return None
        return stat.st_mtime_ns, stat.st_size

    def start(self) -> "ConfigWatcher":
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)

    def _watch(self) -> None:
        while not self._stop.wait(POLL_S):
            signature = self._signature()
            if signature != self._seen and signature is not None:
                self._seen = signature
                self.reload()

    def reload(self) -> bool:
        """Apply the file as it is now; False (and a warning) if it is bad."""
        try:
            values = read_config(self.path)
        except VbgError as exc:
            log.warning("%s; keeping the last good settings", exc)
            return False
        current = self.pipeline.settings
        wanted = {k: v for k, v in values.items() if k not in self.pinned and getattr(current, k) != v}
        restart = sorted(k for k in wanted if k not in self.live_keys)
        if restart:
            log.warning("config %s: %s only change on a restart", self.path, ", ".join(restart))
        changes = {k: v for k, v in wanted.items() if k in self.live_keys}
        if not changes:
            return True
        try:
            self.pipeline.apply(**changes)
        except VbgError as exc:
            log.warning("config %s: %s; keeping the last good settings", self.path, exc)
            return False
        self.reloads += 1
        log.info("config %s reloaded: %s", self.path, ", ".join(f"{k}={v!r}" for k, v in changes.items()))
        return True
