"""`vbg doctor`: what stands between this machine and a working call, one check a line.

Each check reads the system facts it needs (``/sys``, ``/dev``, PipeWire's graph, the
session bus, onnxruntime, the model cache, a socket) and says what it found and, where
that is a problem, the command that fixes it. The roots of ``/sys`` and ``/dev`` are
parameters so that the checks can be run on a faked system.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

from vbg.errors import VbgError

if TYPE_CHECKING:
    from vbg.registry import ModelSpec

OK, WARN, FAIL = "ok", "warn", "FAIL"  # FAIL: `vbg` or the call app cannot work until it is fixed


@dataclass(frozen=True)
class Check:
    """One line of the report: what was checked, what was found, and the fix if it is a problem."""

    name: str
    status: str  # OK, WARN (works, but worse or only partly) or FAIL (blocks the main command)
    found: str
    fix: str = ""

    def line(self) -> str:
        return f"{self.status:<4}  {self.name}: {self.found}" + (f"; fix: {self.fix}" if self.fix else "")


def _may_open(path: Path) -> bool:
    return os.access(path, os.R_OK | os.W_OK)  # the real user and group, ACLs (udev uaccess) included


def _video_devices(sys_root: Path) -> dict[str, bool]:
    """video4linux devices by name (``video10``), True for v4l2loopback's (virtual, no hardware)."""
    video = sys_root / "class" / "video4linux"
    if not video.is_dir():
        return {}
    devices = {entry.name: "/devices/virtual/" in os.path.realpath(entry)
               for entry in video.iterdir() if re.fullmatch(r"video\d+", entry.name)}  # not vbi0, v4l-subdev0
    return dict(sorted(devices.items(), key=lambda item: int(item[0][5:])))


def virtual_camera(sys_root: Path = Path("/sys"), dev_root: Path = Path("/dev"), device: str | None = None,
                   may_open: Callable[[Path], bool] = _may_open) -> list[Check]:
    """v4l2loopback loaded, a loopback device present (``device`` if given) with ``exclusive_caps=1``
    (Chrome and Zoom list only capture-only devices), and this user allowed to write it."""
    from vbg.sinks import V4L2LOOPBACK_SETUP

    name = "virtual camera"
    module = sys_root / "module" / "v4l2loopback"
    if not module.is_dir():
        return [Check(name, FAIL, "the v4l2loopback kernel module is not loaded",
                      f"`{V4L2LOOPBACK_SETUP}` (Debian/Ubuntu: `sudo apt install v4l2loopback-dkms` first)")]
    loopbacks = [dev for dev, virtual in _video_devices(sys_root).items() if virtual]
    if device is not None:
        wanted = Path(device).name
        if wanted not in loopbacks:
            return [Check(name, FAIL, f"{device} is not a v4l2loopback device (those here: "
                                      f"{', '.join('/dev/' + d for d in loopbacks) or 'none'})",
                          f"`sudo modprobe -r v4l2loopback && {V4L2LOOPBACK_SETUP}`, or pass one of those "
                          "to --vcam-device")]
    elif not loopbacks:
        return [Check(name, FAIL, "v4l2loopback is loaded but has no device",
                      f"`sudo modprobe -r v4l2loopback && {V4L2LOOPBACK_SETUP}`")]
    else:
        wanted = loopbacks[0]
    label = _read(sys_root / "class" / "video4linux" / wanted / "name")
    checks = [Check(name, OK, f"v4l2loopback device /dev/{wanted}" + (f" ('{label}')" if label else ""))]

    # exclusive_caps is an array over the devices in the order they were made (video_nr order)
    caps = _read(module / "parameters" / "exclusive_caps").split(",")
    index = loopbacks.index(wanted)
    exclusive = index < len(caps) and caps[index].strip() in ("Y", "1")
    checks.append(Check("exclusive_caps", OK, f"/dev/{wanted} is capture-only for call apps") if exclusive else
                  Check("exclusive_caps", FAIL, f"/dev/{wanted} was made without exclusive_caps=1: Chrome, "
                        "Meet and Zoom do not list it", f"`sudo modprobe -r v4l2loopback && {V4L2LOOPBACK_SETUP}`"))
    node = dev_root / wanted
    if not node.exists():
        checks.append(Check("device access", FAIL, f"{node} does not exist though the kernel lists {wanted}",
                            f"`sudo modprobe -r v4l2loopback && {V4L2LOOPBACK_SETUP}`"))
    elif may_open(node):
        checks.append(Check("device access", OK, f"you may write {node}"))
    else:
        checks.append(Check("device access", FAIL, f"you may not open {node}", _group_fix(node)))
    return checks


def _group_fix(node: Path) -> str:
    try:
        import grp  # POSIX only, like /dev

        group = grp.getgrgid(node.stat().st_gid).gr_name
    except (ImportError, KeyError, OSError):
        group = "video"
    return f"`sudo usermod -aG {group} $USER`, then log out and in again"


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def camera(device: str = "0", sys_root: Path = Path("/sys"), dev_root: Path = Path("/dev"),
           open_camera: Callable[[str], object] | None = None,
           may_open: Callable[[Path], bool] = _may_open) -> Check:
    """A camera is there, this user may open it, and what it delivers (as OpenCV opens it for vbg)."""
    name = f"camera {device}"
    linux = sys.platform.startswith("linux")
    devices = _video_devices(sys_root)
    if device.isdigit() and linux and all(devices.values()):  # none, or v4l2loopback's only
        virtual = ", ".join(f"/dev/{d}" for d in devices)
        where = f"only v4l2loopback's virtual {virtual}" if devices else "no /dev/video* device"
        return Check(name, FAIL, f"no camera found ({where})",
                     "plug one in, or run vbg on a file: `vbg --input talk.mp4`")
    node = dev_root / f"video{device}" if device.isdigit() else Path(device)
    if linux and node.exists() and not may_open(node):
        return Check(name, FAIL, f"you may not open {node}", _group_fix(node))
    if open_camera is None:
        from vbg.config import Settings, parse_size
        from vbg.sources import CameraSource

        wanted = Settings()
        open_camera = lambda dev: CameraSource(  # noqa: E731
            dev, parse_size(wanted.camera_size, "--camera-size"), wanted.camera_fps, wanted.fourcc)
    try:
        source = open_camera(device)
    except VbgError as exc:  # its message names the fix
        return Check(name, FAIL, str(exc))
    try:
        width, height = source.size
        return Check(name, OK, f"delivers {width}x{height} @ {source.fps:g} fps")
    finally:
        source.close()


# onnxruntime's GPU providers (vbg.runtimes.GPU_PROVIDERS) as a user knows them.
GPU_NAMES = {"TensorrtExecutionProvider": "TensorRT, NVIDIA", "CUDAExecutionProvider": "CUDA, NVIDIA",
             "DmlExecutionProvider": "DirectML", "CoreMLExecutionProvider": "Core ML, Apple"}


def providers(available: Sequence[str] | None = None, installed: Sequence[str] | None = None,
              dev_root: Path = Path("/dev")) -> Check:
    """Where the model runs (the onnxruntime providers vbg can use, in words) and, where that is not a
    GPU, why not."""
    from vbg.runtimes import CPU_PROVIDER, GPU_INSTALL, GPU_PROVIDERS

    if available is None:
        import onnxruntime as ort

        available = ort.get_available_providers()
    if installed is None:
        installed = [d for d in ("onnxruntime", "onnxruntime-gpu", "onnxruntime-directml") if _installed(d)]
    gpus = [p for p in GPU_PROVIDERS if p in available]  # those vbg uses; others (Azure, ...) are no use to it
    if CPU_PROVIDER not in available:
        return Check("inference", FAIL, "onnxruntime cannot run models on the CPU (its install is broken)",
                     "`pip install --force-reinstall onnxruntime`")
    found = (f"the model runs on the GPU ({', '.join(GPU_NAMES[p] for p in gpus)}), else the CPU" if gpus
             else "the model runs on the CPU")
    if gpus:
        return Check("inference", OK, found)
    if len(installed) > 1:
        return Check("inference", WARN, f"{found}: {' and '.join(installed)} are both installed and overwrite "
                     "each other", f"`pip uninstall -y {' '.join(installed)} && pip install onnxruntime-gpu`")
    if "onnxruntime-gpu" in installed:
        return Check("inference", WARN, f"{found}: onnxruntime-gpu is installed but cannot load CUDA",
                     "install the CUDA 12 and cuDNN 9 runtime libraries for your NVIDIA driver "
                     "(e.g. `pip install nvidia-cudnn-cu12 nvidia-cuda-runtime-cu12 nvidia-cublas-cu12`)")
    if sys.platform.startswith("linux") and not (dev_root / "nvidia0").exists():
        return Check("inference", OK, f"{found} (no NVIDIA GPU here)")
    return Check("inference", WARN, f"{found}: the CPU build of onnxruntime is installed", GPU_INSTALL)


def runtimes() -> Check:
    """What OpenVINO offers beside onnxruntime (an Intel GPU, bf16), and which runtime the trial chose
    for the default model's MODNet. A missing OpenVINO is a warning: onnxruntime still runs everything."""
    from vbg import runtimes, tuning
    from vbg.inference import DETAIL_THREADS
    from vbg.registry import get_spec

    offered = runtimes.offered()
    found = f"OpenVINO {offered[runtimes.OPENVINO]}"
    if runtimes.openvino_version() is None:
        return Check("runtimes", WARN, f"{offered[runtimes.OPENVINO]}: only onnxruntime runs models",
                     f"{runtimes.OPENVINO_INSTALL}, then `vbg models tune` (OpenVINO ran MODNet 3-9x faster "
                     "on CPUs with AVX-512, VNNI or AMX)")
    modnet = get_spec("modnet")
    trial = tuning.cached("modnet", tuning.live_shape(modnet, get_spec("hybrid").default_matte_size), DETAIL_THREADS)
    chosen = trial.best() if trial else None
    if chosen is None:
        return Check("runtimes", OK, f"{found}; the first run measures which runs MODNet fastest "
                     "(or `vbg models tune` now)")
    return Check("runtimes", OK, f"{found}; chosen: {trial.describe(chosen)}")


def _installed(distribution: str) -> bool:
    try:
        metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return False
    return True


def model_cache(model: str | None = None) -> Check:
    """The default (or ``model``) model in the cache and verified (both parts of a hybrid), or
    what the first run will do."""
    from vbg import registry
    from vbg.config import Settings

    name = model or Settings().model
    try:
        spec = registry.get_spec(name)
        checks = [_cached(part, f"model {spec.name}") for part in
                  (registry.hybrid_parts(spec) if spec.hybrid else (spec,))]
    except VbgError as exc:  # its message names the fix
        return Check(f"model {name}", FAIL, str(exc))
    worst = next((c for status in (FAIL, WARN) for c in checks if c.status == status), None)
    return worst or Check(f"model {spec.name}", OK, "; ".join(c.found for c in checks))


def _cached(spec: ModelSpec, label: str) -> Check:
    """One model file: verified, or what the first run will do to get it."""
    from vbg import registry

    path = registry.model_path(spec)
    if not path.exists() or not spec.sha256:
        origin = f"'{spec.derive_from}'" if spec.derive_from else spec.member.rsplit("/", 1)[-1]
        making = f"made from {origin} on first use ({spec.variant})" if spec.derived else \
            f"downloaded on first use ({spec.size / 1e6:.0f} MB)"
        cache = registry.cache_dir()
        if cache.exists() and not os.access(cache, os.W_OK):
            return Check(label, FAIL, f"not in the cache, and {cache} is not writable",
                         f"`sudo chown -R $USER {cache}`, or set VBG_CACHE_DIR to a folder of yours")
        return Check(label, WARN, f"{spec.name} not in the cache yet: {making}",
                     f"`vbg models pull {spec.name}` does it now")
    registry.verify(spec, path)
    return Check(label, OK, f"verified at {path}")


def pipewire_camera(v4l2_ready: bool) -> list[Check]:
    """What --output pipewire needs: the daemon, a session manager (it links readers to the
    camera), PyGObject with GStreamer's pipewiresink, and the camera portal (browsers, OBS and
    sandboxed apps ask it for PipeWire cameras). Each missing is a FAIL only where v4l2loopback
    is not set up either (it is the other way)."""
    from vbg import pipewire

    missing = WARN if v4l2_ready else FAIL
    aside = " (v4l2loopback is set up: vbg's default output uses it)" if v4l2_ready else ""
    if not pipewire.daemon_running():
        where = f"no socket at {pipewire.socket_path()}" if pipewire.socket_path() else "XDG_RUNTIME_DIR is not set"
        return [Check("PipeWire", missing, f"no PipeWire daemon in this session ({where}){aside}",
                      f"`{pipewire.PIPEWIRE_START}` (Debian/Ubuntu: `sudo apt install pipewire wireplumber`)")]
    try:
        graph = pipewire.dump()
    except VbgError as exc:  # its message names the fix
        return [Check("PipeWire", missing, str(exc))]
    core = next((o for o in graph if o.get("type", "").endswith(":Core")), {})
    checks = [Check("PipeWire", OK, f"daemon {(core.get('info') or {}).get('version', '')} at "
                                    f"{pipewire.socket_path()}".replace("  ", " "))]
    clients = {((o.get("info") or {}).get("props") or {}).get("application.name") for o in graph
               if o.get("type", "").endswith(":Client")}
    manager = next((name for name in ("WirePlumber", "pipewire-media-session") if name in clients), None)
    checks.append(Check("session manager", OK, f"{manager} links readers to the camera") if manager else
                  Check("session manager", missing, "no session manager (WirePlumber or pipewire-media-session) "
                        f"is connected: nothing links a reader to the camera{aside}",
                        "`systemctl --user start wireplumber` (Debian/Ubuntu: `sudo apt install wireplumber`)"))
    try:
        pipewire.gstreamer()
        checks.append(Check("PipeWire output", OK, "PyGObject and GStreamer's pipewiresink are installed"))
    except VbgError as exc:  # its message names the fix
        checks.append(Check("PipeWire output", missing, f"{exc}{aside}"))
    portal = camera_portal()
    checks.append(portal if portal.status == OK else Check(portal.name, missing, portal.found + aside, portal.fix))
    return checks


PORTAL_BACKEND = "`sudo apt install xdg-desktop-portal xdg-desktop-portal-gtk` (or -gnome, -kde), then log in again"


def camera_portal(timeout_s: float = 10.0) -> Check:
    """xdg-desktop-portal's Camera interface on the session bus: Chromium, Firefox and OBS ask it
    for PipeWire cameras (libwebrtc's and OBS's PipeWire camera code go through it), and so do
    Flatpak and snap apps. Missing, it is a warning here; :func:`pipewire_camera` weighs it."""
    name = "camera portal"
    if shutil.which("gdbus") is None:
        return Check(name, WARN, "not checked: gdbus is missing", "`sudo apt install libglib2.0-bin`")
    try:
        result = subprocess.run(
            ["gdbus", "call", "--session", "--timeout", str(int(timeout_s)), "--dest", "org.freedesktop.portal.Desktop",
             "--object-path", "/org/freedesktop/portal/desktop", "--method", "org.freedesktop.DBus.Properties.Get",
             "org.freedesktop.portal.Camera", "version"], capture_output=True, text=True, timeout=timeout_s + 5)
    except subprocess.TimeoutExpired:
        return Check(name, WARN, f"xdg-desktop-portal did not answer within {timeout_s:g} s", PORTAL_BACKEND)
    if result.returncode == 0:
        version = re.search(r"\d+", result.stdout)
        return Check(name, OK, f"xdg-desktop-portal's Camera interface (version {version[0] if version else '?'}) "
                               "lets browsers, OBS and sandboxed apps ask for the PipeWire camera")
    error = " ".join(result.stderr.split())
    if "No such interface" in error:
        found = "xdg-desktop-portal runs without its Camera interface (it needs a backend with the Access portal)"
    elif "ServiceUnknown" in error or "not provided by any .service" in error:
        found = "xdg-desktop-portal is not installed"
    else:
        found = f"the session bus did not answer ({error[:120]})"
    return Check(name, WARN, f"{found}: browsers, OBS and Flatpak/snap apps will not see the PipeWire camera",
                 PORTAL_BACKEND)


def serve_port(host: str = "127.0.0.1", port: int = 8765) -> Check:
    """The --serve port is free (only `vbg --serve` needs it, so a busy one is a warning)."""
    from vbg.remote import check_port

    try:
        check_port(host, port)
    except VbgError as exc:  # its message names the fix
        return Check("--serve port", WARN, f"{exc} (only `vbg --serve` needs it)")
    return Check("--serve port", OK, f"{host}:{port} is free")


def run_checks(*, camera_device: str = "0", vcam_device: str | None = None, host: str = "127.0.0.1",
               port: int = 8765, sys_root: Path = Path("/sys"), dev_root: Path = Path("/dev")) -> list[Check]:
    """Every check, in the order a first run meets them."""
    checks: list[Check] = []
    if sys.platform.startswith("linux"):
        v4l2 = virtual_camera(sys_root, dev_root, vcam_device)
        pipewire = pipewire_camera(v4l2_ready=all(c.status != FAIL for c in v4l2))
        if vcam_device is None and all(c.status == OK for c in pipewire):
            # the default output falls back to the PipeWire camera: v4l2loopback is then optional
            v4l2 = [Check(c.name, WARN, f"{c.found} (the default output uses the PipeWire camera instead)", c.fix)
                    if c.status == FAIL else c for c in v4l2]
        checks += v4l2 + pipewire
    else:
        checks.append(Check("virtual camera", WARN, "not checked on this platform (OBS Studio's virtual camera)",
                            "install OBS Studio and start its virtual camera once"))
    checks.append(camera(camera_device, sys_root, dev_root))
    checks.append(providers(dev_root=dev_root))
    checks.append(runtimes())
    checks.append(model_cache())
    checks.append(serve_port(host, port))
    return checks
