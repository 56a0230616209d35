"""Deployment form of a graph: trainable IR layers swapped for the fixed layers they deploy as.

A module that has a deployed form defines `deployed() -> nn.Module` (`bitfx.ir.protocol.Deployable`;
the binary layers do: sign(W), scale, bias and threshold become buffers). Lowerings export `deployed(gm)`, so the
file holds the fixed tensors rather than the training-time computation that produces them. Channel
gates (`bitfx.ir.gate`) are folded into the layers before them first, so no file holds a gate.
"""

from __future__ import annotations

import copy

from torch import fx

from bitfx.ir.gate import fold_gates
from bitfx.ir.protocol import deployed_form, has_deployed_form


def deployed(gm: fx.GraphModule) -> fx.GraphModule:
    """A copy of `gm` with its gates folded and every called module that has a deployed form replaced
    by it; `gm` itself when there is nothing to change. `gm` is never modified."""
    gm = fold_gates(gm)
    targets = {
        node.target
        for node in gm.graph.nodes
        if node.op == "call_module" and has_deployed_form(gm.get_submodule(node.target))
    }
    if not targets:
        return gm
    copied = copy.deepcopy(gm)
    for target in sorted(targets):
        parent, _, name = target.rpartition(".")
        setattr(copied.get_submodule(parent), name, deployed_form(copied.get_submodule(target)))
    copied.recompile()
    return copied
