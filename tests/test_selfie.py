"""MediaPipe's selfie segmenters: pulled as .tflite, converted by vbg's own converter, run as ONNX.

The reference is the .tflite file itself run by Google's TFLite runtime (ai-edge-litert), which
executes MediaPipe's custom transposed convolution; vbg's ONNX must agree with it.
"""

import shutil

import cv2
import numpy as np
import pytest
from skimage import data as skdata

from conftest import person_frame
from vbg import registry
from vbg.cli import main
from vbg.errors import VbgError
from vbg.matting import Matter
from vbg.session import MattingSession
from vbg.tflite_onnx import convert

MODELS = ("selfie", "selfie-landscape")


@pytest.fixture(scope="session", params=MODELS)
def selfie(request):
    """(spec, converted .onnx, verified .tflite source) of one selfie model, pulled once into the user's cache."""
    spec = registry.get_spec(request.param)
    onnx_path = registry.ensure_model(spec)
    return spec, onnx_path, registry.source_file(spec)


def tflite_alpha(tflite_path, rgb: np.ndarray) -> np.ndarray:
    """The TFLite runtime's output for an RGB uint8 image already at the model's input size."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(tflite_path), num_threads=1)
    interpreter.allocate_tensors()
    (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
    assert tuple(inp["shape"][1:3]) == rgb.shape[:2]
    interpreter.set_tensor(inp["index"], (rgb.astype(np.float32) / 255.0)[None])
    interpreter.invoke()
    return interpreter.get_tensor(out["index"])[0, :, :, 0]


def test_onnx_matches_the_tflite_runtime_on_a_real_image(selfie):
    spec, onnx_path, tflite_path = selfie
    height, width = spec.fixed_shape
    rgb = cv2.resize(skdata.astronaut(), (width, height), interpolation=cv2.INTER_AREA)
    expected = tflite_alpha(tflite_path, rgb)
    # vbg's own path: BGR frame in, the registry's channel order and normalisation applied by the session.
    alpha = MattingSession(spec, onnx_path).infer(np.ascontiguousarray(rgb[:, :, ::-1]))
    assert alpha.shape == expected.shape == (height, width)
    assert (expected > 0.9).mean() > 0.2 and (expected < 0.1).mean() > 0.2  # a real matte, not a flat one
    assert np.abs(alpha - expected).max() < 1e-3


def test_matte_covers_the_person_and_not_the_room(selfie):
    spec, onnx_path, _ = selfie
    frame = person_frame(0)  # the astronaut portrait between two plain walls, 640x360
    matter = Matter(MattingSession(spec, onnx_path), smoothing=0.0)
    alpha = matter(frame)
    assert alpha.shape == frame.shape[:2]
    face, torso = alpha[30:90, 265:335], alpha[200:300, 200:330]
    walls, shuttle = np.hstack([alpha[:, :120], alpha[:, 520:]]), alpha[10:120, 410:460]
    assert (face > 0.5).mean() > 0.95 and (torso > 0.5).mean() > 0.95
    assert (walls < 0.5).mean() > 0.99 and (shuttle < 0.5).mean() > 0.9
    assert alpha[:20, :20].max() < 0.5 and alpha[-20:, -20:].max() < 0.5


def test_pull_fetches_verifies_and_converts_into_an_empty_cache(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("VBG_CACHE_DIR", str(tmp_path))
    assert main(["models", "pull", "selfie-landscape"]) == 0
    spec = registry.get_spec("selfie-landscape")
    onnx_path = tmp_path / "models" / "selfie-landscape.onnx"
    assert capsys.readouterr().out.strip() == str(onnx_path)
    # the converted file is registered on this machine with its own sha256, and verified before use
    assert spec.path == str(onnx_path) and spec.sha256 == registry.sha256_of(onnx_path)
    assert registry.ensure_model(spec) == onnx_path
    source = tmp_path / "models" / "selfie_segmentation_landscape.tflite"
    assert registry.sha256_of(source) == spec.source_sha256
    assert not list((tmp_path / "models").glob("*.partial"))


@pytest.fixture
def corrupt_source(monkeypatch, tmp_path):
    """A private cache whose copy of the general model's .tflite has a damaged byte."""
    spec = registry.get_spec("selfie")
    registry.ensure_model(spec)  # in the user's cache, once
    tflite_path = registry.source_file(spec)
    monkeypatch.setenv("VBG_CACHE_DIR", str(tmp_path))
    (tmp_path / "models").mkdir()
    copy = tmp_path / "models" / tflite_path.name
    shutil.copyfile(tflite_path, copy)
    with copy.open("r+b") as fh:
        fh.seek(100_000)
        byte = fh.read(1)
        fh.seek(100_000)
        fh.write(bytes([byte[0] ^ 0xFF]))
    return copy


def test_corrupt_tflite_is_refused_in_one_line_and_force_fetches_it_again(corrupt_source, capsys):
    assert main(["models", "pull", "selfie"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert f"source file {corrupt_source}" in err and "sha256 mismatch" in err
    assert "`vbg models pull --force selfie`" in err
    assert not (corrupt_source.parent / "selfie.onnx").exists()  # nothing converted from a bad file

    assert main(["models", "pull", "--force", "selfie"]) == 0  # the fix the message names
    assert registry.sha256_of(corrupt_source) == registry.get_spec("selfie").source_sha256
    assert (corrupt_source.parent / "selfie.onnx").is_file()


def test_converter_refuses_a_file_that_is_not_tflite(tmp_path):
    cv2.imwrite(str(tmp_path / "portrait.png"), person_frame(0))
    with pytest.raises(VbgError, match=r"portrait.png is not a TFLite model"):
        convert(tmp_path / "portrait.png", tmp_path / "out.onnx")
