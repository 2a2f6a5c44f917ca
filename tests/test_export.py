"""Export: MODNet in PyTorch → ONNX (fp32, fp16, int8), registered for --model.

Skipped where the `export` extra (PyTorch) is not installed; .ci/run installs it."""

from __future__ import annotations

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest

torch = pytest.importorskip("torch")

from conftest import person_frame  # noqa: E402
from vbg.cli import main  # noqa: E402
from vbg.errors import VbgError  # noqa: E402
from vbg.registry import VNNI_FLAGS, cpu_flags  # noqa: E402
from vbg.export.convert import check_against_torch, export_fp32  # noqa: E402
from vbg.export.modnet import MODNet  # noqa: E402
from vbg.export.weights import load_checkpoint  # noqa: E402
from vbg.quantize import modnet_tensor  # noqa: E402
from vbg.registry import get_spec  # noqa: E402
from vbg.session import MattingSession  # noqa: E402


@pytest.fixture
def private_registry(monkeypatch, tmp_path):
    monkeypatch.setenv("VBG_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path


def alpha(path, tensor):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input": tensor})[0]


def real_tensors(shape):
    return [modnet_tensor(person_frame(i), shape) for i in (0, 8, 16)]


def randomised_modnet() -> MODNet:
    """A MODNet with random weights and non-trivial batch-norm statistics."""
    torch.manual_seed(0)
    model = MODNet()
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    return model.eval()


def test_random_modnet_exports_and_matches_pytorch(tmp_path):
    model = randomised_modnet()
    path = tmp_path / "random.onnx"
    export_fp32(model, path)
    for shape in ((64, 96), (128, 224)):  # dynamic height and width
        tensor = np.random.default_rng(1).uniform(-1, 1, (1, 3, *shape)).astype(np.float32)
        assert check_against_torch(model, path, tensor) <= 1e-4


@pytest.mark.parametrize("prefix", ["", "module."])
def test_checkpoints_load_with_and_without_the_dataparallel_prefix(tmp_path, prefix):
    source = randomised_modnet()
    ckpt = tmp_path / "modnet.ckpt"
    torch.save({prefix + key: value for key, value in source.state_dict().items()}, ckpt)
    target = MODNet()
    load_checkpoint(target, ckpt)
    for key, value in source.state_dict().items():
        assert torch.equal(target.state_dict()[key], value), key


def test_a_checkpoint_of_something_else_is_refused(tmp_path):
    ckpt = tmp_path / "other.ckpt"
    torch.save({"fc.weight": torch.zeros(2, 2)}, ckpt)
    with pytest.raises(VbgError, match="not a MODNet checkpoint"):
        load_checkpoint(MODNet(), ckpt)


def test_from_onnx_round_trips_the_real_model_and_registers_it(capsys, private_registry, modnet_path,
                                                               person_video):
    out = private_registry / "x.onnx"
    assert main(["models", "export", "--from-onnx", str(modnet_path), "--variant", "fp32", "--out", str(out)]) == 0
    for shape in ((192, 352), (256, 448)):
        for tensor in real_tensors(shape):
            assert np.abs(alpha(out, tensor) - alpha(modnet_path, tensor)).max() <= 1e-4
    spec = get_spec("x")  # registered under the file's stem, with its sha256
    assert spec.path == str(out) and spec.variant == "fp32" and len(spec.sha256) == 64
    capsys.readouterr()
    assert main(["--input", str(person_video), "--model", "x", "--output", "null", "--frames", "3", "-q"]) == 0
    assert main(["models", "list"]) == 0
    assert "x " in capsys.readouterr().out


@pytest.mark.skipif(not set(VNNI_FLAGS) & cpu_flags(), reason="this CPU has no VNNI/AMX: onnxruntime's int8 "
                    "kernels for AVX2 lose precision (mean |Δα| 0.018 on an AVX2 EPYC), and vbg never runs int8 there")
def test_int8_stays_close_to_fp32_on_real_frames(private_registry, modnet_path):
    out = private_registry / "q.onnx"
    assert main(["models", "export", "--from-onnx", str(modnet_path), "--variant", "int8", "--out", str(out)]) == 0
    graph_ops = {node.op_type for node in onnx.load(str(out)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= graph_ops
    differences = [np.abs(alpha(out, t) - alpha(modnet_path, t)).mean() for t in real_tensors((256, 448))]
    assert np.mean(differences) <= 0.01


def test_int8_calibrates_on_the_users_frames(private_registry, modnet_path):
    calibration = private_registry / "calibration"
    calibration.mkdir()
    for i in (0, 12):
        cv2.imwrite(str(calibration / f"{i:02d}.png"), person_frame(i))
    out = private_registry / "mine.onnx"
    assert main(["models", "export", "--from-onnx", str(modnet_path), "--variant", "int8", "--out", str(out),
                 "--calibration", str(calibration)]) == 0
    assert get_spec("mine").variant == "int8"
    (private_registry / "empty").mkdir()
    assert main(["models", "export", "--from-onnx", str(modnet_path), "--variant", "int8",
                 "--calibration", str(private_registry / "empty")]) == 1


def test_fp16_keeps_fp32_io_and_runs_on_cpu(private_registry, modnet_path):
    out = private_registry / "h.onnx"
    assert main(["models", "export", "--from-onnx", str(modnet_path), "--variant", "fp16", "--out", str(out)]) == 0
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].type == session.get_outputs()[0].type == "tensor(float)"
    tensor = real_tensors((192, 352))[0]
    assert np.abs(alpha(out, tensor) - alpha(modnet_path, tensor)).mean() <= 0.01


def test_fixed_shape_export_for_tensorrt(private_registry, modnet_path):
    out = private_registry / "fixed.onnx"
    assert main(["models", "export", "--from-onnx", str(modnet_path), "--out", str(out), "--fixed", "160x288"]) == 0
    dims = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).get_inputs()[0].shape
    assert dims == [1, 3, 160, 288]
    spec = get_spec("fixed")
    session = MattingSession(spec, out)
    assert session.infer(person_frame()).shape == (160, 288)


def test_export_mistakes_are_one_line(capsys, modnet_path, tmp_path):
    assert main(["models", "export", "--from-onnx", str(tmp_path / "nope.onnx")]) == 1
    assert "not an ONNX model" in capsys.readouterr().err
    assert main(["models", "export", "--from-onnx", str(modnet_path), "--fixed", "100x100"]) == 1
    assert "multiples of 32" in capsys.readouterr().err
