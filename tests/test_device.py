"""vbg on real v4l2loopback devices, read by real readers, in a throw-away VM (:mod:`vm`).

The guest gets two loopback devices with ``exclusive_caps=1``, as a call app needs them:
/dev/video0 is a fake webcam that ffmpeg feeds from the person clip, /dev/video1 is vbg's
output. ffmpeg's v4l2 capture and ``v4l2-ctl --stream-mmap`` read it, as a call app would.
The tests share one guest and one vbg run and follow each other in the order of a real
session: start, read, leave, come back, lose the webcam, Ctrl-C, restart, doctor.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

import vm
from conftest import FRAME_SIZE
from vbg import registry

WHY_NOT = vm.unavailable()
pytestmark = [pytest.mark.device, pytest.mark.skipif(WHY_NOT is not None, reason=f"no device VM: {WHY_NOT}")]

MODEL = "selfie-landscape"  # the fastest model: the guest's CPU is emulated
WEBCAM, OUTPUT = "/dev/video0", "/dev/video1"
LOAD = "modprobe v4l2loopback devices=2 video_nr=0,1 card_label=webcam,vbg exclusive_caps={caps}"
# The fake webcam's feeder streams (mmap, STREAMON/STREAMOFF) as a camera driver does. ffmpeg's v4l2
# output writes() instead, and with exclusive_caps=1 v4l2loopback 0.12.7 leaves a device that such a
# writer left while it was being read with neither capture nor output caps, until the module is
# reloaded: no webcam could come back there.
FEED = (f"exec v4l2-ctl -d {WEBCAM} --set-fmt-video-out=width={FRAME_SIZE[0]},height={FRAME_SIZE[1]},"
        "pixelformat=YUYV --set-parm 30 --stream-out-mmap --stream-loop --stream-from={clip} 2>/dev/null")
GREEN = np.array([0, 255, 0])  # BGR of --color '#00ff00'
PAUSED, RESUMED = "capture and inference pause", "a viewer is back"
STARTUP_S = 240  # python, onnxruntime and the model load on an emulated CPU


@pytest.fixture(scope="session")
def guest(tmp_path_factory, person_video):
    """The booted guest with both loopback devices and the fake webcam fed; powered off at the end."""
    if not registry.model_path(registry.get_spec(MODEL)).is_file():  # the guest has no network
        subprocess.run([sys.executable, "-m", "vbg", "models", "pull", MODEL], check=True)
    cache = os.environ["VBG_CACHE_DIR"]  # the tests' model cache (conftest.py)
    machine = vm.VM(tmp_path_factory.mktemp("vm"), env={"VBG_CACHE_DIR": cache}, kept=(Path(cache),))
    raw_webcam_clip(person_video, machine.shared / "person.yuyv")
    machine.start()
    try:
        assert machine.run(LOAD.format(caps="1,1")).rc == 0
        machine.feeder = machine.spawn(FEED.format(clip=machine.shared / "person.yuyv"))
        wait_for(lambda: is_capture_device(machine, WEBCAM), 120, "the fake webcam's feed", poll=1)
        yield machine
    finally:
        machine.close()


def raw_webcam_clip(video: Path, target: Path) -> Path:
    """The clip as raw YUYV frames, each padded to whole pages as v4l2loopback's buffers are,
    for ``v4l2-ctl --stream-from`` (which reads one buffer's length per frame)."""
    raw = subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-i", str(video), "-f", "rawvideo",
                          "-pix_fmt", "yuyv422", "-"], capture_output=True, check=True).stdout
    frame = FRAME_SIZE[0] * FRAME_SIZE[1] * 2
    padding = b"\0" * (-frame % 4096)
    target.write_bytes(b"".join(raw[i:i + frame] + padding for i in range(0, len(raw), frame)))
    return target


def wait_for(condition, timeout: float, what: str, poll: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := condition():
            return result
        time.sleep(poll)
    raise AssertionError(f"{what} not within {timeout:g} s")


def is_capture_device(guest: vm.VM, device: str) -> bool:
    """With exclusive_caps=1 a loopback device offers capture (and call apps list it) only
    while a writer streams into it."""
    info = guest.run(f"v4l2-ctl -d {device} --info").output
    return "Video Capture" in info.partition("Device Caps")[2]


def start_vbg(guest: vm.VM, *extra: str) -> vm.Job:
    """vbg from the fake webcam into the output, waiting until a call app can read the output."""
    job = guest.spawn(f"exec vbg --camera {WEBCAM} --vcam-device {OUTPUT} --model {MODEL} -v " + " ".join(extra))
    started = time.monotonic()
    try:
        wait_for(lambda: job.poll() is not None or (
            "output: virtual camera" in job.output and is_capture_device(guest, OUTPUT)), STARTUP_S,
            "vbg's camera to be listed", poll=1)
    except AssertionError as exc:
        raise AssertionError(f"{exc}: {job.output[-3000:]}") from None
    assert job.poll() is None, (job.output, guest.run(f"v4l2-ctl -d {WEBCAM} --all; ls -l /proc/*/fd | grep video").output,
                                guest.feeder.poll(), guest.feeder.output)
    print(f"vbg's camera listed {time.monotonic() - started:.1f} s after its start")
    return job


def holds(guest: vm.VM, pid: int, device: str) -> bool:
    """Whether process ``pid`` in the guest has ``device`` open."""
    return guest.run(f"ls -l /proc/{pid}/fd | grep -q ' {device}$'").rc == 0


def capture_png(guest: vm.VM, name: str, frames: int = 3) -> list[np.ndarray]:
    """Frames read by ffmpeg's v4l2 capture, as a call app reads the output."""
    pattern = guest.shared / f"{name}%02d.png"
    result = guest.run(f"ffmpeg -nostdin -loglevel error -f v4l2 -i {OUTPUT} -frames:v {frames} -y {pattern}", 120)
    assert result.rc == 0, result.output
    return [cv2.imread(str(path)) for path in sorted(guest.shared.glob(f"{name}*.png"))]


def stream(guest: vm.VM, count: int) -> vm.Job:
    """``v4l2-ctl --stream-mmap`` reading ``count`` frames: it prints '<' for each."""
    return guest.spawn(f"exec v4l2-ctl -d {OUTPUT} --stream-mmap --stream-count={count}")


@pytest.fixture(scope="session")
def running(guest):
    """vbg, started while another program already holds its output device open (LFBW#196)."""
    holder = guest.spawn(f"exec 3<>{OUTPUT}; exec sleep 3600")
    wait_for(lambda: holds(guest, holder.pid, OUTPUT), 30, "the holder's open")
    job = start_vbg(guest, "--color '#00ff00'")
    job.holder = holder
    yield job
    job.stop()


def test_a_call_app_reads_the_person_over_the_new_background(guest, running):
    formats = guest.run(f"v4l2-ctl -d {OUTPUT} --all")
    # The first frames may still be the black one vbg writes as it opens the device (to be listed).
    frames = wait_for(lambda: (f := capture_png(guest, "call")) and min(x.mean() for x in f) > 20 and f, 180,
                      "composited frames", poll=0)
    assert len(frames) == 3
    for frame in frames:
        assert frame.shape[:2] == (FRAME_SIZE[1], FRAME_SIZE[0])
        wall = np.concatenate([frame[40:320, 10:95], frame[40:320, 545:630]])  # the clip's wall beside the portrait
        assert np.abs(wall.astype(int) - GREEN).max(axis=2).mean() < 40
        person = frame[150:340, 250:390]  # the astronaut's suit and face
        assert np.abs(person.astype(int) - GREEN).max(axis=2).mean() > 80
    fmt = re.search(r"Format Video Capture:.*?Width/Height\s*:\s*(\d+)/(\d+).*?Pixel Format\s*:\s*'(\w+)'",
                    formats.output, re.S)
    assert fmt and (int(fmt[1]), int(fmt[2])) == FRAME_SIZE, formats.output
    print(f"ffmpeg read {len(frames)} frames {frame.shape[1]}x{frame.shape[0]} {fmt[3]}")


def test_a_reader_that_opened_the_output_first_is_not_in_the_way(guest, running):
    assert holds(guest, running.holder.pid, OUTPUT)  # still open, since before vbg started
    reader = stream(guest, 20)
    result = reader.wait(120)
    assert result.rc == 0 and result.output.count("<") >= 20, result.output


def test_with_no_reader_vbg_pauses_and_releases_the_webcam(guest, running):
    running.holder.stop()
    left = time.monotonic()
    wait_for(lambda: PAUSED in running.output, 30, "the pause")
    paused_after = time.monotonic() - left
    assert not holds(guest, running.pid, WEBCAM), "the webcam is still open while paused"
    before = running.output.count(PAUSED)
    reader = stream(guest, 100_000)
    came = time.monotonic()
    try:
        wait_for(lambda: RESUMED in running.output, 30, "the resume")
        resumed_after = time.monotonic() - came
        wait_for(lambda: "<" in reader.output, 60, "the returning reader's first frame")
        first_frame_after = time.monotonic() - came
        wait_for(lambda: reader.output.count("<") >= 10, 60, "ten frames for the returning reader")
        assert holds(guest, running.pid, WEBCAM)  # the webcam is open again
    finally:
        reader.stop()
    wait_for(lambda: running.output.count(PAUSED) > before, 30, "the second pause")
    print(f"paused {paused_after:.1f} s after the last reader left, webcam released; resumed "
          f"{resumed_after:.1f} s after a reader came, its first frame {first_frame_after:.1f} s after")


def test_a_webcam_that_vanishes_is_picked_up_again(guest, running):
    reader = stream(guest, 100_000)
    try:
        wait_for(lambda: reader.output.count("<") >= 5, 120, "the reader's first frames")
        guest.feeder.stop()
        wait_for(lambda: "stopped delivering frames" in running.output, 30, "vbg noticing the loss")
        received = reader.output.count("<")
        wait_for(lambda: reader.output.count("<") > received + 5, 30, "repeated frames while lost")
        guest.feeder = guest.spawn(FEED.format(clip=guest.shared / "person.yuyv"))
        wait_for(lambda: "is back" in running.output, 60, "the reconnect")
        assert running.poll() is None
    finally:
        reader.stop()
    frames = capture_png(guest, "back", 1)
    wall = frames[0][40:320, 10:100]
    assert np.abs(wall.astype(int) - GREEN).max(axis=2).mean() < 40  # composited again, from the new feed


def test_ctrl_c_then_a_restart_without_a_reboot(guest, running):
    reader = stream(guest, 100_000)  # a call app that stays open across the restart
    try:
        wait_for(lambda: reader.output.count("<") >= 5, 120, "the reader's first frames")
        stopped = time.monotonic()
        result = running.stop(30)
        assert result.rc == 0, result.output
        print(f"Ctrl-C: vbg ended in {time.monotonic() - stopped:.1f} s")
        assert "Traceback" not in result.output
        again = start_vbg(guest, "--color '#ff0000'")
        try:
            received = reader.output.count("<")
            wait_for(lambda: reader.output.count("<") > received + 10, 120, "frames after the restart")

            def red() -> bool:  # the new run's colour, once it is past the black it sends while starting
                wall = capture_png(guest, "restart", 1)[0][40:320, 10:100]
                return np.abs(wall.astype(int) - [0, 0, 255]).max(axis=2).mean() < 40
            wait_for(red, 120, "the new run's colour")
        finally:
            assert again.stop(30).rc == 0
    finally:
        reader.stop()


# What Meet does: ask for a camera, list the cameras by label, open the one called "vbg", play it.
CALL_PAGE = """<!doctype html><script>
(async () => {
  try {
    (await navigator.mediaDevices.getUserMedia({video: true})).getTracks().forEach(t => t.stop());
    const cameras = (await navigator.mediaDevices.enumerateDevices()).filter(d => d.kind == "videoinput");
    const vbg = cameras.find(d => d.label.startsWith("vbg"));
    const video = document.createElement("video");
    video.muted = true;
    video.srcObject = await navigator.mediaDevices.getUserMedia({video: {deviceId: {exact: vbg.deviceId}}});
    await video.play();
    const sleep = ms => new Promise(done => setTimeout(done, ms));
    for (let waited = 0; video.videoWidth <= 2 && waited < 30000; waited += 500) await sleep(500);
    const canvas = document.createElement("canvas");
    [canvas.width, canvas.height] = [video.videoWidth, video.videoHeight];
    const wall = () => canvas.getContext("2d").drawImage(video, 0, 0) ||
      Array.from(canvas.getContext("2d").getImageData(40, 100, 1, 1).data);
    // past the black frame vbg writes as it opens the device
    for (let waited = 0; wall()[1] < 20 && waited < 30000; waited += 500) await sleep(500);
    console.log("VBG-RESULT " + JSON.stringify({cameras: cameras.map(d => d.label), size: [canvas.width, canvas.height],
      frames: video.getVideoPlaybackQuality().totalVideoFrames,
      wall: wall()}));
  } catch (error) { console.log("VBG-RESULT " + JSON.stringify({error: error.name + ": " + error.message})); }
})();
</script>"""


def test_chromium_lists_the_vbg_camera_and_plays_it(guest):
    """vbg starts with nobody reading, so it pauses before its first frame: the camera must be
    listed all the same, Chromium opening it resumes vbg, and Chromium plays what vbg sends."""
    if shutil.which("chromium") is None:
        pytest.skip("chromium is not installed (apt-get install chromium)")
    (guest.shared / "call.html").write_text(CALL_PAGE)
    job = start_vbg(guest, "--color '#00ff00'")
    server = browser = None
    try:
        wait_for(lambda: PAUSED in job.output, 60, "the pause with nobody reading")
        assert guest.run("ip link set lo up").rc == 0
        server = guest.spawn(f"cd {guest.shared} && exec python3 -m http.server 8000 --bind 127.0.0.1")
        browser = guest.spawn("exec chromium --headless=new --no-sandbox --disable-gpu --use-fake-ui-for-media-stream "
                              "--enable-logging=stderr --user-data-dir=/tmp/chromium http://127.0.0.1:8000/call.html")
        found = wait_for(lambda: re.search(r'"VBG-RESULT (\{.*\})", source', browser.output), 240, "Chromium's answer")
        result = json.loads(found[1])
        print(f"Chromium: {result}")
        assert "error" not in result, result
        assert any(label.startswith("vbg") for label in result["cameras"]), result
        assert RESUMED in job.output  # Chromium's open counts as a reader
        # It plays the person over green: vbg kept the camera fed while it resumed (before that,
        # Chromium got no frame twice in three runs, closed the camera and vbg paused again).
        assert result["size"] == [640, 360] and result["frames"] > 0, result
        red, green, blue, _ = result["wall"]
        assert green > 200 and red < 60 and blue < 60, result
    finally:
        for process in (browser, server):
            if process is not None:
                process.signal(9)
        job.stop()


def test_a_busy_output_device_is_one_line(guest):
    """The fake webcam as the output: a loopback device that another program (the feeder) writes to.
    (A device that is no loopback device at all, /dev/null, is tested without the guest in
    test_errors.py: it needs no module.)"""
    result = guest.spawn(f"exec vbg --camera {WEBCAM} --model {MODEL} --vcam-device {WEBCAM}").wait(STARTUP_S)
    errors = [line for line in result.output.splitlines() if line.startswith("vbg: error:")]
    assert result.rc == 1 and len(errors) == 1, result.output
    assert errors[0].startswith(f"vbg: error: virtual camera {WEBCAM} is busy: another program writes to it"), errors
    assert "Traceback" not in result.output


def doctor(guest: vm.VM) -> dict[str, str]:
    result = guest.run(f"vbg doctor --camera {WEBCAM} --vcam-device {OUTPUT}", 180)
    lines = {line.split(":")[0].split(None, 1)[1]: line for line in result.output.splitlines() if ":" in line
             and line.split(None, 1)[0] in ("ok", "warn", "FAIL")}
    lines["rc"] = str(result.rc)
    return lines


def test_doctor_on_the_real_system(guest):
    report = doctor(guest)
    for check in ("virtual camera", "exclusive_caps", "device access", f"camera {WEBCAM}"):
        assert report[check].startswith("ok"), report
    guest.feeder.stop()
    assert guest.run("rmmod v4l2loopback").rc == 0
    report = doctor(guest)
    assert report["virtual camera"].startswith("FAIL") and "not loaded" in report["virtual camera"], report
    assert report["rc"] != "0"
    assert guest.run(LOAD.format(caps="0,0")).rc == 0
    report = doctor(guest)
    assert report["exclusive_caps"].startswith("FAIL") and "Chrome" in report["exclusive_caps"], report
    assert report["rc"] != "0"
