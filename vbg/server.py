"""Local control panel and OBS browser source (`vbg --serve`), served by aiohttp.

* ``GET /`` the control page (with a small live preview); ``GET /api/state`` and
  ``POST /api/state`` the live settings.
* ``GET /obs`` a page for OBS's Browser Source: the person over a transparent page,
  streamed over a WebSocket (``/ws``) as a colour JPEG plus an alpha JPEG per frame
  (4-byte big-endian length of the colour JPEG, then both), joined in the browser.
  The colour image is black wherever alpha is 0: the room itself is never sent.
* ``GET /api/thumb?name=N`` thumbnails of the configured backgrounds, made once per file.

aiohttp (a maintained HTTP + WebSocket stack) runs on its own asyncio loop in a
background thread, so no request or viewer can hold up the pipeline; the pipeline
only drops its newest packet into a one-slot buffer that an encoder thread reads.

Who gets in: the ``Host`` header must name this server (DNS rebinding); ``/ws`` must come
from the server's own ``Origin`` (other web pages), and so must a POST that carries an
``Origin`` at all (browsers send one on every POST; a request without one is a program on
this computer, such as ``vbg set`` or curl); a POST must be ``application/json`` (no
"simple" cross-site request); off loopback every route but the page's scripts and style
needs the token (query ``token=`` or header ``X-Vbg-Token``; no cookie, which every other
server on this host would be sent too). A refused request's connection is closed. Only the
package's own ``web/`` files and the configured backgrounds are ever read; backgrounds are
addressed by name from their listing, never by path.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ipaddress
import json
import logging
import secrets
import socket
import struct
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import cv2
import numpy as np
from aiohttp import WSMsgType, web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.http_exceptions import HttpProcessingError

from vbg.backgrounds import VIDEO_SUFFIXES, background_choices
from vbg.compositing import Compositor
from vbg.config import SETTINGS_FIELDS, did_you_mean
from vbg.errors import VbgError
from vbg.pipeline import LIVE_SETTINGS
from vbg.remote import ServerFile, port_error
from vbg.ringbuffer import Latest
from vbg.sources import VideoFileSource, check_image, is_image_file, read_image

if TYPE_CHECKING:
    from vbg.pipeline import Packet, Pipeline

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 * 1024
MAX_HEADERS = 32  # and each header line at most MAX_LINE_BYTES: a request's head is at most about 256 kB
MAX_LINE_BYTES = 8190
MAX_CONNECTIONS = 64  # more open at once are closed on arrival
IDLE_TIMEOUT_S = 10.0  # a connection without a request for this long is closed
BODY_TIMEOUT_S = 10.0
STALL_TIMEOUT_S = 5.0  # a connection whose peer reads nothing of what it is sent for this long is closed
ALPHA_SHOWN = 17  # colour is sent where alpha (0-255) is at least this; fainter pixels are black
THUMB_CACHE_SIZE = 256  # thumbnails kept (about 5 kB each)
STREAM_JPEG_QUALITY = 85
THUMB_WIDTH = 160
WILDCARD_HOSTS = ("0.0.0.0", "::", "")
# (file in web/, content type) by route; every route is also guarded like the API.
FILES = {"/": ("index.html", "text/html; charset=utf-8"), "/obs": ("obs.html", "text/html; charset=utf-8"),
         "/control.js": ("control.js", "text/javascript"), "/stream.js": ("stream.js", "text/javascript"),
         "/obs.js": ("obs.js", "text/javascript"), "/style.css": ("style.css", "text/css")}
PUBLIC_FILES = {"/control.js", "/stream.js", "/obs.js", "/style.css"}  # the package's own code: no token needed
SECURITY_HEADERS = {
    # Scripts only from this server's own files: a background named with markup is text, never code.
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
                               "img-src 'self' blob: data:; connect-src 'self'; base-uri 'none'; "
                               "form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",  # the token in the address never leaves in a Referer
    "Cache-Control": "no-store",
}


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _is_own_address(host: str) -> bool:
    """Whether ``host`` is an IP address of this machine (it can be bound to)."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind((host, 0))
        except OSError:
            return False
    return True


def _lan_address() -> str:
    """This machine's address on its network (for a URL printed for --host 0.0.0.0); no packet is sent."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # TEST-NET-1: only picks the outgoing interface
            return probe.getsockname()[0]
        except OSError:
            return socket.gethostname()


class PersonStream:
    """Encodes the newest output packet once and hands it to every viewer's own queue.

    The encoder runs on its own thread; each viewer keeps only the newest message (a
    one-slot queue on the server loop), so a slow viewer misses frames, never delays
    the others, and the pipeline only publishes into a one-slot buffer (:meth:`offer`).
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, unmix: Callable[[], bool] = lambda: True) -> None:
        self._loop = loop
        self._unmix = unmix  # whether the person's edges are sent free of the old room (a live setting)
        self._compositor = Compositor()
        self._latest: Latest[Packet] = Latest()
        self._queues: set[asyncio.Queue[bytes]] = set()  # touched only on the loop
        self._count = 0  # read from the pipeline's threads
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="obs-stream", daemon=True)
        self._thread.start()

    @property
    def viewers(self) -> int:
        return self._count

    def offer(self, packet: Packet) -> None:
        if self._count:
            self._latest.publish(packet)

    def add(self, queue: asyncio.Queue[bytes]) -> None:
        self._queues.add(queue)
        self._count = len(self._queues)

    def remove(self, queue: asyncio.Queue[bytes]) -> None:
        self._queues.discard(queue)
        self._count = len(self._queues)

    def close(self) -> None:
        self._stop.set()
        self._latest.close()
        self._thread.join(5)

    def _run(self) -> None:
        sent = 0
        while not self._stop.is_set():
            packet, version = self._latest.wait_newer(sent, timeout=0.5)  # sleeps until a new packet
            if packet is None or version == sent:
                continue
            sent = version
            self._compositor.unmix = self._unmix()
            message = encode_person(packet, self._compositor)
            try:
                self._loop.call_soon_threadsafe(self._hand_out, message)
            except RuntimeError:  # the loop is closed: the server stopped
                return

    def _hand_out(self, message: bytes) -> None:
        for queue in self._queues:
            if queue.full():
                queue.get_nowait()  # newest frame wins
            queue.put_nowait(message)


def encode_person(packet: Packet, compositor: Compositor | None = None) -> bytes:
    """The person with real alpha: colour JPEG and alpha JPEG, length-prefixed.

    The colour is black wherever alpha is below 17 (of 255), so the stream never shows the room. With
    a ``compositor`` the colour is the person's own at the edges, free of the old room.
    """
    frame = packet.frame
    if packet.alpha is None:  # passthrough: the user chose to show the camera image as it is
        alpha8 = np.full(frame.shape[:2], 255, np.uint8)
    else:
        alpha = packet.alpha
        if compositor is not None:
            frame = compositor.foreground(frame, alpha, packet.edges)  # the pipeline's per-matte work, reused
        alpha8 = (alpha * 255.0 + 0.5).astype(np.uint8) if alpha.dtype != np.uint8 else alpha
        # A new image (the pipeline's frame is untouched), black where the person is all but transparent:
        # a pixel of alpha 1-16 adds at most 6 % of its colour, but its colour would carry the room.
        frame = cv2.bitwise_and(frame, frame, mask=cv2.inRange(alpha8, ALPHA_SHOWN, 255))
    colour = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, STREAM_JPEG_QUALITY])[1].tobytes()
    mask = cv2.imencode(".jpg", alpha8, [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes()
    return struct.pack(">I", len(colour)) + colour + mask


def make_thumbnail(path: str) -> bytes:
    """A small JPEG of an image file or of a video's first frame; KeyError if it cannot be read."""
    try:
        if is_image_file(Path(path)):
            image = read_image(Path(path))
        else:
            video = VideoFileSource(Path(path))
            image = video.read()
            video.close()
    except VbgError:
        raise KeyError(path) from None
    height = max(1, round(image.shape[0] * THUMB_WIDTH / image.shape[1]))
    small = cv2.resize(image, (THUMB_WIDTH, height), interpolation=cv2.INTER_AREA)
    return cv2.imencode(".jpg", small)[1].tobytes()


class _AccessLogger(AbstractAccessLogger):
    """Request lines at debug level, by path only: the token in a query never reaches a log."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.debug("http: %s %s %s", request.method, request.path, response.status)


class _RequestLog(logging.LoggerAdapter):
    """aiohttp's error log: a malformed request (already answered 400) is one debug line, not a traceback."""

    def log(self, level: int, msg: object, *args: Any, exc_info: Any = None, **kwargs: Any) -> None:
        if isinstance(exc_info, HttpProcessingError):
            self.logger.debug("malformed request answered %s (%s)", exc_info.code, type(exc_info).__name__)
        else:
            self.logger.log(level, msg, *args, exc_info=exc_info, **kwargs)


def display_name(path: str) -> str:
    """A file's name as the page and the API show and take it: bytes of the name that are not
    UTF-8 spelt ``\\xff`` (a lone surrogate in JSON would break the page's scripts)."""
    return Path(path).name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


class _Connection(web.RequestHandler):
    """One connection, closed once its peer has read nothing of what it was sent for
    :data:`STALL_TIMEOUT_S`: a viewer that stopped reading, pipelined requests whose answers are
    never read. (Writing pauses when the peer stops reading; aiohttp itself waits for it forever.)"""

    _stalled: asyncio.TimerHandle | None = None

    def pause_writing(self) -> None:
        super().pause_writing()
        if self.transport is not None and self._stalled is None:
            self._stalled = asyncio.get_running_loop().call_later(STALL_TIMEOUT_S, self._drop)

    def resume_writing(self) -> None:
        super().resume_writing()
        self._unstall()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._unstall()
        super().connection_lost(exc)

    def _drop(self) -> None:
        log.info("closed a connection whose peer read nothing for %g s", STALL_TIMEOUT_S)
        if self.transport is not None:
            self.transport.abort()

    def _unstall(self) -> None:
        if self._stalled is not None:
            self._stalled.cancel()
            self._stalled = None


class _BoundedServer(web.Server):
    """aiohttp's low-level server, closing connections over :data:`MAX_CONNECTIONS` on arrival,
    each one a :class:`_Connection`."""

    def __call__(self) -> _Connection:
        return _Connection(self, loop=self._loop, **self._kwargs)

    def connection_made(self, handler: Any, transport: asyncio.Transport) -> None:
        super().connection_made(handler, transport)
        if len(self.connections) > MAX_CONNECTIONS:
            transport.close()


class ControlServer:
    """The HTTP + WebSocket server around one running pipeline; serving from construction to :meth:`close`."""

    def __init__(self, pipeline: Pipeline, host: str = "127.0.0.1", port: int = 8765,
                 token: str | None = None) -> None:
        self.pipeline = pipeline
        self.host = host
        self.token = token or (None if is_loopback(host) else secrets.token_urlsafe(16))
        self._names = {"localhost", "127.0.0.1", "::1", host.strip("[]").lower()} - {""}
        if host in WILDCARD_HOSTS:  # every address of this machine, and its names
            self._names |= {socket.gethostname().lower(), socket.getfqdn().lower(), _lan_address()}
        self._thumbs: collections.OrderedDict[tuple, bytes] = collections.OrderedDict()
        self._usable: dict[tuple, bool] = {}  # whether a listed file decodes, by file version
        self._resume_mode = "blur"  # what passthrough toggles back to (`vbg toggle passthrough`)
        # Listing, thumbnails and changes read files: one at a time, never on the server's loop.
        self._files = ThreadPoolExecutor(1, thread_name_prefix="files")
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="server", daemon=True)
        self._thread.start()
        self.stream = PersonStream(self._loop, unmix=lambda: pipeline.settings.unmix)
        self._viewers: set[web.WebSocketResponse] = set()  # touched only on the loop
        try:
            self.port = asyncio.run_coroutine_threadsafe(self._open(host, port), self._loop).result(30)
        except OSError as exc:
            self.stream.close()
            self._stop_loop()
            self._files.shutdown()
            raise port_error(host, port, exc) from None
        pipeline.taps.append(self.stream.offer)
        self._server_file = ServerFile.write(self.local_url, self.token)  # how `vbg set` finds this server
        log.debug("serving on %s port %d", host, self.port)

    async def _open(self, host: str, port: int) -> int:
        server = _BoundedServer(self._handle, access_log_class=_AccessLogger, access_log=log,
                                logger=_RequestLog(log), keepalive_timeout=IDLE_TIMEOUT_S,
                                handler_cancellation=True, max_headers=MAX_HEADERS,
                                max_line_size=MAX_LINE_BYTES, max_field_size=MAX_LINE_BYTES)
        self._runner = web.ServerRunner(server, shutdown_timeout=2.0)
        await self._runner.setup()
        await web.TCPSite(self._runner, host or None, port).start()
        return self._runner.addresses[0][1]

    # -- addresses ------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The control page's address as a person on this machine (or, for a wildcard bind, the network) opens it."""
        host = _lan_address() if self.host in WILDCARD_HOSTS else self.host
        if ":" in host:
            host = f"[{host.strip('[]')}]"
        return f"http://{host}:{self.port}/" + (f"?token={self.token}" if self.token else "")

    @property
    def local_url(self) -> str:
        """The address programs on this computer reach the server at (no token in it)."""
        host = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(self.host, self.host)
        return f"http://[{host.strip('[]')}]:{self.port}/" if ":" in host else f"http://{host}:{self.port}/"

    @property
    def obs_url(self) -> str:
        return self.url.replace("/?", "/obs?") if self.token else self.url + "obs"

    def close(self) -> None:
        self._server_file.remove()
        if self.stream.offer in self.pipeline.taps:
            self.pipeline.taps.remove(self.stream.offer)
        self.stream.close()
        try:
            asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(10)
        finally:
            self._stop_loop()
            self._files.shutdown(wait=True)

    async def _shutdown(self) -> None:
        """Tell viewers goodbye (1001, going away) so they need not be waited for, then stop serving."""
        viewers = [ws.close(code=1001) for ws in self._viewers]
        if viewers:
            await asyncio.wait([asyncio.ensure_future(close) for close in viewers], timeout=1.0)
        await self._runner.cleanup()

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    # -- state ------------------------------------------------------------------------------

    def backgrounds(self) -> dict[str, str]:
        """Choosable backgrounds by shown name (the only way a request can name one): the files of
        the folder that decode (checked once per file version), and the current background."""
        choices = {}
        for path in background_choices(self.pipeline.settings):
            name = display_name(path)
            if name not in choices and (path == self.pipeline.settings.background or self._decodes(path)):
                choices[name] = path
        return choices

    def _decodes(self, path: str) -> bool:
        try:
            stat = Path(path).stat()
        except OSError:
            return False
        key = (path, stat.st_mtime_ns, stat.st_size)
        if key not in self._usable:
            if len(self._usable) > 4 * THUMB_CACHE_SIZE:
                self._usable.clear()
            try:
                if is_image_file(Path(path)):
                    check_image(Path(path))  # the header: cheap
                else:
                    VideoFileSource(Path(path)).close()  # a first frame
                self._usable[key] = True
            except VbgError as exc:
                log.info("left out of the backgrounds: %s", exc)
                self._usable[key] = False
        return self._usable[key]

    def state(self) -> dict[str, Any]:
        settings = self.pipeline.settings
        return {"mode": settings.mode,
                "background": display_name(settings.background) if settings.background else None,
                "blur": settings.blur, "color": settings.color, "mirror": settings.mirror,
                "smoothing": settings.smoothing, "unmix": settings.unmix, "light_wrap": settings.light_wrap,
                "fps": round(self.pipeline.stats.current_fps, 1),
                "backgrounds": list(self.backgrounds()), "viewers": self.stream.viewers,
                "resume_mode": self._resume_mode}

    def change(self, body: dict[str, Any]) -> dict[str, Any]:
        """Apply a partial state from the panel; raises VbgError (→ 400) with nothing changed.

        Values are checked by :meth:`Pipeline.apply`, with the same checks as every setting.
        """
        changes = dict(body)
        for key in changes:
            if key not in SETTINGS_FIELDS:
                raise VbgError(f"no such setting '{key}': {did_you_mean(key)}settings that change while "
                               f"vbg runs: {', '.join(sorted(LIVE_SETTINGS))}")
        if "background" in changes:
            choices = self.backgrounds()
            if changes["background"] not in choices:
                raise VbgError(f"unknown background {changes['background']!r}; choose one of {', '.join(choices)}")
            changes["background"] = choices[changes["background"]]
        if changes.get("mode") == "image" and not (changes.get("background") or self.pipeline.settings.background):
            raise VbgError("no background to show: start vbg with --backgrounds DIR (a folder of images or videos)")
        before = self.pipeline.settings.mode
        self.pipeline.apply(**changes)
        if before != "passthrough" and self.pipeline.settings.mode == "passthrough":
            self._resume_mode = before
        return self.state()

    def thumbnail(self, name: str) -> bytes:
        """The thumbnail of a listed background, made once per file version and kept small."""
        path = self.backgrounds().get(name)
        if path is None or not (is_image_file(Path(path)) or Path(path).suffix.lower() in VIDEO_SUFFIXES):
            raise KeyError(name)
        stat = Path(path).stat()
        key = (path, stat.st_mtime_ns, stat.st_size)
        if key not in self._thumbs:
            self._thumbs[key] = make_thumbnail(path)
            while len(self._thumbs) > THUMB_CACHE_SIZE:
                self._thumbs.popitem(last=False)
        self._thumbs.move_to_end(key)
        return self._thumbs[key]

    # -- who gets in ----------------------------------------------------------------------

    def _names_this_server(self, authority: str) -> bool:
        """Whether a Host (``name:port``) names this server, so a rebound DNS name is refused."""
        try:
            parts = urlsplit("//" + authority)
            name, port = (parts.hostname or ""), parts.port or 80
        except ValueError:
            return False
        if port != self.port:
            return False
        return name in self._names or (self.host in WILDCARD_HOSTS and _is_own_address(name))

    def _own_origin(self, origin: str) -> bool:
        """Whether an ``Origin`` is a page of this server, under any name it answers to
        (``http://localhost:8765`` as well as ``http://127.0.0.1:8765/``)."""
        try:
            parts = urlsplit(origin)
        except ValueError:
            return False
        return (parts.scheme.lower() == "http" and parts.path in ("", "/") and not parts.query
                and not parts.username and self._names_this_server(parts.netloc))

    def _authorised(self, request: web.BaseRequest) -> bool:
        if self.token is None or request.path in PUBLIC_FILES:
            return True
        given = request.query.get("token") or request.headers.get("X-Vbg-Token", "")
        return secrets.compare_digest(given.encode("utf-8", "replace"), self.token.encode())

    def _origin_refused(self, request: web.BaseRequest, what: str) -> web.Response:
        own = f"http://{request.host}"
        return _refusal(f"{what} only from pages of this server: send Origin: {own}"
                        + (", or no Origin from a program on this computer" if what == "changes" else "")
                        + f" (Origin {request.headers.get('Origin', '(none)')!r} refused)")

    # -- routes ---------------------------------------------------------------------------

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        if not self._names_this_server(request.host):
            response = _refusal(f"this server answers only to its own address: send Host: 127.0.0.1:{self.port} "
                                "(Host header refused)")
        elif not self._authorised(request):
            response = self._token_missing(request)
        elif request.path == "/ws":  # browsers send Origin on every WebSocket handshake
            if not self._own_origin(request.headers.get("Origin", "")):
                response = self._origin_refused(request, "the stream")
            else:
                return await self._viewer(request)
        else:
            response = await self._route(request)
        response.headers.update(SECURITY_HEADERS)
        return response

    async def _route(self, request: web.BaseRequest) -> web.StreamResponse:
        path = request.path
        if request.method == "POST":
            if path != "/api/state":
                return _error(404, f"no endpoint {path}")
            origin = request.headers.get("Origin")  # a browser sends it on every POST; a program need not
            if origin is not None and not self._own_origin(origin):
                return self._origin_refused(request, "changes")
            return await self._post_state(request)
        if request.method not in ("GET", "HEAD"):
            return _error(405, f"{request.method} is not supported")
        if path in FILES:
            name, content_type = FILES[path]
            return web.Response(body=resources.files("vbg").joinpath("web", name).read_bytes(),
                                content_type=content_type.split(";")[0], charset="utf-8")
        if path == "/api/state":
            return web.json_response(await self._loop.run_in_executor(self._files, self.state))
        if path == "/api/thumb":
            try:
                image = await self._loop.run_in_executor(self._files, self.thumbnail, request.query.get("name", ""))
            except (KeyError, OSError):
                return _error(404, "no such background")
            return web.Response(body=image, content_type="image/jpeg")
        return _error(404, f"no page {path}")

    async def _post_state(self, request: web.BaseRequest) -> web.StreamResponse:
        if request.content_type != "application/json":
            return _error(415, "send the settings as Content-Type: application/json")
        if request.content_length is None:
            return _error(411, "Content-Length required")
        if request.content_length > MAX_BODY_BYTES:
            return _error(413, f"body over {MAX_BODY_BYTES} bytes")
        try:
            raw = await asyncio.wait_for(request.read(), BODY_TIMEOUT_S)
            body = json.loads(raw, parse_constant=_refuse_constant)
        except asyncio.TimeoutError:
            return _error(408, "the body did not arrive in time")
        except (ValueError, RecursionError) as exc:
            return _error(400, f"body is not strict JSON ({exc})")
        if not isinstance(body, dict):
            return _error(400, "body must be a JSON object of settings")
        try:
            return web.json_response(await self._loop.run_in_executor(self._files, self.change, body))
        except VbgError as exc:
            return _error(400, str(exc))

    def _token_missing(self, request: web.BaseRequest) -> web.Response:
        if "text/html" in request.headers.get("Accept", ""):  # a person in a browser: say what to do
            page = resources.files("vbg").joinpath("web", "token.html").read_bytes()
            response = web.Response(status=403, body=page, content_type="text/html", charset="utf-8")
            response.force_close()
            return response
        return _refusal("missing or wrong token: use the address vbg printed (it ends in ?token=...), "
                        "or send the header X-Vbg-Token")

    async def _viewer(self, request: web.BaseRequest) -> web.WebSocketResponse:
        """One /ws viewer: its own one-slot queue, sent to until it closes or stops reading.

        Compression is declined (``compress=False``): JPEG does not shrink, and aiohttp would
        deflate every frame again for each viewer on the server's CPU. A viewer that stops
        reading is closed by its :class:`_Connection` after :data:`STALL_TIMEOUT_S`.
        """
        ws = web.WebSocketResponse(max_msg_size=4096, receive_timeout=None, compress=False)
        await ws.prepare(request)
        queue: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=1)
        self.stream.add(queue)
        self._viewers.add(ws)
        sender = asyncio.ensure_future(self._send_frames(ws, queue))
        try:
            async for message in ws:  # a viewer sends nothing but its close
                if message.type == WSMsgType.ERROR:
                    break
        finally:
            self.stream.remove(queue)
            self._viewers.discard(ws)
            if queue.full():
                queue.get_nowait()
            queue.put_nowait(None)  # the sender ends on its own, even where a cancel is lost
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender  # a task left pending is reported when the loop closes
        return ws

    @staticmethod
    async def _send_frames(ws: web.WebSocketResponse, queue: asyncio.Queue[bytes | None]) -> None:
        while (message := await queue.get()) is not None:
            try:
                await ws.send_bytes(message)
            except ConnectionError:  # the viewer left, or its connection was closed as stalled
                return


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def _refusal(message: str) -> web.Response:
    """403, and the connection closed: a refused client cannot keep holding one of the slots."""
    response = _error(403, message)
    response.force_close()
    return response
