"""Detectors of silent problems in a rewritten model, used by the coverage matrix
(`python -m examples.coverage`): a check that returns a reason string when something is wrong
although no error was raised, and None when it found nothing.

- `output_independent`: the model gives the same outputs for two different inputs.
- `non_negative_binary_inputs`: a binary layer whose input was never negative on random inputs,
  so every activation sign is +1 and the layer computes a constant.
- `noop_reason`: a pass reported that it rewrote nothing while the model had candidates.
- `unreported`: a pass left candidates unchanged without saying why.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from bitfx.ir.binary import BinaryLayer
from bitfx.ir.execution import flatten_outputs, run_eval


def output_independent(
    module: nn.Module, inputs_a: Sequence[torch.Tensor], inputs_b: Sequence[torch.Tensor]
) -> str | None:
    """A reason when `module` (eval mode) gives the same outputs, within 1e-6 relative, for two
    different inputs: its output does not depend on its input."""
    outputs_a = flatten_outputs(run_eval(module, tuple(inputs_a)))
    outputs_b = flatten_outputs(run_eval(module, tuple(inputs_b)))
    for a, b in zip(outputs_a, outputs_b):
        scale = max(a.abs().max().item(), b.abs().max().item(), 1e-30)
        if (a - b).abs().max().item() > 1e-6 * scale:
            return None
    return "WRONG: output independent of input"


def non_negative_binary_inputs(module: nn.Module, batches: Sequence[Sequence[torch.Tensor]]) -> str | None:
    """A reason naming the binary layers (those that binarize their input) whose input was never
    negative over `batches` (eval mode): their sign is always +1."""
    minimum: dict[str, float] = {}
    handles = []
    for name, layer in module.named_modules():
        if isinstance(layer, BinaryLayer) and layer.binarize_input:

            def record(_: nn.Module, args: tuple[Any, ...], name: str = name) -> None:
                minimum[name] = min(minimum.get(name, float("inf")), args[0].min().item())

            handles.append(layer.register_forward_pre_hook(record))
    try:
        for inputs in batches:
            run_eval(module, tuple(inputs))
    finally:
        for handle in handles:
            handle.remove()
    flagged = [name for name, value in minimum.items() if value >= 0]
    if not flagged:
        return None
    more = f" (and {len(flagged) - 1} more of {len(minimum)})" if len(flagged) > 1 else ""
    return f"WRONG: binary layer {flagged[0]} sees only non-negative input{more}"


def noop_reason(rewritten: int, candidates: int, what: str, skipped: dict[str, str]) -> str | None:
    """A reason when a pass rewrote none of `candidates` (> 0) layers: the reason it gave most often
    for skipping one, or that it gave none."""
    if rewritten > 0 or candidates == 0:
        return None
    if skipped:
        (why, count), *_ = Counter(skipped.values()).most_common(1)
        layer = next(name for name, reason in skipped.items() if reason == why)
        more = f" (and {count - 1} more)" if count > 1 else ""
        return f"no-op: 0 of {candidates} {what}; {layer}{more}: {why}"
    return f"no-op: 0 of {candidates} {what}, no reason given"


def unreported(rewritten: int, skipped: dict[str, str], candidates: int, what: str) -> str | None:
    """A reason when fewer layers were rewritten or reported as skipped than there are candidates:
    the pass left some unchanged without saying why."""
    silent = candidates - rewritten - len(skipped)
    if silent <= 0:
        return None
    return f"silent: {silent} of {candidates} candidates neither {what.split()[-1]} nor reported ({rewritten} {what})"
