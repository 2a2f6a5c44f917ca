"""A live session: the pipeline with what is attached to it while it runs.

The pipeline itself knows nothing of the control server or the config watcher
(no import loops); this module builds it, attaches them, and pauses capture and
inference while nobody consumes the output.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from vbg.config import Settings
from vbg.pipeline import Pipeline, RunStats, build
from vbg.reload import ConfigWatcher
from vbg.remote import check_port
from vbg.errors import VbgError
from vbg.pipewire import PipeWireSink
from vbg.sinks import NullSink, VirtualCameraSink, discard_unfinished
from vbg.sources import Source

if TYPE_CHECKING:
    from vbg.server import ControlServer


@contextlib.contextmanager
def _stop_on_signals(stop: Callable[[], None]):
    """Ctrl-C and SIGTERM stop the pipeline cleanly instead of killing it mid-frame."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    handler = lambda signum, frame: stop()  # noqa: E731
    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def nobody_watching(pipeline: Pipeline, server: ControlServer | None) -> Callable[[], bool] | None:
    """A test for "no one consumes the output" where it can be answered, else None.

    A live run into cameras (the virtual camera on Linux, where readers can be counted;
    the PipeWire camera, whose links are its readers) or only into the OBS page is idle
    while none of them has a reader and the page no stream viewer. A preview window or
    a file always counts as watching.
    """
    if not pipeline.live:
        return None
    cameras = [s for s in pipeline.sinks if isinstance(s, (VirtualCameraSink, PipeWireSink))]
    if any(not isinstance(s, (VirtualCameraSink, PipeWireSink, NullSink)) for s in pipeline.sinks) or (
            not cameras and not server):
        return None

    def idle() -> bool:
        if server is not None and server.stream.viewers:
            return False
        return all(camera.readers() == 0 for camera in cameras)
    return idle


def run(settings: Settings, source: Source | None = None, *, config: Path | None = None,
        pinned: frozenset[str] = frozenset(), on_serve: Callable[[ControlServer], None] | None = None) -> RunStats:
    """Run vbg with ``settings`` until the source ends, ``settings.frames`` are out, or Ctrl-C.

    ``source``, if given, replaces the camera or file that ``settings`` name. ``config``
    is watched and reloaded while running, except for the ``pinned`` keys (given on the
    command line). ``on_serve`` is told the control server once it listens (the CLI prints
    its address). Raises :class:`~vbg.errors.VbgError` for anything the user can fix.
    """
    if settings.serve:
        check_port(settings.host, settings.port)  # now, not after a first run's model download
    pipeline = build(settings, source)
    with contextlib.ExitStack() as running:
        running.callback(pipeline.close)
        running.enter_context(_stop_on_signals(pipeline.abort))  # before the address is printed
        server = None
        if settings.serve:
            from vbg.server import ControlServer  # aiohttp loads only for --serve
            server = ControlServer(pipeline, settings.host, settings.port, settings.token)
            running.callback(server.close)
            if on_serve is not None:
                on_serve(server)
        if config is not None:
            running.callback(ConfigWatcher(Path(config), pipeline, pinned).start().close)
        pipeline.idle = nobody_watching(pipeline, server)
        try:
            return pipeline.run()
        except VbgError as exc:
            removed = discard_unfinished(pipeline.sinks)
            if not removed:
                raise
            raise VbgError(f"{exc} (the unfinished {', '.join(map(str, removed))} was removed)") from None
        except BaseException:
            discard_unfinished(pipeline.sinks)
            raise
