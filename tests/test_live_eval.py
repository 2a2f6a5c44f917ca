"""What a call sees: matte age in `vbg bench` and `vbg eval --live` on generated clips."""

from __future__ import annotations

import dataclasses
import json

import cv2
import numpy as np
import pytest

from conftest import default_matting_spec, person_frame, reference_matte
from vbg import Settings
from vbg.backgrounds import color_background
from vbg.cli import main
from vbg.pipeline import Pipeline
from vbg.session import MattingSession
from vbg.sinks import NullSink
from vbg.sources import ImagesSource

FRAMES, FPS = 6, 4  # 250 ms between frames: room for the matte path on a busy machine
MATTE = "64"  # a small matte: a fast model run, so the timing of the test has a wide margin


@pytest.fixture(scope="module")
def slow_clip(tmp_path_factory, default_model_path):
    """A 6-frame clip at 4 fps of the person moving right, 12 px a frame; truth is the model's own
    matte at the test's matte size, so a frame scored with its own matte scores near 0."""
    clip = tmp_path_factory.mktemp("live") / "person"
    (clip / "com").mkdir(parents=True)
    (clip / "pha").mkdir()
    for i in range(FRAMES):
        frame = person_frame(12 * i)
        cv2.imwrite(str(clip / "com" / f"{i:04d}.png"), frame)
        truth = np.round(reference_matte(default_model_path, frame, int(MATTE)) * 255).astype(np.uint8)
        cv2.imwrite(str(clip / "pha" / f"{i:04d}.png"), truth)
    (clip / "meta.json").write_text(json.dumps({"fps": FPS}))
    return clip


def run_live(clip, model_path, every_frame=False, **settings):
    """The live pipeline over ``clip``; (stats, [(frame index, matte index, age ms)] per output frame).
    ``every_frame``: the model is marked fast enough to matte every frame itself."""
    paths = sorted((clip / "com").iterdir())
    source = ImagesSource(paths, "clip", paced=True, fps=FPS)
    spec = dataclasses.replace(default_matting_spec(), every_frame=every_frame)
    session = MattingSession(spec, model_path, matte_size=int(MATTE))
    session.infer(person_frame())  # warm: a cold first run takes as long as several frames
    pipeline = Pipeline(Settings(**settings), source, [NullSink()], color_background("#000000", source.size),
                        session, source.size)
    shown = []
    pipeline.taps.append(lambda p: shown.append(
        (p.index, p.matte_index, (p.captured_at - p.matte_captured_at) * 1e3)))
    try:
        stats = pipeline.run()
    finally:
        pipeline.close()
    return stats, shown


def test_holding_each_frame_for_its_own_matte_gives_age_zero_on_every_frame(slow_clip, default_model_path):
    stats, shown = run_live(slow_clip, default_model_path, hold=1000.0, propagate=False)
    assert [index for index, _, _ in shown] == list(range(FRAMES))  # nothing dropped at 4 fps
    assert [matte for _, matte, _ in shown] == list(range(FRAMES))
    assert list(stats.matte_ages_ms) == [0.0] * FRAMES
    assert stats.matte_age_ms(95) == 0.0
    assert stats.stages["hold"]["count"] >= 1


def test_without_hold_each_frame_shows_the_newest_finished_matte(slow_clip, default_model_path):
    stats, shown = run_live(slow_clip, default_model_path, hold=0.0, propagate=False)
    # The compositor never waits for a matte after the first: a frame is shown with the newest
    # matte finished by then, made from that frame or an earlier one, and its age is exactly
    # the difference of their capture times (250 ms a frame at 4 fps, within the pacer's jitter).
    # The model needs longer than the compositor, so from the second frame on that is the one before.
    assert shown[0][:2] == (0, 0)
    for index, matte, age in shown:
        assert matte <= index
        assert age == pytest.approx((index - matte) * 1000 / FPS, abs=100)
    assert list(stats.matte_ages_ms) == [age for _, _, age in shown]
    assert stats.matte_age_ms(50) == pytest.approx(1000 / FPS, abs=100)


def test_a_model_fast_enough_for_every_frame_mattes_each_frame_itself(slow_clip, default_model_path):
    """No hold and no matte thread: the compositor mattes each frame, so none is shown with an
    older frame's matte (the same clip without the mark shows the previous frame's, above)."""
    stats, shown = run_live(slow_clip, default_model_path, every_frame=True, hold=0.0)
    assert [index for index, _, _ in shown] == list(range(FRAMES))
    assert [matte for _, matte, _ in shown] == list(range(FRAMES))
    assert list(stats.matte_ages_ms) == [0.0] * FRAMES
    assert stats.mattes == FRAMES
    assert "hold" not in stats.stages and "propagation" not in stats.stages


def eval_json(capsys, *argv):
    """`vbg eval` of the default model's MODNet alone (a model slower than the frame rate)."""
    assert main(["eval", *argv, "--model", default_matting_spec().name, "--matte-size", MATTE, "--json"]) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_live_eval_with_each_frame_held_for_its_matte_scores_like_offline_eval(capsys, slow_clip):
    offline = eval_json(capsys, str(slow_clip))
    live = eval_json(capsys, str(slow_clip), "--live", "--hold", "1000")
    assert live["live"] is True and offline["live"] is False
    assert set(offline) - {"live"} <= set(live)  # the same keys, and matte age on top
    assert live["frames"] == offline["frames"] == FRAMES and live["dropped"] == 0
    assert live["matte_age_p95_ms"] == 0.0
    for key in ("mad", "mse", "dtssd"):
        assert live[key] == pytest.approx(offline[key], rel=1e-2, abs=1e-2)


def test_live_eval_scores_a_late_matte_against_the_frame_it_was_shown_on(capsys, slow_clip):
    """With a truth that is the reference matte of each frame, a matte one frame late scores
    worse than the frame's own: the live score must see that."""
    held = eval_json(capsys, str(slow_clip), "--live", "--hold", "1000", "--no-propagate")
    late = eval_json(capsys, str(slow_clip), "--live", "--no-propagate")
    assert late["matte_age_p50_ms"] == pytest.approx(1000 / FPS, abs=100)  # one frame late
    assert late["mad"] > held["mad"] + 1.0


def test_live_needs_a_clip_folder(capsys, person_video):
    assert main(["eval", "--flicker", str(person_video), "--live"]) == 2
    assert "--live needs DIR" in capsys.readouterr().err
