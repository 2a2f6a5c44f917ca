"""TFLite → ONNX for MediaPipe's selfie-segmentation graphs, without TensorFlow.

The graph is read with the ``tflite`` flatbuffer package and written with ``onnx.helper``,
so onnxruntime runs MediaPipe's models like every other model in the registry. Only the
operators those graphs use are supported, including MediaPipe's custom
``Convolution2DTransposeBias`` (a transposed convolution plus bias); anything else is refused
by name. TFLite works in NHWC; the ONNX graph is NCHW throughout (input ``1x3xHxW``,
output ``1xCxHxW``), the layout onnxruntime's CPU kernels are fastest in. Weights stored as
float16 behind ``DEQUANTIZE`` are folded into float32 initializers.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import tflite
from onnx import TensorProto, helper, numpy_helper
from tflite.ActivationFunctionType import ActivationFunctionType
from tflite.BuiltinOperator import BuiltinOperator
from tflite.Padding import Padding
from tflite.TensorType import TensorType

from vbg.errors import VbgError

log = logging.getLogger(__name__)

# registry.TFLITE_RECIPE versions this conversion: bump it when it changes (vbg then converts again).
OPSET = 17  # HardSwish needs 14
TRANSPOSE_CONV_BIAS = "Convolution2DTransposeBias"
_OPERATOR_NAMES = {code: name for name, code in vars(BuiltinOperator).items() if not name.startswith("_")}
_DTYPES = {TensorType.FLOAT32: np.float32, TensorType.FLOAT16: np.float16, TensorType.INT32: np.int32}
# MediaPipe's custom op takes TfLiteTransposeConvParams as raw int32s: padding, stride_w, stride_h,
# where padding follows TfLitePadding (1 same, 2 valid), not the flatbuffer's Padding enum.
_CUSTOM_SAME, _CUSTOM_VALID = 1, 2


def _same_pads(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """TensorFlow's SAME padding of one spatial axis as (before, after)."""
    out = -(-size // stride)
    total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


class _Converter:
    """Walks one TFLite subgraph in order and emits the equivalent ONNX nodes."""

    def __init__(self, buffer: bytes, source: str) -> None:
        self.source = source
        self.model = tflite.Model.GetRootAsModel(buffer, 0)
        if self.model.SubgraphsLength() != 1:
            raise VbgError(f"{source}: expected one TFLite subgraph, found {self.model.SubgraphsLength()}")
        self.graph = self.model.Subgraphs(0)
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.constants: dict[int, np.ndarray] = {}  # tensor index -> value, DEQUANTIZE folded in
        taken: set[str] = set()
        self.names: list[str] = []
        for index in range(self.graph.TensorsLength()):
            name = self.graph.Tensors(index).Name().decode() or f"t{index}"
            name = name if name not in taken else f"{name}_{index}"
            taken.add(name)
            self.names.append(name)

    # -- tensors ---------------------------------------------------------------------------------

    def shape(self, index: int) -> list[int]:
        return [int(d) for d in self.graph.Tensors(index).ShapeAsNumpy()]

    def nchw(self, index: int) -> list[int]:
        """The ONNX (NCHW) shape of a TFLite activation tensor (NHWC when 4-D)."""
        shape = self.shape(index)
        return [shape[0], shape[3], shape[1], shape[2]] if len(shape) == 4 else shape

    def constant(self, index: int) -> np.ndarray | None:
        """The value of a constant tensor (its buffer, or a folded DEQUANTIZE), else None."""
        if index in self.constants:
            return self.constants[index]
        tensor = self.graph.Tensors(index)
        data = self.model.Buffers(tensor.Buffer()).DataAsNumpy()
        if isinstance(data, int) or data.size == 0:  # the package returns 0 for an empty buffer
            return None
        if tensor.Type() not in _DTYPES:
            raise VbgError(f"{self.source}: constant tensor '{self.names[index]}' has unsupported type {tensor.Type()}")
        return data.view(_DTYPES[tensor.Type()]).reshape(self.shape(index))

    def weight(self, index: int, value: np.ndarray) -> str:
        """Add ``value`` (already in ONNX layout) as an initializer named after tensor ``index``."""
        name = self.names[index]
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def required_constant(self, index: int, role: str) -> np.ndarray:
        value = self.constant(index)
        if value is None:
            raise VbgError(f"{self.source}: the {role} '{self.names[index]}' must be a constant")
        return value

    def activation(self, op, index: int) -> str:
        """The ONNX name of an operator's activation input (a computed tensor, never a constant)."""
        if self.constant(index) is not None:
            raise VbgError(f"{self.source}: {self.op_name(op)} with a constant input '{self.names[index]}' "
                           "is not supported")
        return self.names[index]

    # -- operators -------------------------------------------------------------------------------

    def op_name(self, op) -> str:
        code = self.model.OperatorCodes(op.OpcodeIndex())
        builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())  # old files fill only the latter
        if builtin == BuiltinOperator.CUSTOM:
            return code.CustomCode().decode()
        return _OPERATOR_NAMES.get(builtin, str(builtin))

    def options(self, op, kind: type):
        table = op.BuiltinOptions()
        options = kind()
        options.Init(table.Bytes, table.Pos)
        return options

    def emit(self, op_type: str, inputs: list[str], output: str, **attributes) -> None:
        self.nodes.append(helper.make_node(op_type, inputs, [output], name=output, **attributes))

    def emit_activated(self, op_type: str, inputs: list[str], output: str, fused: int, **attributes) -> None:
        """``op_type`` followed by its fused activation (TFLite folds ReLU into the op)."""
        if fused == ActivationFunctionType.NONE:
            self.emit(op_type, inputs, output, **attributes)
            return
        if fused not in (ActivationFunctionType.RELU, ActivationFunctionType.RELU6):
            raise VbgError(f"{self.source}: fused activation {fused} of '{output}' is not supported")
        self.emit(op_type, inputs, output + "/pre_activation", **attributes)
        if fused == ActivationFunctionType.RELU:
            self.emit("Relu", [output + "/pre_activation"], output)
        else:
            bounds = [self.scalar(output + "/min", 0.0), self.scalar(output + "/max", 6.0)]
            self.emit("Clip", [output + "/pre_activation", *bounds], output)

    def scalar(self, name: str, value: float) -> str:
        self.initializers.append(numpy_helper.from_array(np.array(value, np.float32), name))
        return name

    def conv_pads(self, op, x: int, kernel: tuple[int, int], strides: tuple[int, int],
                  dilations: tuple[int, int], padding: int) -> list[int]:
        if padding == Padding.VALID:
            return [0, 0, 0, 0]
        _, h, w, _ = self.shape(x)
        (top, bottom), (left, right) = (_same_pads(size, k, s, d) for size, k, s, d
                                        in zip((h, w), kernel, strides, dilations))
        return [top, left, bottom, right]

    def dequantize(self, op) -> None:
        value = self.required_constant(op.Inputs(0), "input of DEQUANTIZE")
        if value.dtype != np.float16:
            raise VbgError(f"{self.source}: DEQUANTIZE of {value.dtype} weights is not supported (float16 only)")
        self.constants[op.Outputs(0)] = value.astype(np.float32)

    def conv_2d(self, op) -> None:
        o = self.options(op, tflite.Conv2DOptions)
        x, w, b = (op.Inputs(i) for i in range(3))
        kernel = self.required_constant(w, "kernel")  # OHWI
        strides, dilations = (o.StrideH(), o.StrideW()), (o.DilationHFactor(), o.DilationWFactor())
        self.emit_activated(
            "Conv", [self.activation(op, x), self.weight(w, kernel.transpose(0, 3, 1, 2)),
                     self.weight(b, self.required_constant(b, "bias"))],
            self.names[op.Outputs(0)], o.FusedActivationFunction(),
            kernel_shape=list(kernel.shape[1:3]), strides=list(strides), dilations=list(dilations),
            pads=self.conv_pads(op, x, kernel.shape[1:3], strides, dilations, o.Padding()))

    def depthwise_conv_2d(self, op) -> None:
        o = self.options(op, tflite.DepthwiseConv2DOptions)
        x, w, b = (op.Inputs(i) for i in range(3))
        kernel = self.required_constant(w, "kernel")  # 1 x H x W x (C * multiplier)
        strides, dilations = (o.StrideH(), o.StrideW()), (o.DilationHFactor(), o.DilationWFactor())
        self.emit_activated(
            "Conv", [self.activation(op, x), self.weight(w, kernel.transpose(3, 0, 1, 2)),
                     self.weight(b, self.required_constant(b, "bias"))],
            self.names[op.Outputs(0)], o.FusedActivationFunction(),
            group=self.shape(x)[3], kernel_shape=list(kernel.shape[1:3]), strides=list(strides),
            dilations=list(dilations), pads=self.conv_pads(op, x, kernel.shape[1:3], strides, dilations, o.Padding()))

    def transpose_conv_bias(self, op) -> None:
        """MediaPipe's transposed convolution + bias; its options are raw int32 (padding, stride w, h)."""
        params = op.CustomOptionsAsNumpy()
        if isinstance(params, int) or params.size != 12:
            raise VbgError(f"{self.source}: {TRANSPOSE_CONV_BIAS} has no (padding, stride) options")
        padding, stride_w, stride_h = (int(v) for v in params.view(np.int32))
        if padding not in (_CUSTOM_SAME, _CUSTOM_VALID):
            raise VbgError(f"{self.source}: {TRANSPOSE_CONV_BIAS} has unknown padding {padding}")
        x, w, b = (op.Inputs(i) for i in range(3))
        kernel = self.required_constant(w, "kernel")  # O x H x W x I
        (_, in_h, in_w, _), (_, out_h, out_w, _) = self.shape(x), self.shape(op.Outputs(0))
        pads = []
        for size, out, k, s in ((in_h, out_h, kernel.shape[1], stride_h), (in_w, out_w, kernel.shape[2], stride_w)):
            total = (size - 1) * s + k - out  # the full transposed output cropped to the declared size
            if total < 0:
                raise VbgError(f"{self.source}: {TRANSPOSE_CONV_BIAS} output {out} is larger than its input allows")
            pads.append((total // 2, total - total // 2))
        (top, bottom), (left, right) = pads
        self.emit("ConvTranspose",
                  [self.activation(op, x), self.weight(w, kernel.transpose(3, 0, 1, 2)),
                   self.weight(b, self.required_constant(b, "bias"))],
                  self.names[op.Outputs(0)], kernel_shape=list(kernel.shape[1:3]), strides=[stride_h, stride_w],
                  pads=[top, left, bottom, right])

    def elementwise(self, onnx_type: str, options: type | None = None) -> Callable:
        def convert(op) -> None:
            inputs = [self.activation(op, op.Inputs(i)) for i in range(op.InputsLength())]
            fused = self.options(op, options).FusedActivationFunction() if options else ActivationFunctionType.NONE
            self.emit_activated(onnx_type, inputs, self.names[op.Outputs(0)], fused)
        return convert

    def average_pool_2d(self, op) -> None:
        o = self.options(op, tflite.Pool2DOptions)
        x = op.Inputs(0)
        _, h, w, _ = self.shape(x)
        kernel, strides = (o.FilterHeight(), o.FilterWidth()), (o.StrideH(), o.StrideW())
        if kernel == (h, w) and o.Padding() == Padding.VALID:  # the squeeze-excite blocks' global pool
            self.emit_activated("GlobalAveragePool", [self.activation(op, x)], self.names[op.Outputs(0)],
                                o.FusedActivationFunction())
            return
        self.emit_activated("AveragePool", [self.activation(op, x)], self.names[op.Outputs(0)],
                            o.FusedActivationFunction(), kernel_shape=list(kernel), strides=list(strides),
                            pads=self.conv_pads(op, x, kernel, strides, (1, 1), o.Padding()), count_include_pad=0)

    def mean(self, op) -> None:
        axes = sorted(int(a) for a in self.required_constant(op.Inputs(1), "axes of MEAN").reshape(-1))
        if axes != [1, 2] or not self.options(op, tflite.ReducerOptions).KeepDims():
            raise VbgError(f"{self.source}: MEAN over axes {axes} is not supported (only the spatial mean, kept dims)")
        self.emit("GlobalAveragePool", [self.activation(op, op.Inputs(0))], self.names[op.Outputs(0)])

    def resize_bilinear(self, op) -> None:
        o = self.options(op, tflite.ResizeBilinearOptions)
        x, out = op.Inputs(0), op.Outputs(0)
        size = self.required_constant(op.Inputs(1), "size of RESIZE_BILINEAR")
        mode = "align_corners" if o.AlignCorners() else "half_pixel" if o.HalfPixelCenters() else "asymmetric"
        sizes = self.names[op.Inputs(1)]
        self.initializers.append(numpy_helper.from_array(
            np.array([*self.nchw(x)[:2], *(int(s) for s in size)], np.int64), sizes))
        self.emit("Resize", [self.activation(op, x), "", "", sizes], self.names[out],
                  mode="linear", coordinate_transformation_mode=mode)

    # -- the whole graph -------------------------------------------------------------------------

    def convert(self) -> onnx.ModelProto:
        handlers: dict[str, Callable] = {
            "DEQUANTIZE": self.dequantize,
            "CONV_2D": self.conv_2d,
            "DEPTHWISE_CONV_2D": self.depthwise_conv_2d,
            TRANSPOSE_CONV_BIAS: self.transpose_conv_bias,
            "ADD": self.elementwise("Add", tflite.AddOptions),
            "MUL": self.elementwise("Mul", tflite.MulOptions),
            "RELU": self.elementwise("Relu"),
            "LOGISTIC": self.elementwise("Sigmoid"),
            "HARD_SWISH": self.elementwise("HardSwish"),
            "AVERAGE_POOL_2D": self.average_pool_2d,
            "MEAN": self.mean,
            "RESIZE_BILINEAR": self.resize_bilinear,
        }
        for i in range(self.graph.OperatorsLength()):
            op = self.graph.Operators(i)
            name = self.op_name(op)
            if name not in handlers:
                raise VbgError(f"{self.source}: operator {name} is not supported by vbg's TFLite converter "
                               f"(it handles {', '.join(sorted(handlers))})")
            handlers[name](op)

        def value_info(index: int) -> onnx.ValueInfoProto:
            if self.graph.Tensors(index).Type() != TensorType.FLOAT32:
                raise VbgError(f"{self.source}: graph input/output '{self.names[index]}' is not float32")
            return helper.make_tensor_value_info(self.names[index], TensorProto.FLOAT, self.nchw(index))

        graph = helper.make_graph(
            self.nodes, "tflite:" + self.source,
            [value_info(int(i)) for i in self.graph.InputsAsNumpy()],
            [value_info(int(i)) for i in self.graph.OutputsAsNumpy()],
            self.initializers)
        proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="vbg")
        onnx.checker.check_model(proto, full_check=True)
        return proto


def convert(src: Path, out: Path) -> None:
    """Write the ONNX (NCHW) equivalent of the TFLite model ``src`` to ``out`` (checked by onnx)."""
    try:
        buffer = src.read_bytes()
    except OSError as exc:
        raise VbgError(f"cannot read TFLite model {src} ({exc.strerror})") from None
    if buffer[4:8] != b"TFL3":
        raise VbgError(f"{src} is not a TFLite model (no TFL3 flatbuffer identifier)")
    proto = _Converter(buffer, src.name).convert()
    onnx.save(proto, str(out))
    log.info("converted %s to ONNX (%d nodes, opset %d)", src.name, len(proto.graph.node), OPSET)
