"""`vbg doctor`: each check on faked system facts (a /sys and /dev made in tmp_path)."""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

import pytest

from vbg import doctor
from vbg.registry import default_model
from vbg.cli import main
from vbg.sources import open_input

MODPROBE = "sudo modprobe v4l2loopback devices=1 video_nr=10 card_label=vbg exclusive_caps=1"


def fake_system(tmp_path: Path, *, loaded: bool = True, loopbacks: tuple[str, ...] = ("video10",),
                cameras: tuple[str, ...] = (), exclusive_caps: str = "Y") -> tuple[Path, Path]:
    """(sys_root, dev_root) as the kernel lays them out: loopback devices under devices/virtual,
    cameras under their USB bus, both linked from class/video4linux, and their /dev nodes."""
    sys_root, dev_root = tmp_path / "sys", tmp_path / "dev"
    dev_root.mkdir(parents=True)
    (sys_root / "class" / "video4linux").mkdir(parents=True)
    if loaded:
        parameters = sys_root / "module" / "v4l2loopback" / "parameters"
        parameters.mkdir(parents=True)
        (parameters / "exclusive_caps").write_text(",".join([exclusive_caps] + ["N"] * 7) + "\n")
    for name, bus in [(n, "virtual") for n in loopbacks] + [(n, "pci0000:00/usb1/1-1/1-1:1.0") for n in cameras]:
        device = sys_root / "devices" / bus / "video4linux" / name
        device.mkdir(parents=True)
        (device / "name").write_text("vbg\n" if bus == "virtual" else "Integrated Camera\n")
        (sys_root / "class" / "video4linux" / name).symlink_to(device)
        (dev_root / name).touch()
    subdev = sys_root / "devices" / "virtual" / "video4linux" / "v4l-subdev0"  # not a video device
    subdev.mkdir(parents=True)
    (sys_root / "class" / "video4linux" / "v4l-subdev0").symlink_to(subdev)
    return sys_root, dev_root


def statuses(checks: list[doctor.Check]) -> list[str]:
    return [c.status for c in checks]


def test_v4l2loopback_not_loaded_is_a_failure_with_the_modprobe_line(tmp_path):
    [check] = doctor.virtual_camera(*fake_system(tmp_path, loaded=False))
    assert check.status == doctor.FAIL and "not loaded" in check.found
    assert MODPROBE in check.fix and "apt install v4l2loopback-dkms" in check.fix


def test_loaded_without_a_device(tmp_path):
    [check] = doctor.virtual_camera(*fake_system(tmp_path, loopbacks=()))
    assert check.status == doctor.FAIL and "no device" in check.found
    assert f"sudo modprobe -r v4l2loopback && {MODPROBE}" in check.fix


def test_a_working_virtual_camera_is_all_ok(tmp_path):
    checks = doctor.virtual_camera(*fake_system(tmp_path, cameras=("video0",)))
    assert statuses(checks) == [doctor.OK] * 3
    assert "/dev/video10 ('vbg')" in checks[0].found  # the loopback one, not the camera
    assert all(not c.fix for c in checks)


def test_without_exclusive_caps_call_apps_do_not_list_it(tmp_path):
    checks = doctor.virtual_camera(*fake_system(tmp_path, exclusive_caps="N"))
    assert statuses(checks) == [doctor.OK, doctor.FAIL, doctor.OK]  # the call app cannot pick it
    assert "exclusive_caps=1" in checks[1].found and "Chrome" in checks[1].found
    assert MODPROBE in checks[1].fix


def test_exclusive_caps_is_read_for_the_device_asked_for(tmp_path):
    sys_root, dev_root = fake_system(tmp_path, loopbacks=("video10", "video11"))
    (sys_root / "module" / "v4l2loopback" / "parameters" / "exclusive_caps").write_text("N,Y,N,N\n")
    assert statuses(doctor.virtual_camera(sys_root, dev_root, "/dev/video11")) == [doctor.OK] * 3
    assert statuses(doctor.virtual_camera(sys_root, dev_root, "/dev/video10"))[1] == doctor.FAIL


def test_a_device_the_user_may_not_open_names_the_group_to_join(tmp_path):
    checks = doctor.virtual_camera(*fake_system(tmp_path), may_open=lambda path: False)
    assert checks[-1].status == doctor.FAIL and "may not open" in checks[-1].found
    assert "sudo usermod -aG" in checks[-1].fix and "log out and in" in checks[-1].fix


def test_asked_for_device_that_is_not_a_loopback_one(tmp_path):
    [check] = doctor.virtual_camera(*fake_system(tmp_path, cameras=("video0",)), device="/dev/video0")
    assert check.status == doctor.FAIL
    assert "/dev/video0 is not a v4l2loopback device (those here: /dev/video10)" in check.found


def test_no_camera_besides_the_virtual_one(tmp_path):
    sys_root, dev_root = fake_system(tmp_path)
    check = doctor.camera("0", sys_root, dev_root)
    assert check.status == doctor.FAIL and "--input" in check.fix
    assert check.found == "no camera found (only v4l2loopback's virtual /dev/video10)"


def test_no_camera_and_no_v4l2loopback_says_no_device(tmp_path):
    check = doctor.camera("0", tmp_path / "sys", tmp_path / "dev")  # nothing in /sys/class/video4linux
    assert check.status == doctor.FAIL
    assert check.found == "no camera found (no /dev/video* device)" and "v4l2loopback" not in check.found


def test_a_camera_the_user_may_not_open(tmp_path):
    sys_root, dev_root = fake_system(tmp_path, cameras=("video0",))
    check = doctor.camera("0", sys_root, dev_root, may_open=lambda path: False)
    assert check.status == doctor.FAIL and "sudo usermod -aG" in check.fix


def test_a_camera_opencv_cannot_open_says_so_with_the_fix(tmp_path):
    sys_root, dev_root = fake_system(tmp_path, cameras=("video0",))
    check = doctor.camera(str(dev_root / "video0"), sys_root, dev_root)  # a plain file, not a device
    assert check.status == doctor.FAIL
    assert "could not be opened" in check.found and "--camera" in check.found


def test_a_camera_reports_what_it_delivers(tmp_path, person_video):
    sys_root, dev_root = fake_system(tmp_path, cameras=("video0",))
    check = doctor.camera("0", sys_root, dev_root,
                          open_camera=lambda device: open_input(str(person_video), loop=False, paced=False))
    assert check.status == doctor.OK and check.found == "delivers 640x360 @ 30 fps"


@pytest.mark.parametrize("available, installed, nvidia, status, fix", [
    (["CUDAExecutionProvider", "CPUExecutionProvider"], ["onnxruntime-gpu"], True, doctor.OK, ""),
    (["CPUExecutionProvider"], ["onnxruntime"], False, doctor.OK, ""),
    (["CPUExecutionProvider"], ["onnxruntime"], True, doctor.WARN,
     "`pip uninstall -y onnxruntime && pip install onnxruntime-gpu`"),
    (["CPUExecutionProvider"], ["onnxruntime", "onnxruntime-gpu"], True, doctor.WARN,
     "`pip uninstall -y onnxruntime onnxruntime-gpu && pip install onnxruntime-gpu`"),
    (["CPUExecutionProvider"], ["onnxruntime-gpu"], True, doctor.WARN, "cuDNN"),
    (["AzureExecutionProvider"], ["onnxruntime"], False, doctor.FAIL, "--force-reinstall onnxruntime"),
])
def test_providers_and_why_a_gpu_one_is_missing(tmp_path, available, installed, nvidia, status, fix):
    if nvidia:
        (tmp_path / "nvidia0").touch()
    check = doctor.providers(available + ["AzureExecutionProvider"], installed, dev_root=tmp_path)
    assert check.status == status and fix in check.fix
    assert "Azure" not in check.found  # onnxruntime's cloud provider: nothing vbg runs on
    where = "the model runs on the GPU (CUDA, NVIDIA), else the CPU" if "CUDAExecutionProvider" in available \
        else "the model runs on the CPU" if "CPUExecutionProvider" in available else "cannot run models on the CPU"
    assert where in check.found


def test_providers_of_this_machine():
    import onnxruntime as ort

    check = doctor.providers()
    assert check.status in (doctor.OK, doctor.WARN)
    on_gpu = any(p in ort.get_available_providers() for p in doctor.GPU_NAMES)
    assert check.found.startswith(f"the model runs on the {'GPU' if on_gpu else 'CPU'}")
    assert "ExecutionProvider" not in check.found and "Azure" not in check.found


def test_model_cache_empty_says_what_the_first_run_does(monkeypatch, tmp_path):
    monkeypatch.setenv("VBG_CACHE_DIR", str(tmp_path))
    check = doctor.model_cache("modnet")
    assert check.status == doctor.WARN and "26 MB" in check.found and check.fix == "`vbg models pull modnet` does it now"
    check = doctor.model_cache("modnet-int8")
    assert check.status == doctor.WARN and "made from 'modnet'" in check.found
    check = doctor.model_cache("selfie-landscape")
    assert check.status == doctor.WARN and "made from selfie_segmentation_landscape.tflite" in check.found
    check = doctor.model_cache("hybrid")  # both of its models are checked
    assert check.name == "model hybrid" and check.status == doctor.WARN and "selfie-landscape not in the cache" in check.found


def test_model_cache_verified_or_corrupt(monkeypatch, tmp_path, modnet_path):
    monkeypatch.setenv("VBG_CACHE_DIR", str(tmp_path))
    (tmp_path / "models").mkdir()
    copy = tmp_path / "models" / "modnet.onnx"
    shutil.copyfile(modnet_path, copy)
    assert doctor.model_cache("modnet").status == doctor.OK
    with copy.open("r+b") as fh:
        fh.truncate(1000)
    check = doctor.model_cache("modnet")
    assert check.status == doctor.FAIL and "`vbg models pull --force modnet`" in check.found


def test_serve_port_in_use_or_free():
    with socket.create_server(("127.0.0.1", 0)) as other:
        port = other.getsockname()[1]
        busy = doctor.serve_port("127.0.0.1", port)
    assert busy.status == doctor.WARN and f"cannot serve on 127.0.0.1:{port}" in busy.found
    assert "pick another --port" in busy.found
    assert doctor.serve_port("127.0.0.1", port).status == doctor.OK


def test_doctor_command_exits_non_zero_on_a_blocking_problem(capsys, tmp_path):
    # a virtual camera that cannot exist blocks `vbg` on any machine, v4l2loopback loaded or not
    status = main(["doctor", "--vcam-device", str(tmp_path / "video99"), "--port", "0"])
    out = capsys.readouterr().out.splitlines()
    assert status == 1
    assert out[0].startswith("FAIL  virtual camera:") and MODPROBE in out[0]
    assert any(line.startswith(("ok    inference", "warn  inference")) for line in out)
    assert "block vbg:" in out[-1] and "virtual camera" in out[-1]


def without_pipewire(monkeypatch, tmp_path: Path) -> None:
    """A session whose runtime folder has no PipeWire socket."""
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    for key in ("PIPEWIRE_REMOTE", "PIPEWIRE_RUNTIME_DIR"):
        monkeypatch.delenv(key, raising=False)


def test_no_pipewire_is_a_failure_only_without_v4l2loopback(monkeypatch, tmp_path):
    without_pipewire(monkeypatch, tmp_path)
    [alone] = doctor.pipewire_camera(v4l2_ready=False)
    [aside] = doctor.pipewire_camera(v4l2_ready=True)
    assert alone.status == doctor.FAIL and aside.status == doctor.WARN
    assert f"no socket at {tmp_path / 'pipewire-0'}" in alone.found and "v4l2loopback is set up" in aside.found
    assert "systemctl --user start pipewire wireplumber" in alone.fix and "apt install pipewire" in alone.fix


def test_a_working_pipewire_camera_makes_v4l2loopback_optional(monkeypatch, tmp_path):
    working = [doctor.Check(name, doctor.OK, "fine") for name in
               ("PipeWire", "session manager", "PipeWire output", "camera portal")]
    monkeypatch.setattr(doctor, "pipewire_camera", lambda v4l2_ready: working)
    sys_root, dev_root = fake_system(tmp_path, loaded=False)
    [v4l2] = [c for c in doctor.run_checks(sys_root=sys_root, dev_root=dev_root, port=0) if c.name == "virtual camera"]
    assert v4l2.status == doctor.WARN and "uses the PipeWire camera instead" in v4l2.found
    [asked] = [c for c in doctor.run_checks(sys_root=sys_root, dev_root=dev_root, port=0, vcam_device="/dev/video10")
               if c.name == "virtual camera"]
    assert asked.status == doctor.FAIL  # a device named on the command line is still needed


def test_all_checks_in_the_order_a_first_run_meets_them(monkeypatch, tmp_path):
    monkeypatch.setenv("VBG_CACHE_DIR", str(tmp_path / "cache"))
    without_pipewire(monkeypatch, tmp_path)
    sys_root, dev_root = fake_system(tmp_path)
    checks = doctor.run_checks(sys_root=sys_root, dev_root=dev_root, port=0)
    assert [c.name for c in checks] == ["virtual camera", "exclusive_caps", "device access", "PipeWire", "camera 0",
                                        "inference", "runtimes", f"model {default_model()[0]}", "--serve port"]
    assert [c.name for c in checks if c.status == doctor.FAIL] == ["camera 0"]


def test_runtimes_say_what_openvino_offers_and_what_the_trial_chose(monkeypatch, tmp_path):
    from vbg import runtimes, tuning
    from vbg.runtimes import ONNXRUNTIME_CPU

    monkeypatch.setenv("VBG_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(runtimes, "_openvino", lambda: (None, "OpenVINO is not installed (`pip install openvino` adds it)"))
    check = doctor.runtimes()
    assert check.status == doctor.WARN and "only onnxruntime" in check.found and "pip install openvino" in check.fix
    monkeypatch.undo()
    if runtimes.openvino_version() is None:
        return
    monkeypatch.setenv("VBG_CACHE_DIR", str(tmp_path))
    assert "the first run measures" in doctor.runtimes().found
    tuning._store(tuning.Tuning("modnet", (256, 448), 1, [tuning.Trial("modnet", ONNXRUNTIME_CPU, 99.0, 0.0)]))
    check = doctor.runtimes()
    assert check.status == doctor.OK and "chosen: modnet on onnxruntime cpu f32: 99 ms" in check.found
