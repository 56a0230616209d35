"""Capture a float nn.Module as a torch.fx GraphModule with shapes on every node."""

from __future__ import annotations

import inspect
import traceback
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import fx, nn
from torch.fx._symbolic_trace import PHBase

from bitfx.errors import CaptureError, ShapePropagationError
from bitfx.ir.execution import Inputs, as_inputs, preserved_state
from bitfx.ir.protocol import is_leaf
from bitfx.ir.shapes import EXAMPLE_INPUTS_KEY, propagate_shapes

LeafSpec = type[nn.Module] | str

_CONSTRUCTS = (
    (
        "cannot be used as inputs to control flow",
        "data-dependent control flow (an `if`/`while` on a tensor value or shape)",
    ),
    ("cannot be iterated", "iterating a traced tensor (a `for` loop over it, or `*tensor` unpacking)"),
    ("'len' is not supported", "`len()` of a traced tensor"),
)


class _BitfxTracer(fx.Tracer):
    """A Tracer that keeps chosen modules opaque and remembers where tracing failed.

    Unpickling a GraphModule re-traces its generated code with the recorded tracer class,
    built without arguments, so `leaf_modules` has a default.
    """

    def __init__(self, leaf_modules: Sequence[LeafSpec] = ()) -> None:
        super().__init__()
        self.leaf_types = tuple(spec for spec in leaf_modules if isinstance(spec, type))
        self.leaf_names = {spec for spec in leaf_modules if isinstance(spec, str)}
        self.failed_in: tuple[str, str] | None = None

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        if module_qualified_name in self.leaf_names or isinstance(m, self.leaf_types) or is_leaf(m):
            return True
        return super().is_leaf_module(m, module_qualified_name)

    def call_module(self, m: nn.Module, forward: Any, args: tuple, kwargs: dict) -> Any:
        try:
            return super().call_module(m, forward, args, kwargs)
        except Exception:
            if self.failed_in is None:
                self.failed_in = (self.path_of_module(m) or "<root>", type(m).__name__)
            raise


def capture(
    model: nn.Module,
    example_inputs: Inputs,
    *,
    leaf_modules: Iterable[LeafSpec] = (),
    concrete_args: dict[str, Any] | None = None,
) -> fx.GraphModule:
    """Trace `model` into a GraphModule and record output shape and dtype on every node.

    `leaf_modules` lists module types or qualified names to keep as single opaque nodes
    (for modules whose forward cannot be traced); modules of torch.nn and classes that set
    `bitfx_leaf = True` (the layers bitfx passes introduce) are always kept whole.
    `concrete_args` fixes non-tensor arguments of `model.forward`. The example inputs are
    kept in `gm.meta` so that later passes can re-propagate shapes. Capturing does not
    modify the model: what tracing and shape propagation do to its parameters and buffers
    (BatchNorm statistics, counters a forward increments) is undone. Like
    `torch.fx.symbolic_trace`, the graph shares its parameters (passes run on a copy).
    """
    try:
        inputs = as_inputs(example_inputs)
    except TypeError as error:
        raise CaptureError(f"{error}; pass tensors only and fix other arguments with concrete_args") from error
    leaf_modules = tuple(leaf_modules)
    _check_leaf_names(model, leaf_modules)
    with preserved_state(model):
        gm = _trace(model, inputs, leaf_modules, concrete_args)
    return gm


def _trace(
    model: nn.Module,
    inputs: tuple[torch.Tensor, ...],
    leaf_modules: tuple[LeafSpec, ...],
    concrete_args: dict[str, Any] | None,
) -> fx.GraphModule:
    """Trace and propagate shapes (both may run parts of `model.forward` on its real buffers)."""
    tracer = _BitfxTracer(leaf_modules)
    try:
        graph = tracer.trace(model, concrete_args=concrete_args)
    except Exception as error:
        raise CaptureError(_explain_trace_failure(model, tracer, error)) from error
    _default_concrete_placeholders(model, graph, concrete_args or {})
    gm = fx.GraphModule(tracer.root, graph, type(model).__name__)
    gm.meta[EXAMPLE_INPUTS_KEY] = tuple(t.detach().clone() for t in inputs)
    try:
        propagate_shapes(gm)
    except ShapePropagationError as error:
        raise CaptureError(
            f"the model traced, but {error}. Check that the example inputs have the shape and dtype the model expects."
        ) from error
    return gm


def _default_concrete_placeholders(model: nn.Module, graph: fx.Graph, concrete_args: dict[str, Any]) -> None:
    """Make each concrete argument's placeholder default to its concrete value.

    torch.fx keeps the original default (and may rename the placeholder), so the traced
    module would fail its own specialisation assert when called with tensors only.
    Placeholders follow the order of `model.forward`'s parameters.
    """
    names = list(inspect.signature(model.forward).parameters)
    placeholders = [node for node in graph.nodes if node.op == "placeholder"]
    for name, node in zip(names, placeholders):
        if name in concrete_args and not isinstance(concrete_args[name], PHBase):
            node.args = (concrete_args[name],)


def _check_leaf_names(model: nn.Module, leaf_modules: tuple[LeafSpec, ...]) -> None:
    names = dict(model.named_modules())
    for spec in leaf_modules:
        if isinstance(spec, str) and spec not in names:
            raise CaptureError(
                f"leaf_modules names {spec!r}, which is not a submodule of {type(model).__name__}; "
                f"valid names look like {sorted(n for n in names if n)[:5]}"
            )
        if not isinstance(spec, (str, type)):
            raise CaptureError(f"leaf_modules entries are module types or names, not {spec!r}")


def _explain_trace_failure(model: nn.Module, tracer: _BitfxTracer, error: Exception) -> str:
    path, type_name = tracer.failed_in or ("<root>", type(model).__name__)
    message = str(error)
    construct = next((what for key, what in _CONSTRUCTS if key in message), None)
    where = f"module '{path}' ({type_name})"
    location = _user_frame(error)
    lines = [f"cannot capture {type(model).__name__}: torch.fx failed in {where}"]
    lines.append(f"construct: {construct}" if construct else f"error: {type(error).__name__}: {message}")
    if location:
        lines.append(f"at {location}")
    fix = (
        f"keep that module opaque with leaf_modules=['{path}'] (or its type {type_name}), "
        "or fix the non-tensor argument that drives it with concrete_args={...}"
        if path != "<root>"
        else "fix the non-tensor argument that drives it with concrete_args={...}, "
        "or move the construct into a submodule and list it in leaf_modules"
    )
    lines.append(f"fix: {fix}")
    return "; ".join(lines)


def _user_frame(error: Exception) -> str | None:
    """The innermost traceback frame outside torch: the line of the user's code that failed."""
    torch_dir = torch.__file__.rsplit("/", 1)[0]
    frames = [
        frame
        for frame in traceback.extract_tb(error.__traceback__)
        if not frame.filename.startswith(torch_dir) and frame.filename != __file__
    ]
    if not frames:
        return None
    frame = frames[-1]
    return f"{frame.filename}:{frame.lineno}: {frame.line}"


__all__ = ["capture", "LeafSpec"]
