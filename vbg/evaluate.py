"""`vbg eval`: matte quality against ground truth, through the live matte path.

A dataset folder holds clips in the layout video-matting benchmarks use:
``CLIP/com/*.jpg|png`` (frames) and ``CLIP/pha/*.png`` (true alpha, same names).
Frames go through :class:`~vbg.matting.Matter` in order — the model, temporal
smoothing and upsampling that live mode uses, without compositing.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from vbg import metrics
from vbg.errors import VbgError
from vbg.matting import Matter
from vbg.sources import is_image_file

log = logging.getLogger(__name__)

METRICS = ("mad", "mse", "grad", "conn", "dtssd")


@dataclass
class ClipScore:
    """Per-frame metric values of one clip (dtSSD has one value per frame after the first)."""

    name: str
    values: dict[str, list[float]] = field(default_factory=lambda: {m: [] for m in METRICS})
    seconds: list[float] = field(default_factory=list)

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


def evaluate_clip(matter: Matter, clip: Path) -> ClipScore:
    """Run ``clip``'s frames through ``matter`` in order and score each against its truth."""
    score = ClipScore(clip.name)
    matter.reset()
    previous: tuple[np.ndarray, np.ndarray] | None = None
    for frame_path in sorted(p for p in (clip / "com").iterdir() if is_image_file(p)):
        truth_path = clip / "pha" / (frame_path.stem + ".png")
        if not truth_path.is_file():
            raise VbgError(f"frame {frame_path} has no ground truth {truth_path}")
        frame = cv2.imread(str(frame_path), cv2.IMREAD_COLOR)
        truth = _read_alpha(truth_path)
        started = time.perf_counter()
        pred = matter(frame)
        score.seconds.append(time.perf_counter() - started)
        if pred.shape != truth.shape:
            pred = cv2.resize(pred, truth.shape[::-1], interpolation=cv2.INTER_LINEAR)
        for name in ("mad", "mse", "grad", "conn"):
            score.values[name].append(getattr(metrics, name)(pred, truth))
        if previous is not None:
            score.values["dtssd"].append(metrics.dtssd(pred, previous[0], truth, previous[1]))
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
