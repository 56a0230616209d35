"""Graph views for analyses and for people: networkx, DOT text, rendered SVG."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import networkx as nx
from torch import fx

from bitfx.ir.cost import graph_costs
from bitfx.ir.shapes import node_dtype, node_shape
from bitfx.ir.summary import target_name

_FILL = {"placeholder": "#d9ead3", "output": "#d9ead3", "call_module": "#cfe2f3", "get_attr": "#fff2cc"}


def to_networkx(gm: fx.GraphModule) -> nx.DiGraph:
    """A DiGraph with one vertex per fx node (keyed by node name) and an edge per data use.

    Vertex attributes: `op`, `target` (readable), `module_type` (call_module only, else None),
    `shape`, `dtype`, `params`, `macs`, `weight_bits`, and `node` (the fx.Node itself).
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
        shape = attrs["shape"]
        label = f"{name}\\n{attrs['target']}" + (f"\\n{'×'.join(map(str, shape))}" if isinstance(shape, tuple) else "")
        lines.append(
            f'  "{_escape(name)}" [label="{_escape(label)}", fillcolor="{_FILL.get(attrs["op"], "#eeeeee")}"];'
        )
    for src, dst in view.edges():
        lines.append(f'  "{_escape(src)}" -> "{_escape(dst)}";')
    lines.append("}")
    return "\n".join(lines) + "\n"


def write_graph_picture(gm: fx.GraphModule, path: str | Path) -> Path:
    """Write DOT text next to `path` (`.dot`) and, when graphviz's `dot` is installed, an SVG.

    Returns the SVG path when it was rendered, otherwise the DOT path.
    """
    path = Path(path)
    dot_path = path.with_suffix(".dot")
    dot_path.write_text(to_dot(gm))
    dot_exe = shutil.which("dot")
    if dot_exe is None:
        return dot_path
    svg_path = path.with_suffix(".svg")
    subprocess.run([dot_exe, "-Tsvg", str(dot_path), "-o", str(svg_path)], check=True, capture_output=True)
    return svg_path


def _escape(text: str) -> str:
    return text.replace('"', '\\"')
