"""`BinarizeConvs` (`binarize`): replace Conv2d / Linear layers by trainable 1-bit layers.

Which layers: the layer selection (`layers`, default: every Conv2d and Linear). A layer the
selection does not name explicitly (by type, regex or name) also stays float when it is the
first conv (`keep_first`), the last weight layer, the classifier or output conv (`keep_last`),
a depthwise conv (`keep_depthwise`: one input channel per filter binarizes badly and packs
into a whole 64-bit word per weight bit), or a 1×1 downsample conv — stride > 1, or fed
straight by an average pool (`keep_downsample`; default: the scheme's, on for `bireal`, whose
network keeps them real). A selection value `True` uses `scheme`; a string
names another scheme for that layer. Layers that cannot be binarized (called from several
places, padding given as a string or not zero padding, a Linear on a non-2-D input) stay
float too. The report lists every float layer with the reason (`skipped`).

In front of a layer that binarizes its input, a ReLU or ReLU6 (a rectifier in
`bitfx.ir.rewrite`'s terms; possibly behind single-input ops that keep signs, such as pooling,
interpolation, flattening or dropout) would make every
sign +1, so the scheme's replacement takes its place: nothing (removed), Hardtanh or RPReLU
(`activations="keep"` leaves ReLUs alone). A layer whose input is still never negative after
that (`bitfx.ir.value_range`: a ReLU, ReLU6 or sigmoid gate reached through concatenation,
split, the sum of rectified maps, a gated product, …) and whose sign has a fixed threshold at 0
stays float with the reason: sign() of its input would be +1 everywhere and its output would
not depend on its input. `ensures` fails the pass if such a binary layer is left.

`weights="real"` binarizes only the activations (ReActNet's first step): each selected layer
stays a float Conv2d / Linear and gets the scheme's activation quantizer in front of it as a
`BinaryInput` module (ReLUs in front are replaced as above). A later `binarize` with the default
`weights="binary"` makes such a layer binary with the weights it has reached and moves the
`BinaryInput`'s quantizer into it (learned thresholds carried over, whatever the new scheme's
activation quantizer); the shortcuts the first step added stay, and no second one is added
around that layer. The ONNX lowerings refuse a graph that still holds a `BinaryInput`: a float
layer cannot run as a packed binary op.

`shortcuts=True` adds Bi-Real's real-valued shortcut around each binarized conv whose
output (after the BatchNorm that directly follows it, if any) has the shape of its input:
y = conv(x) + x. Default: the scheme's (on for `bireal`, as in the Bi-Real network; off for
the others).

The rewrite does not preserve outputs: a binarized model must be trained (`bitfx.train`).
"""

from __future__ import annotations

import operator
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal

import torch.nn.functional as F
from torch import fx, nn

from bitfx.errors import PassConfigError, PassError
from bitfx.ir.binary import (
    SCALE_NAMES,
    BinaryConv2d,
    BinaryInput,
    BinaryLayer,
    BinaryScheme,
    get_scheme,
)
from bitfx.ir.binary.ops import PAD_VALUES
from bitfx.ir.protocol import deployed_input
from bitfx.ir.rewrite import (
    call_counts,
    computes_as,
    free_name,
    is_depthwise,
    is_rectifier,
    module_of,
    only_user,
    replace_module,
    weight_layers,
)
from bitfx.ir.shapes import node_shape
from bitfx.ir.value_range import describe, never_negative, non_negative_sources
from bitfx.passes.core.base import Pass, PassContext, PassResult
from bitfx.passes.core.ordering import BINARY_LAYERS
from bitfx.passes.core.registry import register_pass
from bitfx.passes.core.selection import Decision, LayerSelection


@register_pass
@dataclass
class BinarizeConvs(Pass):
    """Replace Conv2d/Linear layers by 1-bit layers of a scheme (bnn, xnor, bireal, reactnet, irnet, dorefa_w1)."""

    name = "binarize"
    preserves_outputs = False
    creates = (BINARY_LAYERS,)

    scheme: str = "xnor"
    layers: LayerSelection = field(default_factory=lambda: LayerSelection(default=True))
    keep_first: bool = True
    keep_last: bool = True
    keep_depthwise: bool = True
    scale: Literal[None, "none", "mean", "mean_detached", "layer_mean", "pow2", "learned"] = None
    pad_value: int | None = None
    activations: Literal["scheme", "keep"] = "scheme"
    shortcuts: bool | None = None
    keep_downsample: bool | None = None
    weights: Literal["binary", "real"] = "binary"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self._scheme(self.scheme, "scheme").activation is None and self.weights == "real":
            raise PassConfigError(
                f"pass 'binarize': scheme {self.scheme!r} keeps activations real (W1A32), so weights='real' "
                "would binarize nothing"
            )
        if self.weights not in ("binary", "real"):
            raise PassConfigError(f"pass 'binarize': weights={self.weights!r} must be 'binary' or 'real'")
        if self.scale is not None and self.scale not in SCALE_NAMES:
            raise PassConfigError(f"pass 'binarize': scale={self.scale!r} is not one of {', '.join(SCALE_NAMES)}")
        if self.pad_value is not None and self.pad_value not in PAD_VALUES:
            raise PassConfigError(
                f"pass 'binarize': pad_value={self.pad_value!r} must be -1, 0 or 1 (0 pads like PyTorch, "
                "±1 is 'one padding')"
            )

    def run(self, gm: fx.GraphModule, context: PassContext) -> PassResult:
        every_layer = weight_layers(gm)
        weight_nodes = self.layers.select(gm, (nn.Conv2d, nn.Linear))
        weight_nodes = [
            (node, module, decision)
            for node, module, decision in weight_nodes
            if isinstance(module, (nn.Conv2d, nn.Linear))
        ]
        calls = call_counts(gm)
        first_conv = next((node for node, module, _ in weight_nodes if isinstance(module, nn.Conv2d)), None)
        originals: dict[fx.Node, nn.Module] = {}
        last_layer = weight_nodes[-1][0] if weight_nodes else None

        binarized: dict[str, str] = {}
        skipped: dict[str, str] = {}
        schemes: dict[fx.Node, BinaryScheme] = {}
        carried: list[fx.Node] = []
        for node, module, decision in weight_nodes:
            scheme = self._choose(node, module, decision, first_conv, last_layer, calls)
            if isinstance(scheme, str):
                skipped[node.target] = scheme
                continue
            if self.weights == "real":
                if scheme.activation is None:
                    skipped[node.target] = f"scheme {scheme.name!r} keeps activations real: weights='real' does nothing"
                    continue
                if isinstance(module_of(gm, node.args[0]), BinaryInput):
                    skipped[node.target] = "its activations are binary already (a BinaryInput feeds it)"
                    continue
            else:
                originals[node] = module
                earlier = _carried_quantizer(gm, node)
                carried += [node] if earlier is not None else []
                replace_module(gm, node.target, scheme.binary_layer(module, self.scale, self.pad_value, earlier))
            binarized[node.target] = scheme.name
            schemes[node] = scheme

        activations = {} if self.activations == "keep" else self._replace_relus(gm, schemes, calls)
        if self.weights == "real":
            signs = {_insert_binary_input(gm, node, scheme): node for node, scheme in schemes.items()}
            for sign, reason in _never_negative_inputs(gm, list(signs)).items():
                sign.replace_all_uses_with(sign.args[0])
                gm.graph.erase_node(sign)
                del binarized[signs[sign].target], schemes[signs[sign]]
                skipped[signs[sign].target] = reason
        for node, reason in _never_negative_inputs(gm, [n for n in schemes if n in originals]).items():
            replace_module(gm, node.target, originals[node])
            del binarized[node.target], schemes[node]
            skipped[node.target] = reason
        for name, kind in every_layer.items():
            if name not in binarized and name not in skipped:
                skipped[name] = f"a {kind}: binarize makes Conv2d and Linear modules binary and leaves this float"
        binary_convs = [
            node
            for node in schemes
            if isinstance(gm.get_submodule(node.target), (BinaryConv2d, nn.Conv2d)) and node not in carried
        ]
        wants_shortcuts = get_scheme(self.scheme).shortcuts if self.shortcuts is None else self.shortcuts
        shortcuts = self._add_shortcuts(gm, binary_convs) if wants_shortcuts else 0
        if binarized:
            gm.graph.eliminate_dead_code()
            gm.delete_all_unused_submodules()
            gm.recompile()
        stats: dict[str, Any] = {
            "scheme": self.scheme,
            "weights": self.weights,
            "binarized": len(binarized),
            "activations_carried_over": [node.target for node in carried if node in schemes],
            "skipped": skipped,
            "activations_replaced": activations,
            "shortcuts": shortcuts,
            "layers": binarized,
        }
        return PassResult(gm, bool(binarized), stats)

    def ensures(self, gm: fx.GraphModule) -> None:
        """No binary layer may read a never-negative input through a sign at 0 (its output would be constant)."""
        layers = [node for node in gm.graph.nodes if isinstance(module_of(gm, node), (BinaryLayer, BinaryInput))]
        degenerate = _never_negative_inputs(gm, layers)
        if degenerate:
            raise PassError(
                "binary layers whose input is never negative: "
                + "; ".join(f"{node.target}: {reason}" for node, reason in degenerate.items())
            )

    def _scheme(self, name: str, where: str) -> BinaryScheme:
        try:
            return get_scheme(name)
        except ValueError as error:
            raise PassConfigError(f"pass 'binarize': {where}: {error}") from error

    def _choose(
        self,
        node: fx.Node,
        module: nn.Module,
        decision: Decision,
        first: fx.Node | None,
        last: fx.Node | None,
        calls: Counter,
    ) -> BinaryScheme | str:
        """The scheme for this layer, or the reason it stays float."""
        if calls[node.target] > 1:
            return f"called from {calls[node.target]} places"
        if not computes_as(module, (nn.Conv2d, nn.Linear)):
            return f"{type(module).__name__} overrides forward: what it computes is not a plain conv/linear"
        if isinstance(module, nn.Conv2d) and (isinstance(module.padding, str) or module.padding_mode != "zeros"):
            return (
                f"padding={module.padding!r}, padding_mode={module.padding_mode!r}: only numeric zero padding "
                "is supported"
            )
        if isinstance(module, nn.Linear) and len(node_shape(node.args[0]) or ()) != 2:
            return "Linear on a non-2-D input"
        explicit = decision.rule != "default"
        if not explicit:
            if self.keep_first and node is first:
                return "first conv (keep_first=True)"
            if self.keep_last and node is last:
                return "last layer, the classifier or output (keep_last=True)"
            if self.keep_depthwise and is_depthwise(module):
                return "depthwise conv (keep_depthwise=True)"
            if self._keeps_downsample() and _is_downsample(node, module):
                return "1×1 downsample conv (keep_downsample=True)"
        value = decision.value
        if value is True:
            return self._scheme(self.scheme, "scheme")
        if isinstance(value, str):
            return self._scheme(value, f"layer selection ({decision.rule})")
        if value in (False, None):
            return f"not selected ({decision.rule} → {value})"
        raise PassConfigError(
            f"pass 'binarize': layer selection gives {value!r} for {node.target} ({decision.rule}); use "
            "true, false or a scheme name"
        )

    def _keeps_downsample(self) -> bool:
        return get_scheme(self.scheme).keep_downsample if self.keep_downsample is None else self.keep_downsample

    def _replace_relus(
        self, gm: fx.GraphModule, schemes: dict[fx.Node, BinaryScheme], calls: Counter
    ) -> dict[str, str]:
        """Replace each ReLU that feeds a layer binarizing its input by that layer's scheme's choice."""
        replaced: dict[str, str] = {}
        for layer_node, scheme in schemes.items():
            if scheme.activation is None:
                continue
            for relu in _relus_feeding(gm, layer_node):
                if relu.name in replaced:
                    continue
                replaced[relu.name] = f"{_replace_relu(gm, relu, scheme, calls)} (feeds binary {layer_node.target})"
        return replaced

    def _add_shortcuts(self, gm: fx.GraphModule, conv_nodes: list[fx.Node]) -> int:
        added = 0
        for node in conv_nodes:
            user = only_user(node)
            end = user if user is not None and isinstance(module_of(gm, user), nn.BatchNorm2d) else node
            source = node.args[0]
            if isinstance(module_of(gm, source), BinaryInput):  # the shortcut carries the real input, not its sign
                source = source.args[0]
            if node_shape(source) != node_shape(end) or node_shape(end) is None:
                continue
            with gm.graph.inserting_after(end):
                shortcut = gm.graph.call_function(operator.add, (end, source))
            end.replace_all_uses_with(shortcut, delete_user_cb=lambda user: user is not shortcut)
            shortcut.meta = dict(end.meta)
            added += 1
        return added


def _carried_quantizer(gm: fx.GraphModule, node: fx.Node) -> nn.Module | None:
    """The quantizer of the `BinaryInput` feeding `node` (bypassed and removed), or None when there is none."""
    source = node.args[0]
    sign = module_of(gm, source) if isinstance(source, fx.Node) else None
    if not isinstance(sign, BinaryInput):
        return None
    source.replace_all_uses_with(source.args[0], delete_user_cb=lambda user: user is node)
    if not source.users:
        gm.graph.erase_node(source)
    return sign.quantizer


def _insert_binary_input(gm: fx.GraphModule, node: fx.Node, scheme: BinaryScheme) -> fx.Node:
    """Put the scheme's activation quantizer, as a `BinaryInput`, between `node` and its input."""
    source, layer = node.args[0], gm.get_submodule(node.target)
    channels = layer.in_channels if isinstance(layer, nn.Conv2d) else layer.in_features
    target = free_name(gm, f"{node.target.replace('.', '_')}_binary_input")
    gm.add_submodule(target, BinaryInput(scheme.input_quantizer(channels)))
    with gm.graph.inserting_before(node):
        sign = gm.graph.call_module(target, (source,))
    sign.meta = dict(source.meta)
    node.replace_input_with(source, sign)
    return sign


def _is_downsample(node: fx.Node, module: nn.Module) -> bool:
    """A 1×1 conv that downsamples: strided, or fed straight by an average pool (Bi-Real's downsample)."""
    if not isinstance(module, nn.Conv2d) or module.kernel_size != (1, 1):
        return False
    if max(module.stride) > 1:
        return True
    source = node.args[0]
    if not isinstance(source, fx.Node):
        return False
    if isinstance(module_of(source.graph.owning_module, source), (nn.AvgPool2d, nn.AdaptiveAvgPool2d)):
        return True
    return source.op == "call_function" and source.target in (F.avg_pool2d, F.adaptive_avg_pool2d)


def _relus_feeding(gm: fx.GraphModule, layer_node: fx.Node) -> list[fx.Node]:
    """The ReLU nodes whose output reaches `layer_node`'s input through sign-preserving ops only."""
    found, node = [], layer_node.args[0]
    while isinstance(node, fx.Node):
        if is_rectifier(gm, node):
            found.append(node)
            break
        sources = non_negative_sources(gm, node)
        if len(sources) != 1:
            break
        node = sources[0]
    return found


def _replace_relu(gm: fx.GraphModule, relu: fx.Node, scheme: BinaryScheme, calls: Counter) -> str:
    """Swap `relu` for the scheme's replacement; returns what it became."""
    source = relu.args[0]
    if scheme.relu_replacement is None:
        relu.replace_all_uses_with(source)
        gm.graph.erase_node(relu)
        return "removed"
    shape = node_shape(relu)
    replacement = scheme.relu_replacement(shape[1] if isinstance(shape, tuple) and len(shape) > 1 else 1)
    if relu.op == "call_module" and calls[relu.target] == 1:
        replace_module(gm, relu.target, replacement)
    else:
        target = free_name(gm, f"{relu.name}_{type(replacement).__name__.lower()}")
        gm.add_submodule(target, replacement)
        with gm.graph.inserting_after(relu):
            new = gm.graph.call_module(target, (source,))
        new.meta = dict(relu.meta)
        relu.replace_all_uses_with(new)
        gm.graph.erase_node(relu)
    return type(replacement).__name__


def _never_negative_inputs(gm: fx.GraphModule, layer_nodes: list[fx.Node]) -> dict[fx.Node, str]:
    """The binary layers (or `BinaryInput`s) among `layer_nodes` whose sign at 0 sees an input that is never negative,
    with the reason."""
    values = never_negative(gm)
    found = {}
    for node in layer_nodes:
        layer = gm.get_submodule(node.target)
        source = node.args[0] if node.args else None
        if isinstance(layer, BinaryInput):
            signs, threshold = True, deployed_input(layer.quantizer)
        else:
            signs, threshold = layer.binarize_input, layer.deployed_input()
        if not signs or threshold is not None or source not in values:
            continue
        found[node] = (
            f"its input is never negative ({describe(source, values[source])}): sign() would be +1 everywhere and "
            "the output would not depend on the input, so it stays float"
        )
    return found
