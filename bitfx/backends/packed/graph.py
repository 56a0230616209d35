"""An ONNX model as the executor sees it: nodes with decoded attributes, constant tensors as
numpy arrays, and who reads what.

Model-local functions are inlined, except the ops the runtime implements itself (the `bitfx`
domain: their function bodies are what onnxruntime runs instead). Constant nodes become constants.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import helper, inliner, numpy_helper

from bitfx.backends.packed.errors import PackedModelError

DEFAULT_DOMAINS = ("", "ai.onnx")
MAX_ELEMENTS = 1 << 31  # the most elements a constant tensor of the file may declare


@dataclass
class Node:
    """One ONNX node: `inputs` uses '' for an omitted optional input."""

    name: str
    op_type: str
    domain: str
    inputs: list[str]
    outputs: list[str]
    attributes: dict[str, Any] = field(default_factory=dict)

    @property
    def qualified(self) -> str:
        return self.op_type if self.domain in DEFAULT_DOMAINS else f"{self.domain}.{self.op_type}"

    def attr(self, name: str, default: Any = None) -> Any:
        return self.attributes.get(name, default)

    def describe(self) -> str:
        return f"node {self.name!r} ({self.qualified})"


@dataclass
class Graph:
    nodes: list[Node]
    constants: dict[str, np.ndarray]
    inputs: list[str]
    outputs: list[str]
    input_shapes: dict[str, tuple]
    opset: int
    input_dtypes: dict[str, np.dtype] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)  # the model's metadata_props

    def consumers(self) -> dict[str, list[Node]]:
        """Value name → the nodes that read it, in graph order."""
        readers: dict[str, list[Node]] = defaultdict(list)
        for node in self.nodes:
            for name in node.inputs:
                if name:
                    readers[name].append(node)
        return readers

    def producers(self) -> dict[str, Node]:
        return {name: node for node in self.nodes for name in node.outputs if name}

    def constant(self, name: str) -> np.ndarray | None:
        return self.constants.get(name) if name else None


def load_graph(
    model: str | Path | onnx.ModelProto, native_functions: frozenset[tuple[str, str]] = frozenset()
) -> Graph:
    """Read an ONNX file (or ModelProto) into a `Graph`, with clear errors for what cannot be read.

    Model-local functions are inlined except `native_functions` ((domain, name) pairs the
    runtime implements with its own kernels)."""
    if not isinstance(model, onnx.ModelProto):
        path = Path(model)
        if not path.is_file():
            raise PackedModelError(f"ONNX file {str(path)!r} does not exist")
        try:
            model = onnx.load(str(path))
        except Exception as error:
            raise PackedModelError(
                f"{str(path)!r} is not a readable ONNX model ({type(error).__name__}: {error})"
            ) from error
    metadata = {entry.key: entry.value for entry in model.metadata_props}
    model = _inline_functions(model, native_functions)
    opset = next((o.version for o in model.opset_import if o.domain in DEFAULT_DOMAINS), 0)
    graph = model.graph
    constants = {init.name: tensor_array(init, f"initializer {init.name!r}") for init in graph.initializer}
    nodes, names = [], set()
    for index, proto in enumerate(graph.node):
        name = proto.name or f"{proto.op_type}_{index}"
        if name in names:  # names key the prepared kernels: each node needs its own
            name = f"{name}_{index}"
        names.add(name)
        node = Node(
            name,
            proto.op_type,
            proto.domain,
            list(proto.input),
            list(proto.output),
            {a.name: _attribute(a) for a in proto.attribute},
        )
        if node.qualified == "Constant":
            constants[node.outputs[0]] = _constant_value(node)
        else:
            nodes.append(node)
    inputs = [v.name for v in graph.input if v.name not in constants]
    shapes = {v.name: _declared_shape(v) for v in graph.input}
    dtypes = {v.name: _declared_dtype(v) for v in graph.input}
    return Graph(nodes, constants, inputs, [v.name for v in graph.output], shapes, opset, dtypes, metadata)


def tensor_array(tensor: onnx.TensorProto, what: str) -> np.ndarray:
    """A tensor of the file as a numpy array, refused when its declared size is absurd or its data
    does not hold exactly the declared number of values."""
    dims = list(tensor.dims)
    shape = "×".join(map(str, dims)) or "scalar"
    if any(d < 0 for d in dims) or math.prod(dims) > MAX_ELEMENTS:
        raise PackedModelError(
            f"{what} declares shape {shape}; dimensions must be >= 0 with at most {MAX_ELEMENTS} elements in all"
        )
    try:
        return numpy_helper.to_array(tensor)
    except Exception as error:
        raise PackedModelError(
            f"{what} declares shape {shape} ({math.prod(dims)} values) but its data does not hold them "
            f"({type(error).__name__}: {error})"
        ) from error


def _inline_functions(model: onnx.ModelProto, native_functions: frozenset[tuple[str, str]]) -> onnx.ModelProto:
    """Replace calls of model-local functions the runtime does not implement by their bodies."""
    foreign = [(f.domain, f.name) for f in model.functions if (f.domain, f.name) not in native_functions]
    if not foreign:
        return model
    return inliner.inline_selected_functions(model, foreign, exclude=False)


def _attribute(attribute: onnx.AttributeProto) -> Any:
    value = helper.get_attribute_value(attribute)
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, onnx.TensorProto):
        return tensor_array(value, f"attribute {attribute.name!r}")
    if isinstance(value, list):
        return [v.decode() if isinstance(v, bytes) else v for v in value]
    return value


def _constant_value(node: Node) -> np.ndarray:
    for key in ("value", "value_float", "value_floats", "value_int", "value_ints"):
        if key in node.attributes:
            value = node.attributes[key]
            if key.endswith("float") or key.endswith("floats"):
                return np.asarray(value, np.float32)
            if key.endswith("int") or key.endswith("ints"):
                return np.asarray(value, np.int64)
            return np.asarray(value)
    raise PackedModelError(
        f"{node.describe()}: only tensor, float and int Constant values are supported, got {sorted(node.attributes)}"
    )


def _declared_dtype(value: onnx.ValueInfoProto) -> np.dtype:
    """The element type the file declares for a graph input (float32 when it declares none)."""
    elem_type = value.type.tensor_type.elem_type
    if not elem_type:
        return np.dtype(np.float32)
    try:
        return np.dtype(helper.tensor_dtype_to_np_dtype(elem_type))
    except (KeyError, TypeError, ValueError) as error:
        raise PackedModelError(f"graph input {value.name!r} declares an unknown element type {elem_type}") from error


def _declared_shape(value: onnx.ValueInfoProto) -> tuple:
    dims = value.type.tensor_type.shape.dim
    return tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in dims)
