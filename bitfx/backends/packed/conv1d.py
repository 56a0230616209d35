"""1-D convolutions (N×C×L) run on the 2-D kernels as convolutions of height 1: each such Conv
node becomes Unsqueeze(axis 2) → Conv with a 1×k kernel → Squeeze(axis 2), all views but the
convolution itself. Runs after `validate.check_graph`, so the attributes are well formed."""

from __future__ import annotations

import numpy as np

from bitfx.backends.packed.graph import Graph, Node

HEIGHT_AXIS = "::height_axis"


def convolutions_1d_as_2d(graph: Graph) -> None:
    """Rewrite every 1-D Conv of `graph` into its 2-D form, in place."""
    nodes: list[Node] = []
    for node in graph.nodes:
        weights = graph.constant(node.inputs[1]) if node.qualified == "Conv" and len(node.inputs) > 1 else None
        if weights is None or weights.ndim != 3:
            nodes.append(node)
            continue
        graph.constants[HEIGHT_AXIS] = np.array([2], np.int64)
        weights_2d = f"{node.inputs[1]}::2d"
        graph.constants[weights_2d] = weights[:, :, None, :]
        x, y = node.inputs[0], node.outputs[0]
        x_2d, y_2d = f"{node.name}::input_2d", f"{node.name}::output_2d"
        nodes.append(Node(f"{node.name}::unsqueeze", "Unsqueeze", "", [x, HEIGHT_AXIS], [x_2d]))
        nodes.append(Node(node.name, "Conv", node.domain, [x_2d, weights_2d, *node.inputs[2:]], [y_2d], _as_2d(node)))
        nodes.append(Node(f"{node.name}::squeeze", "Squeeze", "", [y_2d, HEIGHT_AXIS], [y]))
    graph.nodes[:] = nodes


def _as_2d(node: Node) -> dict:
    """The attributes of the height-1 convolution."""
    attributes = dict(node.attributes)
    for name, prefix in (("kernel_shape", [1]), ("strides", [1]), ("dilations", [1])):
        if name in attributes:
            attributes[name] = prefix + list(attributes[name])
    if "pads" in attributes:
        begin, end = attributes["pads"]
        attributes["pads"] = [0, begin, 0, end]
    return attributes
