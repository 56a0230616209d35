"""The registry of lowering styles (how a GraphModule becomes an ONNX ModelProto) and the
`torch.onnx.export` call they share.

Each style lives in the module named after it (`float`, `custom`, `int8`, `qdq`) and registers
itself here with `register_lowering`, saying whether it can express PAMS-quantized layers.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable

import onnx
import torch
from torch import fx

from bitfx.errors import LoweringError

BATCH_DIM_NAME = "batch"

Lowering = Callable[[fx.GraphModule, tuple[torch.Tensor, ...], bool], onnx.ModelProto]
_LOWERINGS: dict[str, Lowering] = {}
_PAMS_LOWERINGS: set[str] = set()


def register_lowering(name: str, *, expresses_pams: bool = False) -> Callable[[Lowering], Lowering]:
    """Decorator: make `fn(gm, example_inputs, dynamic_batch) -> ModelProto` the style `name`;
    `expresses_pams` when it lowers the quantizers and quantized layers of the `pams` pass."""

    def register(fn: Lowering) -> Lowering:
        _LOWERINGS[name] = fn
        if expresses_pams:
            _PAMS_LOWERINGS.add(name)
        return fn

    return register


def available_lowerings() -> list[str]:
    return sorted(_LOWERINGS)


def pams_lowerings() -> list[str]:
    """The styles that can lower a PAMS-quantized graph."""
    return sorted(_PAMS_LOWERINGS)


def get_lowering(name: str) -> Lowering:
    if name not in _LOWERINGS:
        raise LoweringError(f"unknown lowering {name!r}; available: {', '.join(available_lowerings())}")
    return _LOWERINGS[name]


def torch_onnx_export(
    module: torch.nn.Module, example_inputs: tuple[torch.Tensor, ...], dynamic_batch: bool, **export_options: object
) -> onnx.ModelProto:
    """`torch.onnx.export(dynamo=True)` with the batch dimension named `batch` when dynamic."""
    dynamic_shapes = tuple({0: torch.export.Dim.DYNAMIC} for _ in example_inputs) if dynamic_batch else None
    exporter_log = logging.getLogger("torch.onnx")
    level = exporter_log.level
    exporter_log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                module, example_inputs, dynamo=True, dynamic_shapes=dynamic_shapes, verbose=False, **export_options
            )
    finally:
        exporter_log.setLevel(level)
    model = program.model_proto
    if dynamic_batch:
        _name_batch_dim(model)
    return model


def _name_batch_dim(model: onnx.ModelProto) -> None:
    """Rename the exporter's symbol for dim 0 of the inputs (e.g. `s31`) to `batch` everywhere."""
    symbols = {
        value.type.tensor_type.shape.dim[0].dim_param
        for value in model.graph.input
        if value.type.tensor_type.shape.dim and value.type.tensor_type.shape.dim[0].dim_param
    }
    for value in [*model.graph.input, *model.graph.output, *model.graph.value_info]:
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param in symbols:
                dim.dim_param = BATCH_DIM_NAME
