import time

import cv2
import numpy as np
import pytest

from conftest import CLIP_FRAMES, person_frame
from vbg.errors import VbgError
from vbg.sources import CameraSource, ImagesSource, SyntheticSource, VideoFileSource, open_input
from vbg.timing import Pacer


def drain(source, limit=1000):
    frames = []
    while len(frames) < limit:
        frame = source.read()
        if frame is None:
            return frames
        frames.append(frame)
    return frames


def test_video_file_delivers_every_frame_then_ends(person_video):
    source = open_input(str(person_video), loop=False, paced=False)
    assert isinstance(source, VideoFileSource)
    assert (source.size, round(source.fps)) == ((640, 360), 30)
    assert not source.live and not source.reconnectable
    assert len(drain(source)) == CLIP_FRAMES


def test_looped_video_restarts_at_the_beginning(person_video):
    source = open_input(str(person_video), loop=True, paced=False)
    frames = drain(source, limit=CLIP_FRAMES + 3)
    assert len(frames) == CLIP_FRAMES + 3
    assert np.abs(frames[CLIP_FRAMES].astype(int) - frames[0]).mean() < 1.0


def test_paced_file_is_released_at_its_frame_rate_like_a_camera(person_video):
    source = open_input(str(person_video), loop=False, paced=True)
    assert source.live and source.paced
    pacer = Pacer(source.fps)
    started = time.perf_counter()
    for _ in range(10):
        pacer.wait()
        source.read()
    assert time.perf_counter() - started >= 9 / 30 - 0.01  # nine frame intervals at 30 fps


def test_synthetic_source_moves_and_ends():
    source = SyntheticSource((320, 180), frames=3)
    frames = drain(source)
    assert len(frames) == 3 and frames[0].shape == (180, 320, 3)
    assert not np.array_equal(frames[0], frames[2])


def test_folder_of_frames_is_read_in_name_order(tmp_path):
    for i in (2, 0, 1):
        cv2.imwrite(str(tmp_path / f"frame{i:03d}.png"), person_frame(10 * i))
    (tmp_path / "notes.txt").write_text("not a frame")
    source = open_input(str(tmp_path), loop=False, paced=False)
    assert isinstance(source, ImagesSource)
    brightness = [frame.mean() for frame in drain(source)]
    assert len(brightness) == 3 and brightness == sorted(brightness)


def test_preloaded_frames_are_decoded_before_the_first_is_delivered(tmp_path):
    paths = [tmp_path / f"frame{i}.png" for i in range(3)]
    for i, path in enumerate(paths):
        cv2.imwrite(str(path), person_frame(10 * i))
    source = ImagesSource(paths, "clip", preload=True)
    for path in paths:
        path.unlink()  # delivering must not read them any more
    frames = drain(source)
    assert len(frames) == 3 and all(np.array_equal(f, person_frame(10 * i)) for i, f in enumerate(frames))


def test_still_image_is_one_frame_or_repeats_for_a_live_output(tmp_path):
    path = tmp_path / "me.jpg"
    cv2.imwrite(str(path), person_frame())
    assert len(drain(open_input(str(path), loop=False, paced=False))) == 1
    assert len(drain(open_input(str(path), loop=False, paced=True), limit=5)) == 5


@pytest.mark.parametrize("make, message", [
    (lambda d: d / "missing.mp4", "does not exist"),
    (lambda d: (d / "empty").mkdir() or d / "empty", "holds no image files"),
    (lambda d: (d / "fake.mp4").write_text("hello") and d / "fake.mp4", "cannot decode video"),
    (lambda d: (d / "fake.png").write_text("hello") and d / "fake.png", "cannot read image"),
])
def test_bad_inputs_are_named(tmp_path, make, message):
    with pytest.raises(VbgError, match=message):
        open_input(str(make(tmp_path)), loop=False, paced=False)


def test_missing_camera_is_a_clear_error():
    with pytest.raises(VbgError, match=r"camera 7 could not be opened.*--input FILE"):
        CameraSource("7", (1280, 720), 30, "MJPG")


def test_sixteen_bit_and_gray_images_become_bgr8(tmp_path):
    gray16 = (np.linspace(0, 65535, 64 * 64).reshape(64, 64)).astype(np.uint16)
    cv2.imwrite(str(tmp_path / "g.png"), gray16)
    frame = drain(open_input(str(tmp_path / "g.png"), loop=False, paced=False))[0]
    assert frame.dtype == np.uint8 and frame.shape == (64, 64, 3) and frame.max() == 255
