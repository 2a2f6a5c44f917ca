"""Settings: built-in defaults, overlaid by a TOML config file, overlaid by the command line.

Every setting has one name used in both places (``matte_size`` in TOML is
``--matte-size`` on the command line). Unknown keys and bad values raise a
:class:`VbgError` naming the key and what is allowed.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import math
import re
import reprlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vbg.errors import VbgError

log = logging.getLogger(__name__)

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

MODES = ("blur", "image", "color", "passthrough")
DEVICES = ("auto", "cpu", "gpu", "igpu")  # igpu: an Intel GPU through OpenVINO (vbg.runtimes)


def parse_size(text: str, what: str) -> tuple[int, int]:
    """'1280x720' -> (1280, 720)."""
    match = re.fullmatch(r"\s*(\d+)\s*[xX×]\s*(\d+)\s*", str(text))
    if not match or int(match[1]) < 16 or int(match[2]) < 16:
        raise VbgError(f"{what} must look like WIDTHxHEIGHT, e.g. 1280x720 (got '{text}')")
    return int(match[1]), int(match[2])


MAX_OUTPUT_SIDE = 7680  # 8K UHD; a larger frame costs gigabytes per stage buffer


def output_size(text: str) -> tuple[int, int]:
    """``--size`` as the encoders will write it: each side at most :data:`MAX_OUTPUT_SIDE`, and
    rounded down to even (H.264/MPEG-4 and the virtual camera's YUV take even sides only), said in
    the log, so the size printed is the size written."""
    width, height = parse_size(text, "--size")
    if max(width, height) > MAX_OUTPUT_SIDE:
        raise VbgError(f"--size {width}x{height} is too large: each side at most {MAX_OUTPUT_SIDE} "
                       f"(8K), e.g. --size 1920x1080")
    even = (width - width % 2, height - height % 2)
    if even != (width, height):
        log.warning("--size %dx%d rounded to %dx%d: video encoders take even sides only", width, height, *even)
    return even


def parse_color(text: str) -> tuple[int, int, int]:
    """'#RRGGBB' -> (B, G, R), the channel order OpenCV frames use."""
    match = re.fullmatch(r"#?([0-9a-fA-F]{6})", str(text).strip())
    if not match:
        raise VbgError(f"bad colour {reprlib.repr(text)}: use '#RRGGBB', e.g. '#00b140' for green screen")
    r, g, b = (int(match[1][i:i + 2], 16) for i in (0, 2, 4))
    return b, g, r


def normal_color(text: str) -> str:
    """A colour as stored and shown: ' 00B140 ' -> '#00b140' (what an HTML colour input takes)."""
    b, g, r = parse_color(text)
    return f"#{r:02x}{g:02x}{b:02x}"


def _choice(*allowed: str):
    def check(value: Any) -> str | None:
        return None if value in allowed else f"one of {', '.join(allowed)}"
    return check


def _number(low: float, high: float | None = None, integer: bool = False):
    def check(value: Any) -> str | None:
        kind = int if integer else (int, float)
        bad_type = isinstance(value, bool) or not isinstance(value, kind)
        infinite = not bad_type and isinstance(value, float) and not math.isfinite(value)  # ints of any size are finite
        if bad_type or infinite or value < low or (high is not None and value > high):
            span = f"from {low} to {high}" if high is not None else f"at least {low}"
            return f"{'an integer' if integer else 'a number'} {span}"
        return None
    return check


def _string(value: Any) -> str | None:
    return None if isinstance(value, str) and value else "a non-empty string"


def _outputs(value: Any) -> str | None:
    ok = _string(value) is None or (isinstance(value, list) and value and all(_string(v) is None for v in value))
    return None if ok else "a non-empty string (auto, vcam, pipewire, null or a video file; comma-separated " \
        "for several) or a list of them"


def _boolean(value: Any) -> str | None:
    return None if isinstance(value, bool) else "true or false"


def _size(value: Any) -> str | None:
    try:
        parse_size(value, "size")
    except VbgError:
        return "WIDTHxHEIGHT, e.g. 1280x720"
    return None


def _colour(value: Any) -> str | None:
    try:
        parse_color(value)
    except VbgError:
        return "a colour '#RRGGBB', e.g. '#00b140'"
    return None


def _setting(default: Any, check, help: str):
    return field(default=default, metadata={"check": check, "help": help})


@dataclass
class Settings:
    """Everything a run needs. ``None`` means "take it from the source or the model"."""

    camera: str = _setting("0", _string, "camera index (0, 1, ...) or device path (/dev/video0)")
    input: str | None = _setting(None, _string, "video file, still image or folder of frames instead of a camera")
    loop: bool = _setting(False, _boolean, "restart a video file input at its end")
    camera_size: str = _setting("1280x720", _size, "capture size asked of the camera")
    camera_fps: float = _setting(30.0, _number(1, 240), "capture rate asked of the camera")
    fourcc: str = _setting("MJPG", _string, "camera pixel format to ask for (MJPG, YUYV, ...)")
    mirror: bool = _setting(False, _boolean, "flip the camera image left-right")
    mode: str = _setting("blur", _choice(*MODES), "what goes behind the person")
    background: str | None = _setting(None, _string, "background image or video (mode 'image')")
    backgrounds: str | None = _setting(None, _string, "folder of backgrounds to choose from while running")
    blur: float = _setting(15.0, _number(1, 100), "background blur strength (mode 'blur')")
    color: str = _setting("#00b140", _colour, "background colour (mode 'color')")
    model: str = _setting("auto", _string, "matting model from `vbg models list`; auto: the hybrid (MODNet alone on a GPU)")
    matte_size: int | None = _setting(None, _number(32, 2160, integer=True), "short side of the matte")
    device: str = _setting("auto", _choice(*DEVICES), "where inference runs")
    smoothing: float = _setting(0.6, _number(0, 1), "temporal smoothing strength, 0 turns it off")
    refine: bool = _setting(True, _boolean, "edges guided by the full-resolution frame (else plain upsampling)")
    propagate: bool = _setting(True, _boolean, "live: carry the newest matte to each frame along the optical flow")
    hold: float = _setting(0.0, _number(0, 1000), "live: ms a frame may wait for its own matte (0: never waits)")
    unmix: bool = _setting(True, _boolean, "take the old background's colour out of the person's edges")
    light_wrap: float = _setting(0.0, _number(0, 1), "how much of the new background's light spills over the edges")
    output: str | list[str] = _setting("auto", _outputs, "'auto' (v4l2loopback, else PipeWire), 'vcam', "
                                       "'pipewire', 'null' or a video file path; several: 'vcam,pipewire'")
    vcam_device: str | None = _setting(None, _string, "virtual camera device, e.g. /dev/video10")
    vcam_backend: str | None = _setting(None, _string, "pyvirtualcam backend (v4l2loopback, obs, ...)")
    pipewire_name: str = _setting("vbg", _string, "node.name of the PipeWire camera (--output pipewire)")
    preview: bool = _setting(False, _boolean, "also show the result in a window")
    size: str | None = _setting(None, _size, "output size WIDTHxHEIGHT (default: the source's)")
    frames: int | None = _setting(None, _number(1, integer=True), "stop after this many output frames")
    fps: float | None = _setting(None, _number(1, 240), "output rate (default: the source's)")
    serve: bool = _setting(False, _boolean, "serve the control panel and the OBS browser source")
    host: str = _setting("127.0.0.1", _string, "address the server binds; not loopback needs a token")
    port: int = _setting(8765, _number(1, 65535, integer=True), "port of the server")
    token: str | None = _setting(None, _string, "access token for the server (made up if --host needs one)")

    def replace(self, **changes: Any) -> "Settings":
        """A copy with ``changes`` applied, each validated like a config key."""
        for key, value in changes.items():
            check_setting(key, value)
        if changes.get("color") is not None:
            changes["color"] = normal_color(changes["color"])
        return dataclasses.replace(self, **changes)


SETTINGS_FIELDS = {f.name: f for f in dataclasses.fields(Settings)}


def did_you_mean(key: str) -> str:
    """"did you mean 'blur'? " for a mistyped setting name, else ""."""
    close = difflib.get_close_matches(key, SETTINGS_FIELDS, n=1)
    return f"did you mean '{close[0]}'? " if close else ""


def check_setting(key: str, value: Any) -> None:
    """Raise a :class:`VbgError` unless ``key`` is a setting and ``value`` is allowed for it."""
    if key not in SETTINGS_FIELDS:
        raise VbgError(f"unknown setting '{key}': {did_you_mean(key)}allowed keys are {', '.join(SETTINGS_FIELDS)}")
    if value is None and SETTINGS_FIELDS[key].default is None:
        return
    problem = SETTINGS_FIELDS[key].metadata["check"](value)
    if problem:
        raise VbgError(f"setting '{key}' must be {problem} (got {reprlib.repr(value)})")


def read_config(path: str | Path) -> dict[str, Any]:
    """The validated key/value pairs of a TOML config file."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        raise VbgError(f"config file {path} does not exist; see configs/ for examples") from None
    except IsADirectoryError:
        raise VbgError(f"config file {path} is a folder; give a .toml file, e.g. {path / 'meeting.toml'}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise VbgError(f"config file {path} cannot be read: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise VbgError(f"config file {path} is not valid TOML: {exc}") from None
    except RecursionError:
        raise VbgError(f"config file {path} nests too deeply to be a vbg config; see configs/ for examples") from None
    for key, value in data.items():
        try:
            check_setting(key, value)
        except VbgError as exc:
            raise VbgError(f"{path}: {exc}") from None
    for key in ("background", "backgrounds"):  # relative to the config file, not to where vbg was started
        if data.get(key):
            data[key] = str(path.parent / Path(data[key]).expanduser())
    return data


def load_settings(config: str | Path | None = None, **overrides: Any) -> Settings:
    """Defaults, then the config file (if any), then ``overrides`` (``None`` values are skipped)."""
    values: dict[str, Any] = read_config(config) if config else {}
    values.update({k: v for k, v in overrides.items() if v is not None})
    if "mode" not in values:
        if values.get("background"):
            values["mode"] = "image"
        elif "color" in values:
            values["mode"] = "color"
    return Settings().replace(**values)
