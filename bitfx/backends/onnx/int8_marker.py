"""Writing the int8 marker (bitfx.format.int8_marker) into a lowered model: the float Convs that
read a model input (a network's stem) are marked quantizable, with the range of that input, so the
packed runtime runs them on its int8 kernel without being told (`load(path)`). The marker is model
metadata only; onnxruntime runs the file as before."""

from __future__ import annotations

import onnx
import torch

from bitfx.errors import LoweringError
from bitfx.format.domain import INT8_CONVS_METADATA_KEY
from bitfx.format.int8_marker import encode_int8_marker, input_range


def mark_int8_convs(model: onnx.ModelProto, calibration: object) -> list[str]:
    """Mark every float Conv of `model` that reads a model input, with `calibration`'s range: a
    (low, high) pair or a batch (tensor or array; its minimum and maximum). Nodes without a unique
    name are named (the marker keys nodes by name). Returns the marked names; raises `LoweringError`
    when no float Conv reads a model input."""
    if isinstance(calibration, torch.Tensor):
        calibration = calibration.detach().cpu().numpy()
    value_range = input_range(calibration)
    initializers = {tensor.name for tensor in model.graph.initializer}
    inputs = {value.name for value in model.graph.input if value.name not in initializers}
    taken = [node.name for node in model.graph.node]
    marked = []
    for index, node in enumerate(model.graph.node):
        if node.domain in ("", "ai.onnx") and node.op_type == "Conv" and node.input and node.input[0] in inputs:
            if not node.name or taken.count(node.name) > 1:
                node.name = f"Conv_int8_{index}"
                while node.name in taken:
                    node.name += "_"
                taken.append(node.name)
            marked.append(node.name)
    if not marked:
        raise LoweringError("int8_float_convs: no float Conv of the lowered model reads a model input; nothing to mark")
    props = {entry.key: entry.value for entry in model.metadata_props}
    text = encode_int8_marker({name: value_range for name in marked})
    onnx.helper.set_model_props(model, {**props, INT8_CONVS_METADATA_KEY: text})
    return marked
