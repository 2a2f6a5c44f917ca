"""The control server, OBS stream, hot reload, preview keys and idle saving, on a live pipeline."""

from __future__ import annotations

import logging
import struct
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest

from conftest import FRAME_SIZE, person_frame, write_video
from live_helpers import Live, ObsViewer
from vbg import Settings
from vbg.reload import ConfigWatcher
from vbg.server import is_loopback, websocket_accept, ws_frame
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


def test_state_lists_settings_and_backgrounds(live):
    state = live.state()
    assert {"mode", "background", "blur", "mirror", "fps", "smoothing", "unmix", "light_wrap"} <= set(state)
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


def test_websocket_handshake_and_framing_follow_rfc_6455():
    assert websocket_accept("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="  # the RFC's example
    assert ws_frame(b"hi") == b"\x82\x02hi"
    assert ws_frame(b"x" * 300)[:4] == b"\x82\x7e\x01\x2c"  # 16-bit length
    assert ws_frame(b"x" * 70000)[:2] == b"\x82\x7f"  # 64-bit length
