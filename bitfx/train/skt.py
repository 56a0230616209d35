"""Structured knowledge transfer (SKT), the distillation loss PAMS trains with.

at(F) is the spatial attention map of a feature tensor F (N × C × H × W): the channel mean of
F², flattened over space and L2-normalised per sample. Between a quantized student and its
float teacher at chosen layers,

    L_SKT = mean over layers of mean((at(F_student) − at(F_teacher))²),

added to the task loss with weight 1000 by default (PAMS: L1(SR, HR) + 1000 · L_SKT on the
body output before the tail). The teacher's features carry no gradient. The student should
start from the teacher's weights, which is what the `pams` pass gives: it keeps them.

`with_taps` makes a graph return the features at named nodes next to its outputs; the
tapped graph shares its modules with the original, so training it trains the original.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, fx

DEFAULT_SKT_WEIGHT = 1000.0


def attention_map(features: Tensor) -> Tensor:
    """at(F): channel mean of F², flattened over space, L2-normalised per sample (N × H·W)."""
    if features.dim() < 3:
        raise ValueError(f"attention maps need N × C × spatial features, got shape {tuple(features.shape)}")
    return F.normalize(features.pow(2).mean(dim=1).flatten(1), p=2, dim=1)


def skt_loss(student: Sequence[Tensor], teacher: Sequence[Tensor]) -> Tensor:
    """Mean over layers of the MSE between student and (detached) teacher attention maps."""
    if len(student) != len(teacher) or not student:
        raise ValueError(
            "skt_loss needs the same, non-zero number of student and teacher features, "
            f"got {len(student)} and {len(teacher)}"
        )
    losses = [(attention_map(s) - attention_map(t.detach())).pow(2).mean() for s, t in zip(student, teacher)]
    return sum(losses) / len(losses)


def with_taps(gm: fx.GraphModule, node_names: Sequence[str]) -> fx.GraphModule:
    """A GraphModule, sharing `gm`'s modules, whose forward returns `(outputs, [features...])`
    with the values of the nodes `node_names` (names as in `gm.graph`, e.g. from `summary`)."""
    graph = copy.deepcopy(gm.graph)
    nodes = {node.name: node for node in graph.nodes}
    unknown = [name for name in node_names if name not in nodes]
    if unknown:
        raise ValueError(f"no nodes named {unknown} in the graph; nodes are named like {list(nodes)[:10]}")
    output = next(node for node in graph.nodes if node.op == "output")
    output.args = ((output.args[0], [nodes[name] for name in node_names]),)
    return fx.GraphModule(gm, graph, f"{type(gm).__name__}WithTaps")
