"""Shape and dtype metadata on graph nodes: propagation and read-back."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import fx
from torch.fx.passes.shape_prop import ShapeProp, TensorMetadata

from bitfx.errors import ShapePropagationError
from bitfx.ir.execution import eval_mode

EXAMPLE_INPUTS_KEY = "bitfx_example_inputs"


def example_inputs_of(gm: fx.GraphModule) -> tuple[torch.Tensor, ...] | None:
    """The example inputs recorded by `capture`, if any."""
    return gm.meta.get(EXAMPLE_INPUTS_KEY)


def propagate_shapes(gm: fx.GraphModule, example_inputs: Sequence[torch.Tensor] | None = None) -> None:
    """Recompute `tensor_meta` (shape, dtype) on every node by running the graph once in eval mode.

    Uses the inputs recorded by `capture` when none are given. Node metadata goes stale
    after every rewrite, so the pipeline calls this after each pass.
    """
    inputs = tuple(example_inputs) if example_inputs is not None else example_inputs_of(gm)
    if inputs is None:
        raise ValueError("no example inputs: pass them, or capture the model with bitfx.ir.capture")
    interpreter = _RecordingShapeProp(gm)
    try:
        with eval_mode(gm), torch.no_grad():
            interpreter.propagate(*inputs)
    except Exception as error:
        root = error
        while root.__cause__ is not None:
            root = root.__cause__
        node = interpreter.current
        where = f"node {node.name!r} ({node.op} {node.target})" if node is not None else "the graph"
        raise ShapePropagationError(
            f"running {where} on inputs of shape {[tuple(t.shape) for t in inputs]} failed: "
            f"{type(root).__name__}: {root}"
        ) from error


class _RecordingShapeProp(ShapeProp):
    """ShapeProp that remembers the node it is running, to name it when it fails."""

    current: fx.Node | None = None

    def run_node(self, n: fx.Node) -> Any:
        self.current = n
        return super().run_node(n)


def node_shape(node: fx.Node) -> Any:
    """Output shape of a node: a tuple, a nested list of tuples for multi-output nodes, or None."""
    return _map_meta(node.meta.get("tensor_meta"), lambda meta: tuple(meta.shape))


def node_dtype(node: fx.Node) -> Any:
    """Output dtype of a node (same nesting as `node_shape`), or None when unknown."""
    return _map_meta(node.meta.get("tensor_meta"), lambda meta: meta.dtype)


def _map_meta(meta: Any, fn: Any) -> Any:
    if meta is None:
        return None
    if isinstance(meta, TensorMetadata):
        return fn(meta)
    if isinstance(meta, (list, tuple)):
        return [_map_meta(item, fn) for item in meta]
    if isinstance(meta, dict):
        return {key: _map_meta(value, fn) for key, value in meta.items()}
    return None
