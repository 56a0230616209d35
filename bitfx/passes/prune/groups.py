"""Channel dependency analysis: which channels of which layers must be pruned together.

Every tensor with a channel axis (dim 1 of an (N, C, …) activation, the feature axis of an
(N, F) one) gets a *channel map*: one slot id per position along that axis.

- a conv (groups=1) or linear layer creates fresh slots, its output channels (a *space*);
- channel-wise ops (activations, pooling, dropout), BatchNorm and channel gates pass the map on (the
  gates of one group share their parameter by design, so that sharing does not fix their channels);
- a depthwise conv passes the map on too: its groups shrink with the channels;
- an element-wise op of two tensors (a residual add) unifies their slots position by position;
- `cat` on dim 1 concatenates the maps, so each input's channels keep their offset;
- flatten repeats each slot H·W times: channel c becomes features c·H·W … (c+1)·H·W − 1;
- a reshape, transpose or permute of the spatial dims only passes the map on; one that moves
  values across the channel axis (a channel shuffle) keeps the channels it reads and
  makes a new kept space; reading a tensor's `ndim`, `shape`, `dtype` or `dim()` makes no channels.

Slots joined by unions form one *channel*: removing it removes every slot in it — output
channels of each producing layer, input channels of each consuming conv/linear, entries of
each BatchNorm. Spaces joined by such unions form a *group*, ranked and pruned together
(the residual channels of a ResNet stage are one group).

A channel is *fixed* (kept) when it comes from the model input or a constant, reaches the
model output, feeds the classifier (unless `prune_classifier`), or passes through a layer
that cannot shrink (grouped or transposed conv, a module called from several places or
sharing parameters, softmax over channels, a traced `F.batch_norm` whose statistics are graph
values). An op the analysis does not understand
*blocks* the channels it consumes; pruning a group with blocked channels is an error
naming the op, never a silent guess.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field

import networkx as nx
import torch
from torch import fx, nn

from bitfx.errors import PassError
from bitfx.ir import to_networkx
from bitfx.ir.gate import ChannelGate
from bitfx.ir.rewrite import call_counts, is_activation, module_of, modules_sharing_parameters
from bitfx.passes.prune import channel_ops as ops


@dataclass(frozen=True)
class ChannelSpace:
    """The channels one node creates: a conv/linear layer's outputs, or a source that cannot shrink
    (`kept_because` says why)."""

    index: int
    node: str
    layer: str | None
    first_slot: int
    size: int
    prunable: bool
    kept_because: str | None = None

    @property
    def slots(self) -> range:
        return range(self.first_slot, self.first_slot + self.size)


@dataclass(frozen=True)
class ChannelGroup:
    """Channels pruned together. `channels` holds one slot per channel (its union-find root),
    in the order of the first layer's output channels; `fixed` and `blocked` say why a
    channel must stay."""

    index: int
    layers: tuple[str, ...]
    spaces: tuple[ChannelSpace, ...]
    channels: tuple[int, ...]
    fixed: dict[int, tuple[str, ...]] = field(default_factory=dict)
    blocked: dict[int, tuple[str, ...]] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """The first layer, plus how many others share the channels: `layers.0.conv2 (+8)`."""
        return self.layers[0] + (f" (+{len(self.layers) - 1})" if len(self.layers) > 1 else "")

    def prunable(self) -> list[int]:
        """Channels that may be removed, in group order."""
        return [c for c in self.channels if c not in self.fixed and c not in self.blocked]

    def blocking_ops(self) -> list[str]:
        return sorted({op for ops_ in self.blocked.values() for op in ops_})


@dataclass
class ChannelAnalysis:
    """The result of `analyze_channels`: spaces, channel maps per node and the groups."""

    spaces: list[ChannelSpace]
    maps: dict[str, list[int]]
    groups: list[ChannelGroup]
    activations: list[str]
    parent: list[int]

    def channel_of(self, slot: int) -> int:
        """The channel (union-find root) a slot belongs to."""
        while self.parent[slot] != slot:
            slot = self.parent[slot]
        return slot

    def kept_positions(self, node_name: str, removed: set[int]) -> list[int]:
        """Positions along `node_name`'s channel axis that survive removing `removed` channels."""
        return [k for k, slot in enumerate(self.maps[node_name]) if self.channel_of(slot) not in removed]


def analyze_channels(gm: fx.GraphModule, *, prune_classifier: bool = False) -> ChannelAnalysis:
    """Channel maps, groups and fixed/blocked channels of a captured graph (shapes needed)."""
    return _Analyzer(gm, prune_classifier).run()


_WEIGHT_LAYERS = ops.CONV_TYPES + ops.TRANSPOSED_CONV_TYPES + ops.LINEAR_TYPES


def unprunable_layers(gm: fx.GraphModule, analysis: ChannelAnalysis) -> dict[str, str]:
    """Every conv, transposed conv or linear layer whose output channels `analysis` keeps, with the reason
    (what the channel passes report as skipped)."""
    skipped: dict[str, str] = {}
    nodes = {node.name: node for node in gm.graph.nodes}
    for space in analysis.spaces:
        node = nodes.get(space.node)
        if not space.prunable and node is not None and isinstance(module_of(gm, node), _WEIGHT_LAYERS):
            skipped[node.target] = space.kept_because or "its output channels cannot be pruned"
    return skipped


class _Analyzer:
    def __init__(self, gm: fx.GraphModule, prune_classifier: bool) -> None:
        self.gm = gm
        self.view = to_networkx(gm)
        self.prune_classifier = prune_classifier
        self.parent: list[int] = []
        self.slot_space: list[int] = []
        self.spaces: list[ChannelSpace] = []
        self.maps: dict[str, list[int]] = {}
        self.fixed: dict[int, list[str]] = defaultdict(list)
        self.blocked: dict[int, list[str]] = defaultdict(list)
        self.activations: list[str] = []
        self.calls = call_counts(gm)
        self.sharing = modules_sharing_parameters(gm)

    # union-find over slots
    def find(self, slot: int) -> int:
        while self.parent[slot] != slot:
            self.parent[slot] = self.parent[self.parent[slot]]
            slot = self.parent[slot]
        return slot

    def unify(self, a: list[int], b: list[int]) -> None:
        for x, y in zip(a, b):
            rx, ry = self.find(x), self.find(y)
            if rx != ry:
                self.parent[max(rx, ry)] = min(rx, ry)

    def new_space(
        self, node: fx.Node, size: int, *, layer: str | None = None, fixed_because: str | None = None
    ) -> list[int]:
        first = len(self.parent)
        self.parent.extend(range(first, first + size))
        self.slot_space.extend([len(self.spaces)] * size)
        self.spaces.append(
            ChannelSpace(len(self.spaces), node.name, layer, first, size, fixed_because is None, fixed_because)
        )
        slots = list(range(first, first + size))
        if fixed_because:
            self.fix(slots, fixed_because)
        return slots

    def fix(self, slots: list[int], reason: str) -> None:
        for slot in set(slots):
            if reason not in self.fixed[slot]:
                self.fixed[slot].append(reason)

    # the walk
    def run(self) -> ChannelAnalysis:
        for node in self.gm.graph.nodes:
            out = self.visit(node)
            if out is not None:
                channels = self.channels(node)
                if channels != len(out):
                    raise PassError(
                        f"channel analysis: {self.describe(node)} has {channels} channels but the analysis "
                        f"derived {len(out)}; please report this model"
                    )
                self.maps[node.name] = out
        return self.finish()

    def visit(self, node: fx.Node) -> list[int] | None:
        if node.op == "output":
            self.visit_output(node)
            return None
        if node.op == "get_attr":
            return None
        channels = self.channels(node)
        if node.op == "placeholder":
            return (
                None if channels is None else self.new_space(node, channels, fixed_because=f"model input {node.name!r}")
            )
        mapped = [n for n in node.all_input_nodes if n.name in self.maps]
        if not mapped:
            return (
                None
                if channels is None
                else self.new_space(
                    node, channels, fixed_because=f"comes from {self.describe(node)}, which reads no pruned channels"
                )
            )
        module = module_of(self.gm, node)
        out = self.visit_module(node, module) if module is not None else self.visit_call(node)
        if out is _UNKNOWN:
            return self.unknown(node, mapped)
        if is_activation(self.gm, node):
            self.activations.append(node.name)
        return out

    def visit_module(self, node: fx.Node, module: nn.Module) -> list[int] | None | object:
        source = self.only_mapped_input(node)
        if source is None:
            return _UNKNOWN
        in_map = self.maps[source.name]
        shared = self.cannot_shrink_reason(node)
        kind = ops.layer_type(module)
        if kind in ops.CONV_TYPES:
            return self.visit_conv(node, module, in_map, shared)
        if kind in ops.TRANSPOSED_CONV_TYPES:
            return self.produce(
                node, in_map, module.out_channels, f"transposed conv {node.target!r} keeps its channels"
            )
        if kind in ops.LINEAR_TYPES:
            if len(self.view.nodes[source.name]["shape"]) != 2:
                return _UNKNOWN
            return self.produce(node, in_map, module.out_features, shared)
        if kind in ops.BATCHNORM_TYPES:
            if shared:
                self.fix(in_map, shared)
            return list(in_map)
        if isinstance(module, ChannelGate):
            if self.calls[node.target] > 1:
                self.fix(in_map, f"gate {node.target!r} is called from {self.calls[node.target]} places")
            return list(in_map)
        if kind is nn.Flatten:
            return self.flatten(source, in_map, module.start_dim, module.end_dim)
        if isinstance(module, ops.SOFTMAX_MODULES):
            return self.softmax(node, in_map, module.dim)
        if isinstance(module, ops.CHANNELWISE_MODULES) and not getattr(module, "return_indices", False):
            return list(in_map)
        if isinstance(module, ops.LAYOUT_MODULES):
            return self.moved_across_channels(node, in_map)
        return _UNKNOWN

    def visit_conv(self, node: fx.Node, conv: nn.Module, in_map: list[int], shared: str | None) -> list[int]:
        if conv.groups == 1:
            return self.produce(node, in_map, conv.out_channels, shared)
        if conv.groups == conv.in_channels == conv.out_channels:
            if shared:
                self.fix(in_map, shared)
            return list(in_map)
        return self.produce(
            node, in_map, conv.out_channels, f"grouped conv {node.target!r} (groups={conv.groups}) keeps its channels"
        )

    def produce(self, node: fx.Node, in_map: list[int], size: int, fixed_because: str | None) -> list[int]:
        """A conv/linear layer: reads `in_map`, creates `size` new channels."""
        if fixed_because:
            self.fix(in_map, fixed_because)
        return self.new_space(node, size, layer=None if fixed_because else node.target, fixed_because=fixed_because)

    def visit_call(self, node: fx.Node) -> list[int] | None | object:
        target, args, kwargs = node.target, node.args, node.kwargs
        function = node.op == "call_function"
        if (function and target in ops.ELEMENTWISE_FUNCTIONS) or (not function and target in ops.ELEMENTWISE_METHODS):
            return self.elementwise(node, [args[0], kwargs.get("other", args[1] if len(args) > 1 else None)])
        if function and target in ops.CONCAT_FUNCTIONS:
            return self.concat(node, args[0] if args else kwargs.get("tensors"), _arg(node, 1, "dim", 0))
        source = self.only_mapped_input(node)
        if source is None or args[0] is not source:
            return _UNKNOWN
        if (function and target is getattr and args[1] in ops.TENSOR_FACTS) or (
            not function and target in ops.FACT_METHODS
        ):
            return None
        in_map = self.maps[source.name]
        if function and target in ops.FUNCTIONAL_LAYERS:
            reason = f"read by {self.describe(node)}, whose weight is not a module pruning can slice"
            self.fix(in_map, reason)
            return self.new_space(node, self.channels(node), fixed_because=reason)
        if (function and target in ops.CHANNELWISE_FUNCTIONS) or (not function and target in ops.CHANNELWISE_METHODS):
            return list(in_map)
        if function and target in ops.STATISTICS_FUNCTIONS:
            self.fix(in_map, f"normalised by {self.describe(node)}, whose per-channel tensors pruning does not slice")
            return list(in_map)
        if (function and target in ops.REDUCE_FUNCTIONS) or (not function and target in ops.REDUCE_METHODS):
            return self.reduce(source, in_map, _arg(node, 1, "dim", None))
        if (function and target in ops.SOFTMAX_FUNCTIONS) or (not function and target in ops.SOFTMAX_METHODS):
            return self.softmax(node, in_map, _arg(node, 1, "dim", None))
        if not function and target == "size":
            return self.size_query(node, source)
        if (function and target is torch.flatten) or (not function and target == "flatten"):
            return self.flatten(source, in_map, _arg(node, 1, "start_dim", 0), _arg(node, 2, "end_dim", -1))
        if not function and target in ("view", "reshape") and self.is_batch_flatten(node, source):
            return self.flatten(source, in_map, 1, -1)
        if (function and target in ops.LAYOUT_FUNCTIONS) or (not function and target in ops.LAYOUT_METHODS):
            if self.keeps_channel_axis(node, source):
                return list(in_map)
            return self.moved_across_channels(node, in_map)
        return _UNKNOWN

    # rules
    def elementwise(self, node: fx.Node, operands: list[object]) -> list[int] | object:
        tensors = [o for o in operands if isinstance(o, fx.Node)]
        mapped = [o for o in tensors if o.name in self.maps]
        out_channels = self.channels(node)
        wide = [o for o in mapped if len(self.maps[o.name]) == out_channels]
        if not wide or any(
            len(self.view.nodes[o.name]["shape"] or ()) != len(self.view.nodes[node.name]["shape"] or ())
            for o in mapped
        ):
            return _UNKNOWN
        out = list(self.maps[wide[0].name])
        for other in wide[1:]:
            self.unify(out, self.maps[other.name])
        for other in mapped:
            if other not in wide:
                self.fix(self.maps[other.name], f"broadcast over channels in {self.describe(node)}")
        for other in tensors:
            shape = self.view.nodes[other.name]["shape"]
            if other.name not in self.maps and isinstance(shape, tuple) and math.prod(shape) != 1:
                self.fix(
                    out,
                    f"combined in {self.describe(node)} with the tensor {other.name!r}, which pruning does not slice",
                )
        return out

    def concat(self, node: fx.Node, inputs: object, dim: int) -> list[int] | object:
        if not isinstance(inputs, (list, tuple)) or not all(isinstance(i, fx.Node) for i in inputs):
            return _UNKNOWN
        rank = len(self.view.nodes[node.name]["shape"] or ())
        maps = []
        for tensor in inputs:
            if tensor.name not in self.maps:
                channels = self.channels(tensor)
                if channels is None:
                    return _UNKNOWN
                self.maps[tensor.name] = self.new_space(
                    tensor, channels, fixed_because=f"constant {tensor.name!r} concatenated in {self.describe(node)}"
                )
            maps.append(self.maps[tensor.name])
        if dim % rank == 1:
            return [slot for m in maps for slot in m]
        if len({len(m) for m in maps}) != 1:
            return _UNKNOWN
        for other in maps[1:]:
            self.unify(maps[0], other)
        return list(maps[0])

    def flatten(self, source: fx.Node, in_map: list[int], start: int, end: int) -> list[int] | object:
        shape = self.view.nodes[source.name]["shape"]
        start, end = start % len(shape), end % len(shape)
        if start >= 2 or start > end:
            return list(in_map)
        if start != 1 or end != len(shape) - 1:
            return _UNKNOWN
        features = math.prod(shape[2:])
        return [slot for slot in in_map for _ in range(features)]

    def reduce(self, source: fx.Node, in_map: list[int], dims: object) -> list[int] | object:
        rank = len(self.view.nodes[source.name]["shape"])
        dims = (dims,) if isinstance(dims, int) else dims
        if not isinstance(dims, (list, tuple)) or any(d % rank < 2 for d in dims):
            return _UNKNOWN
        return list(in_map)

    def softmax(self, node: fx.Node, in_map: list[int], dim: object) -> list[int] | object:
        if not isinstance(dim, int):
            return _UNKNOWN
        if dim % len(self.view.nodes[node.name]["shape"]) == 1:
            self.fix(in_map, f"{self.describe(node)} mixes the channels")
        return list(in_map)

    def size_query(self, node: fx.Node, source: fx.Node) -> None | object:
        """`x.size(0)` reads the batch size only; any other size depends on the channels."""
        dim = _arg(node, 1, "dim", None)
        return None if isinstance(dim, int) and dim % len(self.view.nodes[source.name]["shape"]) == 0 else _UNKNOWN

    def is_batch_flatten(self, node: fx.Node, source: fx.Node) -> bool:
        """`x.view(x.size(0), -1)` / `x.reshape(x.size(0), -1)`: flatten everything but the batch."""
        shape = node.args[1:]
        if len(shape) == 1 and isinstance(shape[0], (list, tuple)):
            shape = tuple(shape[0])
        if len(shape) != 2 or shape[1] != -1 or not isinstance(shape[0], fx.Node):
            return False
        batch = shape[0]
        return (
            batch.op == "call_method"
            and batch.target == "size"
            and batch.args[0] is source
            and _arg(batch, 1, "dim", None) == 0
        )

    def keeps_channel_axis(self, node: fx.Node, source: fx.Node) -> bool:
        """True when a layout op leaves dims 0 and 1 as they are (it reshapes or permutes the spatial dims only)."""
        before, after = self.view.nodes[source.name]["shape"], self.view.nodes[node.name]["shape"]
        if not (isinstance(before, tuple) and isinstance(after, tuple)) or before[:2] != after[:2]:
            return False
        if node.target in ("permute", torch.permute):
            dims = node.args[1:] if node.target == "permute" else node.args[1]
            dims = tuple(dims[0]) if len(dims) == 1 and isinstance(dims[0], (list, tuple)) else tuple(dims)
            return [d % len(before) for d in dims[:2]] == [0, 1]
        if node.target in ("transpose", torch.transpose):
            return all(isinstance(d, int) and d % len(before) >= 2 for d in node.args[1:3])
        return node.target in ("view", "reshape", torch.reshape, "flatten") and math.prod(before[2:]) == math.prod(
            after[2:]
        )

    def moved_across_channels(self, node: fx.Node, in_map: list[int]) -> list[int] | None:
        """A layout op that moves values across the channel axis: its input channels are kept, and so are
        the channels it makes (they are not any layer's output channels)."""
        reason = f"moved across the channel axis by {self.describe(node)} (a reshape or shuffle): kept"
        self.fix(in_map, reason)
        channels = self.channels(node)
        return None if channels is None else self.new_space(node, channels, fixed_because=reason)

    def unknown(self, node: fx.Node, mapped: list[fx.Node]) -> list[int] | None:
        op = self.describe(node)
        for producer in mapped:
            for slot in set(self.maps[producer.name]):
                if op not in self.blocked[slot]:
                    self.blocked[slot].append(op)
        channels = self.channels(node)
        return (
            None
            if channels is None
            else self.new_space(
                node, channels, fixed_because=f"comes from {op}, which the channel analysis does not understand"
            )
        )

    def visit_output(self, node: fx.Node) -> None:
        for producer in node.all_input_nodes:
            if producer.name not in self.maps:
                continue
            out_map = self.maps[producer.name]
            self.fix(out_map, "reaches the model output")
            if self.prune_classifier:
                continue
            for space in {self.spaces[self.slot_space[s]] for s in out_map}:
                layer_node = self.view.nodes[space.node]["node"]
                if (
                    layer_node.op == "call_module"
                    and ops.layer_type(self.gm.get_submodule(layer_node.target)) in ops.CONV_TYPES + ops.LINEAR_TYPES
                ):
                    self.fix(
                        self.maps.get(layer_node.args[0].name, []),
                        f"input of the classifier {layer_node.target!r} (prune_classifier=True prunes it)",
                    )

    # helpers
    def channels(self, node: fx.Node) -> int | None:
        shape = self.view.nodes[node.name]["shape"]
        return shape[1] if isinstance(shape, tuple) and len(shape) >= 2 else None

    def only_mapped_input(self, node: fx.Node) -> fx.Node | None:
        mapped = [n for n in node.all_input_nodes if n.name in self.maps]
        return mapped[0] if len(mapped) == 1 else None

    def cannot_shrink_reason(self, node: fx.Node) -> str | None:
        if self.calls[node.target] > 1:
            return f"{node.target!r} is called from {self.calls[node.target]} places"
        if node.target in self.sharing:
            return f"{node.target!r} shares a parameter with another module"
        return None

    def describe(self, node: fx.Node) -> str:
        return ops.describe(node, module_of(self.gm, node))

    def finish(self) -> ChannelAnalysis:
        fixed: dict[int, set[str]] = defaultdict(set)
        for slot, reasons in self.fixed.items():
            fixed[self.find(slot)].update(reasons)
        blocked: dict[int, set[str]] = defaultdict(set)
        for slot, names in self.blocked.items():
            blocked[self.find(slot)].update(names)
        links = nx.Graph()
        links.add_nodes_from(range(len(self.spaces)))
        links.add_edges_from(
            (self.slot_space[slot], self.slot_space[self.find(slot)]) for slot in range(len(self.parent))
        )
        groups = []
        for component in sorted(nx.connected_components(links), key=min):
            spaces = tuple(self.spaces[i] for i in sorted(component))
            layers = tuple(s.layer for s in spaces if s.prunable)
            if not layers:
                continue
            channels = tuple(dict.fromkeys(self.find(slot) for s in spaces for slot in s.slots))
            groups.append(
                ChannelGroup(
                    len(groups),
                    layers,
                    spaces,
                    channels,
                    {c: tuple(sorted(fixed[c])) for c in channels if fixed.get(c)},
                    {c: tuple(sorted(blocked[c])) for c in channels if blocked.get(c)},
                )
            )
        return ChannelAnalysis(self.spaces, self.maps, groups, self.activations, self.parent)


_UNKNOWN = object()


def _arg(node: fx.Node, position: int, keyword: str, default: object) -> object:
    if len(node.args) > position:
        return node.args[position]
    return node.kwargs.get(keyword, default)
