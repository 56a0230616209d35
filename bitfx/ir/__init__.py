"""The IR: capture a model as a torch.fx graph, annotate it, and look at it."""

from bitfx.ir.capture import capture
from bitfx.ir.cost import NodeCost, graph_costs, total_cost
from bitfx.ir.diff import GraphDiff, diff
from bitfx.ir.execution import Inputs, OutputError, as_inputs, compare_outputs, eval_mode, flatten_outputs, run_eval
from bitfx.ir.graph_view import to_dot, to_networkx, to_svg, write_graph_picture
from bitfx.ir.shapes import example_inputs_of, node_dtype, node_shape, propagate_shapes
from bitfx.ir.summary import Summary, summary

__all__ = [
    "GraphDiff",
    "Inputs",
    "OutputError",
    "NodeCost",
    "Summary",
    "as_inputs",
    "capture",
    "compare_outputs",
    "diff",
    "eval_mode",
    "example_inputs_of",
    "flatten_outputs",
    "graph_costs",
    "node_dtype",
    "node_shape",
    "propagate_shapes",
    "run_eval",
    "summary",
    "to_dot",
    "to_networkx",
    "to_svg",
    "total_cost",
    "write_graph_picture",
]
