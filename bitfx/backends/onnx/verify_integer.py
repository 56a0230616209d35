"""Layer-by-layer verification of an `integer` file against the binarized torch module.

The integer results of a binary layer must equal torch's exactly: the ±1 codes it reads and,
where the file exposes it (ConvInteger, MatMulInteger), its int32 sum k. A layer written as
QLinearConv keeps k inside the kernel; its result is the codes its readers get, which are
checked as their input. A conv written as a channels-last matrix product reads its codes
through the layout ops that build its im2col matrix, and its 4-D sum is NHWC. The check runs
both sides on the same inputs:

1. onnxruntime runs the file, fully optimized, with the codes every binary layer reads and the
   exposed sums as extra outputs (found through the `bitfx.binary_layer` node metadata);
2. torch runs `deployed(module)` with every binary layer fed onnxruntime's codes; before that,
   each layer's own codes (sign of its input in torch) are compared with onnxruntime's, and its
   sum from the shared codes with onnxruntime's sum: both must match everywhere;
3. the outputs of that run must agree with onnxruntime's within `rtol` (float layers).

The end-to-end (free-running) difference is reported too.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from torch import fx, nn

from bitfx.backends.onnx.integer_ops import LAYER_KEY, ZERO_POINT, sign_codes
from bitfx.backends.onnx.layer_probe import BinaryLayerCheck, binarizing_layers, integer_sum, probe, run_forced
from bitfx.backends.onnx.session import load_model
from bitfx.backends.onnx.verify import DEFAULT_VERIFY_RTOL, ForcedVerifyReport, register_verifier
from bitfx.errors import LoweringError
from bitfx.ir.deploy import deployed
from bitfx.ir.execution import Inputs, as_inputs, compare_outputs, run_eval

_SUM_OPS = ("ConvInteger", "MatMulInteger")
_IM2COL_OPS = ("Reshape", "Gather", "Pad", "Transpose")  # between a conv's codes and its MatMulInteger


@dataclass(frozen=True)
class IntegerVerifyReport(ForcedVerifyReport):
    """`outputs`: errors of onnxruntime's outputs against torch fed the same codes; `layers`:
    per binary layer integer agreement; `free_running`: end-to-end errors."""

    layers: tuple[BinaryLayerCheck, ...] = ()

    @property
    def mismatches(self) -> int:
        return sum(layer.mismatched_codes + layer.mismatched_sums for layer in self.layers)

    @property
    def ok(self) -> bool:
        return self.mismatches == 0 and self.max_rel_error <= self.rtol

    def describe(self) -> str:
        codes = sum(layer.codes for layer in self.layers)
        sums = sum(layer.sums for layer in self.layers)
        return (
            f"{len(self.layers)} binary layers, {self.mismatches:,} integer results differ from torch "
            f"({codes:,} input codes, {sums:,} exposed sums); outputs from the same codes: max rel error "
            f"{self.max_rel_error:.3g} (tolerance {self.rtol:g}); end to end: max rel error "
            f"{self.free_running_error:.3g}: {'ok' if self.ok else 'FAILED'}"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            **super().to_json(),
            "criterion": (
                "every binary layer's input codes and exposed int32 sums equal torch's given the same input codes, "
                "outputs within rtol"
            ),
            "integer_mismatches": self.mismatches,
            "layers": [layer.to_json() for layer in self.layers],
            "free_running": self.free_running_json(),
        }


@register_verifier("integer")
def verify_integer(
    path: str | Path, module: nn.Module, inputs: Inputs, *, rtol: float = DEFAULT_VERIFY_RTOL
) -> IntegerVerifyReport:
    """Check the `integer` file at `path` against the binarized `module` (see the module docstring)."""
    inputs = as_inputs(inputs)
    model = load_model(path)
    probes = _layer_tensors(model)
    target = deployed(module) if isinstance(module, fx.GraphModule) else module
    layers = binarizing_layers(target)
    missing = sorted(set(layers) - set(probes))
    if missing:
        raise LoweringError(
            f"{str(path)!r} has no integer node for the binary layers {missing}; "
            "was it written by the 'integer' lowering from this module?"
        )
    extra = [
        (name, kind, tensor)
        for name, (kernel, codes, sums) in probes.items()
        for kind, tensor in (("codes", codes), ("sums", sums))
        if tensor
    ]
    n_outputs = len(model.graph.output)
    element = {"codes": onnx.TensorProto.UINT8, "sums": onnx.TensorProto.INT32}
    results = probe(model, [(tensor, element[kind]) for _, kind, tensor in extra], [t.detach().numpy() for t in inputs])
    outputs = results[:n_outputs]
    observed = {(name, kind): value for (name, kind, _), value in zip(extra, results[n_outputs:])}
    free_running = compare_outputs(run_eval(module, inputs), outputs)
    forced, checks = _run_with_codes(
        target, inputs, layers, {name: kernel for name, (kernel, _, _) in probes.items()}, observed
    )
    return IntegerVerifyReport(
        compare_outputs(forced, outputs), rtol, free_running=tuple(free_running), layers=tuple(checks)
    )


def _layer_tensors(model: onnx.ModelProto) -> dict[str, tuple[str, str, str | None]]:
    """binary layer → (its integer op, the codes tensor it reads, its int32 sum tensor or None)."""
    producers = {output: node for node in model.graph.node for output in node.output}
    found = {}
    for node in model.graph.node:
        metadata = {entry.key: entry.value for entry in node.metadata_props}
        if LAYER_KEY not in metadata:
            continue
        codes = node.input[0]
        while codes in producers and producers[codes].op_type in _IM2COL_OPS:
            codes = producers[codes].input[0]
        found[metadata[LAYER_KEY]] = (node.op_type, codes, node.output[0] if node.op_type in _SUM_OPS else None)
    return found


def _run_with_codes(
    target: nn.Module,
    inputs: tuple[torch.Tensor, ...],
    layers: dict[str, nn.Module],
    kernels: dict[str, str],
    observed: dict[tuple[str, str], np.ndarray],
) -> tuple[Any, list[BinaryLayerCheck]]:
    """Run `target` with every binary layer fed onnxruntime's codes; compare integer results."""
    checks: list[BinaryLayerCheck] = []

    def forced(name: str, layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
        theirs = torch.from_numpy(observed[(name, "codes")]).reshape(x.shape)
        ours = sign_codes(x)
        sums, mismatched_sums = 0, 0
        if (name, "sums") in observed:
            expected = integer_sum(layer, theirs)
            got = torch.from_numpy(observed[(name, "sums")].astype(np.int32))
            got = got.permute(0, 3, 1, 2) if kernels[name] == "MatMulInteger" and got.dim() == 4 else got
            got = got.reshape(expected.shape)
            sums, mismatched_sums = expected.numel(), int((expected != got).sum())
        checks.append(
            BinaryLayerCheck(name, kernels[name], int((ours != theirs).sum()), ours.numel(), mismatched_sums, sums)
        )
        return theirs.to(torch.float32) - ZERO_POINT

    return run_forced(target, inputs, layers, forced), checks
