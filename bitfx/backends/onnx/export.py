"""`export`: lower a GraphModule to a checked ONNX file."""

from __future__ import annotations

from pathlib import Path

import onnx
import torch
from torch import fx

from bitfx.backends.onnx.lowerings import get_lowering, pams_lowerings
from bitfx.errors import BitfxError, LoweringError
from bitfx.ir.execution import Inputs, as_inputs, eval_mode
from bitfx.ir.quant import QUANT_LAYER_TYPES, ActQuant


def export(
    gm: fx.GraphModule,
    example_inputs: Inputs,
    path: str | Path,
    *,
    dynamic_batch: bool = True,
    lowering: str = "float",
) -> Path:
    """Lower `gm` (in eval mode) with the named lowering style, check the model with
    `onnx.checker` and write it to `path`. The batch dimension is dynamic by default."""
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
    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as error:
        raise LoweringError(f"lowering {lowering!r} produced an invalid ONNX model: {error}") from error
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def _check_expressible(gm: fx.GraphModule, lowering: str) -> None:
    """Raise `LoweringError` when `gm` holds PAMS-quantized modules that `lowering` cannot express."""
    if lowering in pams_lowerings():
        return
    quantized = [name for name, module in gm.named_modules() if isinstance(module, (ActQuant, *QUANT_LAYER_TYPES))]
    if quantized:
        styles = " or ".join(f"--lowering {name}" for name in pams_lowerings())
        raise LoweringError(
            f"lowering {lowering!r} cannot express the PAMS-quantized layers of this model ({len(quantized)} modules, "
            f"e.g. {quantized[0]!r}): use {styles} (lowering='{pams_lowerings()[0]}' in Python)"
        )
