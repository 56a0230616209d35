"""Search spaces and genotypes as plain data (TOML / JSON round-trip, like pipeline files).

A *genotype* names its cells; each cell has `inputs` input nodes (2 in DARTS: the outputs of
the two previous cells; 1 in ABanditNAS: the previous cell's output), intermediate nodes that
each sum their incoming edges `(operation, source node)`, and `concat`, the nodes whose outputs
are concatenated into the cell's output. Node indices count the inputs first.

    layout = "normal_reduce"
    [cells.normal]
    inputs = 2
    concat = [2, 3, 4, 5]
    nodes = [[["sep_conv_3x3", 0], ["sep_conv_3x3", 1]], ...]

`layout` says which cell each layer uses: "normal_reduce" (DARTS: the `reduce` cell at layers
L//3 and 2L//3, `normal` elsewhere) or "sequential" (v cells over L layers in order, layer i
uses cell ⌊i·v/L⌋; reductions still at L//3 and 2L//3).

A `Space` is the search side: every intermediate node is joined to every earlier node by an
edge whose candidate operations the bandit core narrows down to one; `Space.genotype` turns
the surviving choice into a genotype (edges left with "none" are dropped; a node whose every
edge is "none" keeps one, so that it outputs zeros).
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

LAYOUTS = ("normal_reduce", "sequential")
Edge = tuple[str, int]


@dataclass(frozen=True)
class CellGene:
    """One cell: incoming edges of every intermediate node and the concatenated nodes."""

    nodes: tuple[tuple[Edge, ...], ...]
    concat: tuple[int, ...]
    inputs: int = 2

    def __post_init__(self) -> None:
        for index, edges in enumerate(self.nodes):
            node = self.inputs + index
            for op, source in edges:
                if not 0 <= source < node:
                    raise ValueError(
                        f"node {node} takes input from node {source}; sources must be earlier nodes (0..{node - 1})"
                    )
        last = self.inputs + len(self.nodes)
        if not self.concat or any(not 0 <= i < last for i in self.concat):
            raise ValueError(f"concat {list(self.concat)} must name nodes 0..{last - 1}")

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> CellGene:
        """From `{"nodes": [[[op, source], ...], ...], "concat": [...], "inputs": n}`."""
        nodes = tuple(tuple((str(op), int(src)) for op, src in edges) for edges in data["nodes"])
        return cls(nodes, tuple(int(i) for i in data["concat"]), int(data.get("inputs", 2)))

    def to_data(self) -> dict[str, Any]:
        return {
            "inputs": self.inputs,
            "concat": list(self.concat),
            "nodes": [[[op, src] for op, src in e] for e in self.nodes],
        }


@dataclass(frozen=True)
class Genotype:
    """A searched architecture: named cells and how layers use them."""

    cells: dict[str, CellGene]
    layout: str = "normal_reduce"

    def __post_init__(self) -> None:
        if self.layout not in LAYOUTS:
            raise ValueError(f"layout {self.layout!r} is not one of {LAYOUTS}")
        if self.layout == "normal_reduce" and set(self.cells) != {"normal", "reduce"}:
            raise ValueError(f"layout 'normal_reduce' needs cells 'normal' and 'reduce', got {sorted(self.cells)}")

    def cell_for_layer(self, layer: int, layers: int) -> tuple[str, bool]:
        """(cell name, is a reduction layer) for layer `layer` of `layers`."""
        reduction = layer in (layers // 3, 2 * layers // 3)
        if self.layout == "normal_reduce":
            return ("reduce" if reduction else "normal"), reduction
        names = list(self.cells)
        return names[layer * len(names) // layers], reduction

    def ops(self) -> set[str]:
        """Every operation name the genotype uses."""
        return {op for cell in self.cells.values() for edges in cell.nodes for op, _ in edges}

    def to_data(self) -> dict[str, Any]:
        return {"layout": self.layout, "cells": {name: cell.to_data() for name, cell in self.cells.items()}}

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> Genotype:
        return cls(
            {name: CellGene.from_data(c) for name, c in data["cells"].items()}, data.get("layout", "normal_reduce")
        )

    def to_json(self) -> str:
        return json.dumps(self.to_data(), indent=1)

    @classmethod
    def from_json(cls, text: str) -> Genotype:
        return cls.from_data(json.loads(text))

    def to_toml(self) -> str:
        """TOML text that `from_toml` reads back to an equal genotype."""
        lines = [
            "# bitfx genotype; build with bitfx.ir.cells.build(Genotype.load(THIS_FILE), channels, layers)",
            f"layout = {json.dumps(self.layout)}",
            "",
        ]
        for name, cell in self.cells.items():
            nodes = ", ".join(
                "[" + ", ".join(f"[{json.dumps(op)}, {src}]" for op, src in edges) + "]" for edges in cell.nodes
            )
            lines += [
                f"[cells.{json.dumps(name)}]",
                f"inputs = {cell.inputs}",
                f"concat = {list(cell.concat)}",
                f"nodes = [{nodes}]",
                "",
            ]
        return "\n".join(lines)

    @classmethod
    def from_toml(cls, text: str) -> Genotype:
        return cls.from_data(tomllib.loads(text))

    def save(self, path: str | Path) -> None:
        """Write TOML (`.toml`) or JSON (any other suffix)."""
        path = Path(path)
        path.write_text(self.to_toml() if path.suffix == ".toml" else self.to_json())

    @classmethod
    def load(cls, path: str | Path) -> Genotype:
        path = Path(path)
        text = path.read_text()
        try:
            return cls.from_toml(text) if path.suffix == ".toml" else cls.from_json(text)
        except (tomllib.TOMLDecodeError, json.JSONDecodeError, KeyError, ValueError) as error:
            raise ValueError(f"genotype file {str(path)!r}: {error}") from error


@dataclass(frozen=True)
class Space:
    """A cell search space: every node joined to every earlier node, the same candidates on every edge."""

    ops: tuple[str, ...]
    cells: tuple[str, ...] = ("normal", "reduce")
    nodes: int = 4
    inputs: int = 2
    layout: str = "normal_reduce"
    concat: tuple[int, ...] = field(default=())

    def edges(self) -> dict[str, list[str]]:
        """Edge name `cell/node<-source` → candidate operations (the arms of the bandit core)."""
        return {
            f"{cell}/{node}<-{src}": list(self.ops)
            for cell in self.cells
            for node in range(self.inputs, self.inputs + self.nodes)
            for src in range(node)
        }

    def genotype(self, choice: Mapping[str, str]) -> Genotype:
        """The genotype of one operation per edge; edges on "none" are left out."""
        concat = self.concat or tuple(range(self.inputs, self.inputs + self.nodes))
        cells = {}
        for cell in self.cells:
            nodes = []
            for node in range(self.inputs, self.inputs + self.nodes):
                edges = tuple((choice[f"{cell}/{node}<-{src}"], src) for src in range(node))
                nodes.append(tuple(e for e in edges if e[0] != "none") or (("none", 0),))
            cells[cell] = CellGene(tuple(nodes), concat, self.inputs)
        return Genotype(cells, self.layout)
