"""The whole pipeline with the real model: file → file, file → virtual camera, every background."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import (CLIP_FRAMES, confident_regions, pattern_background, person_frame,
                      read_video, reference_matte, write_video)
from vbg import Settings, run
from vbg.cli import main
from vbg.pipeline import build
from vbg.imaging import cover_fit
from vbg.config import parse_color

pytestmark = pytest.mark.usefixtures("default_model_path")


def agreement(output: np.ndarray, expected: np.ndarray, mask: np.ndarray, tolerance: int = 24) -> float:
    """Share of ``mask`` pixels where ``output`` is within ``tolerance`` levels of ``expected``."""
    close = np.abs(output.astype(np.int16) - expected.astype(np.int16)).max(axis=2) <= tolerance
    return float(close[mask].mean())


def assert_person_over(output: np.ndarray, frame: np.ndarray, background: np.ndarray, alpha: np.ndarray,
                       share: float = 0.9) -> None:
    """Pixels the reference matte calls person come from the frame, the rest from the background."""
    person, behind = confident_regions(alpha)
    assert person.mean() > 0.1 and behind.mean() > 0.2, "test frame should show both"
    assert agreement(output, frame, person) > share
    assert agreement(output, background, behind) > share
    assert agreement(output, frame, behind) < 0.5  # the old background is really gone


def source_index(output: np.ndarray, inputs: list[np.ndarray], face=(slice(50, 120), slice(270, 340))) -> int:
    """Which input frame ``output`` shows: each is shifted 1 px and 2 levels brighter than
    the one before, so the face matches its own frame best."""
    return int(np.argmin([np.abs(output[face].astype(int) - frame[face]).mean() for frame in inputs]))


def test_file_to_file_at_720p_person_from_input_rest_from_background(
        tmp_path, person_video, background_image, default_model_path):
    out = tmp_path / "out.mp4"
    assert main(["--input", str(person_video), "--bg", str(background_image), "--output", str(out),
                 "--size", "1280x720", "--frames", "32", "--loop", "-q"]) == 0
    frames = read_video(out)
    assert len(frames) == 32
    assert frames[0].shape == (720, 1280, 3)
    background = cover_fit(pattern_background(), (1280, 720))
    inputs = read_video(person_video)
    for index in (0, 12, 31):  # the 24-frame clip loops: 31 is its frame 7 again
        source = cover_fit(inputs[index % CLIP_FRAMES], (1280, 720))
        assert_person_over(frames[index], source, background, reference_matte(default_model_path, source))


def test_file_to_file_loses_no_frame_and_keeps_order(tmp_path, person_video):
    out = tmp_path / "out.avi"
    assert main(["--input", str(person_video), "--color", "#000000", "--output", str(out), "-q"]) == 0
    frames = read_video(out)
    assert len(frames) == CLIP_FRAMES
    inputs = read_video(person_video)
    assert [source_index(frame, inputs) for frame in frames] == list(range(CLIP_FRAMES))


def test_blur_keeps_the_person_sharp_and_blurs_the_rest(tmp_path, person_video, default_model_path):
    out = tmp_path / "blur.mp4"
    assert main(["--input", str(person_video), "--blur", "--output", str(out), "--frames", "8", "-q"]) == 0
    frames = read_video(out)
    assert len(frames) == 8
    frame = read_video(person_video)[4]
    person, behind = confident_regions(reference_matte(default_model_path, frame))
    import cv2
    sharpness = lambda image, mask: np.abs(cv2.Laplacian(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), cv2.CV_32F))[mask].mean()  # noqa: E731
    assert agreement(frames[4], frame, person) > 0.9
    assert sharpness(frames[4], behind) < 0.5 * sharpness(frame, behind)


def test_colour_background_and_passthrough(tmp_path, person_video, default_model_path):
    green = tmp_path / "green.avi"
    assert main(["--input", str(person_video), "--color", "#00b140", "--output", str(green), "--frames", "3", "-q"]) == 0
    frame = read_video(person_video)[2]
    plain = np.empty_like(frame)
    plain[:] = parse_color("#00b140")
    assert_person_over(read_video(green)[2], frame, plain, reference_matte(default_model_path, frame))

    same = tmp_path / "same.avi"
    settings = Settings(input=str(person_video), mode="passthrough", output=str(same), frames=3, mirror=True)
    stats = run(settings)
    assert stats.mattes == 0 and stats.provider.startswith("none")
    assert np.abs(read_video(same)[2].astype(int) - frame[:, ::-1]).mean() < 3  # mirrored, unchanged


def test_video_background_advances_and_loops(tmp_path, person_video, default_model_path):
    levels = [20, 80, 140, 200]
    clip = write_video(tmp_path / "bg.avi", [np.full((360, 640, 3), v, np.uint8) for v in levels])
    out = tmp_path / "out.avi"
    assert main(["--input", str(person_video), "--bg", str(clip), "--output", str(out), "--frames", "6", "-q"]) == 0
    corner = (slice(0, 40), slice(0, 40))  # the empty wall: background
    seen = [round(float(frame[corner].mean())) for frame in read_video(out)]
    assert seen == pytest.approx([20, 80, 140, 200, 20, 80], abs=4)


def test_still_image_input_into_a_file(tmp_path, background_image):
    import cv2
    image = tmp_path / "me.png"
    cv2.imwrite(str(image), person_frame())
    out = tmp_path / "out.avi"
    assert main(["--input", str(image), "--bg", str(background_image), "--output", str(out), "--frames", "4", "-q"]) == 0
    assert len(read_video(out)) == 1  # one still image, no --loop: one frame


def test_into_a_real_pyvirtualcam_camera(recording_vcam, person_video, background_image, default_model_path):
    # Looped: a live run drops the frames captured while the first matte is made, and on a busy
    # machine that can be most of a 24-frame clip; 12 frames must come out however long it takes.
    # MODNet alone: this is about what the virtual camera gets; the hybrid's detail thread takes
    # only CPU time nobody else wants, so on a loaded machine its live matte is the selfie
    # model's for seconds (test_hybrid.py and `vbg eval --live` measure that matte).
    settings = Settings(input=str(person_video), loop=True, mode="image", background=str(background_image),
                        size="960x540", frames=12, model="modnet", matte_size=256)
    pipeline = build(settings)
    shown_with: list[tuple[int, int]] = []  # (frame, frame of its matte), counted from the first capture
    pipeline.taps.append(lambda packet: shown_with.append((packet.index, packet.matte_index)))
    try:
        stats = pipeline.run()
    finally:
        pipeline.close()
    (camera,) = recording_vcam
    assert camera.closed, "the virtual camera is released at the end"
    assert (camera.width, camera.height, round(camera.fps)) == (960, 540, 30)
    assert camera.fourcc == int.from_bytes(b"24BG", "little")  # pyvirtualcam.PixelFormat.BGR
    assert stats.live and stats.frames_out == 12 == len(shown_with)
    assert len(camera.frames) == 1 + stats.frames_out + stats.repeated  # a black frame as it opens
    assert not camera.images()[0].any()
    last = camera.images()[-1]
    inputs = [cover_fit(frame, (960, 540)) for frame in read_video(person_video)]
    index, matte_index = shown_with[-1]
    shown = source_index(last, inputs, face=(slice(75, 180), slice(405, 510)))
    assert shown == index % CLIP_FRAMES  # the clip loops
    # A live run composites each frame with the newest matte, which may come from an earlier
    # frame (moved towards this one along the optical flow): count as person what the reference
    # mattes of both frames call person, and as background what neither does.
    mattes = np.stack([reference_matte(default_model_path, inputs[i % CLIP_FRAMES]) for i in (index, matte_index)])
    alpha = np.where(mattes.min(axis=0) > 0.95, mattes.min(axis=0), mattes.max(axis=0))
    # (on a 2-core AVX2 EPYC 86-90 % of the person came through, also before the hybrid's changes of
    # stop 24 and with each frame's own matte (--hold): 0.85 there; an Xeon passed 0.9. The pixels
    # that differ are the flag beside her and the helmet and glove in her lap, which MODNet calls
    # person in some frames and not in others: there the live matte, moved and smoothed over several
    # frames, is 0.2-0.4; with the reference at the run's own matte size it is the same, 86 %.)
    assert_person_over(last, inputs[shown], cover_fit(pattern_background(), (960, 540)), alpha, share=0.85)
