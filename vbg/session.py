"""One inference session for every model in the registry.

Models differ only in data (:class:`~vbg.registry.ModelSpec`): tensor names, input
rule, normalisation and recurrent state. Where and how a file runs (runtime, device,
precision) is the session's :class:`~vbg.runtimes.Backend`, chosen at run time
(:mod:`vbg.tuning`), so the same code uses a GPU where there is one and the fastest CPU
runtime elsewhere.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np

from vbg.errors import VbgError
from vbg.imaging import shrink
from vbg.registry import ModelSpec, cache_dir, matte_shape
from vbg.runtimes import GPU_PROVIDERS, ONNXRUNTIME_CPU, Backend, open_engine
from vbg.timing import StageClock


class Session(Protocol):
    """What the matte path (:class:`~vbg.matting.Matter`) and the pipeline ask of a model:
    :class:`MattingSession` (one model) and :class:`~vbg.hybrid.HybridSession` (two) have it;
    :func:`vbg.inference.open_session` opens the one a model entry asks for."""

    spec: ModelSpec
    provider: str
    every_frame: bool  # live: fast enough to matte every frame itself (see vbg/pipeline.py)
    matte_size: int  # short side of the matte it makes

    def input_shape(self, frame_hw: tuple[int, int]) -> tuple[int, int]: ...
    def prepare(self, frame_bgr: np.ndarray, source: np.ndarray | None = None) -> dict[str, np.ndarray]: ...
    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray: ...
    def infer(self, frame_bgr: np.ndarray) -> np.ndarray: ...
    def reset(self) -> None: ...
    def warm_up(self, frame_hw: tuple[int, int]) -> None: ...
    def go_live(self, live: bool, clock: StageClock | None = None) -> None: ...
    def close(self) -> None: ...


def runs_every_frame(spec: ModelSpec, provider: str) -> bool:
    """Whether a live run mattes every frame itself, on the frame's own thread (no matte age):
    where the registry says the model is fast enough on a CPU, or where onnxruntime runs it on a GPU."""
    return spec.every_frame or provider in GPU_PROVIDERS


class MattingSession:
    """Runs one registry model on BGR uint8 frames and returns float32 alpha in [0, 1].

    ``infer`` returns the matte at the model's own output resolution (the matte size
    for models that take a resized frame, the frame size for models that downsample
    internally); recurrent state is carried from call to call until :meth:`reset`.
    """

    def __init__(self, spec: ModelSpec, path: Path, *, backend: Backend = ONNXRUNTIME_CPU,
                 matte_size: int | None = None, threads: int = 0, every_frame: bool | None = None) -> None:
        """``backend`` says where and how the file runs (:mod:`vbg.tuning` measures which is fastest);
        ``threads`` 0 lets the runtime choose; ``every_frame`` overrides :func:`runs_every_frame`
        where a measurement showed the model fast enough for every frame."""
        self.spec = spec
        self.backend = backend
        self.matte_size = int(matte_size or spec.default_matte_size)
        if self.matte_size < 32:
            raise VbgError(f"--matte-size must be at least 32, not {self.matte_size}")
        try:
            self._engine = open_engine(path, backend, threads=threads, recurrent=spec.recurrent, cache=cache_dir())
        except VbgError:
            raise
        except Exception as exc:  # the runtimes raise several unrelated types
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise VbgError(f"could not load model '{spec.name}' from {path} with {backend} ({reason}); "
                           f"run `vbg models pull --force {spec.name}`") from None
        self.provider = self._engine.name
        self.every_frame = runs_every_frame(spec, self.provider) if every_frame is None else every_frame
        self._scale = (1.0 / (255.0 * np.asarray(spec.std, np.float32))).reshape(3, 1, 1)
        self._offset = (np.asarray(spec.mean, np.float32) / np.asarray(spec.std, np.float32)).reshape(3, 1, 1)
        self._state: list = []
        self.reset()

    def go_live(self, live: bool, clock: StageClock | None = None) -> None:
        """The pipeline says whether the run is live; a single model runs the same either way."""

    def close(self) -> None:
        """Nothing runs in the background: the runtime frees the model with the session."""

    def warm_up(self, frame_hw: tuple[int, int]) -> None:
        """Run once on a blank frame of ``frame_hw``, so that what a runtime does on its first run
        at a shape (OpenVINO compiles for it: up to a second) is not the first real frame's wait."""
        self.infer(np.zeros((*frame_hw, 3), np.uint8))
        self.reset()

    def reset(self) -> None:
        """Forget recurrent state (a scene cut, a new source)."""
        self._state = [np.zeros(self.spec.initial_state_shape, np.float32)
                       for _ in self.spec.recurrent_inputs]

    def input_shape(self, frame_hw: tuple[int, int]) -> tuple[int, int]:
        """(height, width) of the image tensor fed to the model for a frame of ``frame_hw``."""
        if self.spec.resize == "frame":
            return frame_hw
        if self.spec.fixed_shape:  # a static-shape export takes one size only
            return self.spec.fixed_shape
        return matte_shape(frame_hw, self.matte_size, self.spec.multiple)

    def _tensor(self, frame_bgr: np.ndarray) -> np.ndarray:
        h, w = self.input_shape(frame_bgr.shape[:2])
        image = frame_bgr if (h, w) == frame_bgr.shape[:2] else shrink(frame_bgr, (w, h))
        if self.spec.channels == "rgb":
            image = image[:, :, ::-1]
        chw = image.transpose(2, 0, 1).astype(np.float32)
        return (chw * self._scale - self._offset)[None]

    def prepare(self, frame_bgr: np.ndarray, source: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """The model's input tensors for one BGR uint8 frame (resize, normalise, state). ``source``,
        the frame ``frame_bgr`` was shrunk from, is for sessions that also need more pixels: not this one."""
        feeds = {self.spec.input_name: self._tensor(frame_bgr)}
        if "downsample_ratio" in self.spec.extra_inputs:
            ratio = min(1.0, self.matte_size / min(frame_bgr.shape[:2]))
            feeds[self.spec.extra_inputs["downsample_ratio"]] = np.array([ratio], np.float32)
        feeds.update(zip(self.spec.recurrent_inputs, self._state))
        return feeds

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """Alpha matte (float32, HxW, values in [0, 1]) from :meth:`prepare`'s tensors."""
        alpha, *state = self._engine.run([self.spec.alpha_output, *self.spec.recurrent_outputs], feeds)
        if state:
            self._state = state
        return np.clip(alpha[0, 0], 0.0, 1.0)

    def infer(self, frame_bgr: np.ndarray) -> np.ndarray:
        """Alpha matte (float32, HxW, values in [0, 1]) of one BGR uint8 frame."""
        return self.run(self.prepare(frame_bgr))
