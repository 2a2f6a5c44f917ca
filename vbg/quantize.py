"""ONNX-to-ONNX conversions that need no PyTorch: opset upgrade, fp16, int8.

int8 is what makes MODNet fast on a CPU (about twice the speed at a mean alpha
difference of a few thousandths); vbg derives it on first use from the pulled
fp32 model, calibrated on real frames of people (see ``models/registry.toml``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import cv2
import numpy as np
import onnx

from vbg import progress
from vbg.imaging import cover_fit

log = logging.getLogger(__name__)

OPSET = 17  # per-channel QDQ needs 13 or later


def upgrade_opset(src: Path, out: Path, opset: int = OPSET) -> None:
    """Rewrite an older ONNX graph at ``opset`` (checked)."""
    from onnx import version_converter

    proto = version_converter.convert_version(onnx.load(str(src)), opset)
    onnx.checker.check_model(proto)
    onnx.save(proto, str(out))


def convert_fp16(src: Path, out: Path) -> None:
    """Half-precision weights and compute; input and output stay fp32 so callers do not change."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    proto = convert_float_to_float16(onnx.load(str(src)), keep_io_types=True)
    _sort_topologically(proto.graph)  # the converter appends its input/output casts at the end
    onnx.checker.check_model(proto)
    onnx.save(proto, str(out))


def _sort_topologically(graph: onnx.GraphProto) -> None:
    """Reorder ``graph``'s nodes so each comes after the nodes that produce its inputs."""
    available = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        ready = [node for node in pending if all(name in available for name in node.input)]
        if not ready:
            raise ValueError("graph has a cycle or an input nothing produces")
        for node in ready:
            available.update(node.output)
        ordered += ready
        pending = [node for node in pending if all(node is not r for r in ready)]
    del graph.node[:]
    graph.node.extend(ordered)


def modnet_tensor(frame_bgr: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """MODNet's input for a BGR frame: RGB, cover-fitted to ``shape`` (h, w), in [-1, 1], NCHW."""
    rgb = cover_fit(frame_bgr, shape[::-1])[:, :, ::-1].astype(np.float32)
    return np.ascontiguousarray((rgb / 127.5 - 1.0).transpose(2, 0, 1)[None])


def calibration_tensors(frames: Iterable[np.ndarray], shape: tuple[int, int]) -> list[np.ndarray]:
    """Each frame as it is and mirrored, at the matte shape the model will run at."""
    return [modnet_tensor(f, shape) for frame in frames for f in (frame, frame[:, ::-1])]


def video_frames(path: Path, count: int) -> list[np.ndarray]:
    """``count`` frames spread evenly over a video file, read in one pass: seeking to each
    decodes from the keyframe before it again (MODNet's calibration video: 8.7 s against 1.2 s)."""
    capture = cv2.VideoCapture(str(path))
    total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) or count
    wanted = set(np.linspace(0, total - 1, count).astype(int).tolist())
    frames = []
    for index in range(max(wanted) + 1):
        if not capture.grab():
            break
        if index in wanted:
            ok, frame = capture.retrieve()
            if ok:
                frames.append(frame)
    capture.release()
    return frames


# registry.INT8_RECIPE versions the recipe below: bump it when this changes (vbg then makes int8 models again).
PERCENTILE = 99.99


class _Calibration:
    """Feeds calibration tensors to onnxruntime's quantiser one at a time, with a progress bar.

    onnxruntime's calibrator keeps every intermediate output of every tensor it is given
    in one ``collect_data`` call (21 GB for MODNet on 48 frames at 256x448); given one tensor
    per call (its ``CalibStridedMinMax`` stride, which every calibrator honours) it folds
    each into its histograms and lets the outputs go, so the peak is one frame's outputs."""

    def __init__(self, tensors: Sequence[np.ndarray], input_name: str) -> None:
        self._tensors = tensors
        self._input_name = input_name
        self._pending: Iterator[np.ndarray] = iter(())
        self._progress = progress.bar("calibrating int8", total=len(tensors), unit="frame")

    def __len__(self) -> int:
        return len(self._tensors)

    def set_range(self, start_index: int, end_index: int) -> None:
        self._pending = iter(self._tensors[start_index:end_index])

    def get_next(self) -> dict[str, np.ndarray] | None:
        tensor = next(self._pending, None)
        if tensor is None:
            return None
        self._progress.update()
        return {self._input_name: tensor}

    def close(self) -> None:
        self._progress.close()


@contextlib.contextmanager
def _quiet_quantiser() -> Iterator[None]:
    """onnxruntime's quantiser logs a line per tensor on the root logger and prints its own
    lines on stdout; neither is for the user."""
    logging.disable(logging.WARNING)
    try:
        with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
            yield
    finally:
        logging.disable(logging.NOTSET)


def quantize_int8(src: Path, out: Path, tensors: Sequence[np.ndarray], input_name: str = "input") -> None:
    """Static QDQ quantisation of an opset ≥ 13 model: int8 per-channel weights, uint8
    activations with ranges calibrated on ``tensors`` (99.99th percentile), streamed one
    tensor at a time so the peak memory does not grow with the number of tensors."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    reader = _Calibration(tensors, input_name)
    with tempfile.TemporaryDirectory(prefix="vbg-int8-") as tmp, _quiet_quantiser(), contextlib.closing(reader):
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(src), str(prepared), skip_symbolic_shape=True)
        quantize_static(str(prepared), str(out), reader, quant_format=QuantFormat.QDQ,
                        per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.Percentile,
                        # Clipping the rarest 0.01 % of activations keeps resolution for the rest:
                        # on the dev clips MAD 8.06 against 8.40 with plain min/max ranges.
                        extra_options={"CalibPercentile": PERCENTILE, "CalibStridedMinMax": 1})
    onnx.checker.check_model(str(out))
