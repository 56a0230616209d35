"""What the layer-by-layer checks of binary files share (`verify_integer`, `verify_binary`):

- `probe`: run a file with onnxruntime, fully optimized, with some of its intermediate tensors
  as extra outputs;
- `run_forced`: run the deployed torch module with every binarizing layer's input (after its
  input transform, if any) replaced by a value of the caller's choosing, e.g. what onnxruntime
  computed at that point, so each layer is compared on the same inputs;
- `integer_sum`: torch's exact ±1 dot products k of a deployed binary layer on given codes.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from torch import nn

from bitfx.backends.onnx.integer_ops import ZERO_POINT, conv_sum
from bitfx.backends.onnx.session import run_session, session
from bitfx.ir.binary.deployed import DeployedBinaryConv2d, DeployedBinaryLinear
from bitfx.ir.execution import eval_mode


@dataclass(frozen=True)
class BinaryLayerCheck:
    """How one binary layer's results in onnxruntime compare with torch's on the same inputs:
    its input codes (signs) and its integer dot products; `input_rel_error` is the relative
    error of torch's float input against onnxruntime's (styles whose inputs are float)."""

    name: str
    kernel: str
    mismatched_codes: int
    codes: int
    mismatched_sums: int
    sums: int
    input_rel_error: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def binarizing_layers(module: nn.Module) -> dict[str, nn.Module]:
    """The deployed binary layers of `module` that take the sign of their input, by name."""
    return {name: m for name, m in module.named_modules() if _binarizing(m)}


def _binarizing(module: nn.Module) -> bool:
    if isinstance(module, DeployedBinaryConv2d):
        return bool(module.geometry.binarize_input)
    return isinstance(module, DeployedBinaryLinear) and bool(module.binarize_input)


def probe(model: onnx.ModelProto, tensors: list[tuple[str, int]], arrays: list[np.ndarray]) -> list[np.ndarray]:
    """onnxruntime's outputs of `model` on `arrays`, followed by the values of `tensors`
    ((name, ONNX element type) pairs of intermediate tensors)."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    for tensor, element in tensors:
        copy.graph.output.append(onnx.helper.make_tensor_value_info(tensor, element, None))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "probe.onnx"
        onnx.save(copy, str(path))
        return run_session(session(path), arrays)


def integer_sum(layer: nn.Module, codes: torch.Tensor) -> torch.Tensor:
    """torch's int32 sum k of the deployed binary `layer` on the activations stored as `codes`."""
    if isinstance(layer, DeployedBinaryLinear):
        return ((codes.to(torch.float32) - ZERO_POINT) @ layer.weight.t()).to(torch.int32)
    g = layer.geometry
    return conv_sum(codes, layer.weight, list(g.strides), list(g.pads), list(g.dilations), g.group, g.pad_value).to(
        torch.int32
    )


Force = Callable[[str, nn.Module, torch.Tensor], torch.Tensor]


def run_forced(target: nn.Module, inputs: tuple[torch.Tensor, ...], layers: dict[str, nn.Module], force: Force) -> Any:
    """`target`'s outputs (eval mode) when every layer of `layers` reads `force(name, layer, x)`
    instead of its input x (the output of its input transform when it has one)."""
    handles = []
    for name, layer in layers.items():
        if layer.input_transform is not None:
            hook = lambda m, args, out, name=name, layer=layer: force(name, layer, out)  # noqa: E731
            handles.append(layer.input_transform.register_forward_hook(hook))
        else:
            hook = lambda m, args, name=name, layer=layer: (force(name, layer, args[0]), *args[1:])  # noqa: E731
            handles.append(layer.register_forward_pre_hook(hook))
    try:
        with eval_mode(target), torch.no_grad():
            return target(*inputs)
    finally:
        for handle in handles:
            handle.remove()
