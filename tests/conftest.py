"""Shared test media, all made here (no ../shared): a person clip, backgrounds, a
recording virtual camera backend, and the real MODNet model pulled once into a
model cache of this checkout's own (never the user's)."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort
import pytest
import pyvirtualcam
from skimage import data as skdata

from vbg import Settings
from vbg import registry
from vbg.errors import VbgError
from vbg.registry import ensure_model, get_spec

log = logging.getLogger(__name__)

FRAME_SIZE = (640, 360)  # width, height of the generated person clip
CLIP_FRAMES = 24


def pytest_configure(config: pytest.Config) -> None:
    """Point every test, and every vbg process a test starts, at a model cache of this
    checkout's own (kept between runs under .pytest_cache), so that tests never write to
    the user's cache (nor pull the GPL-3.0 rvm model into it). It is seeded once with the
    verified models the user already has, so a run on a warm machine downloads nothing."""
    user_cache = registry.cache_dir()
    cache = getattr(config, "cache", None)
    test_cache = cache.mkdir("vbg-model-cache") if cache else Path(tempfile.mkdtemp(prefix="vbg-test-cache-"))
    os.environ["VBG_CACHE_DIR"] = str(test_cache)  # inherited by subprocesses too
    # Mattes are compared with onnxruntime's own (reference_matte): the runtime trial's choice (OpenVINO
    # bf16 here) differs by up to its tolerance. tests/test_runtimes.py tests the trial and OpenVINO.
    os.environ.setdefault("VBG_RUNTIME", "onnxruntime")
    if user_cache.resolve() != test_cache.resolve():
        _seed(user_cache, test_cache)


def _seed(user_cache: Path, test_cache: Path) -> None:
    """Copy the user's downloaded models (sha256 verified) and the int8 models made from
    them (with their local registry entries) into ``test_cache``, where missing; read-only
    on ``user_cache``."""
    (test_cache / "models").mkdir(parents=True, exist_ok=True)
    for spec in registry.load_registry().values():  # the test cache's view: shipped models first
        source, target = user_cache / "models" / spec.file, registry.model_path(spec)
        if spec.wheel and source.is_file() and not target.is_file():
            try:
                registry.verify(spec, source)
            except VbgError:
                continue  # a corrupt copy stays where it is; the tests pull a good one
            shutil.copyfile(source, target)
    for name in ("calibration", "tuning.json"):  # real frames of people, and the runtime trials (kept
        source, target = user_cache / name, test_cache / name  # only while what made them still holds)
        if source.is_dir() and not target.exists():
            shutil.copytree(source, target)
        elif source.is_file() and not target.exists():
            shutil.copyfile(source, target)
    try:
        made = json.loads((user_cache / "registry.json").read_text("utf-8"))
    except (OSError, ValueError):
        return
    known = registry.load_registry()
    for name, table in made.items():
        source = Path(table.get("path", ""))
        if "derive" not in table or not source.is_file() or (
                name in known and registry.model_path(known[name]).is_file()):
            continue
        target = test_cache / "models" / source.name
        shutil.copyfile(source, target)
        registry.register_local(name, {**table, "path": str(target)})
        log.info("test model cache: %s copied from %s", name, user_cache)


class RecordingBackend:
    """A pyvirtualcam backend that keeps what it is sent instead of writing a device."""

    instances: list["RecordingBackend"] = []

    def __init__(self, *, width: int, height: int, fps: float, fourcc: int, device: str | None, **kw) -> None:
        self.width, self.height, self.fps, self.fourcc = width, height, fps, fourcc
        self.device_name = device or "/dev/recording0"
        self.frames: list[np.ndarray] = []
        self.closed = False
        RecordingBackend.instances.append(self)

    def send(self, frame: np.ndarray) -> None:
        assert not self.closed, "frame sent after close"
        self.frames.append(frame.copy())

    def close(self) -> None:
        self.closed = True

    def device(self) -> str:
        return self.device_name

    def native_fourcc(self) -> int | None:
        return self.fourcc

    def images(self) -> list[np.ndarray]:
        """The frames as HxWx3 BGR images."""
        return [f.reshape(self.height, self.width, 3) for f in self.frames]


@pytest.fixture(autouse=True)
def _cli_logging_ends_with_its_test():
    """`vbg.cli.main` points logging at the test's captured stderr; once the test is over that
    stream is closed, so the handlers a test added go with it (a later test's threads would
    otherwise print "--- Logging error ---" for every line they log)."""
    root = logging.getLogger()
    before = set(root.handlers)
    yield
    for handler in set(root.handlers) - before:
        if not type(handler).__module__.startswith("_pytest"):
            root.removeHandler(handler)


@pytest.fixture
def recording_vcam(monkeypatch):
    """Registers the 'recording' backend with pyvirtualcam for one test; yields the instance list."""
    RecordingBackend.instances = []
    monkeypatch.setattr(pyvirtualcam.camera, "BACKENDS", dict(pyvirtualcam.camera.BACKENDS))
    pyvirtualcam.register_backend("recording", RecordingBackend)
    yield RecordingBackend.instances


@pytest.fixture(scope="session")
def modnet_path() -> Path:
    """The real MODNet weights, pulled once into the test model cache and verified."""
    return ensure_model(get_spec("modnet"))


@pytest.fixture(scope="session")
def default_model_path() -> Path:
    """The weights of the default model's MODNet (int8 on a CPU with VNNI, made from MODNet on first use);
    a hybrid's fast model is made too.
    A model still to be made is made by `vbg models pull` in a process of its own, so that
    the quantiser's peak memory is not added to the test run's."""
    spec = get_spec(Settings().model)
    parts = registry.hybrid_parts(spec) if spec.hybrid else (spec,)
    if any(part.derived and not registry.model_path(part).is_file() for part in parts):
        subprocess.run([sys.executable, "-m", "vbg", "models", "pull", spec.name], check=True)
    return ensure_model(default_matting_spec())


def default_matting_spec():
    """The MODNet the default model runs (a hybrid's detail model): the model of ``default_model_path``."""
    spec = get_spec(Settings().model)
    return registry.hybrid_parts(spec)[1] if spec.hybrid else spec


def person_frame(index: int = 0) -> np.ndarray:
    """A 640x360 BGR frame of the astronaut portrait, shifted right by ``index`` px and
    brightened by ``2 * index`` so that frame order can be read back from any output."""
    rgb = skdata.astronaut()
    portrait = cv2.resize(rgb[:, :, ::-1], (360, 360), interpolation=cv2.INTER_AREA)
    wall = (190, 200, 205)
    frame = cv2.copyMakeBorder(portrait, 0, 0, 140, 140, cv2.BORDER_CONSTANT, value=wall)
    shift = np.float32([[1, 0, index], [0, 1, 0]])
    frame = cv2.warpAffine(frame, shift, FRAME_SIZE, borderMode=cv2.BORDER_CONSTANT, borderValue=wall)
    return cv2.add(frame, np.full_like(frame, 2 * index))


def write_video(path: Path, frames: list[np.ndarray], fps: float = 30.0) -> Path:
    h, w = frames[0].shape[:2]
    fourcc = "MJPG" if path.suffix == ".avi" else "mp4v"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (w, h))
    assert writer.isOpened()
    for frame in frames:
        writer.write(frame)
    writer.release()
    return path


def read_video(path: Path) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            return frames
        frames.append(frame)


@pytest.fixture(scope="session")
def person_video(tmp_path_factory) -> Path:
    """A 24-frame 640x360 clip of a person moving slowly to the right (MJPG AVI)."""
    path = tmp_path_factory.mktemp("media") / "person.avi"
    return write_video(path, [person_frame(i) for i in range(CLIP_FRAMES)])


def pattern_background(size: tuple[int, int] = (800, 450)) -> np.ndarray:
    """A background no camera would see: strong diagonal colour stripes."""
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    stripes = ((xx + yy) // 40) % 3
    palette = np.array([[255, 0, 255], [0, 255, 255], [255, 255, 0]], np.uint8)
    return palette[stripes]


@pytest.fixture(scope="session")
def background_image(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("media") / "stripes.png"
    cv2.imwrite(str(path), pattern_background())
    return path


def reference_matte(model_path: Path, frame: np.ndarray, short_side: int | None = None) -> np.ndarray:
    """MODNet's alpha for ``frame`` computed straight with onnxruntime, independently of
    vbg's session and pipeline code, at the default model's matte size; returned at the frame's size."""
    short_side = short_side or get_spec(Settings().model).default_matte_size
    h, w = frame.shape[:2]
    mh, mw = (max(32, round(x * short_side / min(h, w) / 32) * 32) for x in (h, w))
    rgb = cv2.resize(frame, (mw, mh), interpolation=cv2.INTER_AREA)[:, :, ::-1].astype(np.float32)
    tensor = ((rgb / 255.0 - 0.5) / 0.5).transpose(2, 0, 1)[None]
    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    alpha = session.run(None, {"input": np.ascontiguousarray(tensor)})[0][0, 0]
    return cv2.resize(alpha, (w, h), interpolation=cv2.INTER_LINEAR)


def confident_regions(alpha: np.ndarray, margin: int = 15) -> tuple[np.ndarray, np.ndarray]:
    """(person, background) masks well inside each region, away from edges."""
    kernel = np.ones((2 * margin + 1, 2 * margin + 1), np.uint8)
    person = cv2.erode((alpha > 0.95).astype(np.uint8), kernel).astype(bool)
    background = cv2.erode((alpha < 0.05).astype(np.uint8), kernel).astype(bool)
    return person, background
