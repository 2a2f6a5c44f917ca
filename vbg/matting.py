"""The per-frame matte path, shared by live mode and `vbg eval`.

model (at the matte size) → temporal smoothing → guided upsampling to full resolution. Keeping it in
one place guarantees that what `vbg eval` measures is what a call participant sees.
"""

from __future__ import annotations

import cv2
import numpy as np

from vbg.flow import FLOW_MAX_WIDTH, flow_grey
from vbg.imaging import shrink
from vbg.refine import GuidedUpsampler
from vbg.session import Session
from vbg.smoothing import TemporalSmoother
from vbg.timing import StageClock

THUMBNAIL_SIZE = (32, 18)
SCENE_CUT = 0.2  # mean grey difference of the thumbnails; a person moving stays far below


class Matter:
    """Turns BGR frames into full-resolution float32 alpha mattes, frame after frame.

    ``clock`` (optional) receives the time of each step: preprocess, inference,
    smoothing, refinement.
    """

    def __init__(self, session: Session, smoothing: float, clock: StageClock | None = None,
                 refine: bool = True) -> None:
        self.session = session
        self.smoother = TemporalSmoother(smoothing)
        self.upsampler = GuidedUpsampler() if refine else None
        self.clock = clock or StageClock()
        self.scene_cuts = 0
        self.grey: np.ndarray | None = None  # the last finished frame, grey at the flow's size (for propagation)
        # The last finished frame and its smoothed matte at the matte's size, for work that is done
        # at a reduced size anyway (the compositor's background estimate, a blurred background):
        self.reduced: tuple[np.ndarray, np.ndarray] | None = None
        self._thumbnail: np.ndarray | None = None

    def _scene_cut(self, frame: np.ndarray) -> bool:
        """True when ``frame`` shows another scene than the last one (a cut, a new source):
        on average its tiny grey thumbnail differs by more than :data:`SCENE_CUT`."""
        thumbnail = cv2.cvtColor(shrink(frame, THUMBNAIL_SIZE), cv2.COLOR_BGR2GRAY).astype(np.float32) / 255.0
        previous, self._thumbnail = self._thumbnail, thumbnail
        return previous is not None and float(np.abs(thumbnail - previous).mean()) > SCENE_CUT

    def infer(self, frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The model's raw matte of ``frame`` (at its own resolution) and the frame shrunk to the
        model's input size: shrunk once per matte, it serves the model, smoothing and refinement."""
        with self.clock.time("preprocess"):
            h, w = self.session.input_shape(frame.shape[:2])
            small = shrink(frame, (w, h))
            if self._scene_cut(small):  # history of another scene would only smear into this one
                self.scene_cuts += 1
                self.smoother.reset()
                self.session.reset()
            feeds = self.session.prepare(small, frame)  # the model's own size: prepare resizes nothing more
        with self.clock.time("inference"):
            return self.session.run(feeds), small

    def finish(self, alpha: np.ndarray, frame: np.ndarray, small: np.ndarray | None = None) -> np.ndarray:
        """Smooth ``alpha`` over time and bring it to ``frame``'s resolution (``small``: the frame
        at the matte's size, from :meth:`infer`)."""
        with self.clock.time("smoothing"):
            if small is None or small.shape[:2] != alpha.shape:  # the frame at the matte's size, for both steps
                larger = small is not None and small.shape[0] >= alpha.shape[0]
                small = shrink(small if larger else frame, alpha.shape[::-1])
            # A session may ask for the smoothing's flow smaller than the matte (the hybrid's live one).
            self.grey = flow_grey(small, alpha.shape, getattr(self.session, "smoothing_flow_width", FLOW_MAX_WIDTH))
            alpha = self.smoother(alpha, small, self.grey)
            self.reduced = (small, alpha)
        with self.clock.time("refinement"):
            h, w = frame.shape[:2]
            if alpha.shape == (h, w):
                return alpha
            if self.upsampler is not None:  # edges that follow the frame's own edges
                return self.upsampler(alpha, frame, small)
            return cv2.resize(alpha, (w, h), interpolation=cv2.INTER_LINEAR)

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        alpha, small = self.infer(frame)
        return self.finish(alpha, frame, small)

    def reset(self) -> None:
        """A new scene or source: forget smoothing history and recurrent state."""
        self.smoother.reset()
        self.session.reset()
        self._thumbnail = None
