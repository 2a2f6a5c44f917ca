"""The runtimes that run a model's ONNX file: onnxruntime and OpenVINO, behind one protocol.

A model is data (:mod:`vbg.registry`); *how* it runs is a :class:`Backend` — runtime, device
and precision — a setting of the session (:class:`vbg.session.MattingSession`), never a new
registry entry. :func:`open_engine` loads a file for a backend and returns an :class:`Engine`,
whose one method runs it.

Why two runtimes: onnxruntime runs everywhere and owns the NVIDIA, DirectML and CoreML GPUs;
OpenVINO reads the same ONNX file and, on CPUs with AMX, AVX-512 or VNNI, ran MODNet 3.5–9×
faster here at the same alpha (bf16 where the CPU computes it); it also drives Intel integrated
GPUs, which most laptops have. Which one is fastest on a machine is measured there
(:mod:`vbg.tuning`), not assumed.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import onnxruntime as ort

from vbg.config import DEVICES
from vbg.errors import VbgError

log = logging.getLogger(__name__)

ONNXRUNTIME, OPENVINO = "onnxruntime", "openvino"
CPU, GPU, IGPU = "cpu", "gpu", "igpu"
PRECISIONS = ("f32", "bf16", "f16")  # of a float model's compute; an int8 model is its own file

# onnxruntime's providers, in order of preference; the first available one wins.
GPU_PROVIDERS = (
    "TensorrtExecutionProvider",
    "CUDAExecutionProvider",
    "DmlExecutionProvider",
    "CoreMLExecutionProvider",
)
CPU_PROVIDER = "CPUExecutionProvider"
# onnxruntime-gpu is a separate build that owns the same `onnxruntime` module, so it replaces the CPU one.
GPU_INSTALL = ("`pip uninstall -y onnxruntime && pip install onnxruntime-gpu` (NVIDIA, CUDA 12; on Windows "
               "without NVIDIA: onnxruntime-directml), then `vbg doctor` lists the providers")
OPENVINO_INSTALL = "`pip install openvino`"


@dataclass(frozen=True)
class Backend:
    """Where and how a model runs."""

    runtime: str  # ONNXRUNTIME or OPENVINO
    device: str  # CPU; GPU (onnxruntime's GPU providers); IGPU (OpenVINO's GPU device)
    precision: str = "f32"  # float compute: f32, or OpenVINO's bf16 (CPU) or f16 (GPU)

    def __str__(self) -> str:
        return f"{self.runtime} {self.device} {self.precision}"

    def to_json(self) -> dict[str, str]:
        return {"runtime": self.runtime, "device": self.device, "precision": self.precision}

    @classmethod
    def from_json(cls, table: dict[str, Any]) -> Backend:
        return cls(str(table["runtime"]), str(table["device"]), str(table.get("precision", "f32")))


ONNXRUNTIME_CPU = Backend(ONNXRUNTIME, CPU)


class Engine(Protocol):
    """A model file loaded for one backend."""

    name: str  # what runs it, for people and logs: "CPUExecutionProvider", "OpenVINO CPU bf16"
    on_gpu: bool

    def run(self, outputs: Sequence[str], feeds: dict[str, Any]) -> list[Any]: ...


def choose_providers(device: str, available: Sequence[str]) -> list[str]:
    """onnxruntime's providers for ``device`` ('auto', 'cpu' or 'gpu'), best first.

    'auto' takes every available GPU provider then the CPU; 'gpu' refuses to fall
    back silently to the CPU; 'cpu' ignores any GPU.
    """
    if device not in (CPU, GPU, "auto"):
        raise VbgError(f"--device must be one of {', '.join(DEVICES)}, not '{device}'")
    gpus = [p for p in GPU_PROVIDERS if p in available]
    if device == CPU:
        return [CPU_PROVIDER]
    if device == GPU and not gpus:
        raise VbgError(
            "--device gpu: onnxruntime offers no GPU provider here "
            f"(available: {', '.join(available)}); install its GPU build with {GPU_INSTALL}; or use --device cpu"
        )
    return gpus + [CPU_PROVIDER]


def onnxruntime_gpu() -> bool:
    """Whether onnxruntime offers a GPU provider here (then it runs every model, as before tuning)."""
    return any(p in GPU_PROVIDERS for p in ort.get_available_providers())


@functools.lru_cache(maxsize=1)
def _openvino() -> tuple[Any, str]:
    """OpenVINO's Core, or None and why not."""
    try:
        import openvino
    except ImportError:
        return None, f"OpenVINO is not installed ({OPENVINO_INSTALL} adds it)"
    try:
        return openvino.Core(), ""
    except Exception as exc:  # noqa: BLE001 - a broken install must not stop vbg, onnxruntime still runs
        return None, f"OpenVINO did not start ({' '.join(str(exc).split())[:120]})"


def openvino_version() -> str | None:
    core, _ = _openvino()
    if core is None:
        return None
    import openvino

    return openvino.__version__.split("-")[0]


def openvino_devices() -> tuple[list[str], str]:
    """OpenVINO's devices here ('CPU', 'GPU', ...), and why there are none."""
    core, why = _openvino()
    return (list(core.available_devices), "") if core is not None else ([], why)


def _openvino_name(device: str) -> str:
    return {CPU: "CPU", IGPU: "GPU", GPU: "GPU"}[device]


def available_backends() -> list[Backend]:
    """Every backend this machine offers, onnxruntime's CPU first."""
    backends = [ONNXRUNTIME_CPU]
    if onnxruntime_gpu():
        backends.append(Backend(ONNXRUNTIME, GPU))
    core, _ = _openvino()
    if core is None:
        return backends
    devices = core.available_devices
    if "CPU" in devices:
        backends.append(Backend(OPENVINO, CPU, "f32"))
        if "BF16" in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"):  # AMX or AVX-512 BF16
            backends.append(Backend(OPENVINO, CPU, "bf16"))
    if any(name.split(".")[0] == "GPU" for name in devices):
        backends += [Backend(OPENVINO, IGPU, "f16"), Backend(OPENVINO, IGPU, "f32")]
    return backends


def offered() -> dict[str, str]:
    """What each runtime offers here, one line each (for `vbg doctor`)."""
    providers = ort.get_available_providers()
    lines = {ONNXRUNTIME: f"{ort.__version__}: " + ", ".join(
        "CPU" if p == CPU_PROVIDER else p.removesuffix("ExecutionProvider") for p in providers)}
    core, why = _openvino()
    if core is None:
        lines[OPENVINO] = why
        return lines
    parts = []
    for device in core.available_devices:
        capabilities = core.get_property(device, "OPTIMIZATION_CAPABILITIES")
        precisions = [p.lower() for p in ("FP32", "BF16", "FP16", "INT8") if p in capabilities]
        label = "CPU" if device == "CPU" else f"{device} ({core.get_property(device, 'FULL_DEVICE_NAME')})"
        parts.append(f"{label}: {', '.join(precisions)}")
    lines[OPENVINO] = f"{openvino_version()}: " + "; ".join(parts)
    return lines


def state_device(provider: str) -> str | None:
    """Where recurrent state should live between frames for ``provider`` (None: plain numpy)."""
    return "cuda" if provider in ("CUDAExecutionProvider", "TensorrtExecutionProvider") else None


def _provider_options(name: str, cache: Path) -> dict:
    if name == "TensorrtExecutionProvider":
        engines = cache / "tensorrt"
        engines.mkdir(parents=True, exist_ok=True)
        return {"trt_engine_cache_enable": True, "trt_engine_cache_path": str(engines),
                "trt_fp16_enable": True}
    return {}


class OnnxRuntimeEngine:
    """onnxruntime, on its best provider for the device. On a GPU, recurrent state (every output
    after the first) stays in device memory between frames: IO binding spares a round trip through
    the CPU for every frame."""

    def __init__(self, path: Path, device: str, *, threads: int, recurrent: bool, cache: Path) -> None:
        providers = choose_providers(device, ort.get_available_providers())
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.log_severity_level = 3
        # Idle inference threads spinning for work steal CPU from capture and compositing.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self._session = ort.InferenceSession(str(path), options,
                                             providers=[(p, _provider_options(p, cache)) for p in providers])
        self.name = self._session.get_providers()[0]
        self.on_gpu = self.name in GPU_PROVIDERS
        self._bind_state_to = state_device(self.name) if recurrent else None

    def run(self, outputs: Sequence[str], feeds: dict[str, Any]) -> list[Any]:
        if self._bind_state_to is None:
            return self._session.run(list(outputs), feeds)
        binding = self._session.io_binding()
        for name, value in feeds.items():
            if isinstance(value, ort.OrtValue):
                binding.bind_ortvalue_input(name, value)
            else:
                binding.bind_cpu_input(name, value)
        binding.bind_output(outputs[0], "cpu")  # the compositor needs the matte on the CPU
        for name in outputs[1:]:
            binding.bind_output(name, self._bind_state_to)
        self._session.run_with_iobinding(binding)
        first, *state = binding.get_outputs()
        return [first.numpy(), *state]


class OpenVinoEngine:
    """OpenVINO on its CPU or GPU device at a precision hint. Each input shape is compiled once,
    as a static shape (faster code than a dynamic one, and compiling takes well under a second)."""

    def __init__(self, path: Path, device: str, precision: str, *, threads: int, cache: Path) -> None:
        core, why = _openvino()
        if core is None:
            raise VbgError(f"{why}; or use --device cpu/gpu with onnxruntime")
        self._core = core
        self._device = _openvino_name(device)
        self._model = core.read_model(str(path))
        self._config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": precision}
        if self._device == "CPU" and threads:
            self._config["INFERENCE_NUM_THREADS"] = threads
        else:  # compiling GPU kernels takes seconds: keep them
            self._config["CACHE_DIR"] = str(cache / "openvino")
        self._requests: dict[tuple, Any] = {}
        self.name = f"OpenVINO {self._device} {precision}"
        self.on_gpu = self._device != "CPU"
        if not self._model.is_dynamic():  # compile now: a file this device cannot run fails here
            self._request({})

    def _request(self, shapes: dict[str, tuple[int, ...]]) -> Any:
        key = tuple(sorted(shapes.items()))
        request = self._requests.get(key)
        if request is None:
            model = self._model.clone()
            if shapes:
                model.reshape({name: list(shape) for name, shape in shapes.items()})
            request = self._requests[key] = self._core.compile_model(
                model, self._device, self._config).create_infer_request()
        return request

    def run(self, outputs: Sequence[str], feeds: dict[str, Any]) -> list[Any]:
        shapes = {name: tuple(np.shape(value)) for name, value in feeds.items()} if self._model.is_dynamic() else {}
        result = self._request(shapes).infer(feeds)
        return [np.array(result[name]) for name in outputs]  # a copy: the request reuses its buffers


def open_engine(path: Path, backend: Backend, *, threads: int = 0, recurrent: bool = False,
                cache: Path) -> Engine:
    """``path`` loaded for ``backend``; ``threads`` 0 lets the runtime choose; ``cache`` keeps what
    a GPU compiles (TensorRT engines, OpenVINO kernels)."""
    if backend.runtime == OPENVINO:
        return OpenVinoEngine(path, backend.device, backend.precision, threads=threads, cache=cache)
    return OnnxRuntimeEngine(path, backend.device, threads=threads, recurrent=recurrent, cache=cache)
