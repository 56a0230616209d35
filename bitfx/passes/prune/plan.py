"""`PrunePlan`: what channel pruning removes, per group and per layer, printable before anything changes."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from bitfx.ir.cost import NodeCost
from bitfx.ir.summary import Summary
from bitfx.ir.table import format_table


@dataclass(frozen=True)
class GroupPlan:
    """The decision for one channel group: its rate (and the selection rule that set it),
    the channels removed (positions in the group's order, which is the first layer's output
    channel order), the output channels each layer loses, and why other channels stay."""

    name: str
    layers: tuple[str, ...]
    channels: int
    prunable: int
    rate: float
    rule: str
    removed: tuple[int, ...]
    removed_by_layer: dict[str, tuple[int, ...]]
    kept_because: tuple[str, ...]
    blocked_by: tuple[str, ...]
    tap_agreement: float | None = None


@dataclass(frozen=True)
class LayerChange:
    """One weighted layer before → after: output shape, parameters, MACs per sample."""

    name: str
    shape_before: tuple[int, ...] | None
    shape_after: tuple[int, ...] | None
    params_before: int
    params_after: int
    macs_before: int
    macs_after: int


@dataclass(frozen=True)
class PrunePlan:
    """Groups, per-layer changes and totals of one pruning decision; `str()` renders tables.
    `skipped` names every conv/linear layer that loses no output channel, with the reason."""

    criterion: str
    groups: list[GroupPlan]
    layers: list[LayerChange]
    before: NodeCost
    after: NodeCost
    calibration_images: int
    calibration_batches: int
    skipped: dict[str, str] = field(default_factory=dict)

    @property
    def channels_removed(self) -> int:
        return sum(len(g.removed) for g in self.groups)

    @property
    def macs_ratio(self) -> float:
        return self.after.macs / self.before.macs if self.before.macs else 1.0

    @property
    def params_ratio(self) -> float:
        return self.after.params / self.before.params if self.before.params else 1.0

    def stats(self) -> dict[str, Any]:
        """Pass statistics: short numbers first (shown in the pipeline table), then the details."""
        return {
            "criterion": self.criterion,
            "groups": len(self.groups),
            "groups_pruned": sum(1 for g in self.groups if g.removed),
            "tap_agreement": {g.name: g.tap_agreement for g in self.groups if g.tap_agreement is not None},
            "channels_removed": self.channels_removed,
            "macs_ratio": round(self.macs_ratio, 4),
            "params_ratio": round(self.params_ratio, 4),
            "calibration_images": self.calibration_images,
            "skipped": self.skipped,
            "group_plans": [asdict(g) for g in self.groups],
            "layers": [asdict(layer) for layer in self.layers],
        }

    def __str__(self) -> str:
        group_rows = [
            (g.name, g.channels, "-" if not g.prunable else f"{g.rate:g} ({g.rule})", _removed_text(g), _note(g))
            for g in self.groups
        ]
        layer_rows = [
            (
                c.name,
                f"{_shape(c.shape_before)} → {_shape(c.shape_after)}",
                f"{c.params_before:,} → {c.params_after:,}",
                f"{c.macs_before:,} → {c.macs_after:,}",
            )
            for c in self.layers
        ]
        calibration = (
            f", calibrated on {self.calibration_images} images in {self.calibration_batches} batches"
            if self.calibration_batches
            else ""
        )
        return "\n".join(
            [
                f"channel pruning plan ({self.criterion}{calibration}): {self.channels_removed} channels "
                f"removed in {sum(1 for g in self.groups if g.removed)} of {len(self.groups)} groups",
                format_table(
                    ("group", "channels", "rate (rule)", "removed (first layer's output channels)", "kept because"),
                    group_rows,
                    (False, True, False, False, False),
                ),
                *_agreement_lines(self.groups),
                "",
                format_table(("layer", "output shape", "params", "MACs"), layer_rows, (False, False, True, True)),
                f"params: {self.before.params:,} → {self.after.params:,} ({self.params_ratio:.3f}×)",
                f"MACs: {self.before.macs:,} → {self.after.macs:,} ({self.macs_ratio:.3f}×)",
            ]
        )


def layer_changes(before: Summary, after: Summary) -> list[LayerChange]:
    """The weighted layers (params or MACs) whose shape or cost changed, in graph order."""
    after_rows = {row.name: row for row in after.rows}
    changes = []
    for row in before.rows:
        new = after_rows.get(row.name)
        if new is None or not (row.cost.params or row.cost.macs):
            continue
        if (row.shape, row.cost) != (new.shape, new.cost):
            changes.append(
                LayerChange(
                    row.target.rpartition(" (")[0] or row.name,
                    row.shape,
                    new.shape,
                    row.cost.params,
                    new.cost.params,
                    row.cost.macs,
                    new.cost.macs,
                )
            )
    return changes


def _agreement_lines(groups: list[GroupPlan]) -> list[str]:
    """One line naming how well the taps of each multi-tap group agree, if any group has several."""
    measured = [f"{g.name} {g.tap_agreement:.2f}" for g in groups if g.tap_agreement is not None]
    return ["rank agreement between taps (mean pairwise Spearman): " + ", ".join(measured)] if measured else []


def _removed_text(group: GroupPlan, shown: int = 8) -> str:
    if not group.removed:
        return ""
    first = group.removed_by_layer.get(group.layers[0], group.removed)
    listed = ", ".join(map(str, first[:shown])) + (", …" if len(first) > shown else "")
    return f"{len(group.removed)}: {listed}"


def _note(group: GroupPlan) -> str:
    if group.blocked_by:
        return f"flows into {group.blocked_by[0]}" + (
            f" (+{len(group.blocked_by) - 1} more)" if len(group.blocked_by) > 1 else ""
        )
    if group.kept_because and group.prunable < group.channels:
        return group.kept_because[0] + (
            f" (+{len(group.kept_because) - 1} more)" if len(group.kept_because) > 1 else ""
        )
    return ""


def _shape(shape: Any) -> str:
    return "×".join(map(str, shape)) if isinstance(shape, tuple) else "?"
