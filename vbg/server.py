"""Local control panel and OBS browser source (`vbg --serve`).

* ``GET /`` the control page; ``GET /api/state`` and ``POST /api/state`` the live settings.
* ``GET /obs`` a page for OBS's Browser Source: the person over a transparent page,
  streamed over a WebSocket (``/ws``) as a colour JPEG plus an alpha JPEG per frame
  (4-byte big-endian length of the colour JPEG, then both), joined in the browser.
* ``GET /api/thumb?name=N`` thumbnails of the configured backgrounds.

Only the package's own ``web/`` files and the configured backgrounds are ever read;
backgrounds are addressed by name from their listing, never by path. Bound to
127.0.0.1 unless told otherwise; anywhere else every request needs the token.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import secrets
import socket
import struct
import threading
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

import cv2
import numpy as np

from vbg.backgrounds import background_choices
from vbg.compositing import Compositor
from vbg.errors import VbgError
from vbg.ringbuffer import Latest
from vbg.sources import read_image

if TYPE_CHECKING:
    from vbg.pipeline import Packet, Pipeline

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 * 1024
WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 §1.3
PAGES = {"/": "index.html", "/obs": "obs.html"}
STREAM_JPEG_QUALITY = 85
THUMB_WIDTH = 160


def is_loopback(host: str) -> bool:
    return host in ("localhost", "::1") or host.startswith("127.")


class ObsStream:
    """Encodes the newest output packet once and sends it to every connected /obs viewer.

    Runs on its own thread: a slow viewer or the encoding never holds up the pipeline,
    which only drops its newest packet into a one-slot buffer (:meth:`offer`).
    """

    def __init__(self, unmix: Callable[[], bool] = lambda: True) -> None:
        self._unmix = unmix  # whether the person's edges are sent free of the old room (a live setting)
        self._compositor = Compositor()
        self._latest: Latest[Packet] = Latest()
        self._viewers: list[socket.socket] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="obs-stream", daemon=True)
        self._thread.start()

    @property
    def viewers(self) -> int:
        with self._lock:
            return len(self._viewers)

    def offer(self, packet: Packet) -> None:
        if self.viewers:
            self._latest.publish(packet)

    def add(self, connection: socket.socket) -> None:
        with self._lock:
            self._viewers.append(connection)

    def remove(self, connection: socket.socket) -> None:
        with self._lock:
            if connection in self._viewers:
                self._viewers.remove(connection)

    def close(self) -> None:
        self._stop.set()
        self._latest.close()

    def _run(self) -> None:
        sent = 0
        while not self._stop.is_set():
            packet, version = self._latest.wait_newer(sent, timeout=0.5)  # sleeps until a new packet
            if packet is None or version == sent:
                continue
            sent = version
            self._compositor.unmix = self._unmix()
            message = encode_person(packet, self._compositor)
            with self._lock:
                viewers = list(self._viewers)
            for connection in viewers:
                try:
                    connection.sendall(ws_frame(message))
                except OSError:
                    self.remove(connection)


def encode_person(packet: Packet, compositor: Compositor | None = None) -> bytes:
    """The person with real alpha: colour JPEG and alpha JPEG, length-prefixed. With a
    ``compositor`` the colour is the person's own at the edges, free of the old room."""
    frame = packet.frame
    if packet.alpha is None:
        alpha = np.ones(frame.shape[:2], np.float32)
    else:
        alpha = packet.alpha
        if compositor is not None:
            frame = compositor.foreground(frame, alpha, packet.edges)  # the pipeline's per-matte work, reused
    alpha8 = (alpha * 255.0 + 0.5).astype(np.uint8) if alpha.dtype != np.uint8 else alpha
    colour = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, STREAM_JPEG_QUALITY])[1].tobytes()
    mask = cv2.imencode(".jpg", alpha8, [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes()
    return struct.pack(">I", len(colour)) + colour + mask


def websocket_accept(key: str) -> str:
    """The Sec-WebSocket-Accept answer to a client's Sec-WebSocket-Key (RFC 6455 §4.2.2)."""
    return base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()


def ws_frame(payload: bytes, opcode: int = 0x2) -> bytes:  # 0x2: binary
    """One unmasked WebSocket frame from the server (RFC 6455 §5.2)."""
    header = bytes([0x80 | opcode])
    size = len(payload)
    if size < 126:
        header += bytes([size])
    elif size < 1 << 16:
        header += bytes([126]) + struct.pack(">H", size)
    else:
        header += bytes([127]) + struct.pack(">Q", size)
    return header + payload


def _read_ws_frame(stream) -> tuple[int, bytes]:
    """(opcode, payload) of one masked client frame; opcode 0x8 at end of stream."""
    head = stream.read(2)
    if len(head) < 2:
        return 0x8, b""
    opcode, size = head[0] & 0x0F, head[1] & 0x7F
    if size == 126:
        size = struct.unpack(">H", stream.read(2))[0]
    elif size == 127:
        size = struct.unpack(">Q", stream.read(8))[0]
    if size > MAX_BODY_BYTES:
        return 0x8, b""
    mask = stream.read(4) if head[1] & 0x80 else b"\0\0\0\0"
    data = stream.read(size)
    return opcode, bytes(b ^ mask[i % 4] for i, b in enumerate(data))


def _port_error(host: str, port: int, exc: OSError) -> VbgError:
    return VbgError(f"cannot serve on {host}:{port} ({exc.strerror or exc}); pick another --port "
                    "(`vbg doctor --port N` checks one)")


def check_port(host: str, port: int) -> None:
    """Raise the --serve error now unless ``host:port`` can be bound (checked before a model download)."""
    try:
        socket.create_server((host, port)).close()
    except OSError as exc:
        raise _port_error(host, port, exc) from None


class ControlServer:
    """The HTTP + WebSocket server around one running pipeline."""

    def __init__(self, pipeline: Pipeline, host: str = "127.0.0.1", port: int = 8765,
                 token: str | None = None) -> None:
        self.pipeline = pipeline
        self.token = token or (None if is_loopback(host) else secrets.token_urlsafe(16))
        self.stream = ObsStream(unmix=lambda: pipeline.settings.unmix)
        pipeline.taps.append(self.stream.offer)
        handler = type("Handler", (_Handler,), {"control": self})
        try:
            self._http = ThreadingHTTPServer((host, port), handler)
        except OSError as exc:
            self.stream.close()
            raise _port_error(host, port, exc) from None
        self._http.daemon_threads = True
        self.port = self._http.server_address[1]
        self.host = host
        self._thread = threading.Thread(target=self._http.serve_forever, name="server", daemon=True)

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"http://{host}:{self.port}/" + (f"?token={self.token}" if self.token else "")

    def start(self) -> None:
        self._thread.start()
        log.info("control panel: %s   OBS browser source: %s", self.url,
                 self.url.replace("/?", "/obs?") if self.token else self.url + "obs")

    def close(self) -> None:
        self.stream.close()
        self._http.shutdown()
        self._http.server_close()

    # -- state ------------------------------------------------------------------------------

    def backgrounds(self) -> dict[str, str]:
        """Choosable backgrounds by file name (the only way a request can name one)."""
        return {Path(path).name: path for path in background_choices(self.pipeline.settings)}

    def state(self) -> dict[str, Any]:
        settings = self.pipeline.settings
        return {"mode": settings.mode, "background": Path(settings.background).name if settings.background else None,
                "blur": settings.blur, "color": settings.color, "mirror": settings.mirror,
                "smoothing": settings.smoothing, "unmix": settings.unmix, "light_wrap": settings.light_wrap,
                "fps": round(self.pipeline.stats.current_fps, 1),
                "backgrounds": list(self.backgrounds()), "viewers": self.stream.viewers}

    def change(self, body: dict[str, Any]) -> dict[str, Any]:
        """Apply a partial state from the panel; raises VbgError (→ 400) with nothing changed."""
        changes = dict(body)
        if "background" in changes:
            choices = self.backgrounds()
            if changes["background"] not in choices:
                raise VbgError(f"unknown background {changes['background']!r}; choose one of {', '.join(choices)}")
            changes["background"] = choices[changes["background"]]
        self.pipeline.apply(**changes)
        return self.state()

    def thumbnail(self, name: str) -> bytes:
        path = self.backgrounds().get(name)
        if path is None:
            raise KeyError(name)
        if Path(path).suffix.lower() in {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}:
            image = read_image(Path(path))
        else:
            capture = cv2.VideoCapture(path)
            image = capture.read()[1]
            capture.release()
            if image is None:
                raise KeyError(name)
        height = max(1, round(image.shape[0] * THUMB_WIDTH / image.shape[1]))
        return cv2.imencode(".jpg", cv2.resize(image, (THUMB_WIDTH, height), interpolation=cv2.INTER_AREA))[1].tobytes()


class _Handler(BaseHTTPRequestHandler):
    control: ControlServer
    server_version = "vbg"
    protocol_version = "HTTP/1.1"  # WebSocket upgrades need it; every response has a length

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's name
        log.debug("http: " + format, *args)

    # -- plumbing -------------------------------------------------------------------------

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, data: Any) -> None:
        self._send(status, json.dumps(data).encode(), "application/json")

    def _error(self, status: int, message: str) -> None:
        self._json(status, {"error": message})

    def _authorised(self, query: dict[str, list[str]]) -> bool:
        token = self.control.token
        if token is None:
            return True
        given = query.get("token", [""])[0] or self.headers.get("X-Vbg-Token", "")
        return secrets.compare_digest(given, token)

    # -- routes ---------------------------------------------------------------------------

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        if not self._authorised(query):
            return self._error(HTTPStatus.FORBIDDEN, "missing or wrong token")
        if url.path in PAGES:
            page = resources.files("vbg").joinpath("web", PAGES[url.path]).read_bytes()
            return self._send(HTTPStatus.OK, page, "text/html; charset=utf-8")
        if url.path == "/api/state":
            return self._json(HTTPStatus.OK, self.control.state())
        if url.path == "/api/thumb":
            try:
                return self._send(HTTPStatus.OK, self.control.thumbnail(query.get("name", [""])[0]), "image/jpeg")
            except (KeyError, VbgError):
                return self._error(HTTPStatus.NOT_FOUND, "no such background")
        if url.path == "/ws":
            return self._websocket()
        return self._error(HTTPStatus.NOT_FOUND, f"no page {url.path}")

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        url = urlsplit(self.path)
        if not self._authorised(parse_qs(url.query)):
            return self._error(HTTPStatus.FORBIDDEN, "missing or wrong token")
        if url.path != "/api/state":
            return self._error(HTTPStatus.NOT_FOUND, f"no endpoint {url.path}")
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            return self._error(HTTPStatus.LENGTH_REQUIRED, "Content-Length required")
        if int(length) > MAX_BODY_BYTES:
            return self._error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"body over {MAX_BODY_BYTES} bytes")
        try:
            body = json.loads(self.rfile.read(int(length)) or b"null")
        except ValueError:
            return self._error(HTTPStatus.BAD_REQUEST, "body is not JSON")
        if not isinstance(body, dict):
            return self._error(HTTPStatus.BAD_REQUEST, "body must be a JSON object of settings")
        try:
            return self._json(HTTPStatus.OK, self.control.change(body))
        except VbgError as exc:
            return self._error(HTTPStatus.BAD_REQUEST, str(exc))

    def _websocket(self) -> None:
        key = self.headers.get("Sec-WebSocket-Key")
        if self.headers.get("Upgrade", "").lower() != "websocket" or not key:
            return self._error(HTTPStatus.BAD_REQUEST, "WebSocket upgrade expected")
        accept = websocket_accept(key)
        self.send_response(HTTPStatus.SWITCHING_PROTOCOLS)
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", accept)
        self.end_headers()
        self.wfile.flush()
        stream = self.control.stream
        stream.add(self.connection)
        try:
            while _read_ws_frame(self.rfile)[0] != 0x8:  # the viewer sends nothing but its close
                pass
        except OSError:
            pass
        finally:
            stream.remove(self.connection)
            self.close_connection = True
