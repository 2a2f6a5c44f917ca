"""Every user mistake: one line on stderr, a non-zero exit, no traceback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest

from vbg.cli import main


def one_line_error(capsys, argv: list[str]) -> str:
    status = main(argv)
    err = capsys.readouterr().err
    assert status != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("vbg") and "error:" in lines[0] and "Traceback" not in err
    return lines[0]


def test_missing_background_file(capsys, person_video):
    line = one_line_error(capsys, ["--input", str(person_video), "--bg", "/nowhere/beach.jpg", "--output", "null"])
    assert "background /nowhere/beach.jpg does not exist" in line


def test_missing_background_is_named_before_the_camera_is_tried(capsys):
    line = one_line_error(capsys, ["--bg", "/nowhere/beach.jpg", "--camera", "7", "--output", "null"])
    assert "background /nowhere/beach.jpg does not exist" in line


def test_bad_colour(capsys, person_video):
    line = one_line_error(capsys, ["--input", str(person_video), "--color", "red", "--output", "null"])
    assert "'color'" in line and "#RRGGBB" in line


def test_unknown_config_key(capsys, tmp_path):
    config = tmp_path / "mine.toml"
    config.write_text('mode = "blur"\nbackground_colour = "#000000"\n')
    line = one_line_error(capsys, ["--config", str(config)])
    assert "unknown setting 'background_colour'" in line and str(config) in line


def test_missing_camera(capsys):
    line = one_line_error(capsys, ["--camera", "7", "--output", "null"])
    assert "camera 7 could not be opened" in line


@pytest.mark.parametrize("device", ["/dev/video10", "/dev/null"])  # missing; there but no video device
def test_missing_virtual_camera_gives_the_v4l2loopback_line(capsys, person_video, device):
    line = one_line_error(capsys, ["--input", str(person_video), "--vcam-device", device])
    assert "no virtual camera device" in line
    assert "sudo modprobe v4l2loopback devices=1 video_nr=10 card_label=vbg exclusive_caps=1" in line


@pytest.fixture
def busy_port():
    """A port some other program listens on."""
    with socket.create_server(("127.0.0.1", 0)) as other:
        yield other.getsockname()[1]


@pytest.mark.parametrize("argv, fragment", [
    (["--vcam-device", "/dev/video10"], "no virtual camera device"),
    (["--output", "/nowhere/out.mp4"], "folder /nowhere does not exist"),
    (["--output", "null", "--serve", "--port", "BUSY"], "cannot serve on 127.0.0.1:BUSY"),
    (["--camera", "7", "--output", "null"], "camera 7 could not be opened"),
])
def test_a_fresh_cache_downloads_nothing_before_the_output_source_and_port_are_checked(
        capsys, monkeypatch, tmp_path, person_video, busy_port, argv, fragment):
    monkeypatch.setenv("VBG_CACHE_DIR", str(tmp_path))
    source = [] if "--camera" in argv else ["--input", str(person_video)]
    started = time.monotonic()
    line = one_line_error(capsys, source + [str(busy_port) if a == "BUSY" else a for a in argv])
    assert time.monotonic() - started < 2.0
    assert fragment.replace("BUSY", str(busy_port)) in line
    assert list(tmp_path.iterdir()) == []  # no model pulled or made


def test_unknown_virtual_camera_backend(capsys, person_video):
    line = one_line_error(capsys, ["--input", str(person_video), "--vcam-backend", "magic"])
    assert "unknown virtual camera backend 'magic'" in line


def test_corrupt_model(capsys, monkeypatch, tmp_path, person_video):
    monkeypatch.setenv("VBG_CACHE_DIR", str(tmp_path))
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "modnet.onnx").write_bytes(b"\0" * 1000)
    line = one_line_error(capsys, ["--input", str(person_video), "--model", "modnet", "--output", "null"])
    assert "truncated or corrupt" in line and "vbg models pull --force modnet" in line


def test_missing_input_and_unwritable_output(capsys, person_video, tmp_path):
    assert "does not exist" in one_line_error(capsys, ["--input", str(tmp_path / "nope.mp4"), "--output", "null"])
    line = one_line_error(capsys, ["--input", str(person_video), "--output", str(tmp_path / "out.gif")])
    assert "cannot write video" in line


@pytest.mark.parametrize("argv, fragment", [
    (["--device", "tpu"], "invalid choice: 'tpu'"),
    (["--bg", "a.jpg", "--blur"], "not allowed with argument"),
    (["--frames", "many"], "invalid int value"),
    (["models", "pull", "u2net"], "unknown model 'u2net'"),
])
def test_usage_mistakes(capsys, argv, fragment):
    assert fragment in one_line_error(capsys, argv)


@pytest.mark.parametrize("argv, setting", [
    (["--smoothing", "nan"], "smoothing"),
    (["--blur", "nan"], "blur"),
    (["--light-wrap", "inf"], "light_wrap"),
    (["--camera-fps=-inf"], "camera_fps"),
])
def test_nan_and_infinity_are_refused(capsys, person_video, argv, setting):
    line = one_line_error(capsys, ["--input", str(person_video), "--output", "null", *argv])
    assert f"setting '{setting}' must be a number" in line


def test_nan_in_a_config_file_is_refused(capsys, tmp_path):
    config = tmp_path / "mine.toml"
    config.write_text("smoothing = nan\n")
    line = one_line_error(capsys, ["--config", str(config)])
    assert str(config) in line and "setting 'smoothing' must be a number from 0 to 1" in line


def test_folder_given_to_bg_is_named_as_a_folder(capsys, tmp_path):
    line = one_line_error(capsys, ["--bg", str(tmp_path), "--output", "null"])
    assert f"background {tmp_path} is a folder" in line and "--backgrounds" in line


@pytest.mark.parametrize("field, value, fragment", [
    ("size", "big", "'size' must be a byte count"),
    ("sha256", 42, "'sha256' must be 64 hex digits"),
    ("default_matte_size", 2.5, "'default_matte_size' must be an integer"),
    ("input", "rgb", "must be tables"),
])
def test_wrong_type_in_the_local_registry_is_one_line(capsys, monkeypatch, tmp_path, field, value, fragment):
    import json

    from vbg.registry import _package_tables

    monkeypatch.setenv("VBG_CACHE_DIR", str(tmp_path))
    table = {**_package_tables()["modnet"], field: value, "path": str(tmp_path / "mine.onnx")}
    (tmp_path / "registry.json").write_text(json.dumps({"mine": table}))
    line = one_line_error(capsys, ["models", "list"])
    assert "model registry entry 'mine'" in line and fragment in line


def test_models_path_before_pull(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("VBG_CACHE_DIR", str(tmp_path))
    assert "run `vbg models pull modnet`" in one_line_error(capsys, ["models", "path", "modnet"])


def test_console_entry_point_exit_status_and_stderr(person_video):
    result = subprocess.run([sys.executable, "-m", "vbg", "--input", str(person_video), "--vcam-device",
                             "/dev/video10"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("vbg: error: no virtual camera device")
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("argv, fragment", [
    (["--backgound", "a.jpg"], "did you mean --bg or --backgrounds?"),
    (["--blurr", "5"], "did you mean --blur?"),
    (["model", "list"], "did you mean `vbg models`?"),
])
def test_typos_get_a_did_you_mean(capsys, argv, fragment):
    assert fragment in one_line_error(capsys, argv)


def test_a_size_no_frame_buffer_can_hold_is_refused(capsys, person_video):
    line = one_line_error(capsys, ["--input", str(person_video), "--size", "100000x100000", "--output", "null"])
    assert "--size 100000x100000 is too large" in line


def test_an_odd_size_is_rounded_before_the_run_and_said(capsys, person_video, tmp_path):
    out = tmp_path / "out.mp4"
    assert main(["--input", str(person_video), "--size", "1281x721", "--frames", "2", "--output", str(out)]) == 0
    assert "rounded to 1280x720" in capsys.readouterr().err
    written = cv2.VideoCapture(str(out))
    assert (written.get(cv2.CAP_PROP_FRAME_WIDTH), written.get(cv2.CAP_PROP_FRAME_HEIGHT)) == (1280, 720)


def test_config_and_output_that_are_folders(capsys, person_video, tmp_path):
    assert f"config file {tmp_path} is a folder" in one_line_error(capsys, ["--config", str(tmp_path)])
    line = one_line_error(capsys, ["--input", str(person_video), "--output", str(tmp_path)])
    assert "it is a folder; name a file in it" in line


def test_a_run_that_fails_part_way_removes_its_unfinished_video(capsys, tmp_path):
    frames = tmp_path / "frames"
    frames.mkdir()
    for index in range(3):
        cv2.imwrite(str(frames / f"{index:03d}.png"), np.full((64, 96, 3), 40 * index, np.uint8))
    good = (frames / "002.png").read_bytes()
    (frames / "003.png").write_bytes(good[: len(good) // 3])  # a broken PNG after good ones
    out = tmp_path / "out.avi"
    assert main(["--input", str(frames), "--output", str(out)]) != 0
    err = capsys.readouterr().err  # the run's opening lines, then its one-line error
    line = err.strip().splitlines()[-1]
    assert "Traceback" not in err and line.startswith("vbg: error:")
    assert "003.png" in line and f"the unfinished {out} was removed" in line
    assert not out.exists()


def one_line_error_fd(capfd, argv: list[str]) -> str:
    """As :func:`one_line_error`, but what C libraries write to stderr themselves counts too."""
    status = main(argv)
    err = capfd.readouterr().err
    assert status != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vbg: error:"), err
    return lines[0]


@pytest.mark.parametrize("suffix", [".jpg", ".png"])
def test_a_truncated_background_image_is_refused_in_one_line(capfd, person_video, tmp_path, suffix):
    whole = tmp_path / f"whole{suffix}"
    cv2.imwrite(str(whole), (np.random.default_rng(1).random((240, 320, 3)) * 255).astype(np.uint8))
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])  # an unfinished download
    line = one_line_error_fd(capfd, ["--input", str(person_video), "--bg", str(cut), "--output", "null", "-q"])
    assert f"image {cut} is truncated" in line and "save or copy it again" in line


def test_a_jpeg_with_a_video_after_its_end_is_whole(tmp_path):
    from vbg.sources import read_image

    photo = tmp_path / "motion.jpg"
    cv2.imwrite(str(photo), np.full((48, 64, 3), 128, np.uint8))
    photo.write_bytes(photo.read_bytes() + b"\0\0\0\x18ftypmp42" + bytes(64))  # a motion photo's clip
    assert read_image(photo).shape == (48, 64, 3)


def test_an_output_on_a_read_only_file_system_says_read_only(capfd, person_video, tmp_path):
    mount = tmp_path / "ro"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(mount)], capture_output=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a read-only tmpfs here (needs root): {made.stderr.decode().strip()}")
    try:
        line = one_line_error_fd(capfd, ["--input", str(person_video), "--output", str(mount / "out.mp4"), "-q"])
    finally:
        subprocess.run(["umount", str(mount)], check=True)
    assert f"cannot write video {mount / 'out.mp4'}: read-only file system" in line


@pytest.mark.parametrize("role", ["--input", "--bg"])
def test_a_truncated_video_says_truncated_in_one_line_without_ffmpeg_lines(capfd, person_video, tmp_path, role):
    whole = tmp_path / "whole.mp4"
    writer = cv2.VideoWriter(str(whole), cv2.VideoWriter_fourcc(*"mp4v"), 15, (160, 120))
    for index in range(20):
        writer.write(np.full((120, 160, 3), 10 * index, np.uint8))
    writer.release()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])  # mp4v keeps its index (moov) at the end
    argv = ["--input", str(cut)] if role == "--input" else ["--input", str(person_video), "--bg", str(cut)]
    line = one_line_error_fd(capfd, [*argv, "--output", "null", "-q"])
    assert f"cannot decode video {cut}" in line and "truncated" in line


def test_a_fifo_as_background_or_input_frame_is_refused_without_waiting(person_video, tmp_path):
    fifo = tmp_path / "beach.jpg"
    os.mkfifo(fifo)  # nothing ever writes to it: opening it for reading would wait for good
    frames = tmp_path / "frames"
    frames.mkdir()
    cv2.imwrite(str(frames / "000.png"), np.zeros((48, 64, 3), np.uint8))
    os.mkfifo(frames / "001.png")
    for argv, said in [(["--input", str(person_video), "--bg", str(fifo)], f"background {fifo} is a FIFO"),
                       (["--input", str(frames)], f"image {frames / '001.png'} is a FIFO")]:
        result = subprocess.run([sys.executable, "-m", "vbg", *argv, "--output", "null", "-q"],
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 1 and "Traceback" not in result.stderr
        assert said in result.stderr.strip().splitlines()[-1] and "not a regular file" in result.stderr
