"""`vbg eval`: matte quality against ground truth, through the live matte path.

A dataset folder holds clips in the layout video-matting benchmarks use:
``CLIP/com/*.jpg|png`` (frames) and ``CLIP/pha/*.png`` (true alpha, same names).
Frames go through :class:`~vbg.matting.Matter` in order — the model, temporal
smoothing and upsampling that live mode uses, without compositing.

``--live`` (:func:`evaluate_live`) scores what a call sees instead: each clip is played at
its frame rate through the real live pipeline (paced source, dropped frames), and the alpha
composited on each output frame — its own matte for a model that mattes every frame, else
the newest, from an earlier frame, propagated or not — is scored against that output
frame's own truth.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from vbg import metrics
from vbg.backgrounds import color_background
from vbg.config import Settings
from vbg.errors import VbgError
from vbg.matting import Matter
from vbg.session import Session
from vbg.sinks import NullSink
from vbg.sources import ImagesSource, is_image_file

log = logging.getLogger(__name__)

METRICS = ("mad", "mse", "grad", "conn", "dtssd")
DEFAULT_FPS = 30.0
ALPHA_SCALE = 65535.0  # live mattes are kept as 16-bit integers until scored (an AVX2 CPU dropped half
# the frames while the output thread converted each to float16)


@dataclass
class ClipScore:
    """Per-frame metric values of one clip (dtSSD has one value per frame after the first)."""

    name: str
    values: dict[str, list[float]] = field(default_factory=lambda: {m: [] for m in METRICS})
    seconds: list[float] = field(default_factory=list)
    matte_ages_ms: list[float] = field(default_factory=list)  # live: per output frame
    dropped: int = 0  # live: frames that never reached the output

    def add(self, pred: np.ndarray, truth: np.ndarray, previous: tuple[np.ndarray, np.ndarray] | None) -> None:
        """Score one frame's ``pred`` against ``truth``; ``previous``: the (pred, truth) shown before it."""
        if pred.shape != truth.shape:
            pred = cv2.resize(pred, truth.shape[::-1], interpolation=cv2.INTER_LINEAR)
        for name in ("mad", "mse", "grad", "conn"):
            self.values[name].append(getattr(metrics, name)(pred, truth))
        if previous is not None:
            self.values["dtssd"].append(metrics.dtssd(pred, previous[0], truth, previous[1]))

    @property
    def frames(self) -> int:
        return len(self.seconds)

    def summary(self) -> dict[str, float]:
        return summarise([self])


def summarise(clips: list[ClipScore]) -> dict[str, float]:
    """Averages over all frames of ``clips`` (each frame weighs the same)."""
    result: dict[str, float] = {}
    for name in METRICS:
        values = [v for clip in clips for v in clip.values[name]]
        result[name] = float(np.mean(values)) if values else 0.0
    seconds = [s for clip in clips for s in clip.seconds]
    result["ms_per_frame"] = float(np.mean(seconds) * 1e3) if seconds else 0.0
    result["frames"] = len(seconds)
    ages = [a for clip in clips for a in clip.matte_ages_ms]
    if ages:
        result["matte_age_p50_ms"] = float(np.percentile(ages, 50))
        result["matte_age_p95_ms"] = float(np.percentile(ages, 95))
        result["dropped"] = sum(clip.dropped for clip in clips)
    return result


def find_clips(root: Path) -> list[Path]:
    """Clip folders under ``root`` (``root`` itself if it is one), in name order."""
    if not root.is_dir():
        raise VbgError(f"evaluation folder {root} does not exist; make one with make_clips.py or give a "
                       "folder of CLIP/com + CLIP/pha clips")
    candidates = [root] if (root / "com").is_dir() else sorted(p for p in root.iterdir() if p.is_dir())
    clips = [c for c in candidates if (c / "com").is_dir() and (c / "pha").is_dir()]
    if not clips:
        raise VbgError(f"{root} holds no clips: each clip needs com/ (frames) and pha/ (true alpha) folders")
    return clips


def _read_alpha(path: Path) -> np.ndarray:
    alpha = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if alpha is None:
        raise VbgError(f"cannot read ground-truth alpha {path}")
    return alpha.astype(np.float32) / 255.0


def clip_frames(clip: Path) -> list[tuple[Path, Path]]:
    """(frame, truth) paths of ``clip``, in frame order."""
    pairs = []
    for frame_path in sorted(p for p in (clip / "com").iterdir() if is_image_file(p)):
        truth_path = clip / "pha" / (frame_path.stem + ".png")
        if not truth_path.is_file():
            raise VbgError(f"frame {frame_path} has no ground truth {truth_path}")
        pairs.append((frame_path, truth_path))
    if not pairs:
        raise VbgError(f"clip {clip} has no frames in {clip / 'com'}")
    return pairs


def clip_fps(clip: Path) -> float:
    """The clip's frame rate from its meta.json (make_clips.py writes one), else 30."""
    try:
        fps = float(json.loads((clip / "meta.json").read_text("utf-8")).get("fps", DEFAULT_FPS))
    except (OSError, ValueError, AttributeError):
        return DEFAULT_FPS
    return fps if math.isfinite(fps) and 1 <= fps <= 240 else DEFAULT_FPS


def evaluate_clip(matter: Matter, clip: Path) -> ClipScore:
    """Run ``clip``'s frames through ``matter`` in order and score each against its truth."""
    score = ClipScore(clip.name)
    matter.reset()
    previous: tuple[np.ndarray, np.ndarray] | None = None
    for frame_path, truth_path in clip_frames(clip):
        frame = cv2.imread(str(frame_path), cv2.IMREAD_COLOR)
        truth = _read_alpha(truth_path)
        started = time.perf_counter()
        pred = matter(frame)
        score.seconds.append(time.perf_counter() - started)
        score.add(pred, truth, previous)
        previous = (pred, truth)
    return score


def evaluate_live_clip(settings: Settings, session: Session, clip: Path) -> ClipScore:
    """Play ``clip`` at its frame rate through the live pipeline and score the alpha composited
    on each output frame against that frame's truth (dtSSD between successive output frames)."""
    from vbg.pipeline import Pipeline  # the pipeline imports the server; offline eval does not need it

    pairs = clip_frames(clip)
    source = ImagesSource([frame for frame, _ in pairs], f"clip {clip.name}", paced=True, fps=clip_fps(clip),
                          preload=True)  # delivered as a camera delivers: decoded
    shown: list[tuple[int, np.ndarray]] = []  # (frame index, composited alpha) per output frame

    def keep(packet) -> None:  # on the output thread: a cheap copy, scored after the run
        if packet.alpha is not None:  # 16-bit by OpenCV, 1.5 ms: NumPy's float16 took 7 ms holding the GIL
            shown.append((packet.index, cv2.multiply(packet.alpha, ALPHA_SCALE, dtype=cv2.CV_16U)))

    session.reset()
    size = source.size
    pipeline = Pipeline(settings.replace(frames=None, mode="color", mirror=False, size=None), source,
                        [NullSink()], color_background(settings.color, size), session, size)
    pipeline.taps.append(keep)
    pipeline.warm_start = True  # the clip continues a running call: its first frames are not spent waiting
    try:
        stats = pipeline.run()
    finally:
        pipeline.close()
    score = ClipScore(clip.name, matte_ages_ms=list(stats.matte_ages_ms),
                      dropped=len(pairs) - len(shown))
    previous: tuple[np.ndarray, np.ndarray] | None = None
    for index, alpha in shown:
        truth = _read_alpha(pairs[index][1])
        pred = alpha.astype(np.float32) * (1.0 / ALPHA_SCALE)
        score.add(pred, truth, previous)
        score.seconds.append(stats.elapsed_s / max(1, len(shown)))
        previous = (pred, truth)
    return score


def evaluate(matter: Matter, root: Path, on_clip=None) -> list[ClipScore]:
    """Score every clip under ``root``; ``on_clip(score)`` is called as each one finishes."""
    scores = []
    for clip in find_clips(root):
        scores.append(evaluate_clip(matter, clip))
        if on_clip:
            on_clip(scores[-1])
    return scores


def evaluate_live(settings: Settings, session: Session, root: Path, on_clip=None) -> list[ClipScore]:
    """:func:`evaluate` through the live pipeline (:func:`evaluate_live_clip`)."""
    clips = find_clips(root)
    session.infer(cv2.imread(str(clip_frames(clips[0])[0][0]), cv2.IMREAD_COLOR))  # warm, as a running call is
    scores = []
    for clip in clips:
        scores.append(evaluate_live_clip(settings, session, clip))
        if on_clip:
            on_clip(scores[-1])
    return scores


def flicker(matter: Matter, video: Path, frames: int | None = None, still: float = 2.0 / 255) -> dict[str, float]:
    """Flicker without ground truth: mean |alpha_t - alpha_t-1| (x1e3) over the pixels whose
    (lightly blurred) image did not change by more than ``still``: where nothing moved, any
    change of the matte is flicker."""
    capture = cv2.VideoCapture(str(video))
    if not capture.isOpened():
        raise VbgError(f"cannot decode video {video}")
    matter.reset()
    changes, previous = [], None
    while frames is None or len(changes) < frames:
        ok, frame = capture.read()
        if not ok:
            break
        alpha = matter(frame)
        gray = cv2.GaussianBlur(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY), (5, 5), 0).astype(np.float32) / 255.0
        if previous is not None:
            unchanged = np.abs(gray - previous[1]) <= still
            if unchanged.any():
                changes.append(float(np.abs(alpha - previous[0])[unchanged].mean()) * 1e3)
        previous = (alpha, gray)
    capture.release()
    return {"flicker": float(np.mean(changes)) if changes else 0.0, "frames": len(changes) + 1}
