"""The per-frame matte path, shared by live mode and `vbg eval`.

model (at the matte size) → temporal smoothing → guided upsampling to full resolution. Keeping it in
one place guarantees that what `vbg eval` measures is what a call participant sees.
"""

from __future__ import annotations

import cv2
import numpy as np

from vbg.imaging import shrink
from vbg.refine import GuidedUpsampler
from vbg.session import MattingSession
from vbg.smoothing import TemporalSmoother
from vbg.timing import StageClock

THUMBNAIL_SIZE = (32, 18)
SCENE_CUT = 0.2  # mean grey difference of the thumbnails; a person moving stays far below


class Matter:
    """Turns BGR frames into full-resolution float32 alpha mattes, frame after frame.

    ``clock`` (optional) receives the time of each step: preprocess, inference,
    smoothing, refinement.
    """

    def __init__(self, session: MattingSession, smoothing: float, clock: StageClock | None = None,
                 refine: bool = True) -> None:
        self.session = session
        self.smoother = TemporalSmoother(smoothing)
        self.upsampler = GuidedUpsampler() if refine else None
        self.clock = clock or StageClock()
        self.scene_cuts = 0
        self._thumbnail: np.ndarray | None = None

    def _scene_cut(self, frame: np.ndarray) -> bool:
        """True when ``frame`` shows another scene than the last one (a cut, a new source):
        on average its tiny grey thumbnail differs by more than :data:`SCENE_CUT`."""
        thumbnail = cv2.cvtColor(shrink(frame, THUMBNAIL_SIZE), cv2.COLOR_BGR2GRAY).astype(np.float32) / 255.0
        previous, self._thumbnail = self._thumbnail, thumbnail
        return previous is not None and float(np.abs(thumbnail - previous).mean()) > SCENE_CUT

    def infer(self, frame: np.ndarray) -> np.ndarray:
        """The model's raw matte of ``frame`` (at its own resolution)."""
        with self.clock.time("preprocess"):
            if self._scene_cut(frame):  # history of another scene would only smear into this one
                self.scene_cuts += 1
                self.smoother.reset()
                self.session.reset()
            feeds = self.session.prepare(frame)
        with self.clock.time("inference"):
            return self.session.run(feeds)

    def finish(self, alpha: np.ndarray, frame: np.ndarray) -> np.ndarray:
        """Smooth ``alpha`` over time and bring it to ``frame``'s resolution."""
        with self.clock.time("smoothing"):
            small = shrink(frame, alpha.shape[::-1])  # the frame at the matte's size, for both steps
            alpha = self.smoother(alpha, small)
        with self.clock.time("refinement"):
            h, w = frame.shape[:2]
            if alpha.shape == (h, w):
                return alpha
            if self.upsampler is not None:  # edges that follow the frame's own edges
                return self.upsampler(alpha, frame, small)
            return cv2.resize(alpha, (w, h), interpolation=cv2.INTER_LINEAR)

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        return self.finish(self.infer(frame), frame)

    def reset(self) -> None:
        """A new scene or source: forget smoothing history and recurrent state."""
        self.smoother.reset()
        self.session.reset()
        self._thumbnail = None
