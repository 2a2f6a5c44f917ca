"""A bounded, thread-safe queue between two pipeline stages.

Two policies: ``drop_oldest`` for live sources (a slow consumer never blocks the
producer; the oldest waiting item is discarded and counted) and ``block`` for
file-to-file runs (nothing is lost; the producer waits for room).
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Generic, TypeVar

T = TypeVar("T")

POLICIES = ("drop_oldest", "block")


class Closed(Exception):
    """Raised by :meth:`RingBuffer.get` once the buffer is closed and empty."""


class RingBuffer(Generic[T]):
    def __init__(self, capacity: int, policy: str = "drop_oldest") -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        if policy not in POLICIES:
            raise ValueError(f"policy must be one of {POLICIES}")
        self.capacity = capacity
        self.policy = policy
        self.put_count = 0
        self.dropped = 0
        self._items: deque[T] = deque()
        self._closed = False
        self._changed = threading.Condition()

    def __len__(self) -> int:
        with self._changed:
            return len(self._items)

    @property
    def closed(self) -> bool:
        return self._closed

    def put(self, item: T) -> bool:
        """Add ``item``; returns False (and drops it) if the buffer is already closed."""
        with self._changed:
            if self.policy == "block":
                self._changed.wait_for(lambda: self._closed or len(self._items) < self.capacity)
            if self._closed:
                return False
            if len(self._items) >= self.capacity:
                self._items.popleft()
                self.dropped += 1
            self._items.append(item)
            self.put_count += 1
            self._changed.notify_all()
            return True

    def get(self, timeout: float | None = None) -> T | None:
        """The oldest item; ``None`` after ``timeout`` seconds; :class:`Closed` once closed and drained."""
        with self._changed:
            if not self._changed.wait_for(lambda: self._items or self._closed, timeout):
                return None
            if not self._items:
                raise Closed
            item = self._items.popleft()
            self._changed.notify_all()
            return item

    def close(self) -> None:
        """No more puts; getters drain what is left, then see :class:`Closed`."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()


class Latest(Generic[T]):
    """A single slot holding the newest value published by one stage for another.

    The live pipeline composites every frame with the newest matte rather than
    waiting for a matte of its own: inference then never holds up output.
    """

    def __init__(self) -> None:
        self._value: T | None = None
        self.version = 0
        self._closed = False
        self._changed = threading.Condition()

    def publish(self, value: T) -> None:
        with self._changed:
            self._value = value
            self.version += 1
            self._changed.notify_all()

    def wait(self, timeout: float | None = None) -> T | None:
        """The newest value, waiting up to ``timeout`` seconds for the first one
        (``None`` if none came in time, or the slot was closed first)."""
        return self.wait_newer(0, timeout)[0]

    def wait_newer(self, seen: int, timeout: float | None = None) -> tuple[T | None, int]:
        """(value, version) once a value newer than version ``seen`` is published; the old
        pair after ``timeout`` seconds or once the slot is closed."""
        with self._changed:
            self._changed.wait_for(lambda: self.version > seen or self._closed, timeout)
            return self._value, self.version

    def close(self) -> None:
        """Release every waiter; later waits return at once."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()
