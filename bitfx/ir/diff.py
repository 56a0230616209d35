"""`diff(before, after)`: what a pass changed in a graph."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from torch import fx

from bitfx.ir.cost import NodeCost
from bitfx.ir.summary import Summary, SummaryRow, summary

_TOTAL_FIELDS = ("params", "macs", "weight_bytes")


@dataclass(frozen=True)
class GraphDiff:
    """Nodes added, removed, replaced (same name, other op/target/module type) and changed
    (same target, other output shape or cost), and the totals before → after.
    Nodes are matched by name."""

    added: list[SummaryRow]
    removed: list[SummaryRow]
    replaced: list[tuple[SummaryRow, SummaryRow]]
    changed: list[tuple[SummaryRow, SummaryRow]]
    before: NodeCost
    after: NodeCost

    @property
    def unchanged(self) -> bool:
        return not (self.added or self.removed or self.replaced or self.changed)

    def overview(self) -> str:
        """Counts of changed nodes grouped by target type, then the totals."""
        groups = (
            ("added", self.added),
            ("removed", self.removed),
            ("replaced", [b for _, b in self.replaced]),
            ("changed", [b for _, b in self.changed]),
        )
        lines = [f"{label} {len(rows)}: {_count_types(rows)}" for label, rows in groups if rows] or [
            "graphs are identical"
        ]
        return "\n".join(lines + self._total_lines())

    def __str__(self) -> str:
        lines = [f"+ {r.name}: {r.target}" for r in self.added]
        lines += [f"- {r.name}: {r.target}" for r in self.removed]
        lines += [f"~ {a.name}: {a.target} -> {b.target}" for a, b in self.replaced]
        lines += [f"* {a.name}: {_describe_change(a, b)}" for a, b in self.changed]
        return "\n".join((lines or ["graphs are identical"]) + self._total_lines())

    def _total_lines(self) -> list[str]:
        lines = []
        for field in _TOTAL_FIELDS:
            old, new = getattr(self.before, field), getattr(self.after, field)
            ratio = f" ({new / old:.3f}×)" if old else ""
            lines.append(f"{field}: {old:,.0f} -> {new:,.0f}{ratio}")
        return lines


def diff(before: fx.GraphModule | Summary, after: fx.GraphModule | Summary) -> GraphDiff:
    """Compare two graphs (or their summaries) node by node."""
    old, new = _as_summary(before), _as_summary(after)
    old_rows = {r.name: r for r in old.rows}
    new_rows = {r.name: r for r in new.rows}
    common = [name for name in old_rows if name in new_rows]
    return GraphDiff(
        added=[r for name, r in new_rows.items() if name not in old_rows],
        removed=[r for name, r in old_rows.items() if name not in new_rows],
        replaced=[(old_rows[n], new_rows[n]) for n in common if _signature(old_rows[n]) != _signature(new_rows[n])],
        changed=[
            (old_rows[n], new_rows[n])
            for n in common
            if _signature(old_rows[n]) == _signature(new_rows[n])
            and (old_rows[n].shape, old_rows[n].cost) != (new_rows[n].shape, new_rows[n].cost)
        ],
        before=old.total,
        after=new.total,
    )


def _as_summary(graph: fx.GraphModule | Summary) -> Summary:
    return graph if isinstance(graph, Summary) else summary(graph)


def _signature(row: SummaryRow) -> tuple[str, str]:
    return row.op, row.target


def _count_types(rows: list[SummaryRow]) -> str:
    """`BatchNorm2d×21, Conv2d×2`: the module type (or function) of each row, counted."""
    kinds = Counter(r.target.rpartition("(")[2].rstrip(")") if r.op == "call_module" else r.target for r in rows)
    return ", ".join(f"{kind}×{count}" for kind, count in sorted(kinds.items()))


def _describe_change(a: SummaryRow, b: SummaryRow) -> str:
    parts = []
    if a.shape != b.shape:
        parts.append(f"shape {a.shape} -> {b.shape}")
    for field in _TOTAL_FIELDS:
        old, new = getattr(a.cost, field), getattr(b.cost, field)
        if old != new:
            parts.append(f"{field} {old:,.0f} -> {new:,.0f}")
    return ", ".join(parts)
