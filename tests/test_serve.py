"""The control server, OBS stream, hot reload, preview keys and idle saving, on a live pipeline."""

from __future__ import annotations

import base64
import json
import logging
import os
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import cv2
import numpy as np
import pytest

from conftest import FRAME_SIZE, person_frame, write_video
from vbg import Settings
from vbg.pipeline import build, nobody_watching
from vbg.reload import ConfigWatcher
from vbg.server import ControlServer, is_loopback
from vbg.sinks import processes_with_open
from vbg.sources import open_input

pytestmark = pytest.mark.usefixtures("default_model_path")


@pytest.fixture
def backgrounds(tmp_path):
    folder = tmp_path / "backgrounds"
    folder.mkdir()
    for name, colour in (("red.png", (0, 0, 255)), ("green.png", (0, 255, 0))):
        cv2.imwrite(str(folder / name), np.full((90, 160, 3), colour, np.uint8))
    (folder / "notes.txt").write_text("not a background")
    return folder


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


@pytest.fixture(scope="module")
def person_loop(tmp_path_factory):
    return write_video(tmp_path_factory.mktemp("serve") / "person.avi", [person_frame(i) for i in range(12)])


@pytest.fixture
def live(person_loop, backgrounds):
    running = Live(person_loop, Settings(output="null", serve=True, backgrounds=str(backgrounds)))
    yield running
    running.close()


def test_state_lists_settings_and_backgrounds(live):
    state = live.state()
    assert {"mode", "background", "blur", "mirror", "fps", "smoothing"} <= set(state)
    assert state["mode"] == "blur" and state["backgrounds"] == ["green.png", "red.png"]


def test_post_changes_the_running_output(live):
    status, state = live.post({"mode": "image", "background": "red.png", "mirror": True})
    assert status == 200 and (state["mode"], state["background"], state["mirror"]) == ("image", "red.png", True)
    ws = ObsViewer(live.server.port)  # a viewer, so the run is not idle
    try:
        deadline = time.time() + 20
        while time.time() < deadline:
            if live.seen and live.seen[-1].image[5, 5].tolist() == [0, 0, 255]:  # the wall is now red
                break
            time.sleep(0.1)
        assert live.seen[-1].image[5, 5].tolist() == [0, 0, 255]
    finally:
        ws.close()


@pytest.mark.parametrize("body, message", [
    ({"blur": 500}, "setting 'blur' must be a number from 1 to 100"),
    ({"mode": "sepia"}, "one of blur, image, color, passthrough"),
    ({"camera": "1"}, "cannot change while vbg runs"),
    ({"background": "../../etc/passwd"}, "unknown background"),
])
def test_bad_values_are_400_with_a_message_and_change_nothing(live, body, message):
    before = live.state()
    status, answer = live.post(body)
    assert status == 400 and message in answer["error"]
    assert live.state()["mode"] == before["mode"]


def test_guards_traversal_size_and_malformed_bodies(live):
    assert live.request("/api/thumb?name=../../../etc/passwd")[0] == 404
    assert live.request("/api/thumb?name=notes.txt")[0] == 404
    assert live.request("/api/thumb?name=red.png")[0] == 200
    assert live.request("/../../etc/passwd")[0] == 404
    assert live.request("/web/index.html")[0] == 404  # pages by route only
    assert live.request("/api/state", b"x" * (70 * 1024))[0] == 413
    assert live.request("/api/state", b"{not json")[0] == 400
    assert live.request("/api/state", b"[1, 2]")[0] == 400
    assert live.request("/obs")[0] == 200 and live.request("/")[0] == 200


def test_a_token_is_required_when_set(person_loop, backgrounds):
    guarded = Live(person_loop, Settings(output="null", serve=True), token="s3cret")
    try:
        assert guarded.request("/api/state")[0] == 403
        assert guarded.request("/api/state?token=nope")[0] == 403
        assert guarded.request("/api/state?token=s3cret")[0] == 200
        assert guarded.request("/api/state", b"{}", {"X-Vbg-Token": "s3cret", "Content-Type": "application/json"})[0] == 200
    finally:
        guarded.close()
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and not is_loopback("0.0.0.0")


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


def test_obs_stream_sends_person_with_alpha_and_idles_without_viewers(live):
    time.sleep(1.5)
    captured, mattes = live.pipeline.stats.frames_captured, live.pipeline.stats.mattes
    cpu = time.process_time()
    time.sleep(1.5)
    assert live.pipeline.stats.frames_captured - captured <= 1  # paused: nobody watches
    assert live.pipeline.stats.mattes - mattes <= 1
    assert time.process_time() - cpu < 0.5  # and the CPU rests

    viewer = ObsViewer(live.server.port)
    try:
        message = viewer.message()
        colour_size = struct.unpack(">I", message[:4])[0]
        colour = cv2.imdecode(np.frombuffer(message[4:4 + colour_size], np.uint8), cv2.IMREAD_COLOR)
        alpha = cv2.imdecode(np.frombuffer(message[4 + colour_size:], np.uint8), cv2.IMREAD_GRAYSCALE)
        assert colour.shape[:2] == alpha.shape == (FRAME_SIZE[1], FRAME_SIZE[0])
        assert alpha[250, 360] > 230 and alpha[30, 30] < 25  # the chest is opaque, the wall transparent
        assert live.state()["viewers"] == 1
        assert live.pipeline.stats.frames_captured > captured + 2  # resumed for the viewer
    finally:
        viewer.close()
    time.sleep(1.0)
    assert live.state()["viewers"] == 0


def test_config_edits_apply_while_running_and_bad_edits_are_ignored(live, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    config = tmp_path / "live.toml"
    config.write_text('mode = "blur"\nblur = 10.0\n')
    watcher = ConfigWatcher(config, live.pipeline, pinned=frozenset({"mirror"})).start()
    try:
        time.sleep(0.3)
        config.write_text('mode = "color"\ncolor = "#ff0000"\nmirror = true\n')
        deadline = time.time() + 1.0
        while live.pipeline.settings.mode != "color" and time.time() < deadline:
            time.sleep(0.05)
        assert (live.pipeline.settings.mode, live.pipeline.settings.color) == ("color", "#ff0000")
        assert live.pipeline.settings.mirror is False  # pinned by the command line
        config.write_text('mode = "sepia"\n')
        time.sleep(1.0)
        assert live.pipeline.settings.mode == "color"  # the last good settings stay
        assert "keeping the last good settings" in caplog.text
        config.write_text('mode = "color"\nmodel = "rvm"\n')
        time.sleep(1.0)
        assert "model only change on a restart" in caplog.text
    finally:
        watcher.close()


def test_preview_keys(live, backgrounds):
    pipeline = live.pipeline
    pipeline._on_key("m")
    assert pipeline.settings.mirror is True
    pipeline._on_key("n")
    assert pipeline.settings.mode == "image" and pipeline.settings.background.endswith("green.png")
    pipeline._on_key("n")
    assert pipeline.settings.background.endswith("red.png")
    pipeline._on_key(" ")
    assert pipeline.settings.mode == "passthrough"
    pipeline._on_key(" ")
    assert pipeline.settings.mode == "image"
    pipeline._on_key("b")
    assert pipeline.settings.mode == "blur"


def test_virtual_camera_readers_are_counted_from_proc(tmp_path):
    device = tmp_path / "video10"
    device.write_bytes(b"")
    assert processes_with_open(str(device)) == 0
    reader = subprocess.Popen([sys.executable, "-c", f"f = open({str(device)!r}); import time; time.sleep(30)"])
    try:
        deadline = time.time() + 10
        while processes_with_open(str(device)) != 1 and time.time() < deadline:
            time.sleep(0.1)
        assert processes_with_open(str(device)) == 1
    finally:
        reader.kill()
        reader.wait()
    assert processes_with_open(str(device)) == 0
    assert processes_with_open(str(tmp_path / "missing")) is None
