"""Real MODNet weights into :class:`~vbg.export.modnet.MODNet`: from an official PyTorch
checkpoint, or out of an existing MODNet ONNX file's initialisers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from torch import nn

from vbg.errors import VbgError
from vbg.export.modnet import MODNet


def load_checkpoint(model: MODNet, path: Path) -> None:
    """Load an official checkpoint (a state dict, possibly saved from DataParallel with
    a ``module.`` prefix on every key) into ``model``."""
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise VbgError(f"checkpoint {path} does not exist") from None
    except Exception as exc:  # torch raises several types for a file that is no checkpoint
        raise VbgError(f"checkpoint {path} cannot be read as a PyTorch state dict ({exc})") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    state = {key.removeprefix("module."): value for key, value in state.items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise VbgError(f"checkpoint {path} is not a MODNet checkpoint: {len(missing)} missing keys "
                       f"(e.g. {missing[:2]}), {len(unexpected)} unexpected (e.g. {unexpected[:2]})")


def _fold_into(conv: nn.Conv2d, bn: nn.BatchNorm2d, weight: np.ndarray, bias: np.ndarray) -> None:
    """Give ``conv`` + ``bn`` the effect of one convolution with ``weight`` and ``bias``
    (what an exporter leaves after fusing batch norm): the batch norm becomes an identity
    that adds ``bias``."""
    conv.weight.data = torch.from_numpy(weight.copy())
    bn.running_mean.zero_()
    bn.running_var.fill_(1.0 - bn.eps)
    bn.weight.data.fill_(1.0)
    bn.bias.data = torch.from_numpy(bias.copy())


def load_onnx_weights(model: MODNet, path: Path) -> None:
    """Load the weights of a MODNet ONNX export into ``model``.

    Head parameters keep their PyTorch names in such files. The backbone's convolutions
    had their batch norms fused by the exporter and lost their names: they are matched to
    the backbone's convolutions by order, which is the order the graph runs them in; so
    are the two fully connected layers of the SE block (exported as MatMul, transposed).
    """
    try:
        graph = onnx.load(str(path)).graph
    except Exception as exc:  # onnx raises DecodeError and friends
        raise VbgError(f"{path} is not an ONNX model ({exc})") from None
    arrays = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    state = model.state_dict()
    loaded: set[str] = set()
    for name, array in arrays.items():
        if name in state:
            if tuple(state[name].shape) != array.shape:
                raise VbgError(f"{path}: {name} has shape {array.shape}, MODNet expects {tuple(state[name].shape)}")
            state[name].copy_(torch.from_numpy(array.copy()))
            loaded.add(name)

    backbone_pairs = _conv_bn_pairs(model.backbone.model)
    fused = [(arrays[node.input[1]], arrays[node.input[2]]) for node in graph.node
             if node.op_type == "Conv" and node.input[1] in arrays and node.input[1] not in state]
    if len(fused) != len(backbone_pairs):
        raise VbgError(f"{path}: {len(fused)} unnamed convolutions, a MODNet backbone has {len(backbone_pairs)}")
    for (conv, bn), (weight, bias) in zip(backbone_pairs, fused):
        if tuple(conv.weight.shape) != weight.shape:
            raise VbgError(f"{path}: backbone convolution of shape {weight.shape} where MODNet has "
                           f"{tuple(conv.weight.shape)}; not a MODNet export")
        _fold_into(conv, bn, weight, bias)

    matmuls = [arrays[node.input[1]] for node in graph.node if node.op_type == "MatMul" and node.input[1] in arrays]
    se = model.lr_branch.se_block.fc
    if len(matmuls) != 2:
        raise VbgError(f"{path}: expected the SE block's two MatMul weights, found {len(matmuls)}")
    se[0].weight.data = torch.from_numpy(matmuls[0].T.copy())
    se[2].weight.data = torch.from_numpy(matmuls[1].T.copy())

    head = {name for name in state if not name.startswith(("backbone.", "lr_branch.backbone.", "lr_branch.se_block."))
            and not name.startswith(("lr_branch.conv_lr.", "hr_branch.conv_hr.")) and "num_batches" not in name}
    if head - loaded:
        raise VbgError(f"{path} lacks {len(head - loaded)} MODNet parameters, e.g. {sorted(head - loaded)[:2]}")


def _conv_bn_pairs(module: nn.Module) -> list[tuple[nn.Conv2d, nn.BatchNorm2d]]:
    """Each convolution with the batch norm that follows it, in definition order."""
    layers = [m for m in module.modules() if isinstance(m, (nn.Conv2d, nn.BatchNorm2d))]
    return [(conv, bn) for conv, bn in zip(layers[::2], layers[1::2])
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d)]
