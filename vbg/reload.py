"""Hot reload: an edit to the --config file reaches the running pipeline within a second.

A bad edit is reported and ignored (the last good settings stay); settings that
cannot change while running (camera, model, output, ...) are named as needing a restart.
Whatever an edit holds, the watcher goes on watching: the next good edit applies.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vbg.config import read_config
from vbg.errors import VbgError
from vbg.files import not_regular

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

    def _signature(self) -> tuple[int, int, int, int] | None:
        try:
            status = self.path.stat()
        except OSError:
            return None
        return status.st_ino, status.st_mode, status.st_mtime_ns, status.st_size

    def start(self) -> ConfigWatcher:
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
                try:
                    self.reload()
                except Exception as exc:  # noqa: BLE001 - one odd edit must not end hot reload for the run
                    log.error("config %s: applying it failed (%s: %s); keeping the last good settings and "
                              "still watching", self.path, type(exc).__name__, exc)
                    log.debug("the failure in full (-v):", exc_info=True)

    def reload(self) -> bool:
        """Apply the file as it is now; False (and a warning) if it is bad.

        Each changed setting that the file gets wrong is reported and left as it was; the others
        apply, so a setting that stays wrong in the file does not hold back a later good edit."""
        problem = not_regular(self.path)
        if problem:
            log.warning("config %s %s; keeping the last good settings", self.path, problem)
            return False
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
        applied = self._apply(changes)
        if applied:
            self.reloads += 1
            log.info("config %s reloaded: %s", self.path, ", ".join(f"{k}={v!r}" for k, v in applied.items()))
        return applied == changes

    def _apply(self, changes: dict[str, Any]) -> dict[str, Any]:
        """Apply ``changes`` together; where the pipeline refuses them, each on its own (a new mode
        with the setting it needs: image with background, blur, colour); return what was applied."""
        try:
            self.pipeline.apply(**changes)
            return changes
        except VbgError as exc:
            if len(changes) == 1:
                log.warning("config %s: %s; keeping the last good settings", self.path, exc)
                return {}
        needs = {"image": "background", "blur": "blur", "color": "color"}.get(changes.get("mode"), "")
        mode = {k: v for k, v in changes.items() if k in ("mode", needs)} if "mode" in changes else {}
        groups = ([mode] if mode else []) + [{k: v} for k, v in changes.items() if k not in mode]
        applied: dict[str, Any] = {}
        for group in groups:
            try:
                self.pipeline.apply(**group)
                applied.update(group)
            except VbgError as exc:
                log.warning("config %s: %s; keeping the last good %s", self.path, exc, " and ".join(group))
        return applied
