"""`summary(gm)`: one row per graph node with its shape and cost, plus totals."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import fx

from bitfx.ir.cost import NodeCost, graph_costs
from bitfx.ir.shapes import node_shape
from bitfx.ir.table import format_table

_HEADERS = ("name", "op", "target", "output shape", "params", "float MACs", "binary MACs", "weight bytes")
_NUMERIC = (False, False, False, False, True, True, True, True)


@dataclass(frozen=True)
class SummaryRow:
    name: str
    op: str
    target: str
    shape: object
    cost: NodeCost


@dataclass(frozen=True)
class Summary:
    """The per-node table of a graph and its totals; `str()` renders it for a terminal."""

    rows: list[SummaryRow]
    total: NodeCost = field(default_factory=NodeCost)

    def totals(self) -> dict[str, float]:
        """`{params, macs, float_macs, binary_macs, weight_bytes}`, the form used in reports (`macs` is
        the sum of float and binary MACs)."""
        total = self.total
        return {
            "params": total.params,
            "macs": total.macs,
            "float_macs": total.float_macs,
            "binary_macs": total.binary_macs,
            "weight_bytes": total.weight_bytes,
        }

    def __str__(self) -> str:
        body = [(r.name, r.op, r.target, _shape_text(r.shape), *_numbers(r.cost)) for r in self.rows]
        body.append(("total", "", "", "", *_numbers(self.total)))
        return format_table(_HEADERS, body, _NUMERIC)


def summary(gm: fx.GraphModule) -> Summary:
    """Table of every node (name, op, target, output shape, params, float and binary MACs, weight bytes)."""
    costs = graph_costs(gm)
    rows = [
        SummaryRow(node.name, node.op, target_name(gm, node), node_shape(node), costs[node.name])
        for node in gm.graph.nodes
    ]
    return Summary(rows, sum(costs.values(), NodeCost()))


def target_name(gm: fx.GraphModule, node: fx.Node) -> str:
    """A readable target: the module type for call_module, the function name otherwise."""
    if node.op == "call_module":
        return f"{node.target} ({type(gm.get_submodule(node.target)).__name__})"
    if node.op == "call_function":
        return getattr(node.target, "__name__", str(node.target))
    return str(node.target)


def _numbers(cost: NodeCost) -> tuple[int, int, int, float]:
    return cost.params, cost.float_macs, cost.binary_macs, cost.weight_bytes


def _shape_text(shape: object) -> str:
    if isinstance(shape, tuple):
        return "×".join(map(str, shape))
    if isinstance(shape, list):
        return ", ".join(_shape_text(s) for s in shape)
    return ""
