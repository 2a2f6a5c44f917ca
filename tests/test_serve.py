"""The control server, OBS stream, hot reload, preview keys and idle saving, on a live pipeline."""

from __future__ import annotations

import ast
import asyncio
import contextlib
import gc
import json
import logging
import os
import socket
import struct
import subprocess
import shutil
import sys
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

import aiohttp
import cv2
import numpy as np
import pytest
from PIL import Image

import vbg.server
from conftest import FRAME_SIZE, person_frame, read_video, write_video
from live_helpers import Live, ObsViewer, stuck_viewer
from vbg import Settings
from vbg.pipeline import WARM_FRAMES, rss_mb
from vbg.reload import ConfigWatcher
from vbg.errors import VbgError
from vbg.server import STALL_TIMEOUT_S, ControlServer, is_loopback
from vbg.sinks import processes_with_open

pytestmark = pytest.mark.usefixtures("default_model_path")


@pytest.fixture
def backgrounds(tmp_path):
    folder = tmp_path / "backgrounds"
    folder.mkdir()
    for name, colour in (("red.png", (0, 0, 255)), ("green.png", (0, 255, 0))):
        cv2.imwrite(str(folder / name), np.full((90, 160, 3), colour, np.uint8))
    (folder / "notes.txt").write_text("not a background")
    return folder


@pytest.fixture(scope="module")
def person_loop(tmp_path_factory):
    return write_video(tmp_path_factory.mktemp("serve") / "person.avi", [person_frame(i) for i in range(12)])


@pytest.fixture
def live(person_loop, backgrounds):
    running = Live(person_loop, Settings(output="null", serve=True, backgrounds=str(backgrounds)))
    yield running
    running.close()


def viewer(live: Live, origin: str | None = "own", path: str = "/ws") -> ObsViewer:
    return ObsViewer(f"ws://127.0.0.1:{live.server.port}{path}", live.origin if origin == "own" else origin)


def json_post(live: Live, body: bytes, **headers):
    """A raw POST to /api/state: JSON from the page's own origin unless ``headers`` say otherwise."""
    return live.request("/api/state", body, {"Content-Type": "application/json", "Origin": live.origin, **headers})


def decode(message: bytes) -> tuple[np.ndarray, np.ndarray]:
    """(colour, alpha) of one stream message."""
    colour_size = struct.unpack(">I", message[:4])[0]
    colour = cv2.imdecode(np.frombuffer(message[4:4 + colour_size], np.uint8), cv2.IMREAD_COLOR)
    alpha = cv2.imdecode(np.frombuffer(message[4 + colour_size:], np.uint8), cv2.IMREAD_GRAYSCALE)
    return colour, alpha


def test_state_lists_settings_and_backgrounds(live):
    state = live.state()
    assert {"mode", "background", "blur", "mirror", "fps", "smoothing", "unmix", "light_wrap"} <= set(state)
    assert state["mode"] == "blur" and state["backgrounds"] == ["green.png", "red.png"]


def test_post_changes_the_running_output(live):
    status, state = live.post({"mode": "image", "background": "red.png", "mirror": True})
    assert status == 200 and (state["mode"], state["background"], state["mirror"]) == ("image", "red.png", True)
    ws = viewer(live)  # a viewer, so the run is not idle
    try:
        deadline = time.time() + 20
        while time.time() < deadline:
            if live.seen and live.seen[-1].image[5, 5].tolist() == [0, 0, 255]:  # the wall is now red
                break
            time.sleep(0.1)
        assert live.seen[-1].image[5, 5].tolist() == [0, 0, 255]
    finally:
        ws.close()


def test_edge_colour_and_light_wrap_change_while_running(live):
    status, state = live.post({"unmix": False, "light_wrap": 0.3})
    assert status == 200 and (state["unmix"], state["light_wrap"]) == (False, 0.3)
    assert (live.pipeline._compositor.unmix, live.pipeline._compositor.light_wrap) == (False, 0.3)


@pytest.mark.parametrize("body, message", [
    ({"blur": 500}, "setting 'blur' must be a number from 1 to 100"),
    ({"light_wrap": 3}, "setting 'light_wrap' must be a number from 0 to 1"),
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
    status, thumb = live.request("/api/thumb?name=red.png")
    assert status == 200 and len(thumb) < 20_000 and live.request("/api/thumb?name=red.png")[1] == thumb
    assert live.request("/../../etc/passwd")[0] == 404
    assert live.request("/web/index.html")[0] == 404  # pages by route only
    assert json_post(live, b"x" * (70 * 1024))[0] == 413
    assert json_post(live, b"{not json")[0] == 400
    assert json_post(live, b"[1, 2]")[0] == 400
    assert json_post(live, b"[" * 30_000 + b"]" * 30_000)[0] == 400  # deep nesting: an answer, not a traceback
    assert live.request("/obs")[0] == 200 and live.request("/")[0] == 200


@pytest.mark.parametrize("body", [b'{"smoothing": NaN}', b'{"light_wrap": Infinity}', b'{"blur": -Infinity}'])
def test_json_that_is_not_strict_is_400_and_the_output_is_unchanged(live, body):
    watching = viewer(live)
    try:
        assert live.wait_for(lambda: len(live.seen) > 3)
        before = live.state()
        status, answer = json_post(live, body)
        assert status == 400 and "not strict JSON" in json.loads(answer)["error"]
        settings = lambda state: {k: v for k, v in state.items() if k != "fps"}  # noqa: E731
        assert settings(live.state()) == settings(before)
        assert live.pipeline._matter.smoother.strength == before["smoothing"]
        shown = len(live.seen)
        assert live.wait_for(lambda: len(live.seen) > shown + 5)  # still running, and not black
        assert live.seen[-1].image.mean() > 40
    finally:
        watching.close()


def test_a_foreign_host_is_refused_on_every_route(live):
    evil = {"Host": f"evil.example:{live.server.port}"}
    for path in ("/", "/obs", "/api/state", "/api/thumb?name=red.png", "/stream.js", "/ws", "/nope"):
        assert live.request(path, headers=evil)[0] == 403, path
    assert json_post(live, b'{"mode": "passthrough"}', **evil)[0] == 403
    assert live.request("/api/state", headers={"Host": "127.0.0.1:1"})[0] == 403  # another port
    for own in (f"127.0.0.1:{live.server.port}", f"localhost:{live.server.port}", f"[::1]:{live.server.port}"):
        assert live.request("/api/state", headers={"Host": own})[0] == 200, own
    assert live.state()["mode"] == "blur"


def test_only_the_servers_own_pages_can_change_or_watch(live):
    for origin in ("http://evil.example", f"http://localhost.evil.example:{live.server.port}", "null",
                   f"http://127.0.0.1:{live.server.port}.evil.example", f"https://127.0.0.1:{live.server.port}"):
        headers = {"Origin": origin} if origin else {}
        status = live.request("/api/state", b'{"mode": "passthrough"}', {"Content-Type": "application/json", **headers})[0]
        assert status == 403, origin
    assert json_post(live, b'{"mode": "passthrough"}', **{"Content-Type": "text/plain"})[0] == 415  # a "simple" request
    assert json_post(live, b'{"mode": "passthrough"}', **{"Content-Type": "application/x-www-form-urlencoded"})[0] == 415
    assert live.state()["mode"] == "blur"

    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        viewer(live, origin="http://evil.example")
    assert refused.value.status == 403
    with pytest.raises(aiohttp.WSServerHandshakeError):
        viewer(live, origin=None)
    assert live.state()["viewers"] == 0 and len(live.seen) == 0  # no frame was made for it

    page = live.request("/")
    assert page[0] == 200 and b'<script src="control.js">' in page[1]
    assert live.post({"mode": "color"})[0] == 200 and live.state()["mode"] == "color"


def test_off_loopback_every_route_needs_the_token_and_it_is_never_logged(person_loop, backgrounds, caplog):
    caplog.set_level(logging.DEBUG)
    guarded = Live(person_loop, Settings(output="null", serve=True, backgrounds=str(backgrounds)), host="0.0.0.0")
    token = guarded.server.token
    try:
        assert token and f"?token={token}" in guarded.server.url and "127.0.0.1" not in guarded.server.url
        routes = ("/", "/obs", "/api/state", "/api/thumb?name=red.png", "/ws", "/nope")
        for path in ("/stream.js", "/control.js", "/obs.js", "/style.css"):  # the package's own code, no secret
            assert guarded.request(path)[0] == 200, path
        for path in routes:
            assert guarded.request(path)[0] == 403, path
            assert guarded.request(path + ("&" if "?" in path else "?") + "token=nope")[0] == 403, path
        assert json_post(guarded, b'{"mode": "color"}')[0] == 403
        status, page = guarded.request("/", headers={"Accept": "text/html"})
        assert status == 403 and b"?token=" in page and b"<h1>" in page  # a person is told what to do
        with pytest.raises(aiohttp.WSServerHandshakeError):
            viewer(guarded)

        for path in routes[:-2]:
            assert guarded.request(path + ("&" if "?" in path else "?") + f"token={token}")[0] == 200, path
        status, _ = json_post(guarded, b'{"mode": "color"}', **{"X-Vbg-Token": token})
        assert status == 200
        watching = viewer(guarded, path=f"/ws?token={token}")
        assert watching.message()
        watching.close()
    finally:
        guarded.close()
    assert "http: GET /api/state 200" in caplog.text
    assert token not in caplog.text
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1") and not is_loopback("0.0.0.0")


def test_a_port_in_use_is_one_line_and_leaves_nothing_running(live):
    def server_threads() -> int:
        return sum(t.name in ("server", "obs-stream") or t.name.startswith("files") for t in threading.enumerate())

    threads = server_threads()
    with pytest.raises(VbgError, match=f"cannot serve on 127.0.0.1:{live.server.port}.*pick another --port"):
        ControlServer(live.pipeline, "127.0.0.1", live.server.port)
    assert server_threads() == threads and len(live.pipeline.taps) == 2  # the live server's and the test's


def test_ipv6_loopback(person_loop):
    if not socket.has_ipv6:
        pytest.skip("no IPv6 here")
    try:
        live6 = Live(person_loop, Settings(output="null", serve=True), host="::1")
    except Exception as exc:  # noqa: BLE001 - a machine without an IPv6 loopback
        pytest.skip(f"::1 cannot be bound here: {exc}")
    try:
        live6.base = f"http://[::1]:{live6.server.port}"
        assert live6.server.url == f"http://[::1]:{live6.server.port}/" and live6.server.token is None
        assert live6.request("/api/state")[0] == 200
    finally:
        live6.close()


def test_the_stream_never_carries_the_room(live):
    watching = viewer(live)
    try:
        for _ in range(3):
            colour, alpha = decode(watching.message())
        # Alpha 0, a few pixels away from the person (JPEG rings a little at the edges of both images).
        room = cv2.dilate((alpha > 0).astype(np.uint8), np.ones((9, 9), np.uint8)) == 0
        assert room.mean() > 0.3  # the wall beside the astronaut
        assert np.percentile(colour[room], 99.9) <= 8 and colour[room].mean() < 1  # black, give or take JPEG
        assert colour[alpha > 230].mean() > 40  # the person is sent
    finally:
        watching.close()


def test_a_viewer_that_stops_reading_slows_no_one_and_is_dropped(live):
    reading = viewer(live)
    try:
        assert live.wait_for(lambda: reading.received > 5)
        start = reading.received
        time.sleep(5.0)
        alone = reading.received - start
        stuck = stuck_viewer(live.server.port, live.origin)
        try:
            assert live.wait_for(lambda: live.state()["viewers"] == 2, 5)
            start = reading.received
            time.sleep(5.0)
            together = reading.received - start
            assert together >= 0.8 * alone, (alone, together)
            assert live.wait_for(lambda: live.state()["viewers"] == 1, STALL_TIMEOUT_S + 15)  # dropped
        finally:
            stuck.close()
    finally:
        reading.close()


def test_a_bound_on_connections_and_idle_ones_time_out(live, monkeypatch):
    monkeypatch.setattr("vbg.server.MAX_CONNECTIONS", 8)
    idle = [socket.create_connection(("127.0.0.1", live.server.port)) for _ in range(12)]
    try:
        time.sleep(0.5)
        closed = 0
        for sock in idle:
            sock.settimeout(0.2)
            try:
                closed += sock.recv(1) == b""
            except ConnectionResetError:
                closed += 1
            except TimeoutError:
                pass
        assert closed >= 4  # those over the bound were closed on arrival
    finally:
        for sock in idle:
            sock.close()
    time.sleep(0.5)  # the server sees them go
    assert live.request("/api/state")[0] == 200


def raw_exchange(port: int, data: bytes) -> bytes:
    """The status line a raw request gets ("" if the connection is closed without one)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(data)
        return sock.makefile("rb").readline().strip()


def test_malformed_requests_get_an_answer_and_no_traceback(person_loop, caplog, monkeypatch):
    caplog.set_level(logging.DEBUG)
    monkeypatch.setattr("vbg.server.IDLE_TIMEOUT_S", 1.0)
    guarded = Live(person_loop, Settings(output="null", serve=True), token="s3cretTOKEN")
    port = guarded.server.port
    host = f"Host: 127.0.0.1:{port}\r\n".encode()
    try:
        assert b" 400 " in raw_exchange(port, b"GET /api/state?token=\xc3\xa9 HTTP/1.1\r\n" + host + b"\r\n")
        assert b" 403 " in raw_exchange(port, b"GET /api/state?token=%C3%A9 HTTP/1.1\r\n" + host + b"\r\n")
        post = (f"POST /api/state?token=s3cretTOKEN HTTP/1.1\r\nOrigin: http://127.0.0.1:{port}\r\n"
                "Content-Type: application/json\r\n").encode() + host
        assert b" 400 " in raw_exchange(port, post + "Content-Length: ²\r\n\r\n".encode())
        assert b" 400 " in raw_exchange(port, post + b"Content-Length: 99999999999999999999999\r\n\r\n")
        assert b" 400 " in raw_exchange(port, b"GARBAGE\r\n\r\n")
        with stuck_viewer(port, f"http://127.0.0.1:{port}") as sock:  # no token
            assert b" 403 " in sock.makefile("rb").readline()
        idle = socket.create_connection(("127.0.0.1", port))
        started = time.time()
        idle.settimeout(10)
        assert idle.recv(1) == b"" and time.time() - started < 5  # an idle connection is closed
        idle.close()
        assert guarded.request("/api/state?token=s3cretTOKEN")[0] == 200
    finally:
        guarded.close()
    assert "Traceback" not in caplog.text and not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert "s3cretTOKEN" not in caplog.text


def test_three_hundred_background_changes_leak_neither_memory_nor_files(live, backgrounds, tmp_path):
    for i in range(3):
        cv2.imwrite(str(backgrounds / f"image{i}.png"), np.full((180, 320, 3), 40 * i, np.uint8))
        write_video(backgrounds / f"video{i}.avi", [np.full((180, 320, 3), 20 * j, np.uint8) for j in range(8)])
    watching = viewer(live)  # the pipeline runs and renders each background

    def changes(count: int) -> None:
        for i in range(count):
            kind = i % 3
            if kind == 0:
                change = {"mode": "color", "color": f"#{(i * 7919) % 0xFFFFFF:06x}"}
            else:
                change = {"mode": "image", "background": f"{'image' if kind == 1 else 'video'}{i % 3}.{'png' if kind == 1 else 'avi'}"}
            status, answer = live.post(change)
            assert status == 200, answer
            live.request(f"/api/thumb?name={change.get('background', 'red.png')}")

    try:
        changes(30)  # warm: decoders, arenas and thumbnails made
        assert live.wait_for(lambda: live.pipeline.stats.frames_out >= WARM_FRAMES, 60)  # and the pipeline's buffers
        gc.collect()
        rss, files = rss_mb(), len(os.listdir("/proc/self/fd"))
        changes(300)
        gc.collect()
        time.sleep(0.5)
        assert rss_mb() - rss < 50, (rss, rss_mb())
        assert len(os.listdir("/proc/self/fd")) <= files
    finally:
        watching.close()


def test_obs_stream_sends_person_with_alpha_and_idles_without_viewers(live):
    time.sleep(1.5)
    captured, mattes = live.pipeline.stats.frames_captured, live.pipeline.stats.mattes
    cpu = time.process_time()
    time.sleep(1.5)
    assert live.pipeline.stats.frames_captured - captured <= 1  # paused: nobody watches
    assert live.pipeline.stats.mattes - mattes <= 1
    assert time.process_time() - cpu < 0.5  # and the CPU rests

    watching = viewer(live)
    try:
        colour, alpha = decode(watching.message())
        assert colour.shape[:2] == alpha.shape == (FRAME_SIZE[1], FRAME_SIZE[0])
        assert alpha[250, 360] > 230 and alpha[30, 30] < 25  # the chest is opaque, the wall transparent
        assert live.state()["viewers"] == 1
        assert live.pipeline.stats.frames_captured > captured + 2  # resumed for the viewer
    finally:
        watching.close()
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


def test_the_pipeline_imports_neither_the_server_nor_the_config_watcher():
    source = Path(__file__).parent.parent / "vbg" / "pipeline.py"
    imported = {node.module for node in ast.walk(ast.parse(source.read_text())) if isinstance(node, ast.ImportFrom)}
    assert not imported & {"vbg.server", "vbg.reload", "vbg.live"}


def test_quiet_still_prints_the_address_with_its_token(person_loop):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    running = subprocess.Popen([sys.executable, "-m", "vbg", "--input", str(person_loop), "--output", "null",
                                "--mode", "passthrough", "--serve", "--host", "0.0.0.0", "--port", str(port), "-q"],
                               stderr=subprocess.PIPE, text=True)
    try:
        printed = running.stderr.readline() + running.stderr.readline()
    finally:
        running.terminate()  # it idles until a viewer comes; SIGTERM stops it cleanly
        rest = running.communicate(timeout=30)[1]
    assert running.returncode == 0, rest
    assert f":{port}/?token=" in printed and f":{port}/obs?token=" in printed
    assert "127.0.0.1" not in printed and "Traceback" not in rest



# -- robustness: slots, compression, refusals, file names, odd files (issue 20) -----------------------

def open_connections(live: Live) -> int:
    return len(live.server._runner.server.connections)


async def _come_and_go(url: str, origin: str, times: int) -> int:
    """Compressed viewers (as Chromium connects) that take 0-2 frames and leave; frames received."""
    frames = 0
    async with aiohttp.ClientSession() as session:
        for i in range(times):
            async with session.ws_connect(url, origin=origin, compress=15) as ws:
                for _ in range(i % 3):
                    frames += (await ws.receive(timeout=10)).type == aiohttp.WSMsgType.BINARY
    return frames


def test_viewers_coming_and_going_leave_every_slot_free(live, caplog):
    caplog.set_level(logging.ERROR, logger="asyncio")
    watching = viewer(live)  # the pipeline runs, so a frame is in flight whenever a viewer leaves
    try:
        assert watching.message()
        frames = asyncio.run(_come_and_go(f"ws://127.0.0.1:{live.server.port}/ws", live.origin, 200))
        assert frames > 100
        for _ in range(20):  # and viewers that vanish without a goodbye (a closed browser tab)
            with stuck_viewer(live.server.port, live.origin) as sock:
                sock.recv(65536)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # a reset
        assert live.wait_for(lambda: live.state()["viewers"] == 1 and open_connections(live) <= 2, 10), \
            (live.state()["viewers"], open_connections(live))
    finally:
        watching.close()
    gc.collect()
    assert not [r for r in caplog.records if r.name == "asyncio"], caplog.text  # "Task exception was never retrieved"


def test_twenty_compressed_viewers_cost_the_pipeline_nothing(live, monkeypatch):
    encoded = []
    encode = vbg.server.encode_person
    monkeypatch.setattr("vbg.server.encode_person", lambda *a, **k: encoded.append(1) or encode(*a, **k))

    def output_fps(seconds: float = 3.0) -> tuple[float, int]:
        frames, count, start = live.pipeline.stats.frames_out, len(encoded), time.time()
        time.sleep(seconds)
        return (live.pipeline.stats.frames_out - frames) / (time.time() - start), len(encoded) - count

    url = f"ws://127.0.0.1:{live.server.port}/ws"
    first = ObsViewer(url, live.origin, compress=15)
    viewers = [first]
    try:
        assert first.message() and not first.compressed  # declined: JPEG does not shrink
        alone, _ = output_fps()
        viewers += [ObsViewer(url, live.origin, compress=15) for _ in range(19)]
        assert live.wait_for(lambda: all(v.received for v in viewers))
        together, encodes = output_fps()
        assert not any(v.compressed for v in viewers)
        assert encodes <= together * 3.5 + 2  # one encode per output frame, however many viewers
        assert together >= 0.75 * alone, (alone, together)
    finally:
        for v in viewers:
            v.close()


def raw_status_and_closed(port: int, data: bytes, wait: float = 5.0) -> tuple[bytes, bool]:
    """The status line a raw request gets, and whether the server closed the connection within ``wait`` s."""
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as sock:
        sock.sendall(data)
        reply = b""
        try:
            while chunk := sock.recv(65536):
                reply += chunk
            closed = True
        except TimeoutError:
            closed = False
        except ConnectionResetError:
            closed = True
    return reply.split(b"\r\n", 1)[0], closed


def test_refused_requests_close_their_connection(person_loop):
    guarded = Live(person_loop, Settings(output="null", serve=True), token="s3cret")
    port = guarded.server.port
    own, evil = f"Host: 127.0.0.1:{port}\r\n", f"Host: evil.example:{port}\r\n"
    handshake = ("GET /ws?token=s3cret HTTP/1.1\r\n{host}Origin: {origin}\r\nUpgrade: websocket\r\n"
                 "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
    try:
        for request in (f"GET /api/state?token=s3cret HTTP/1.1\r\n{evil}\r\n",  # foreign Host
                        f"GET /api/state HTTP/1.1\r\n{own}\r\n",  # no token
                        handshake.format(host=own, origin="http://evil.example")):  # foreign Origin
            status, closed = raw_status_and_closed(port, request.encode())
            assert b" 403 " in status and closed, request
        status, closed = raw_status_and_closed(port, f"GET /api/state?token=s3cret HTTP/1.1\r\n{own}\r\n".encode(), 1)
        assert b" 200 " in status and not closed  # an accepted request keeps its connection (keep-alive)
    finally:
        guarded.close()


def test_headers_are_bounded_and_unread_answers_do_not_hold_a_slot(live, monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger="vbg.server")
    monkeypatch.setattr("vbg.server.STALL_TIMEOUT_S", 1.0)
    port = live.server.port
    host = f"Host: 127.0.0.1:{port}\r\n"
    many = "".join(f"X-Filler-{i}: {'a' * 1000}\r\n" for i in range(100))  # 100 kB of headers
    for head in (many, f"X-Long: {'a' * 20000}\r\n"):
        status, closed = raw_status_and_closed(port, f"GET /api/state HTTP/1.1\r\n{host}{head}\r\n".encode())
        assert status.split()[1] in (b"400", b"431") and closed

    before = open_connections(live)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.settimeout(3)
    try:  # pipelined requests whose answers are never read
        with contextlib.suppress(TimeoutError):
            sock.sendall(f"GET /style.css HTTP/1.1\r\n{host}\r\n".encode() * 20000)
        assert live.wait_for(lambda: open_connections(live) > before, 2)
        assert live.wait_for(lambda: open_connections(live) <= before, 6)  # closed, about 1 s after it stalled
        assert "closed a connection whose peer read nothing for 1 s" in caplog.text  # not as idle (10 s)
    finally:
        sock.close()
    assert live.request("/api/state")[0] == 200


NON_UTF8 = b"\xff\xfe-latin"  # a name as an old Windows zip might leave it


def test_odd_files_in_the_backgrounds_folder_are_left_out_and_block_nothing(live, backgrounds, tmp_path):
    folder = os.fsencode(backgrounds)
    cv2.imwrite(str(backgrounds / "blue.jpg"), np.full((90, 160, 3), (255, 0, 0), np.uint8))
    os.rename(backgrounds / "blue.jpg", folder + b"/" + NON_UTF8 + b".jpg")
    write_video(tmp_path / "clip.avi", [np.full((90, 160, 3), (0, 255, 255), np.uint8)] * 4)
    os.rename(tmp_path / "clip.avi", folder + b"/" + NON_UTF8 + b"-clip.avi")
    os.mkfifo(backgrounds / "pipe.png")
    (backgrounds / "broken.jpg").write_bytes(b"not a jpeg at all")
    Image.new("L", (20000, 20000)).save(backgrounds / "huge.png")  # 0.4 MB of PNG, 400 MP decoded
    outside = tmp_path / "private.png"
    cv2.imwrite(str(outside), np.zeros((9, 16, 3), np.uint8))
    (backgrounds / "link.png").symlink_to(outside)

    names = live.state()["backgrounds"]
    escaped = NON_UTF8.decode("utf-8", "backslashreplace")
    assert sorted(names) == sorted([f"{escaped}-clip.avi", f"{escaped}.jpg", "green.png", "red.png"])
    for name in names:
        status, thumb = live.request("/api/thumb?name=" + urllib.parse.quote(name))
        assert status == 200 and thumb[:2] == b"\xff\xd8", name
    for name in ("pipe.png", "broken.jpg", "huge.png", "link.png"):
        assert live.request(f"/api/thumb?name={name}")[0] == 404, name

    watching = viewer(live)
    try:
        for name, colour in ((f"{escaped}.jpg", [255, 0, 0]), (f"{escaped}-clip.avi", [0, 255, 255])):
            status, state = live.post({"mode": "image", "background": name})
            assert status == 200 and state["background"] == name
            assert live.wait_for(lambda: live.seen and np.abs(live.seen[-1].image[5, 5] - np.int16(colour)).max() < 12,
                                 20), name  # the wall shows it (JPEG and MJPG shift colours a little)
        for name in ("pipe.png", "link.png"):
            assert live.post({"mode": "image", "background": name})[0] == 400
        # The file now shown is swapped for a FIFO: its thumbnail is refused at once, and the listing goes on.
        os.remove(folder + b"/" + NON_UTF8 + b"-clip.avi")
        os.mkfifo(folder + b"/" + NON_UTF8 + b"-clip.avi")
        started = time.time()
        assert live.request("/api/thumb?name=" + urllib.parse.quote(f"{escaped}-clip.avi"))[0] == 404
        assert live.request("/api/thumb?name=red.png")[0] == 200 and time.time() - started < 5
    finally:
        watching.close()


@pytest.mark.parametrize("name", [NON_UTF8 + b"-\xe9t\xe9", b"plain"])
def test_file_names_that_are_not_utf8_work_from_the_command_line(person_loop, tmp_path, name):
    """--bg, --input and --config with names the OS allows but that are not UTF-8 (opencv-python
    crashed on them), and the same run with plain names for comparison."""
    folder = os.fsencode(tmp_path)
    background, video, config = (folder + b"/" + name + suffix for suffix in (b".png", b".avi", b".toml"))
    cv2.imwrite(str(tmp_path / "bg.png"), np.full((90, 160, 3), (0, 0, 255), np.uint8))
    os.rename(tmp_path / "bg.png", background)
    shutil.copy(person_loop, video)
    with open(config, "w") as file:
        file.write("frames = 3\n")  # read only from the config file
    out = tmp_path / "out.avi"
    done = subprocess.run([sys.executable, "-m", "vbg", "--config", config, "--input", video, "--bg", background,
                           "--output", str(out), "-q"], capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    frames = read_video(out)
    assert len(frames) == 3 and np.abs(frames[-1][5, 5] - np.int16([0, 0, 255])).max() < 8  # the red background


def test_fifos_and_huge_images_on_the_command_line_are_one_line(person_loop, tmp_path):
    os.mkfifo(tmp_path / "pipe.png")
    Image.new("L", (20000, 20000)).save(tmp_path / "huge.png")
    for option, path, message in (("--bg", "pipe.png", "not a regular file"),
                                  ("--input", "pipe.png", "not a regular file"),
                                  ("--bg", "huge.png", "is over the 80 megapixels vbg decodes")):
        done = subprocess.run([sys.executable, "-m", "vbg", "--input", str(person_loop), option, str(tmp_path / path),
                               "--output", "null", "--frames", "2"], capture_output=True, text=True, timeout=60)
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 1 and message in lines[-1] and "Traceback" not in done.stderr, done.stderr


@pytest.mark.parametrize("body, message", [
    (b'{"blur": 1' + b"0" * 400 + b"}", "setting 'blur' must be a number from 1 to 100"),
    (b'{"smoothing": ' + b"[" * 500 + b"]" * 500 + b"}", "setting 'smoothing' must be a number"),
    (b'{"color": "#00b14"}', "setting 'color' must be a colour '#RRGGBB'"),
    (b'{"blurr": 5}', "no such setting 'blurr': did you mean 'blur'?"),
])
def test_values_out_of_range_are_400_and_change_nothing(live, body, message):
    before = live.state()
    status, answer = json_post(live, body)
    assert status == 400 and message in json.loads(answer)["error"]
    assert live.state() == {**before, "fps": live.state()["fps"]}


def test_colours_are_stored_normalised(live):
    for sent in (" 00b140 ", "\t#00B140\n", "00b140"):
        status, state = live.post({"mode": "color", "color": sent})
        assert status == 200 and state["color"] == "#00b140", sent


def test_faint_alpha_carries_no_colour(live):
    live.post({"unmix": False})  # the worst case: edge pixels as the camera saw them, room and all
    watching = viewer(live)
    try:
        # The matte's soft tail, away from the person: where the person moves (the clip loops; a still
        # phase's matte can be crisp, 0 such pixels on a 2-core AVX2 CPU, where frames came slower).
        for _ in range(150):
            colour, alpha = decode(watching.message())
            shown = cv2.dilate((alpha >= 24).astype(np.uint8), np.ones((17, 17), np.uint8)) > 0  # and JPEG's ringing
            faint = (alpha >= 2) & (alpha <= 14) & ~shown
            if faint.sum() > 100:
                break
        assert faint.sum() > 100
        assert colour[faint].mean() < 4, colour[faint].mean()  # black (the room is 190-205)
    finally:
        watching.close()


# -- control from a terminal (issue 19) ------------------------------------------------------------------

def test_a_program_on_this_computer_may_change_settings_without_origin(live):
    """curl -X POST -H 'Content-Type: application/json' -d '{"mode":"blur"}' http://127.0.0.1:PORT/api/state"""
    status, answer = live.request("/api/state", b'{"mode": "color"}', {"Content-Type": "application/json"})
    assert status == 200 and json.loads(answer)["mode"] == "color" and live.state()["mode"] == "color"
    assert live.request("/api/state", b'{"mode": "blur"}', {"Content-Type": "text/plain"})[0] == 415
    status, answer = json_post(live, b'{"mode": "blur"}', Origin="http://evil.example")
    error = json.loads(answer)["error"]
    assert status == 403 and f"send Origin: http://127.0.0.1:{live.server.port}" in error and "no Origin" in error
    assert live.state()["mode"] == "color"  # neither changed anything
    port = live.server.port
    for origin in (f"http://localhost:{port}", f"http://[::1]:{port}", f"http://127.0.0.1:{port}/",
                   f"HTTP://LOCALHOST:{port}"):  # this server under each of its own names
        assert json_post(live, b'{"mirror": true}', Origin=origin)[0] == 200, origin


def test_the_page_sets_no_cookie_and_scripts_may_send_the_token_as_a_header(person_loop):
    guarded = Live(person_loop, Settings(output="null", serve=True), token="s3cret")
    try:
        request = urllib.request.Request(guarded.base + "/?token=s3cret")
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200 and "Set-Cookie" not in response.headers  # no other local server gets it
        status, _ = guarded.request("/api/state", b'{"mode": "color"}',
                                    {"Content-Type": "application/json", "X-Vbg-Token": "s3cret"})
        assert status == 200
        status, answer = guarded.request("/api/state")
        assert status == 403 and "X-Vbg-Token" in json.loads(answer)["error"]
    finally:
        guarded.close()


def vbg_command(*words: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vbg", *words], capture_output=True, text=True, timeout=60, env=env)


@pytest.mark.parametrize("host", ["127.0.0.1", "0.0.0.0"])  # without a token, and with one
def test_vbg_set_get_and_toggle_drive_the_running_vbg(person_loop, backgrounds, tmp_path, monkeypatch, host):
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    env = {**os.environ, "XDG_RUNTIME_DIR": str(tmp_path)}
    assert "no running `vbg --serve` found" in vbg_command("get", env=env).stderr
    running = Live(person_loop, Settings(output="null", serve=True, backgrounds=str(backgrounds)), host=host)
    try:
        record = next((tmp_path / "vbg").glob("server-*.json"))
        assert record.stat().st_mode & 0o777 == 0o600  # it may hold the token
        assert (running.server.token is not None) == (host == "0.0.0.0")

        pid = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True).stdout)
        stale = tmp_path / "vbg" / f"server-{pid}.json"  # left by a vbg that was killed, and newer
        stale.write_text(json.dumps({"url": "http://127.0.0.1:1/", "token": None, "pid": pid}))
        os.utime(stale, (time.time() + 60, time.time() + 60))

        done = vbg_command("set", "mode=image", "background=red.png", "blur=30", env=env)
        assert done.returncode == 0, done.stderr
        assert not stale.exists()
        assert done.stdout.split() == ['mode="image"', 'background="red.png"', "blur=30"]
        state = running.state() if running.server.token is None else json.loads(
            running.request(f"/api/state?token={running.server.token}")[1])
        assert (state["mode"], state["background"], state["blur"]) == ("image", "red.png", 30)

        assert vbg_command("toggle", "passthrough", env=env).stdout.strip() == 'mode="passthrough"'
        assert vbg_command("toggle", "passthrough", env=env).stdout.strip() == 'mode="image"'  # back to where it was
        assert vbg_command("toggle", "mirror", env=env).stdout.strip() == "mirror=true"
        assert json.loads(vbg_command("get", "mirror", env=env).stdout) is True
        assert json.loads(vbg_command("get", env=env).stdout)["blur"] == 30

        done = vbg_command("set", "blurr=5", env=env)
        assert done.returncode == 1 and "no such setting 'blurr': did you mean 'blur'?" in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1
    finally:
        running.close()
    assert not list((tmp_path / "vbg").glob("server-*.json"))  # removed when it stopped
