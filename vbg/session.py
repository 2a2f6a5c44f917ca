"""One inference session for every model in the registry.

Models differ only in data (:class:`~vbg.registry.ModelSpec`): tensor names, input
rule, normalisation and recurrent state. Execution providers are chosen at run time
so that the same code uses a GPU where there is one and the CPU elsewhere.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
import onnxruntime as ort

from vbg.errors import VbgError
from vbg.imaging import shrink
from vbg.registry import ModelSpec, cache_dir, matte_shape
from vbg.timing import StageClock

# In order of preference; the first available one wins under --device auto.
GPU_PROVIDERS = (
    "TensorrtExecutionProvider",
    "CUDAExecutionProvider",
    "DmlExecutionProvider",
    "CoreMLExecutionProvider",
)
CPU_PROVIDER = "CPUExecutionProvider"
DEVICES = ("auto", "cpu", "gpu")
# onnxruntime-gpu is a separate build that owns the same `onnxruntime` module, so it replaces the CPU one.
GPU_INSTALL = ("`pip uninstall -y onnxruntime && pip install onnxruntime-gpu` (NVIDIA, CUDA 12; on Windows "
               "without NVIDIA: onnxruntime-directml), then `vbg doctor` lists the providers")


def choose_providers(device: str, available: Sequence[str]) -> list[str]:
    """Execution providers for ``device`` ('auto', 'cpu' or 'gpu'), best first.

    'auto' takes every available GPU provider then the CPU; 'gpu' refuses to fall
    back silently to the CPU; 'cpu' ignores any GPU.
    """
    if device not in DEVICES:
        raise VbgError(f"--device must be one of {', '.join(DEVICES)}, not '{device}'")
    gpus = [p for p in GPU_PROVIDERS if p in available]
    if device == "cpu":
        return [CPU_PROVIDER]
    if device == "gpu" and not gpus:
        raise VbgError(
            "--device gpu: onnxruntime offers no GPU provider here "
            f"(available: {', '.join(available)}); install its GPU build with {GPU_INSTALL}; or use --device cpu"
        )
    return gpus + [CPU_PROVIDER]


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
    def go_live(self, live: bool, clock: StageClock | None = None) -> None: ...
    def close(self) -> None: ...


def runs_every_frame(spec: ModelSpec, provider: str) -> bool:
    """Whether a live run mattes every frame itself, on the frame's own thread (no matte age):
    where the registry says the model is fast enough on a CPU, or where it runs on a GPU."""
    return spec.every_frame or provider in GPU_PROVIDERS


def state_device(provider: str) -> str | None:
    """Where recurrent state should live between frames for ``provider`` (None: plain numpy)."""
    return "cuda" if provider in ("CUDAExecutionProvider", "TensorrtExecutionProvider") else None


def _provider_options(name: str) -> dict:
    if name == "TensorrtExecutionProvider":
        engines = cache_dir() / "tensorrt"
        engines.mkdir(parents=True, exist_ok=True)
        return {"trt_engine_cache_enable": True, "trt_engine_cache_path": str(engines),
                "trt_fp16_enable": True}
    return {}


class MattingSession:
    """Runs one registry model on BGR uint8 frames and returns float32 alpha in [0, 1].

    ``infer`` returns the matte at the model's own output resolution (the matte size
    for models that take a resized frame, the frame size for models that downsample
    internally); recurrent state is carried from call to call until :meth:`reset`.
    """

    def __init__(self, spec: ModelSpec, path: Path, *, device: str = "auto",
                 matte_size: int | None = None, threads: int = 0, bind_state_to: str | None = "auto") -> None:
        self.spec = spec
        self.matte_size = int(matte_size or spec.default_matte_size)
        if self.matte_size < 32:
            raise VbgError(f"--matte-size must be at least 32, not {self.matte_size}")
        providers = choose_providers(device, ort.get_available_providers())
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.log_severity_level = 3
        # Idle inference threads spinning for work steal CPU from capture and compositing.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self._session = ort.InferenceSession(
                str(path), options,
                providers=[(p, _provider_options(p)) for p in providers],
            )
        except Exception as exc:  # onnxruntime raises several unrelated types
            raise VbgError(
                f"could not load model '{spec.name}' from {path} ({str(exc).splitlines()[0]}); "
                f"run `vbg models pull --force {spec.name}`"
            ) from None
        self.provider = self._session.get_providers()[0]
        # On a GPU, IO binding keeps recurrent state in device memory between frames
        # instead of a round trip through the CPU for every frame.
        self._bind_state_to = state_device(self.provider) if bind_state_to == "auto" else bind_state_to
        if not spec.recurrent:
            self._bind_state_to = None
        self._scale = (1.0 / (255.0 * np.asarray(spec.std, np.float32))).reshape(3, 1, 1)
        self._offset = (np.asarray(spec.mean, np.float32) / np.asarray(spec.std, np.float32)).reshape(3, 1, 1)
        self._state: list[np.ndarray | ort.OrtValue] = []
        self.reset()

    @property
    def every_frame(self) -> bool:
        return runs_every_frame(self.spec, self.provider)

    def go_live(self, live: bool, clock: StageClock | None = None) -> None:
        """The pipeline says whether the run is live; a single model runs the same either way."""

    def close(self) -> None:
        """Nothing runs in the background: onnxruntime frees the model with the session."""

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
        if self._bind_state_to is None:
            alpha, *state = self._session.run([self.spec.alpha_output, *self.spec.recurrent_outputs], feeds)
        else:
            binding = self._session.io_binding()
            for name, value in feeds.items():
                if isinstance(value, ort.OrtValue):
                    binding.bind_ortvalue_input(name, value)
                else:
                    binding.bind_cpu_input(name, value)
            binding.bind_output(self.spec.alpha_output, "cpu")  # the compositor needs it on the CPU
            for name in self.spec.recurrent_outputs:
                binding.bind_output(name, self._bind_state_to)
            self._session.run_with_iobinding(binding)
            alpha_value, *state = binding.get_outputs()
            alpha = alpha_value.numpy()
        if state:
            self._state = state
        return np.clip(alpha[0, 0], 0.0, 1.0)

    def infer(self, frame_bgr: np.ndarray) -> np.ndarray:
        """Alpha matte (float32, HxW, values in [0, 1]) of one BGR uint8 frame."""
        return self.run(self.prepare(frame_bgr))
