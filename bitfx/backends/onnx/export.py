"""`export`: lower a GraphModule to a checked ONNX file."""

from __future__ import annotations

from pathlib import Path

import onnx
import torch
from torch import fx

from bitfx.backends.onnx.graph_edits import rename_outputs
from bitfx.backends.onnx.int8_marker import mark_int8_convs
from bitfx.backends.onnx.lowerings import get_lowering, pams_lowerings
from bitfx.errors import BitfxError, LoweringError
from bitfx.format.domain import LOWERING_METADATA_KEY
from bitfx.ir.binary import BinaryInput
from bitfx.ir.execution import Inputs, as_inputs, eval_mode, named_outputs
from bitfx.ir.quant import QUANT_LAYER_TYPES, ActQuant


def export(
    gm: fx.GraphModule,
    example_inputs: Inputs,
    path: str | Path,
    *,
    dynamic_batch: bool = True,
    lowering: str = "float",
    int8_float_convs: object = None,
) -> Path:
    """Lower `gm` (in eval mode) with the named lowering style, check the model with
    `onnx.checker` and write it to `path`. The batch dimension is dynamic by default. The file's
    metadata records the style (`lowering_of` reads it back). When `gm` returns a dict or a (nested)
    tuple, the ONNX outputs are named by their path in it (`bitfx.ir.execution.named_outputs`:
    `"logits"`, `"aux.0"`), which `verify` pairs by. `int8_float_convs` (opt-in: a (low, high) range
    of the model input or a calibration batch) marks the float Convs that read a model input as
    quantizable (`mark_int8_convs`): the packed runtime then runs them on its int8 kernel."""
    lower = get_lowering(lowering)
    _check_expressible(gm, lowering)
    inputs = as_inputs(example_inputs)
    try:
        with eval_mode(gm), torch.no_grad():
            model = lower(gm, inputs, dynamic_batch)
    except BitfxError:
        raise
    except Exception as error:
        raise LoweringError(
            f"lowering {lowering!r} failed for {type(gm).__name__}: {type(error).__name__}: {error}"
        ) from error
    _name_structured_outputs(gm, model)
    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as error:
        raise LoweringError(f"lowering {lowering!r} produced an invalid ONNX model: {error}") from error
    if int8_float_convs is not None:
        mark_int8_convs(model, int8_float_convs)
    props = {entry.key: entry.value for entry in model.metadata_props}
    onnx.helper.set_model_props(model, {**props, LOWERING_METADATA_KEY: lowering})
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def lowering_of(model: onnx.ModelProto) -> str | None:
    """The lowering style recorded in the file's metadata by `export` (None in a file without it)."""
    return next((entry.value for entry in model.metadata_props if entry.key == LOWERING_METADATA_KEY), None)


def _name_structured_outputs(gm: fx.GraphModule, model: onnx.ModelProto) -> None:
    """Name the ONNX outputs after the paths of `gm`'s outputs when it returns a structure."""
    output = next(node for node in gm.graph.nodes if node.op == "output")
    structure = output.args[0]
    if not isinstance(structure, (dict, list, tuple)):
        return
    names = [name for name, leaf in named_outputs(structure) if isinstance(leaf, fx.Node)]
    if len(names) != len(model.graph.output):
        raise LoweringError(
            f"{type(gm).__name__} returns {len(names)} tensors ({names}) but the ONNX graph has "
            f"{len(model.graph.output)} outputs; return tensors only (not constants) from forward"
        )
    try:
        rename_outputs(model, names)
    except ValueError as error:
        raise LoweringError(f"cannot name the ONNX outputs after the model's outputs: {error}") from error


def _check_expressible(gm: fx.GraphModule, lowering: str) -> None:
    """Raise `LoweringError` when `gm` holds PAMS-quantized modules that `lowering` cannot express, or binary
    activations feeding a layer with real weights (`BinaryInput`), which no lowering expresses."""
    signs = [name for name, module in gm.named_modules() if isinstance(module, BinaryInput)]
    if signs:
        raise LoweringError(
            f"{len(signs)} layers have binary activations but real weights (e.g. {signs[0]!r}, from "
            "binarize(weights=real)): no lowering runs a float layer on ±1 inputs as a binary op; binarize their "
            "weights first (a second binarize with weights=binary)"
        )
    if lowering in pams_lowerings():
        return
    quantized = [name for name, module in gm.named_modules() if isinstance(module, (ActQuant, *QUANT_LAYER_TYPES))]
    if quantized:
        styles = " or ".join(f"--lowering {name}" for name in pams_lowerings())
        raise LoweringError(
            f"lowering {lowering!r} cannot express the PAMS-quantized layers of this model ({len(quantized)} modules, "
            f"e.g. {quantized[0]!r}): use {styles} (lowering='{pams_lowerings()[0]}' in Python)"
        )
