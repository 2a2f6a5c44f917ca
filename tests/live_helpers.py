"""Helpers for tests of a running pipeline with its server: a live run, an OBS viewer."""

from __future__ import annotations

import base64
import json
import os
import socket
import struct
import threading
import urllib.error
import urllib.request

from vbg import Settings
from vbg.pipeline import build, nobody_watching
from vbg.server import ControlServer
from vbg.sources import open_input


class Live:
    """A live pipeline (a looping person clip paced like a camera, into nothing) with its server."""

    def __init__(self, video, settings: Settings, token: str | None = None) -> None:
        self.pipeline = build(settings, open_input(str(video), loop=True, paced=True))
        self.server = ControlServer(self.pipeline, "127.0.0.1", 0, token)
        self.pipeline.idle = nobody_watching(self.pipeline, self.server)
        self.seen: list = []
        self.pipeline.taps.append(self.seen.append)
        self.server.start()
        self.thread = threading.Thread(target=self.pipeline.run, daemon=True)
        self.thread.start()
        self.base = f"http://127.0.0.1:{self.server.port}"

    def request(self, path: str, body: bytes | None = None, headers: dict | None = None):
        req = urllib.request.Request(self.base + path, data=body, headers=headers or {},
                                     method="POST" if body is not None else "GET")
        try:
            with urllib.request.urlopen(req, timeout=10) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()

    def post(self, change: dict):
        status, body = self.request("/api/state", json.dumps(change).encode(), {"Content-Type": "application/json"})
        return status, json.loads(body)

    def state(self) -> dict:
        return json.loads(self.request("/api/state")[1])

    def close(self) -> None:
        self.pipeline.abort()
        self.thread.join(10)
        self.server.close()
        self.pipeline.close()



class ObsViewer:
    """A minimal WebSocket client of /ws that collects the binary messages."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(f"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                          f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())
        self.file = self.sock.makefile("rb")
        status = self.file.readline()
        assert b"101" in status, status
        while self.file.readline() not in (b"\r\n", b""):
            pass

    def message(self) -> bytes:
        head = self.file.read(2)
        size = head[1] & 0x7F
        if size == 126:
            size = struct.unpack(">H", self.file.read(2))[0]
        elif size == 127:
            size = struct.unpack(">Q", self.file.read(8))[0]
        return self.file.read(size)

    def close(self) -> None:
        self.sock.sendall(bytes([0x88, 0x80, 0, 0, 0, 0]))  # masked close frame
        self.sock.close()
