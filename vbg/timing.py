"""Per-stage timing, recorded by the stage threads themselves, read by `vbg bench`."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np


class StageClock:
    """Wall time of each named stage, the last ``keep`` samples per stage."""

    def __init__(self, keep: int = 3_000) -> None:  # the last ~100 s at 30 fps; bounded memory
        self._keep = keep
        self._samples: dict[str, deque[float]] = {}
        self._counts: dict[str, int] = {}  # every sample, kept or not (one writer thread per stage)
        self._lock = threading.Lock()

    @contextmanager
    def time(self, stage: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.record(stage, time.perf_counter() - started)

    def record(self, stage: str, seconds: float) -> None:
        samples = self._samples.get(stage)
        if samples is None:
            with self._lock:
                self._counts.setdefault(stage, 0)  # before the samples: summary() reads both
                samples = self._samples.setdefault(stage, deque(maxlen=self._keep))
        samples.append(seconds)
        self._counts[stage] += 1

    def summary(self) -> dict[str, dict[str, float]]:
        """``{stage: {"mean_ms", "p95_ms", "count"}}``: times over the kept (latest) samples, the
        count over the whole run, in the order stages first ran."""
        result = {}
        for stage, samples in list(self._samples.items()):
            values = np.array(samples) * 1e3
            result[stage] = {"mean_ms": float(values.mean()), "p95_ms": float(np.percentile(values, 95)),
                             "count": self._counts[stage]}
        return result


class Pacer:
    """Releases one frame every ``1 / fps`` seconds, as a camera delivers them."""

    def __init__(self, fps: float) -> None:
        self.interval = 1.0 / fps
        self._next_due: float | None = None

    def wait(self) -> None:
        now = time.perf_counter()
        if self._next_due is None or now - self._next_due > 1.0:  # first frame, or far behind
            self._next_due = now
        elif self._next_due > now:
            time.sleep(self._next_due - now)
        self._next_due += self.interval
