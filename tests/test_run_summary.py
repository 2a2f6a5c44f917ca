"""The summary a run ends with counts only the time it worked: a --serve run that nobody
watched for a while says how long it was paused, and its fps leaves that time out."""

from __future__ import annotations

import re
import threading
import time

import pytest

from conftest import person_frame, write_video
from vbg.config import Settings
from vbg.pipeline import build


@pytest.fixture
def person_loop(tmp_path):
    return write_video(tmp_path / "person.avi", [person_frame(i) for i in range(12)])


def test_paused_time_is_left_out_of_the_fps_and_said(person_loop, capsys, monkeypatch):
    pipeline = build(Settings(input=str(person_loop), loop=True, output="null", mode="passthrough", serve=True))
    started = time.monotonic()
    pipeline.idle = lambda: 1.0 <= time.monotonic() - started < 3.0  # watched, then 2 s nobody, then watched
    threading.Timer(4.0, pipeline.abort).start()
    try:
        stats = pipeline.run()
    finally:
        pipeline.close()
    assert 1.7 < stats.paused_s < 2.4, stats.paused_s
    assert stats.running_s == pytest.approx(stats.elapsed_s - stats.paused_s)
    # The source plays at 30 fps: counted over the time it ran, so is the output (it was ~15 over the whole run).
    assert stats.output_fps > 24, (stats.frames_out, stats.running_s)

    from vbg import cli, live

    monkeypatch.setattr(live, "run", lambda *args, **kwargs: stats)
    assert cli.main(["--input", str(person_loop), "--output", "null", "--mode", "passthrough"]) == 0
    summary = capsys.readouterr().err.strip().splitlines()[-1]
    match = re.search(r"frames out in ([\d.]+) s \(([\d.]+) fps\), paused ([\d.]+) s while nobody watched", summary)
    assert match, summary
    assert float(match[1]) == pytest.approx(stats.running_s, abs=0.06)
    assert float(match[3]) == pytest.approx(stats.paused_s, abs=0.06)
