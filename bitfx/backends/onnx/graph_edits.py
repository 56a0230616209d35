"""Small in-place edits of exported ONNX graphs that the lowerings share."""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
from onnx import helper, numpy_helper


def drop_unused_initializers(model: onnx.ModelProto) -> None:
    """Remove initializers that no node reads and that are not graph outputs."""
    graph = model.graph
    used = Counter(name for node in graph.node for name in node.input)
    used.update(value.name for value in graph.output)
    keep = [init for init in graph.initializer if used[init.name]]
    del graph.initializer[:]
    graph.initializer.extend(keep)


def fold_initializer_conversions(model: onnx.ModelProto) -> None:
    """Replace every Cast, Transpose or Add whose inputs are all initializers by the
    initializer it computes, so the file stores the converted tensor (the exporter folds only
    small tensors)."""
    graph = model.graph
    initializers = {init.name: init for init in graph.initializer}
    kept = []
    for node in graph.node:
        if (
            node.op_type in _FOLDABLE
            and node.domain in ("", "ai.onnx")
            and all(name in initializers for name in node.input)
        ):
            values = [numpy_helper.to_array(initializers[name]) for name in node.input]
            attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            result = _FOLDABLE[node.op_type](values, attributes)
            initializers[node.output[0]] = numpy_helper.from_array(np.asarray(result), node.output[0])
            graph.initializer.append(initializers[node.output[0]])
        else:
            kept.append(node)
    del graph.node[:]
    graph.node.extend(kept)
    drop_unused_initializers(model)


_FOLDABLE = {
    "Cast": lambda values, attributes: values[0].astype(helper.tensor_dtype_to_np_dtype(attributes["to"])),
    "Transpose": lambda values, attributes: values[0].transpose(attributes.get("perm")),
    "Add": lambda values, attributes: values[0] + values[1],
}


def rename_outputs(model: onnx.ModelProto, names: list[str]) -> None:
    """Give the graph outputs `names`, in order. A value made by a node that nothing else names
    is renamed in place (its readers follow); a graph input, an initializer or a value returned
    twice gets an Identity node instead."""
    graph = model.graph
    if len(names) != len(graph.output) or len(set(names)) != len(names):
        raise ValueError(f"cannot name {len(graph.output)} outputs {names}")
    produced = {output for node in graph.node for output in node.output}
    returned = Counter(value.name for value in graph.output)
    taken = {value.name for value in [*graph.input, *graph.value_info]} | produced | {i.name for i in graph.initializer}
    for value, name in zip(graph.output, names):
        old = value.name
        if old == name:
            continue
        if name in taken:
            raise ValueError(f"output name {name!r} is already the name of another value in the graph")
        if old in produced and returned[old] == 1:
            _rename_value(graph, old, name)
        else:
            graph.node.append(helper.make_node("Identity", [old], [name], name=f"{name}_identity"))
            returned[old] -= 1
        value.name = name
        taken.add(name)


def _rename_value(graph: onnx.GraphProto, old: str, new: str) -> None:
    for node in graph.node:
        node.output[:] = [new if name == old else name for name in node.output]
        node.input[:] = [new if name == old else name for name in node.input]
    for info in graph.value_info:
        if info.name == old:
            info.name = new
