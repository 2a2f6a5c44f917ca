"""The PipeWire camera against a real PipeWire daemon and WirePlumber of the tests' own (a private
session D-Bus and XDG_RUNTIME_DIR), read back by GStreamer's pipewiresrc as a browser reads it."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from live_helpers import wait_for
from vbg import Settings, doctor
from vbg.config import load_settings
from vbg.errors import VbgError
from vbg.pipeline import build
from vbg.pipewire import consumers_of, dump, nodes_named, parse_dump
from vbg.sinks import output_names

pytestmark = pytest.mark.pipewire

ORANGE = "#ff8000"  # R 255, G 128, B 0: every channel different, so a swapped order shows
ORANGE_BGR = (0, 128, 255)
DEBIAN_PACKAGES = "pipewire wireplumber pipewire-bin dbus gstreamer1.0-tools gstreamer1.0-pipewire"


def _missing() -> str | None:
    """Why the real PipeWire tests cannot run here, or None."""
    tools = [t for t in ("pipewire", "wireplumber", "pw-dump", "dbus-daemon", "gst-launch-1.0") if not shutil.which(t)]
    if tools:
        return f"{', '.join(tools)} not installed (Debian: apt install {DEBIAN_PACKAGES})"
    try:
        import gi

        gi.require_version("Gst", "1.0")
        from gi.repository import Gst
    except (ImportError, ValueError) as exc:
        return f"PyGObject with GStreamer is not importable ({exc}): pip install -e '.[pipewire]'"
    Gst.init(None)
    if Gst.ElementFactory.find("pipewiresink") is None:
        return "GStreamer's pipewiresink is missing (apt install gstreamer1.0-pipewire)"
    return None


@contextlib.contextmanager
def private_pipewire(folder: Path, **extra_env: str) -> Iterator[tuple[dict, list[subprocess.Popen]]]:
    """A PipeWire daemon and WirePlumber on a session bus of their own, under ``folder``; this
    process talks to them while the context lasts, and so do the processes given its environment
    (``extra_env`` added; the bus starts the services it activates with it).
    Yields (that environment, [pipewire, wireplumber])."""
    runtime = folder / "xdg-runtime"
    runtime.mkdir(mode=0o700)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIPEWIRE_", "DBUS_SESSION"))}
    env.update(extra_env, XDG_RUNTIME_DIR=str(runtime))
    bus = subprocess.run(["dbus-daemon", "--session", "--fork", "--print-address=1", "--print-pid=1"],
                         capture_output=True, text=True, env=env, timeout=30, check=True)
    address, bus_pid = bus.stdout.split()[:2]
    env["DBUS_SESSION_BUS_ADDRESS"] = address
    daemons: list[subprocess.Popen] = []
    saved = {k: os.environ.get(k) for k in ("XDG_RUNTIME_DIR", "DBUS_SESSION_BUS_ADDRESS", "PIPEWIRE_REMOTE")}
    try:
        for program in ("pipewire", "wireplumber"):
            daemons.append(subprocess.Popen([program], env=env, stdin=subprocess.DEVNULL,
                                            stdout=(folder / f"{program}.log").open("w"), stderr=subprocess.STDOUT))
            if program == "pipewire":
                assert wait_for(lambda: (runtime / "pipewire-0").is_socket(), 15), "pipewire made no socket"
        os.environ.pop("PIPEWIRE_REMOTE", None)
        os.environ.update(XDG_RUNTIME_DIR=env["XDG_RUNTIME_DIR"], DBUS_SESSION_BUS_ADDRESS=address)
        assert wait_for(lambda: any(((o.get("info") or {}).get("props") or {}).get("application.name") == "WirePlumber"
                                 for o in dump()), 20), "WirePlumber did not connect"
        yield env, daemons
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        for daemon in reversed(daemons):
            daemon.terminate()
            try:
                daemon.wait(10)
            except subprocess.TimeoutExpired:
                daemon.kill()
        os.kill(int(bus_pid), signal.SIGTERM)


@pytest.fixture(scope="module")
def pipewire_session(tmp_path_factory):
    """The module's private PipeWire session (see :func:`private_pipewire`); its environment."""
    reason = _missing()
    if reason:
        pytest.skip(reason)
    with private_pipewire(tmp_path_factory.mktemp("pipewire")) as (env, _):
        yield env


class Reader:
    """A PipeWire camera reader: pipewiresrc converting to BGR frames of ``size``, as a call app gets them."""

    def __init__(self, node: str, size: tuple[int, int], env: dict) -> None:
        self.size, self.frames, self.first_at = size, [], None
        self.started = time.monotonic()
        self._process = subprocess.Popen(
            ["gst-launch-1.0", "-q", "pipewiresrc", f"target-object={node}", "!", "videoconvert", "!",
             f"video/x-raw,format=BGR,width={size[0]},height={size[1]}", "!", "fdsink", "fd=1"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        width, height = self.size
        while True:
            data = self._process.stdout.read(width * height * 3)
            if len(data) < width * height * 3:
                return
            if self.first_at is None:
                self.first_at = time.monotonic()
            self.frames.append(np.frombuffer(data, np.uint8).reshape(height, width, 3))

    def wait_frames(self, count: int, seconds: float = 30) -> list[np.ndarray]:
        wait_for(lambda: len(self.frames) >= count, seconds)
        return list(self.frames)

    def close(self) -> None:
        self._process.terminate()
        self._process.wait(10)
        self._thread.join(5)


def _vbg(args: list[str], env: dict, log: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "vbg", *args], env=env, stdout=subprocess.DEVNULL,
                            stderr=log.open("w"))


def _stop(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGINT)
    try:
        process.wait(20)
    except subprocess.TimeoutExpired:
        process.kill()


@contextlib.contextmanager
def vbg_camera(env: dict, log: Path, video: Path, name: str = "vbg") -> Iterator[subprocess.Popen]:
    """``vbg --output pipewire`` on the looping clip over orange, from its node's appearance to
    Ctrl-C; yields the process."""
    vbg = _vbg(["--input", str(video), "--loop", "--color", ORANGE, "--output", "pipewire",
                "--pipewire-name", name], env, log)
    try:
        assert _node_appears(name), log.read_text()
        yield vbg
    finally:
        _stop(vbg)


def _node_appears(name: str, seconds: float = 60) -> bool:
    return wait_for(lambda: bool(nodes_named(name, dump())), seconds)


def _serials(name: str) -> list[str]:
    """The object.serial of the nodes named ``name`` (ids are reused; serials are not)."""
    return [o["info"]["props"].get("object.serial") for o in dump() if o.get("type", "").endswith(":Node")
            and (o.get("info") or {}).get("props", {}).get("node.name") == name]


def _background_and_person(frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean colour of the wall at the clip's left and right edges, and of the astronaut's face."""
    wall = np.concatenate([frame[20:340, 10:100].reshape(-1, 3), frame[20:340, 560:630].reshape(-1, 3)])
    return wall.mean(axis=0), frame[50:120, 270:340].reshape(-1, 3).mean(axis=0)


def test_the_pipewire_camera_shows_the_person_over_the_new_background(pipewire_session, person_video,
                                                                       default_model_path, tmp_path):
    with vbg_camera(pipewire_session, tmp_path / "vbg.log", person_video) as vbg:
        [node] = [o for o in dump() if o.get("type", "").endswith(":Node")
                  and o["info"]["props"].get("node.name") == "vbg"]
        assert node["info"]["props"]["media.class"] == "Video/Source"
        assert node["info"]["props"]["media.role"] == "Camera"
        reader = Reader("vbg", (640, 360), pipewire_session)
        try:
            frames = reader.wait_frames(20)
            node = next(o for o in dump() if o["id"] == node["id"])
        finally:
            reader.close()
    assert len(frames) >= 20, (tmp_path / "vbg.log").read_text()
    # what the reader and vbg agreed on: the clip's size and rate, as I420
    [negotiated] = node["info"]["params"]["Format"]
    assert (negotiated["format"], negotiated["size"]) == ("I420", {"width": 640, "height": 360})
    assert negotiated["framerate"]["num"] / negotiated["framerate"]["denom"] == 30
    wall, face = _background_and_person(frames[-1])
    assert np.abs(wall - ORANGE_BGR).max() < 12, f"background {wall} is not {ORANGE_BGR} (BGR)"
    assert np.abs(face - ORANGE_BGR).max() > 60, f"the person's face {face} was replaced by the background"
    assert vbg.returncode == 0  # Ctrl-C stops it cleanly


def test_nobody_linked_pauses_and_a_reader_resumes(pipewire_session, person_video, default_model_path, tmp_path):
    log = tmp_path / "vbg.log"
    with vbg_camera(pipewire_session, log, person_video, "vbg-idle"):
        first_node = _serials("vbg-idle")
        assert wait_for(lambda: "nobody is watching" in log.read_text(), 30), log.read_text()
        reader = Reader("vbg-idle", (640, 360), pipewire_session)
        try:
            assert wait_for(lambda: "a viewer is back" in log.read_text(), 10), log.read_text()
            resumed_s = time.monotonic() - reader.started
            frames = reader.wait_frames(10)
            first_frame_s = reader.first_at - reader.started
        finally:
            reader.close()
        left = time.monotonic()
        assert wait_for(lambda: log.read_text().count("nobody is watching") >= 2, 10), log.read_text()
        paused_s = time.monotonic() - left
        # a second reader after the first left gets frames too, from the node made again for it
        assert wait_for(lambda: _serials("vbg-idle") not in ([], first_node), 5)
        again = Reader("vbg-idle", (640, 360), pipewire_session)
        try:
            assert len(again.wait_frames(5)) >= 5
        finally:
            again.close()
    print(f"PipeWire: resumed {resumed_s:.2f} s after a reader started, its first frame after "
          f"{first_frame_s:.2f} s; paused again {paused_s:.2f} s after it left")
    assert len(frames) >= 10
    assert resumed_s < 5 and paused_s < 5


def test_the_virtual_camera_and_pipewire_at_once(pipewire_session, recording_vcam, person_video,
                                                  default_model_path):
    from vbg.sources import open_input

    settings = Settings(output="vcam,pipewire", vcam_backend="recording", mode="color", color=ORANGE,
                        pipewire_name="vbg-both", frames=150)
    pipeline = build(settings, open_input(str(person_video), loop=True, paced=True))
    running = threading.Thread(target=pipeline.run, daemon=True)
    running.start()
    try:
        reader = Reader("vbg-both", (640, 360), pipewire_session)
        try:
            frames = reader.wait_frames(5)
        finally:
            reader.close()
        running.join(60)
    finally:
        pipeline.abort()
        pipeline.close()
    (camera,) = recording_vcam
    assert len(frames) >= 5 and len(camera.frames) >= 100
    for image in (frames[-1], camera.images()[-1]):
        wall, _ = _background_and_person(image)
        assert np.abs(wall - ORANGE_BGR).max() < 12


def test_the_default_output_is_pipewire_where_there_is_no_v4l2loopback(pipewire_session, person_video, tmp_path):
    if Path("/sys/module/v4l2loopback").is_dir():
        pytest.skip("v4l2loopback is loaded here: the default output is its device")
    log = tmp_path / "vbg.log"
    vbg = _vbg(["--input", str(person_video), "--loop", "--mode", "passthrough", "--pipewire-name", "vbg-auto"],
               pipewire_session, log)
    try:
        assert _node_appears("vbg-auto"), log.read_text()
    finally:
        _stop(vbg)
    assert "the output is a PipeWire camera" in log.read_text()


def _one_line(args: list[str], env: dict) -> str:
    result = subprocess.run([sys.executable, "-m", "vbg", *args], env=env, capture_output=True, text=True,
                            timeout=60)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


def test_a_node_name_that_is_taken_is_one_line(pipewire_session, person_video):
    other = subprocess.Popen(["gst-launch-1.0", "-q", "videotestsrc", "is-live=true", "!", "pipewiresink",
                              "mode=provide", "stream-properties=props,media.class=Video/Source,node.name=taken"],
                             env=pipewire_session, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert _node_appears("taken", 15)
        line = _one_line(["--input", str(person_video), "--output", "pipewire", "--pipewire-name", "taken"],
                         pipewire_session)
    finally:
        other.terminate()
        other.wait(10)
    assert "a PipeWire node named 'taken' exists already" in line and "--pipewire-name" in line


def test_a_missing_pipewiresink_plugin_names_the_package(pipewire_session, person_video, tmp_path):
    env = {**pipewire_session, "GST_PLUGIN_SYSTEM_PATH_1_0": str(tmp_path), "GST_PLUGIN_PATH_1_0": "",
           "GST_REGISTRY_1_0": str(tmp_path / "registry.bin")}
    line = _one_line(["--input", str(person_video), "--output", "pipewire"], env)
    assert "pipewiresink element is missing: `sudo apt install gstreamer1.0-pipewire`" in line


def test_pygobject_missing_names_the_extra(pipewire_session, person_video, tmp_path):
    (tmp_path / "gi").mkdir()  # an import of gi that fails, as where PyGObject is not installed
    (tmp_path / "gi" / "__init__.py").write_text("raise ImportError('No module named gi')\n")
    line = _one_line(["--input", str(person_video), "--output", "pipewire"],
                     {**pipewire_session, "PYTHONPATH": str(tmp_path)})
    assert "needs PyGObject, which is not installed" in line and "pip install -e '.[pipewire]'" in line


def test_no_pipewire_daemon_is_one_line(person_video, tmp_path):
    env = {**os.environ, "XDG_RUNTIME_DIR": str(tmp_path)}
    env.pop("PIPEWIRE_REMOTE", None)
    line = _one_line(["--input", str(person_video), "--output", "pipewire"], env)
    assert "no PipeWire daemon runs in this session" in line and "systemctl --user start pipewire" in line


def test_no_camera_of_either_kind_names_both_fixes(person_video, tmp_path):
    if Path("/sys/module/v4l2loopback").is_dir():
        pytest.skip("v4l2loopback is loaded here")
    env = {**os.environ, "XDG_RUNTIME_DIR": str(tmp_path)}
    line = _one_line(["--input", str(person_video)], env)
    assert "sudo modprobe v4l2loopback" in line and "systemctl --user start pipewire" in line


def test_doctor_on_the_real_pipewire(pipewire_session, tmp_path):
    from test_doctor import fake_system

    sys_root, dev_root = fake_system(tmp_path, loaded=False)  # no v4l2loopback: PipeWire is the way
    checks = {c.name: c for c in doctor.run_checks(sys_root=sys_root, dev_root=dev_root, port=0)}
    for name in ("PipeWire", "session manager", "PipeWire output"):
        assert checks[name].status == doctor.OK, checks[name].line()
    assert "WirePlumber" in checks["session manager"].found
    portal, v4l2 = checks["camera portal"], checks["virtual camera"]
    if portal.status == doctor.OK:  # the default output falls back to a camera browsers see: v4l2loopback is optional
        assert v4l2.status == doctor.WARN and "PipeWire camera instead" in v4l2.found
    else:  # here: xdg-desktop-portal without a backend, or none at all; browsers would not see the camera
        assert portal.status == doctor.FAIL and v4l2.status == doctor.FAIL
        assert "browsers, OBS" in portal.found and "xdg-desktop-portal-gtk" in portal.fix


def test_outputs_are_listed_once_each():
    from vbg.cli import _run_parser

    repeated = _run_parser().parse_args(["--output", "vcam,pipewire", "--output", "out.mp4"]).output
    assert output_names(repeated) == ["vcam", "pipewire", "out.mp4"]
    with pytest.raises(VbgError, match="names pipewire twice"):
        output_names("pipewire,vcam,pipewire")


def test_a_config_file_lists_several_outputs(tmp_path):
    config = tmp_path / "both.toml"
    config.write_text('output = ["vcam", "pipewire"]\npipewire_name = "studio"\n')
    settings = load_settings(config)
    assert output_names(settings.output) == ["vcam", "pipewire"] and settings.pipewire_name == "studio"
    config.write_text("output = []\n")
    with pytest.raises(VbgError, match="setting 'output' must be"):
        load_settings(config)


def test_the_consumer_count_reads_links_out_of_the_node():
    graph = [{"id": 7, "type": "PipeWire:Interface:Node", "info": {"props": {"node.name": "vbg"}}},
             {"id": 9, "type": "PipeWire:Interface:Link", "info": {"output-node-id": 7, "input-node-id": 8}},
             {"id": 10, "type": "PipeWire:Interface:Link", "info": {"output-node-id": 3, "input-node-id": 7}}]
    assert nodes_named("vbg", graph) == [7]
    assert consumers_of(7, graph) == 1


def test_a_dump_split_over_several_arrays_is_read_whole():
    """pw-dump sometimes prints one object, then the rest of the graph in a second array, and an
    object removed while it dumped as ``{"id": N, "info": null}``: vbg's node must be found all the
    same (reading only the first array missed it in 5 of 3,858 dumps of a running vbg)."""
    text = """[
  {"id": 0, "type": "PipeWire:Interface:Core", "info": {"props": {}}}
]
[
  {"id": 0, "type": "PipeWire:Interface:Core", "info": {"props": {"core.name": "pipewire-0"}}},
  {"id": 7, "type": "PipeWire:Interface:Node", "info": {"props": {"node.name": "vbg"}}},
  {"id": 9, "type": "PipeWire:Interface:Link", "info": {"output-node-id": 7, "input-node-id": 8}},
  {"id": 38, "type": "PipeWire:Interface:Client", "info": {"props": {}}}
]
[
  {"id": 38, "info": null}
]
"""
    graph = parse_dump(text)
    assert nodes_named("vbg", graph) == [7] and consumers_of(7, graph) == 1
    assert sorted(o["id"] for o in graph) == [0, 7, 9]  # the client removed while it dumped is gone
    assert next(o for o in graph if o["id"] == 0)["info"]["props"] == {"core.name": "pipewire-0"}  # its last state
    assert parse_dump("") == [] and parse_dump("[]\n") == []



def test_pipewire_going_away_stops_vbg_with_one_line(pipewire_session, person_video, tmp_path):
    with private_pipewire(tmp_path) as (env, (daemon, _)):  # a daemon of this test's own, to stop
        vbg = subprocess.Popen([sys.executable, "-m", "vbg", "--input", str(person_video), "--loop", "--mode",
                                "passthrough", "--output", "pipewire", "-q"], env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
        try:
            assert _node_appears("vbg", 60)
            daemon.kill()
            _, err = vbg.communicate(timeout=30)
        finally:
            if vbg.poll() is None:
                vbg.kill()
    lines = err.strip().splitlines()
    assert vbg.returncode == 1 and len(lines) == 1 and "Traceback" not in err, err
    # "the PipeWire camera 'vbg' stopped: " first, unless vbg was still starting when it went
    assert "no PipeWire daemon runs in this session" in lines[0]
    assert lines[0].count("systemctl --user start pipewire") == 1


@contextlib.contextmanager
def portal_session(folder: Path) -> Iterator[dict]:
    """:func:`private_pipewire` with xdg-desktop-portal and its gtk backend (on an Xvfb display of its
    own) on the session bus, the camera permission allowed in a permission store under ``folder``
    (as after a person's first "Allow"); yields the environment."""
    missing = [t for t in ("Xvfb", "gdbus") if not shutil.which(t)] + [
        p for p in ("/usr/libexec/xdg-desktop-portal", "/usr/libexec/xdg-desktop-portal-gtk") if not Path(p).exists()]
    if missing:
        pytest.skip(f"{', '.join(missing)} missing (apt install xvfb libglib2.0-bin xdg-desktop-portal "
                    "xdg-desktop-portal-gtk)")
    display = subprocess.Popen(["Xvfb", "-displayfd", "1", "-screen", "0", "640x480x24"], stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, text=True)
    try:
        number = display.stdout.readline().strip()
        with private_pipewire(folder, DISPLAY=f":{number}", XDG_CURRENT_DESKTOP="GNOME",
                              XDG_DATA_HOME=str(folder / "data")) as (env, _):
            subprocess.run(["gdbus", "call", "--session", "--dest", "org.freedesktop.impl.portal.PermissionStore",
                            "--object-path", "/org/freedesktop/impl/portal/PermissionStore", "--method",
                            "org.freedesktop.impl.portal.PermissionStore.SetPermission", "devices", "true", "camera",
                            "", "['yes']"], env=env, check=True, capture_output=True, timeout=40)
            yield env
    finally:
        display.terminate()
        display.wait(10)


def _portal_camera_remote(address: str) -> int:
    """What a browser does: ask xdg-desktop-portal for the camera (AccessCamera) and open the
    PipeWire remote it hands out (OpenPipeWireRemote), on the bus at ``address``; the remote's fd."""
    gi = pytest.importorskip("gi")
    gi.require_version("Gio", "2.0")
    from gi.repository import Gio, GLib

    bus = Gio.DBusConnection.new_for_address_sync(
        address, Gio.DBusConnectionFlags.AUTHENTICATION_CLIENT | Gio.DBusConnectionFlags.MESSAGE_BUS_CONNECTION)
    token = "vbgtest"
    request = f"/org/freedesktop/portal/desktop/request/{bus.get_unique_name()[1:].replace('.', '_')}/{token}"
    loop, answer = GLib.MainLoop(), []

    def on_response(connection, sender, path, interface, signal, parameters):
        answer.append(parameters.unpack()[0])
        loop.quit()

    bus.signal_subscribe("org.freedesktop.portal.Desktop", "org.freedesktop.portal.Request", "Response", request,
                         None, Gio.DBusSignalFlags.NO_MATCH_RULE, on_response)
    bus.call_sync("org.freedesktop.portal.Desktop", "/org/freedesktop/portal/desktop", "org.freedesktop.portal.Camera",
                  "AccessCamera", GLib.Variant("(a{sv})", ({"handle_token": GLib.Variant("s", token)},)), None,
                  Gio.DBusCallFlags.NONE, 20000, None)
    GLib.timeout_add_seconds(20, loop.quit)
    loop.run()
    assert answer == [0], f"AccessCamera answered {answer}"
    reply, fds = bus.call_with_unix_fd_list_sync(
        "org.freedesktop.portal.Desktop", "/org/freedesktop/portal/desktop", "org.freedesktop.portal.Camera",
        "OpenPipeWireRemote", GLib.Variant("(a{sv})", ({},)), GLib.VariantType("(h)"), Gio.DBusCallFlags.NONE,
        20000, None, None)
    return fds.get(reply.unpack()[0])


def test_the_camera_portal_hands_the_node_to_a_reader(pipewire_session, person_video, tmp_path):
    """Through xdg-desktop-portal, as browsers and sandboxed apps reach cameras: it counts vbg's node
    as a camera, grants it, and a reader on the PipeWire remote it hands out gets vbg's frames."""
    with portal_session(tmp_path) as env, vbg_camera(env, tmp_path / "vbg.log", person_video):
        # The first call starts the portal. (xdg-desktop-portal 1.16 reads PipeWire's cameras when
        # it starts; here it did not follow nodes added later, so it starts after vbg.)
        present = subprocess.run(
            ["gdbus", "call", "--session", "--timeout", "20", "--dest", "org.freedesktop.portal.Desktop",
             "--object-path", "/org/freedesktop/portal/desktop", "--method", "org.freedesktop.DBus.Properties.Get",
             "org.freedesktop.portal.Camera", "IsCameraPresent"], env=env, capture_output=True, text=True, timeout=40)
        fd = _portal_camera_remote(env["DBUS_SESSION_BUS_ADDRESS"])
        reader = subprocess.Popen(
            ["gst-launch-1.0", "-q", "pipewiresrc", f"fd={fd}", "target-object=vbg", "num-buffers=5", "!",
             "videoconvert", "!", "video/x-raw,format=BGR,width=640,height=360", "!", "fdsink", "fd=1"],
            env=env, pass_fds=(fd,), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        os.close(fd)
        data, _ = reader.communicate(timeout=60)
    assert present.stdout.strip() == "(<true>,)", present.stderr
    assert len(data) == 5 * 640 * 360 * 3
    wall, _ = _background_and_person(np.frombuffer(data, np.uint8).reshape(5, 360, 640, 3)[-1])
    assert np.abs(wall - ORANGE_BGR).max() < 12


CHROMIUM_READS = """async () => {
    let stream = null;
    for (let tries = 0; !stream; tries++) {  // Chromium lists PipeWire cameras a moment after it starts
        try {
            stream = await navigator.mediaDevices.getUserMedia({video: true});
        } catch (error) {
            if (tries === 20) throw error;
            await new Promise(resolve => setTimeout(resolve, 500));
        }
    }
    const track = stream.getVideoTracks()[0];
    const video = document.createElement("video");
    video.srcObject = stream;
    video.muted = true;
    await video.play();
    await new Promise(resolve => setTimeout(resolve, 1500));
    const canvas = document.createElement("canvas");
    const context = canvas.getContext("2d");
    let wall = [0, 0, 0];
    for (let i = 0; i < 40; i++) {  // black while vbg resumes for this reader (a slow CPU took over 1.5 s)
        canvas.width = video.videoWidth; canvas.height = video.videoHeight;
        context.drawImage(video, 0, 0);
        wall = Array.from(context.getImageData(40, 180, 1, 1).data.slice(0, 3));
        if (wall[0] + wall[1] + wall[2] > 30) break;
        await new Promise(resolve => setTimeout(resolve, 250));
    }
    const devices = (await navigator.mediaDevices.enumerateDevices()).filter(d => d.kind === "videoinput");
    track.stop();
    return {label: track.label, width: video.videoWidth, height: video.videoHeight, wall: wall,
            devices: devices.map(d => d.label)};
}"""


def test_chromium_reads_the_pipewire_camera(pipewire_session, person_video, tmp_path):
    """What Meet does in Chromium with its PipeWire camera flag on: getUserMedia, through the camera
    portal (the page's prompt faked), lists vbg and reads its frames."""
    playwright = pytest.importorskip("playwright.sync_api")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium is not installed (.ci/run installs it)")
    with portal_session(tmp_path) as env, vbg_camera(env, tmp_path / "vbg.log", person_video):
        with playwright.sync_playwright() as p:
            browser = p.chromium.launch(
                executable_path=chromium, env=env, headless=False,  # on the portal's Xvfb display
                args=["--no-sandbox", "--disable-gpu", "--no-first-run", "--use-fake-ui-for-media-stream",
                      "--enable-features=WebRtcPipeWireCamera"])
            try:
                page = browser.new_page()
                # localhost is a secure context, which getUserMedia needs; the page is served here
                page.route("http://localhost/", lambda route: route.fulfill(
                    body="<!doctype html><title>call</title>", content_type="text/html"))
                page.goto("http://localhost/")
                seen = page.evaluate(CHROMIUM_READS)
            finally:
                browser.close()
    assert seen["label"] == "vbg" and seen["devices"] == ["vbg"], seen  # the camera list shows it by name
    assert (seen["width"], seen["height"]) == (640, 360)
    assert np.abs(np.array(seen["wall"]) - ORANGE_BGR[::-1]).max() < 12, seen  # RGB in the page
