"""`FuseBN`: fold eval-mode BatchNorm into the convolution or linear layer before it.

With s = γ / √(σ² + ε) per output channel (γ = 1, β = 0 when the BN is not affine):

    W' = W · s    (along the output-channel axis)
    b' = (b − μ) · s + β

For a transposed convolution the weight is (C_in, C_out/groups, k…), so the output-channel
axis is dim 1 within each group. The folded layer equals conv → BN in eval mode (running
statistics); after folding, training no longer normalises by batch statistics.

Both sides may come in the form torch.fx traces a layer defined outside torch.nn into: a
BatchNorm subclass that also applies its activation traces into `F.batch_norm(x, running_mean,
running_var, weight, bias, training=False, …)` on the module's own buffers, and a conv subclass
into `F.conv2d(x, weight, bias, …)` on its own parameters; both fold like the modules. A subclass
kept whole (a leaf) folds when it computes what its torch.nn base computes. A conv whose weight is
recomputed at run time (weight standardisation: the weight goes through a normalisation first) is
reported in `skipped`, and so is every BatchNorm that could not be folded, with the reason.

A binary layer (`BinaryConv2d`, `BinaryLinear`) computes y = a ⊙ (sign(W) * sign(x)) + b with a
per-channel scale a. Its latent weight cannot absorb s (sign(s·W) ≠ s·sign(W) when s < 0), so
the fold goes to its output: a' = a·s (the layer's `output_scale`), b' = (b − μ)·s + β, exact in
float. A channel with s ≤ 0 is reported under `warnings`: with s < 0 the channel's output
decreases in the popcount, so the sign taken by the next binary layer becomes a flipped
threshold (the packed runtime fuses it as such); with s = 0 the channel's output is the
constant b', so every bit the next layer reads from it is the same.
"""

from __future__ import annotations

import inspect
from collections import Counter
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.conv import _ConvNd

from bitfx.ir.binary import BinaryConv2d, BinaryLayer, BinaryLinear
from bitfx.ir.rewrite import call_counts, module_of, modules_sharing_parameters, overridden_methods
from bitfx.ir.shapes import node_shape
from bitfx.passes.core.base import Pass, PassContext, PassResult
from bitfx.passes.core.registry import register_pass

# layer type → the BatchNorm type whose channels are its output channels
_FOLDABLE: tuple[tuple[type[nn.Module], type[nn.Module]], ...] = (
    (nn.Conv1d, nn.BatchNorm1d),
    (nn.Conv2d, nn.BatchNorm2d),
    (nn.Conv3d, nn.BatchNorm3d),
    (nn.ConvTranspose1d, nn.BatchNorm1d),
    (nn.ConvTranspose2d, nn.BatchNorm2d),
    (nn.ConvTranspose3d, nn.BatchNorm3d),
    (nn.Linear, nn.BatchNorm1d),
)
# binary layer type (subclasses included) → the BatchNorm type it can absorb at its output
_BINARY_FOLDABLE: tuple[tuple[type[BinaryLayer], type[nn.Module]], ...] = (
    (BinaryConv2d, nn.BatchNorm2d),
    (BinaryLinear, nn.BatchNorm1d),
)


@register_pass
@dataclass
class FuseBN(Pass):
    """Fold every BatchNorm that directly follows a conv/linear (float or binary) into that layer."""

    name = "fuse_bn"
    preserves_outputs = True

    def run(self, gm: fx.GraphModule, context: PassContext) -> PassResult:
        calls = call_counts(gm)
        sharing = modules_sharing_parameters(gm)
        fused, skipped, warnings = [], {}, {}
        for bn_node in list(gm.graph.nodes):
            if not isinstance(module_of(gm, bn_node), _BatchNorm):
                continue
            layer_node = bn_node.args[0]
            reason = _why_not_foldable(gm, layer_node, bn_node, calls, sharing)
            if reason:
                skipped[bn_node.target] = reason
                continue
            layer, bn = _folding_layer(gm, layer_node), gm.get_submodule(bn_node.target)
            if isinstance(layer, BinaryLayer):
                warning = _fold_binary(layer, bn)
                if warning:
                    warnings[layer_node.target] = warning
            else:
                _fold_into_node(gm, layer_node, bn)
            bn_node.replace_all_uses_with(layer_node)
            gm.graph.erase_node(bn_node)
            fused.append(f"{_layer_name(layer_node)}+{bn_node.target}")
        functional_fused, functional_skipped = _fold_functional_batchnorms(gm, calls, sharing)
        fused += functional_fused
        skipped.update(functional_skipped)
        skipped.update(_weight_standardised_layers(gm))
        if fused:
            gm.graph.eliminate_dead_code()
            gm.delete_all_unused_submodules()
            gm.recompile()
        stats = {"fused": len(fused), "skipped": skipped, "pairs": fused}
        if warnings:
            stats["warnings"] = warnings
        return PassResult(gm, bool(fused), stats)


def _why_not_foldable(
    gm: fx.GraphModule, layer_node: object, bn_node: fx.Node, calls: Counter, sharing: set[str]
) -> str | None:
    """None when `layer_node → bn_node` can be folded, otherwise the reason it cannot."""
    bn = gm.get_submodule(bn_node.target)
    if overridden_methods(bn, _BatchNorm):
        return (
            f"{type(bn).__name__} overrides {', '.join(overridden_methods(bn, _BatchNorm))}: capture it without "
            "leaf_modules so that its batch norm traces"
        )
    layer = _folding_layer(gm, layer_node)
    if isinstance(layer, str):
        return layer
    kind = _LAYER_FUNCTIONS.get(layer_node.target, type(layer))
    float_pair = any(issubclass(kind, layer_type) and isinstance(bn, bn_type) for layer_type, bn_type in _FOLDABLE)
    binary_pair = any(isinstance(layer, layer_type) and type(bn) is bn_type for layer_type, bn_type in _BINARY_FOLDABLE)
    if not (float_pair or binary_pair):
        return f"input is a {kind.__name__}, which cannot absorb a {type(bn).__name__}"
    if len(layer_node.users) > 1:
        others = ", ".join(u.name for u in layer_node.users if u is not bn_node)
        return f"the output of {layer_node.target} has other users ({others})"
    if reason := _why_not_called_alone(gm, layer_node, calls):
        return reason
    name = _layer_name(layer_node)
    if name in sharing:
        return f"{name} shares a parameter with another module"
    if bn.running_mean is None or bn.running_var is None:
        return "the BatchNorm keeps no running statistics (track_running_stats=False)"
    if issubclass(kind, (nn.Linear, BinaryLinear)) and len(node_shape(layer_node) or ()) != 2:
        return "BatchNorm1d after a Linear with a non-2D output normalises another axis"
    return None


def _bn_affine(bn: _BatchNorm | _Statistics) -> tuple[torch.Tensor, torch.Tensor]:
    """(s, t) in float64 with bn(y) = s·y + t per channel in eval mode."""
    with torch.no_grad():
        scale = bn.running_var.double().add(bn.eps).rsqrt()
        if bn.affine:
            scale = scale * bn.weight.double()
        shift = -bn.running_mean.double() * scale
        if bn.affine:
            shift = shift + bn.bias.double()
    return scale, shift


def _fold_binary(layer: BinaryLayer, bn: _BatchNorm) -> str | None:
    """Fold `bn` into the binary layer's output scale and bias; a warning when a channel's scale is ≤ 0."""
    scale, shift = _bn_affine(bn)
    layer.fold_output_affine(scale, shift)
    deployed_scale = layer.deploy_tensors()[1]
    negative = (deployed_scale < 0).nonzero().flatten().tolist()
    zero = (deployed_scale == 0).nonzero().flatten().tolist()
    notes = []
    if negative:
        notes.append(
            f"channels {negative} have a negative scale: their output decreases with the popcount, "
            "so the next sign() is a flipped threshold"
        )
    if zero:
        notes.append(f"channels {zero} have a zero scale: their output is the constant bias, so its sign is fixed")
    return "; ".join(notes) or None


def _fold(layer: nn.Module, bn: _BatchNorm | _Statistics) -> None:
    """Fold `bn`'s eval-mode affine map into `layer`'s weight and bias, in place."""
    scale, shift = _bn_affine(bn)
    with torch.no_grad():
        weight = layer.weight.double()
        if isinstance(layer, _ConvNd) and layer.transposed:
            groups = layer.groups
            grouped = weight.reshape(groups, weight.shape[0] // groups, weight.shape[1], *weight.shape[2:])
            view = (groups, 1, weight.shape[1]) + (1,) * (weight.dim() - 2)
            weight = (grouped * scale.reshape(view)).reshape(weight.shape)
        else:
            weight = weight * scale.reshape((-1,) + (1,) * (weight.dim() - 1))
        bias = layer.bias.double() if layer.bias is not None else torch.zeros_like(scale)
        layer.weight.copy_(weight.to(layer.weight.dtype))
        new_bias = (bias * scale + shift).to(layer.weight.dtype)
        if layer.bias is None:
            layer.bias = nn.Parameter(new_bias)
        else:
            layer.bias.copy_(new_bias)


# ---- layers and batch norms in traced (functional) form ----

# traced conv/linear call (weight, then bias, after the input) → the torch.nn layer that computes the same
_LAYER_FUNCTIONS: dict[object, type[nn.Module]] = {
    torch.conv1d: nn.Conv1d,
    torch.conv2d: nn.Conv2d,
    torch.conv3d: nn.Conv3d,
    F.linear: nn.Linear,
}
_BATCH_NORM_SIGNATURE = inspect.signature(F.batch_norm)


@dataclass
class _Statistics:
    """The eval-mode affine map of an `F.batch_norm` call, with the attributes `_fold` reads from a BatchNorm."""

    running_mean: torch.Tensor
    running_var: torch.Tensor
    weight: torch.Tensor
    bias: torch.Tensor
    eps: float
    affine: bool = True


def _layer_name(node: fx.Node) -> str:
    """The module a conv/linear node computes with: its target, or for a traced call the owner of its weight."""
    if node.op == "call_function" and node.target in _LAYER_FUNCTIONS:
        weight = _argument(node, 1, "weight")
        if isinstance(weight, fx.Node) and weight.op == "get_attr":
            return weight.target.rpartition(".")[0]
    return str(node.target)


def _argument(node: fx.Node, index: int, name: str) -> object:
    return node.args[index] if len(node.args) > index else node.kwargs.get(name)


def _folding_layer(gm: fx.GraphModule, node: object) -> nn.Module | str:
    """The module holding the weight and bias a BatchNorm after `node` folds into, or why there is none.

    `node` calls a conv/linear module, or is a traced call (`F.conv2d`, `F.linear`) on a parameter
    named `weight` and no bias or its sibling `bias` (how a conv subclass defined outside torch.nn
    traces; the graph then holds the parameters in a plain module)."""
    if not isinstance(node, fx.Node) or node.op not in ("call_module", "call_function"):
        return "input is not a conv/linear module"
    if node.op == "call_module":
        layer = gm.get_submodule(node.target)
        bases = [layer_type for layer_type, _ in _FOLDABLE if isinstance(layer, layer_type)]
        if bases and overridden_methods(layer, bases[0]):
            return (
                f"{type(layer).__name__} overrides {', '.join(overridden_methods(layer, bases[0]))}: capture it "
                "without leaf_modules so that its computation traces"
            )
        return layer
    if node.target not in _LAYER_FUNCTIONS:
        return "input is not a conv/linear module"
    weight = _argument(node, 1, "weight")
    if not isinstance(weight, fx.Node) or weight.op != "get_attr":
        return f"the weight of {node.name} is recomputed at every call (weight standardisation): nothing to fold into"
    owner_name, _, attr = weight.target.rpartition(".")
    owner = gm.get_submodule(owner_name)
    if attr != "weight":
        return f"{node.name} computes with {weight.target}, which is not a conv/linear layer's own weight"
    bias = _argument(node, 2, "bias")
    if bias is None and getattr(owner, "bias", None) is None:
        return owner
    if not (isinstance(bias, fx.Node) and bias.op == "get_attr" and bias.target == f"{owner_name}.bias"):
        return f"{node.name} adds a bias other than {owner_name}.bias"
    return owner


def _owns_parameters_alone(gm: fx.GraphModule, node: fx.Node) -> bool:
    """True when the parameters a traced conv/linear call reads are read by no other node."""
    name = _layer_name(node)
    readers = [
        user
        for attr in gm.graph.nodes
        if attr.op == "get_attr" and attr.target.rpartition(".")[0] == name
        for user in attr.users
    ]
    return all(user is node for user in readers)


def _fold_into_node(gm: fx.GraphModule, layer_node: fx.Node, bn: _BatchNorm | _Statistics) -> None:
    """Fold `bn` into the layer `layer_node` computes with; a traced call without a bias gets the new one."""
    layer = _folding_layer(gm, layer_node)
    had_bias = getattr(layer, "bias", None) is not None
    if not had_bias:
        layer.bias = None
    _fold(layer, bn)
    if layer_node.op == "call_function" and not had_bias:
        with gm.graph.inserting_before(layer_node):
            bias = gm.graph.get_attr(f"{_layer_name(layer_node)}.bias")
        if len(layer_node.args) > 2:
            layer_node.update_arg(2, bias)
        else:
            layer_node.update_kwarg("bias", bias)


def _functional_statistics(gm: fx.GraphModule, node: fx.Node) -> _Statistics | str:
    """The running statistics of an `F.batch_norm` call, or why it does not normalise by fixed statistics."""
    bound = _BATCH_NORM_SIGNATURE.bind(*node.args, **node.kwargs)
    bound.apply_defaults()
    arguments = bound.arguments
    if arguments["training"] is not False:
        return (
            "F.batch_norm normalises by batch statistics (training=True): capture the model in eval() so that "
            "it traces with training=False"
        )
    tensors = {}
    for name in ("running_mean", "running_var", "weight", "bias", "eps"):
        value = arguments[name]
        if isinstance(value, fx.Node):
            if value.op != "get_attr":
                return f"its {name} is computed at run time, not a stored tensor"
            value = gm.get_parameter(value.target) if name in ("weight", "bias") else gm.get_buffer(value.target)
        tensors[name] = value
    if tensors["running_mean"] is None or tensors["running_var"] is None:
        return "F.batch_norm without running statistics normalises by batch statistics"
    if not isinstance(tensors["eps"], float):
        return "its eps is not a number"
    mean = tensors["running_mean"]
    weight = torch.ones_like(mean) if tensors["weight"] is None else tensors["weight"]
    bias = torch.zeros_like(mean) if tensors["bias"] is None else tensors["bias"]
    return _Statistics(mean, tensors["running_var"], weight, bias, tensors["eps"])


def _fold_functional_batchnorms(
    gm: fx.GraphModule, calls: Counter, sharing: set[str]
) -> tuple[list[str], dict[str, str]]:
    """Fold every eval-mode `F.batch_norm` call that directly follows a conv/linear; the pairs fused and,
    by the call's name, why the others were not."""
    fused, skipped = [], {}
    on_activations = _depending_on_inputs(gm)
    for node in list(gm.graph.nodes):
        if node.op != "call_function" or node.target is not F.batch_norm or node not in on_activations:
            continue
        name = _batch_norm_name(node)
        statistics = _functional_statistics(gm, node)
        layer_node = node.args[0] if node.args else node.kwargs.get("input")
        reason = statistics if isinstance(statistics, str) else _why_not_foldable_call(gm, layer_node, calls)
        if reason is None and _layer_name(layer_node) in sharing:
            reason = f"{_layer_name(layer_node)} shares a parameter with another module"
        if reason:
            skipped[name] = reason
            continue
        _fold_into_node(gm, layer_node, statistics)
        node.replace_all_uses_with(layer_node)
        gm.graph.erase_node(node)
        fused.append(f"{_layer_name(layer_node)}+{name}")
    return fused, skipped


def _depending_on_inputs(gm: fx.GraphModule) -> set[fx.Node]:
    """The nodes whose value depends on a model input (activations, as opposed to computations on weights)."""
    found: set[fx.Node] = set()
    for node in gm.graph.nodes:
        if node.op == "placeholder" or any(source in found for source in node.all_input_nodes):
            found.add(node)
    return found


def _batch_norm_name(node: fx.Node) -> str:
    """The module an `F.batch_norm` call normalises with (the owner of its running mean), else the call's name."""
    mean = node.args[1] if len(node.args) > 1 else node.kwargs.get("running_mean")
    if isinstance(mean, fx.Node) and mean.op == "get_attr":
        return mean.target.rpartition(".")[0]
    return node.name


def _why_not_called_alone(gm: fx.GraphModule, layer_node: fx.Node, calls: Counter) -> str | None:
    """Why a fold would change more than `layer_node`: its layer is called from several places, or the
    parameters of its functional call are read by other nodes too; None when neither."""
    name = _layer_name(layer_node)
    if calls[name] > 1:
        return f"{name} is called from {calls[name]} places"
    if layer_node.op == "call_function" and not _owns_parameters_alone(gm, layer_node):
        return f"the parameters of {name} are read by other nodes too"
    return None


def _why_not_foldable_call(gm: fx.GraphModule, layer_node: object, calls: Counter) -> str | None:
    """None when the conv/linear `layer_node` can absorb an `F.batch_norm` call of its output, else the reason."""
    layer = _folding_layer(gm, layer_node)
    if isinstance(layer, str):
        return layer
    kind = _LAYER_FUNCTIONS.get(layer_node.target, type(layer))
    if not issubclass(kind, (_ConvNd, nn.Linear)) or (isinstance(layer, _ConvNd) and layer.transposed):
        return f"input is a {kind.__name__}, which cannot absorb a batch norm of its output"
    if len(layer_node.users) > 1:
        return f"the output of {_layer_name(layer_node)} has other users"
    if reason := _why_not_called_alone(gm, layer_node, calls):
        return reason
    if issubclass(kind, nn.Linear) and len(node_shape(layer_node) or ()) != 2:
        return "a batch norm after a Linear with a non-2D output normalises another axis"
    return None


def _weight_standardised_layers(gm: fx.GraphModule) -> dict[str, str]:
    """Conv/linear calls whose weight is recomputed from a parameter at run time (weight standardisation),
    by the module owning that parameter: they are left as they are and reported."""
    found = {}
    for node in gm.graph.nodes:
        weight = _argument(node, 1, "weight") if node.op == "call_function" else None
        if node.target not in _LAYER_FUNCTIONS or not isinstance(weight, fx.Node) or weight.op == "get_attr":
            continue
        path, source = [], weight
        while isinstance(source, fx.Node) and source.op != "get_attr" and len(path) < 8:
            path.append(source.target if isinstance(source.target, str) else source.target.__name__)
            source = source.args[0] if source.args else None
        if isinstance(source, fx.Node) and source.op == "get_attr":
            found[source.target.rpartition(".")[0]] = (
                f"weight-standardised layer: its weight {source.target} goes through {' → '.join(reversed(path))} "
                "at every call, so no batch norm can be folded into it; left as it is"
            )
    return found
