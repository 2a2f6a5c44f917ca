"""`vbg bench`: the real pipeline, fed like a camera, measured.

A file (looped) or a generated clip is released at its frame rate — as a camera
delivers frames — into a null sink, through exactly the stages and defaults of live
mode. Unpaced, it measures raw throughput instead (nothing is dropped).
"""

from __future__ import annotations

from typing import Any

from vbg.config import Settings, parse_size
from vbg.live import run
from vbg.pipeline import RunStats
from vbg.sources import SyntheticSource, open_input

DEFAULT_FPS = 30.0


def bench(settings: Settings, *, paced: bool = True) -> RunStats:
    """Run ``settings`` (``input`` may be None for a generated clip) into nothing and return the stats."""
    if settings.input:
        source = open_input(settings.input, loop=True, paced=paced)
    else:
        size = parse_size(settings.size, "--size") if settings.size else (1280, 720)
        source = SyntheticSource(size, settings.fps or DEFAULT_FPS, paced=paced)
    return run(settings.replace(output="null", preview=False), source=source)


def report(stats: RunStats) -> dict[str, Any]:
    """The numbers `vbg bench --json` prints, as one flat-ish dictionary."""
    return {
        "fps": stats.output_fps,
        "matte_fps": stats.matte_fps,
        "latency_p50_ms": stats.latency_ms(50),
        "latency_p95_ms": stats.latency_ms(95),
        "startup_latency_max_ms": stats.startup_latency_ms,
        "matte_age_p50_ms": stats.matte_age_ms(50),
        "matte_age_p95_ms": stats.matte_age_ms(95),
        "cpu_percent": stats.cpu_percent,
        "dropped": stats.dropped,
        "frames": stats.frames_out,
        "frames_captured": stats.frames_captured,
        "mattes": stats.mattes,
        "fine_mattes": stats.fine_mattes,
        "elapsed_s": stats.elapsed_s,
        "rss_mb_start": stats.rss_mb_start,
        "rss_mb_warm": stats.rss_mb_warm,
        "rss_mb_end": stats.rss_mb_end,
        "paced": stats.live,
        "size": f"{stats.size[0]}x{stats.size[1]}",
        "provider": stats.provider,
        "stages": stats.stages,
    }
