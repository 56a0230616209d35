"""Layer-by-layer verification of binary files written by the `custom`, `int8` and `float`
lowerings against the binarized torch module.

End to end, a deep binary network cannot match bit for bit: a value within ~1e-7 of zero can
take another sign in onnxruntime than in torch (float32 noise in the float layers before it),
and the flipped ±1 then changes everything after it. So each binary layer is checked on the
same inputs, as `verify_integer` does for the `integer` style (shared parts: `layer_probe`):

1. onnxruntime runs the file, fully optimized, with every binarizing layer's float input X and
   its integer dot products k as extra outputs. The layers are found through the module scope
   the exporter writes on each node; k is the ±1 Conv/Gemm output (`float`), the
   ConvInteger/MatMulInteger output (`int8`), or a copy of the `bitfx` node with scale 1 and
   bias 0 (`custom`: the file's own packed weights through the op's function body);
2. torch runs `deployed(module)` with every binary layer fed onnxruntime's X. Each layer's own
   input is compared with X (the float parts: within `rtol`, relative to X's largest value;
   signs that differ there are float noise and are counted), and k computed by torch from the
   signs of X must equal the file's k everywhere;
3. the outputs of that run must agree with onnxruntime's within `rtol`.

The end-to-end (free-running) error is reported too. A file with a wrong weight bit changes
some k, so it always fails. A `float` file of a model without binary layers is checked end to end.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from torch import fx, nn

from bitfx.backends.onnx.integer_ops import sign_codes
from bitfx.backends.onnx.layer_probe import BinaryLayerCheck, binarizing_layers, integer_sum, probe, run_forced
from bitfx.backends.onnx.session import load_model
from bitfx.backends.onnx.verify import (
    DEFAULT_VERIFY_RTOL,
    ForcedVerifyReport,
    VerifyReport,
    register_verifier,
    verify,
)
from bitfx.errors import LoweringError
from bitfx.format import DOMAIN
from bitfx.ir.deploy import deployed
from bitfx.ir.execution import Inputs, as_inputs, compare_outputs, run_eval

SCOPES_KEY = "pkg.torch.onnx.name_scopes"
_SUM_OPS = ("Conv", "Gemm", "ConvInteger", "MatMulInteger", "BinaryConv2d", "BinaryGemm")


@dataclass(frozen=True)
class LayerProbe:
    """Where one binary layer's float input and integer dot products are in the file."""

    kernel: str
    x: str
    k: str
    k_type: int


@dataclass(frozen=True)
class BinaryVerifyReport(ForcedVerifyReport):
    """`outputs`: errors of onnxruntime's outputs against torch fed the same layer inputs;
    `layers`: per binary layer agreement; `free_running`: end-to-end errors."""

    layers: tuple[BinaryLayerCheck, ...] = ()

    @property
    def mismatched_sums(self) -> int:
        return sum(layer.mismatched_sums for layer in self.layers)

    @property
    def max_input_error(self) -> float:
        return max((layer.input_rel_error for layer in self.layers), default=0.0)

    @property
    def ok(self) -> bool:
        return self.mismatched_sums == 0 and self.max_input_error <= self.rtol and self.max_rel_error <= self.rtol

    def describe(self) -> str:
        sums = sum(layer.sums for layer in self.layers)
        flips = sum(layer.mismatched_codes for layer in self.layers)
        return (
            f"{len(self.layers)} binary layers: {self.mismatched_sums:,} of {sums:,} integer dot products differ "
            f"from torch given the same inputs; layer inputs max rel error {self.max_input_error:.3g} "
            f"({flips:,} signs differ there from float noise); outputs from the same inputs: max rel error "
            f"{self.max_rel_error:.3g} (tolerance {self.rtol:g}); end to end: max rel error "
            f"{self.free_running_error:.3g}: {'ok' if self.ok else 'FAILED'}"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            **super().to_json(),
            "ok": self.ok,
            "criterion": (
                "every binary layer's integer dot products equal torch's given the same inputs, layer inputs and "
                "outputs from those inputs within rtol"
            ),
            "integer_mismatches": self.mismatched_sums,
            "max_input_rel_error": self.max_input_error,
            "layers": [layer.to_json() for layer in self.layers],
            "free_running": self.free_running_json(),
        }


def verify_binary(
    path: str | Path, module: nn.Module, inputs: Inputs, *, rtol: float = DEFAULT_VERIFY_RTOL
) -> VerifyReport:
    """Check a `custom`, `int8` or `float` file at `path` against the binarized `module`
    layer by layer (module docstring); without binary layers, end to end (`verify`)."""
    inputs = as_inputs(inputs)
    target = deployed(module) if isinstance(module, fx.GraphModule) else module
    layers = binarizing_layers(target)
    if not layers:
        return verify(path, module, inputs, rtol=rtol)
    model = load_model(path)
    found = _layer_probes(model)
    missing = sorted(set(layers) - set(found))
    if missing:
        raise LoweringError(
            f"{str(path)!r} has no binary node for the layers {missing}; was it written from this module by the "
            "'custom', 'int8' or 'float' lowering?"
        )
    n_outputs = len(model.graph.output)
    names = sorted(layers)
    tensors = [(t, kind) for name in names for t, kind in ((found[name].x, 1), (found[name].k, found[name].k_type))]
    results = probe(model, tensors, [t.detach().numpy() for t in inputs])
    outputs, extra = results[:n_outputs], results[n_outputs:]
    observed = {name: (extra[2 * i], extra[2 * i + 1]) for i, name in enumerate(names)}
    free_running = compare_outputs(run_eval(module, inputs), outputs)
    checks: list[BinaryLayerCheck] = []

    def forced(name: str, layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
        theirs_x, theirs_k = observed[name]
        theirs = torch.from_numpy(np.ascontiguousarray(theirs_x, np.float32)).reshape(x.shape)
        error = float((x - theirs).abs().max() / theirs.abs().max().clamp_min(1e-30)) if x.numel() else 0.0
        expected = integer_sum(layer, sign_codes(theirs))
        got = torch.from_numpy(np.asarray(theirs_k, np.float64)).reshape(expected.shape)
        flips = int(((x < 0) != (theirs < 0)).sum())
        mismatched = int((expected.to(torch.float64) != got).sum())
        checks.append(BinaryLayerCheck(name, found[name].kernel, flips, x.numel(), mismatched, expected.numel(), error))
        return theirs

    forced_outputs = run_forced(target, inputs, layers, forced)
    return BinaryVerifyReport(
        compare_outputs(forced_outputs, outputs), rtol, free_running=tuple(free_running), layers=tuple(checks)
    )


for _style in ("custom", "int8", "float"):
    register_verifier(_style)(verify_binary)


def _layer_probes(model: onnx.ModelProto) -> dict[str, LayerProbe]:
    """binary layer → where its float input and integer dot products are. For `custom` files, a
    copy of each `bitfx` node with scale 1 and bias 0 is added to `model` (in place) to give k."""
    producers = {output: node for node in model.graph.node for output in node.output}
    by_layer: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        scopes = {entry.key: entry.value for entry in node.metadata_props}.get(SCOPES_KEY)
        if scopes:
            path = ast.literal_eval(scopes)
            if len(path) >= 2:
                by_layer.setdefault(path[-2], []).append(node)
    found = {}
    for layer, nodes in by_layer.items():
        kernel = next((n for n in nodes if n.op_type in _SUM_OPS), None)
        if kernel is None:
            continue
        if kernel.domain == DOMAIN:
            found[layer] = LayerProbe(kernel.op_type, kernel.input[0], _unit_copy(model, kernel), 1)
            continue
        x = _signed_input(kernel, producers)
        if x is None:
            continue
        integer = kernel.op_type in ("ConvInteger", "MatMulInteger")
        k_type = onnx.TensorProto.INT32 if integer else onnx.TensorProto.FLOAT
        found[layer] = LayerProbe(kernel.op_type, x, kernel.output[0], k_type)
    return found


def _signed_input(kernel: onnx.NodeProto, producers: dict[str, onnx.NodeProto]) -> str | None:
    """The float X of `[Pad] ← Where(Less(X, 0), …) ← kernel` (layers reading one X share the Where)."""
    node = producers.get(kernel.input[0])
    if node is not None and node.op_type == "Pad":
        node = producers.get(node.input[0])
    if node is None or node.op_type != "Where":
        return None
    less = producers.get(node.input[0])
    return less.input[0] if less is not None and less.op_type == "Less" else None


def _unit_copy(model: onnx.ModelProto, node: onnx.NodeProto) -> str:
    """Add a copy of the `bitfx` node with scale 1 and bias 0 (its output is k); return that output's name."""
    channels = _initializer(model, node.input[2]).shape
    ones, zeros = f"{node.name}::unit_scale", f"{node.name}::zero_bias"
    model.graph.initializer.extend(
        [
            numpy_helper.from_array(np.ones(channels, np.float32), ones),
            numpy_helper.from_array(np.zeros(channels, np.float32), zeros),
        ]
    )
    copy = onnx.NodeProto()
    copy.CopyFrom(node)
    del copy.metadata_props[:]
    copy.name, copy.input[2], copy.input[3] = f"{node.name}::k", ones, zeros
    del copy.output[:]
    copy.output.append(f"{node.name}::k")
    model.graph.node.append(copy)
    return copy.output[0]


def _initializer(model: onnx.ModelProto, name: str) -> np.ndarray:
    for init in model.graph.initializer:
        if init.name == name:
            return numpy_helper.to_array(init)
    raise LoweringError(f"the scale {name!r} of a binary node is not an initializer")
