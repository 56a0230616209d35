"""Per-node cost analysis: parameters, multiply-accumulates and weight storage in bits.

MACs are counted per sample (the batch dimension, dim 0, is divided out) for the layers
whose cost is multiply-accumulate: convolutions (modules, also transposed, and functional
convs), linear layers and matrix products; everything else counts 0 MACs, unless its module declares
them with a method `bitfx_macs(output_shape) -> int` (the binary layers do: binary MACs;
see `bitfx.ir.protocol`). `macs` counts every MAC; `binary_macs` counts the part computed by
layers whose weights are stored at 1 bit (XNOR-popcount when their inputs are binary too), so
`float_macs = macs - binary_macs`.

Weight storage counts every parameter and persistent buffer a node's module holds (what a
deployed file must store) at its dtype's width. A module that stores a tensor at another
width, a 1-bit binary conv for example, declares it in a class attribute
`bitfx_storage_bits = {"weight": 1}`, and that tensor is counted at 1 bit per element.
A module called from several places is counted once, at its first call, and so is a tensor that
several modules share (the gates of one channel group).
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass

import torch
from torch import fx, nn
from torch.nn.modules.conv import _ConvNd

from bitfx.ir.protocol import declared_macs, storage_bits
from bitfx.ir.shapes import node_shape

_MATMUL_TARGETS = (torch.matmul, operator.matmul, torch.bmm, torch.mm)
_CONV_TARGETS = (
    torch.conv1d,
    torch.conv2d,
    torch.conv3d,
    nn.functional.conv1d,
    nn.functional.conv2d,
    nn.functional.conv3d,
)


@dataclass(frozen=True)
class NodeCost:
    """What one node costs: trainable parameters, MACs per sample (all, and those with 1-bit
    weights), and weight storage."""

    params: int = 0
    macs: int = 0
    weight_bits: int = 0
    binary_macs: int = 0

    @property
    def weight_bytes(self) -> float:
        return self.weight_bits / 8

    @property
    def float_macs(self) -> int:
        return self.macs - self.binary_macs

    def __add__(self, other: NodeCost) -> NodeCost:
        return NodeCost(
            self.params + other.params,
            self.macs + other.macs,
            self.weight_bits + other.weight_bits,
            self.binary_macs + other.binary_macs,
        )


def graph_costs(gm: fx.GraphModule) -> dict[str, NodeCost]:
    """Cost of every node, keyed by node name. Needs shapes (see `propagate_shapes`)."""
    seen_modules: set[int] = set()
    costs = {}
    for node in gm.graph.nodes:
        storage = _storage(gm, node, seen_modules)
        macs = _macs(gm, node)
        binary = macs if _has_one_bit_weights(gm, node) else 0
        costs[node.name] = NodeCost(storage.params, macs, storage.weight_bits, binary)
    return costs


def total_cost(gm: fx.GraphModule) -> NodeCost:
    """The sum over all nodes of `graph_costs`."""
    return sum(graph_costs(gm).values(), NodeCost())


def tensor_bits(owner: nn.Module, name: str, tensor: torch.Tensor) -> int:
    """Storage of one tensor of `owner` in bits, honouring `bitfx_storage_bits`."""
    declared = storage_bits(owner, name)
    width = declared if declared is not None else tensor.element_size() * 8
    return tensor.numel() * width


def _has_one_bit_weights(gm: fx.GraphModule, node: fx.Node) -> bool:
    return node.op == "call_module" and storage_bits(gm.get_submodule(node.target), "weight") == 1


def _storage(gm: fx.GraphModule, node: fx.Node, seen_modules: set[int]) -> NodeCost:
    if node.op == "get_attr":
        owner_path, _, name = node.target.rpartition(".")
        owner = gm.get_submodule(owner_path)
        tensor = getattr(owner, name)
        if not isinstance(tensor, torch.Tensor) or id(tensor) in seen_modules:
            return NodeCost()
        seen_modules.add(id(tensor))
        params = tensor.numel() if isinstance(tensor, nn.Parameter) else 0
        return NodeCost(params=params, weight_bits=tensor_bits(owner, name, tensor))
    if node.op != "call_module":
        return NodeCost()
    module = gm.get_submodule(node.target)
    if id(module) in seen_modules:
        return NodeCost()
    seen_modules.add(id(module))
    params = bits = 0
    for submodule in module.modules():
        for name, tensor in submodule.named_parameters(recurse=False):
            if id(tensor) not in seen_modules:
                seen_modules.add(id(tensor))
                params += tensor.numel()
                bits += tensor_bits(submodule, name, tensor)
        for name, tensor in submodule.named_buffers(recurse=False):
            if name not in submodule._non_persistent_buffers_set and id(tensor) not in seen_modules:
                seen_modules.add(id(tensor))
                bits += tensor_bits(submodule, name, tensor)
    return NodeCost(params=params, weight_bits=bits)


def _macs(gm: fx.GraphModule, node: fx.Node) -> int:
    out_shape = node_shape(node)
    if not isinstance(out_shape, tuple) or not out_shape:
        return 0
    per_sample_out = math.prod(out_shape[1:])
    if node.op == "call_module":
        module = gm.get_submodule(node.target)
        declared = declared_macs(module, out_shape)
        if declared is not None:
            return declared
        if isinstance(module, _ConvNd):
            if module.transposed:
                in_shape = node_shape(node.args[0])
                return math.prod(in_shape[1:]) * (module.out_channels // module.groups) * math.prod(module.kernel_size)
            return per_sample_out * (module.in_channels // module.groups) * math.prod(module.kernel_size)
        if isinstance(module, nn.Linear):
            return per_sample_out * module.in_features
        return 0
    if node.op != "call_function" or len(node.args) < 2:
        return 0
    if node.target in _CONV_TARGETS:
        weight_shape = node_shape(node.args[1]) if isinstance(node.args[1], fx.Node) else None
        return per_sample_out * math.prod(weight_shape[1:]) if isinstance(weight_shape, tuple) else 0
    if node.target in _MATMUL_TARGETS or node.target is nn.functional.linear:
        in_shape = node_shape(node.args[0])
        if isinstance(in_shape, tuple) and in_shape:
            return per_sample_out * in_shape[-1]
    return 0
