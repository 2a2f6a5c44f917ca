"""Helpers for tests of a running pipeline with its server: a live run, stream viewers."""

from __future__ import annotations

import asyncio
import base64
import collections
import json
import os
import socket
import threading
import time
import urllib.error
import urllib.request

import aiohttp

from vbg import Settings
from vbg.live import nobody_watching
from vbg.pipeline import build
from vbg.server import ControlServer
from vbg.sources import open_input


def wait_for(check, seconds: float = 15.0) -> bool:
    """True as soon as ``check()`` is, False after ``seconds``."""
    deadline = time.time() + seconds
    while time.time() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return False


class Live:
    """A live pipeline (a looping person clip paced like a camera, into nothing) with its server."""

    def __init__(self, video, settings: Settings, token: str | None = None, host: str = "127.0.0.1") -> None:
        self.pipeline = build(settings, open_input(str(video), loop=True, paced=True))
        self.server = ControlServer(self.pipeline, host, 0, token)
        self.pipeline.idle = nobody_watching(self.pipeline, self.server)
        self.seen: collections.deque = collections.deque(maxlen=30)
        self.pipeline.taps.append(self.seen.append)
        self.thread = threading.Thread(target=self.pipeline.run, daemon=True)
        self.thread.start()
        self.origin = f"http://127.0.0.1:{self.server.port}"
        self.base = self.origin

    def request(self, path: str, body: bytes | None = None, headers: dict | None = None):
        """(status, body) of a request with exactly ``headers`` (no Origin unless given)."""
        req = urllib.request.Request(self.base + path, data=body, headers=headers or {},
                                     method="POST" if body is not None else "GET")
        try:
            with urllib.request.urlopen(req, timeout=10) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()

    def post(self, change: dict, path: str = "/api/state"):
        """A POST as the control page sends it: JSON, from the server's own origin."""
        status, body = self.request(path, json.dumps(change).encode(),
                                    {"Content-Type": "application/json", "Origin": self.origin})
        return status, json.loads(body)

    def state(self) -> dict:
        return json.loads(self.request("/api/state")[1])

    def wait_for(self, check, seconds: float = 15.0) -> bool:
        return wait_for(check, seconds)

    def close(self) -> None:
        self.pipeline.abort()
        self.thread.join(10)
        self.server.close()
        self.pipeline.close()


class ObsViewer:
    """A /ws client (aiohttp on its own loop thread) counting the messages it receives; keeps the newest.
    ``compress``: ask for per-message compression, as Chromium (and so OBS) always does."""

    def __init__(self, url: str, origin: str | None, compress: int = 0) -> None:
        self.received = 0
        self.newest: collections.deque[bytes] = collections.deque(maxlen=1)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        try:
            self._call(self._open(url, origin, compress))
        except BaseException:
            self._stop()
            raise

    def _call(self, coroutine):
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(15)

    async def _open(self, url: str, origin: str | None, compress: int) -> None:
        self._session = aiohttp.ClientSession()
        try:
            self._ws = await self._session.ws_connect(url, origin=origin, compress=compress)
        except BaseException:
            await self._session.close()
            raise
        self._reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        async for message in self._ws:
            if message.type == aiohttp.WSMsgType.BINARY:
                self.newest.append(message.data)
                self.received += 1

    @property
    def compressed(self) -> bool:
        """Whether the server agreed to compress."""
        return bool(self._ws.compress)

    def message(self, seconds: float = 15.0) -> bytes:
        deadline = time.time() + seconds
        while not self.newest and time.time() < deadline:
            time.sleep(0.02)
        return self.newest.popleft()

    async def _close(self) -> None:
        await self._ws.close()
        await self._session.close()

    def close(self) -> None:
        try:
            self._call(self._close())
        finally:
            self._stop()

    def _stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()


def stuck_viewer(port: int, origin: str) -> socket.socket:
    """A /ws viewer that completes the handshake and then never reads a byte."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nOrigin: {origin}\r\nUpgrade: websocket\r\n"
                 f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())
    return sock
