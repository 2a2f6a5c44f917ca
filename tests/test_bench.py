"""`vbg bench` accounting on a generated clip (not its speed)."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from vbg import Settings
from vbg.backgrounds import color_background
from vbg.cli import main
from vbg.pipeline import Pipeline, RunStats
from vbg.registry import get_spec
from vbg.session import MattingSession
from vbg.sources import SyntheticSource

pytestmark = pytest.mark.usefixtures("modnet_path")
STAGES = {"capture", "preprocess", "inference", "smoothing", "refinement", "edges", "composite", "output"}
# An older matte moved onto a frame, when there is time; the default hybrid's detail model, on its thread.
LIVE_STAGES = STAGES | {"propagation", "moved edges", "detail"}


def bench_json(capsys, *argv: str) -> dict:
    assert main(["bench", "--size", "320x180", *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_paced_bench_reports_every_key_and_consistent_counts(capsys):
    result = bench_json(capsys, "--frames", "24")
    for key in ("fps", "matte_fps", "latency_p50_ms", "latency_p95_ms", "matte_age_p50_ms", "matte_age_p95_ms",
                "cpu_percent", "dropped", "stages"):
        assert key in result
    assert result["frames"] == 24 and result["paced"] is True and result["size"] == "320x180"
    assert STAGES <= set(result["stages"]) <= LIVE_STAGES
    assert 0 <= result["matte_age_p50_ms"] <= result["matte_age_p95_ms"]
    stages = result["stages"]
    assert stages["capture"]["count"] == result["frames_captured"] >= 24
    assert stages["composite"]["count"] >= 24 and stages["output"]["count"] >= 24
    assert stages["inference"]["count"] == result["mattes"] <= result["frames_captured"]
    assert result["dropped"] <= result["frames_captured"] - result["frames"]
    assert 0 < result["latency_p50_ms"] <= result["latency_p95_ms"]
    assert result["startup_latency_max_ms"] > 0  # 24 frames take under a second: all start-up
    assert result["fps"] <= 31  # paced at 30 fps: never faster than the source


def test_latency_percentiles_leave_out_the_start_which_is_reported_apart():
    """The first frames wait for the first matte (the hybrid's is MODNet's own): a 10 s bench's p95
    would be theirs, not the call's; a run too short for a steady state keeps its own figures."""
    stats = RunStats()
    for index, latency in enumerate([250.0, 110.0, 80.0, 60.0] + [30.0] * 96):
        stats.add_latency(latency, since_start_s=0.3 + index / 30)
    assert stats.latency_ms(95) == 30.0 and stats.startup_latency_ms == 250.0
    assert len(stats.startup_latencies_ms) == 21  # out before 1 s: from 0.3 s, at 30 fps
    short = RunStats()
    for index, latency in enumerate([250.0, 110.0, 30.0]):
        short.add_latency(latency, since_start_s=0.3 + index / 30)
    assert short.latency_ms(50) == 110.0 and short.startup_latency_ms == 250.0


def test_unpaced_bench_mattes_every_frame_and_drops_none(capsys):
    result = bench_json(capsys, "--frames", "12", "--unpaced", "--color", "#000000")
    assert result["paced"] is False and result["dropped"] == 0
    assert result["frames"] == result["mattes"] == result["stages"]["inference"]["count"] == 12
    assert result["matte_age_p95_ms"] == 0.0  # every frame waits for its own matte
    assert set(result["stages"]) == STAGES


def test_passthrough_bench_runs_no_inference(capsys):
    result = bench_json(capsys, "--frames", "10", "--mode", "passthrough")
    assert result["mattes"] == 0 and "inference" not in result["stages"]


class SlowSink:
    """A consumer that takes 40 ms a frame: a live run must drop, not stall capture."""

    live = True
    name = "slow sink"

    def __init__(self) -> None:
        self.frames = 0

    def write(self, frame) -> bool:
        time.sleep(0.04)
        self.frames += 1
        return True

    def close(self) -> None:
        pass


def test_a_slow_consumer_makes_live_runs_drop_oldest_frames_and_count_them(modnet_path):
    size = (320, 180)
    source = SyntheticSource(size, fps=100, paced=True)
    sink = SlowSink()
    session = MattingSession(get_spec("modnet"), modnet_path)
    pipeline = Pipeline(Settings(frames=20), source, [sink], color_background("#000000", size), session, size)
    stats = pipeline.run()
    pipeline.close()
    assert sink.frames == stats.frames_out == 20
    assert stats.dropped > 0
    # Every captured frame was either written, dropped and counted, or still on its way at the end:
    # in the two 2-slot buffers, in the compositor's hands, or between capture and its buffer.
    in_flight = stats.frames_captured - stats.frames_out - stats.dropped
    assert 0 <= in_flight <= 2 + 2 + 1 + 1
    assert stats.output_fps < 30 and stats.frames_captured / stats.elapsed_s > 60  # capture kept its pace


def test_stage_clock_keeps_bounded_samples_but_counts_everything():
    from vbg.timing import StageClock

    clock = StageClock(keep=10)
    for i in range(25):
        clock.record("inference", 0.001 * (i + 1))
    summary = clock.summary()["inference"]
    assert summary["count"] == 25
    assert summary["mean_ms"] == pytest.approx(np.mean(np.arange(16, 26)))  # the latest ten
