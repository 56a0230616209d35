"""Graph views for analyses and for people: networkx, DOT text, SVG (graphviz's or a plain drawing).

Layers with 1-bit weights (those with binary MACs, see `bitfx.ir.cost`) are marked in the
pictures: orange, with "1-bit" in their label."""

from __future__ import annotations

import shutil
import subprocess
from html import escape
from pathlib import Path

import networkx as nx
from torch import fx

from bitfx.ir.cost import graph_costs
from bitfx.ir.shapes import node_dtype, node_shape
from bitfx.ir.summary import target_name

_FILL = {"placeholder": "#d9ead3", "output": "#d9ead3", "call_module": "#cfe2f3", "get_attr": "#fff2cc"}
_ONE_BIT_FILL = "#f6b26b"
_BOX_W, _BOX_H, _STEP, _MARGIN = 420, 36, 48, 20


def to_networkx(gm: fx.GraphModule) -> nx.DiGraph:
    """A DiGraph with one vertex per fx node (keyed by node name) and an edge per data use.

    Vertex attributes: `op`, `target` (readable), `module_type` (call_module only, else None),
    `shape`, `dtype`, `params`, `macs`, `binary_macs` (MACs of a layer with 1-bit weights),
    `weight_bits`, and `node` (the fx.Node itself).
    Edge attribute `arg_index`: the position of the producer among the consumer's inputs.
    """
    costs = graph_costs(gm)
    graph = nx.DiGraph()
    for node in gm.graph.nodes:
        module_type = type(gm.get_submodule(node.target)).__name__ if node.op == "call_module" else None
        cost = costs[node.name]
        graph.add_node(
            node.name,
            op=node.op,
            target=target_name(gm, node),
            module_type=module_type,
            shape=node_shape(node),
            dtype=node_dtype(node),
            params=cost.params,
            macs=cost.macs,
            binary_macs=cost.binary_macs,
            weight_bits=cost.weight_bits,
            node=node,
        )
    for node in gm.graph.nodes:
        for index, producer in enumerate(node.all_input_nodes):
            graph.add_edge(producer.name, node.name, arg_index=index)
    return graph


def to_dot(gm: fx.GraphModule, title: str | None = None) -> str:
    """Graphviz DOT text of the graph: one box per node with its target and output shape."""
    view = to_networkx(gm)
    lines = [
        f'digraph "{_escape(title or type(gm).__name__)}" {{',
        "  rankdir=TB;",
        '  node [shape=box, style="rounded,filled", fontname="Helvetica", fontsize=10];',
    ]
    for name, attrs in view.nodes(data=True):
        label = "\\n".join(_label_lines(name, attrs))
        lines.append(f'  "{_escape(name)}" [label="{_escape(label)}", fillcolor="{_fill(attrs)}"];')
    for src, dst in view.edges():
        lines.append(f'  "{_escape(src)}" -> "{_escape(dst)}";')
    lines.append("}")
    return "\n".join(lines) + "\n"


def to_svg(gm: fx.GraphModule, title: str | None = None) -> str:
    """A plain SVG drawing of the graph that needs no graphviz: one box per node, in graph order
    from top to bottom; an edge between neighbours is a short line, a longer one (a residual, for
    example) an arc on the right."""
    view = to_networkx(gm)
    order = {name: index for index, name in enumerate(view.nodes)}
    top = _MARGIN + 40
    height = top + len(order) * _STEP + _MARGIN
    width = _MARGIN * 2 + _BOX_W + 180
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="Helvetica" '
        'font-size="11">',
        f'<text x="{_MARGIN}" y="{_MARGIN + 12}" font-size="14">{escape(title or type(gm).__name__)}</text>',
        f'<rect x="{_MARGIN}" y="{_MARGIN + 20}" width="12" height="12" fill="{_ONE_BIT_FILL}"/>',
        f'<text x="{_MARGIN + 18}" y="{_MARGIN + 30}">1-bit weights (XNOR-popcount)</text>',
    ]
    x, right = _MARGIN, _MARGIN + _BOX_W
    for lane, (src, dst) in enumerate(view.edges()):
        y0, y1 = top + order[src] * _STEP + _BOX_H, top + order[dst] * _STEP
        if order[dst] == order[src] + 1:
            parts.append(f'<line x1="{x + _BOX_W / 2}" y1="{y0}" x2="{x + _BOX_W / 2}" y2="{y1}" stroke="#666"/>')
        else:
            bend = right + 20 + 12 * (lane % 12)
            mid0, mid1 = y0 - _BOX_H / 2, y1 + _BOX_H / 2
            parts.append(
                f'<path d="M {right} {mid0} C {bend} {mid0}, {bend} {mid1}, {right} {mid1}" fill="none" stroke="#999"/>'
            )
    for name, attrs in view.nodes(data=True):
        y = top + order[name] * _STEP
        parts.append(
            f'<rect x="{x}" y="{y}" width="{_BOX_W}" height="{_BOX_H}" rx="6" fill="{_fill(attrs)}" stroke="#444"/>'
        )
        for row, text in enumerate(_label_lines(name, attrs)[:2]):
            parts.append(f'<text x="{x + 8}" y="{y + 15 + 14 * row}">{escape(text[:70])}</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def write_graph_picture(gm: fx.GraphModule, path: str | Path) -> Path:
    """Write DOT text next to `path` (`.dot`) and an SVG (`.svg`): rendered by graphviz's `dot`
    when it is installed, otherwise drawn by `to_svg`. Returns the SVG path."""
    path = Path(path)
    dot_path, svg_path = path.with_suffix(".dot"), path.with_suffix(".svg")
    dot_path.write_text(to_dot(gm))
    dot_exe = shutil.which("dot")
    if dot_exe is None:
        svg_path.write_text(to_svg(gm))
    else:
        subprocess.run([dot_exe, "-Tsvg", str(dot_path), "-o", str(svg_path)], check=True, capture_output=True)
    return svg_path


def _label_lines(name: str, attrs: dict) -> list[str]:
    shape = attrs["shape"]
    lines = [name + (" — 1-bit" if attrs["binary_macs"] else ""), attrs["target"]]
    if isinstance(shape, tuple):
        lines[1] += "  " + "×".join(map(str, shape))
    return lines


def _fill(attrs: dict) -> str:
    return _ONE_BIT_FILL if attrs["binary_macs"] else _FILL.get(attrs["op"], "#eeeeee")


def _escape(text: str) -> str:
    return text.replace('"', '\\"')
