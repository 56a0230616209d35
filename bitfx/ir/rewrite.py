"""What passes need to read and rewrite an fx graph: the module behind a node, a node's only
user, call counts, shared parameters, swapping a module at a qualified name, free attribute
names, and the one vocabulary of activations and pooling functions.

Activations come in three nested kinds, each for the question a rewrite asks:

- `is_activation`: an element-wise nonlinearity (ReLU, ReLU6, GELU, sigmoid, …). Each output
  element depends on one input element only, so channels pass through it unchanged; channel
  pruning measures feature-map ranks there.
- `is_rectifier`: ReLU or ReLU6, max(x, 0) possibly clipped above. The output is ≥ 0 and
  exactly 0 for every x ≤ 0, so sign() of it is +1 everywhere: a binarized input after it
  carries no information.
- `is_relu`: exactly max(x, 0). Only this one folds into a symmetric quantizer (zero point 0),
  because round(max(x, 0) / s) = max(round(x / s), 0); ReLU6's upper clip does not fold.

`is_activation` and `is_rectifier` accept subclasses of the modules they list; `is_relu` wants
`nn.ReLU` itself, since a fold relies on the exact math and a subclass may change `forward`.
Every listed activation maps x ≥ 0 to a value ≥ 0 (`bitfx.ir.value_range` relies on it).
"""

from __future__ import annotations

from collections import Counter, defaultdict

import torch
import torch.nn.functional as F
from torch import fx, nn

ACTIVATION_MODULES: tuple[type[nn.Module], ...] = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.ELU,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.Hardtanh,
    nn.Sigmoid,
    nn.Tanh,
)
ACTIVATION_FUNCTIONS = frozenset(
    {
        torch.relu,
        F.relu,
        F.relu6,
        F.leaky_relu,
        F.elu,
        F.gelu,
        F.silu,
        F.mish,
        F.hardswish,
        F.hardsigmoid,
        F.hardtanh,
        torch.sigmoid,
        torch.tanh,
        F.sigmoid,
        F.tanh,
    }
)
ACTIVATION_METHODS = frozenset({"relu", "relu_", "sigmoid", "sigmoid_", "tanh", "tanh_"})
# Pooling functions: each output element is a max or an average of one channel's input elements.
POOLING_FUNCTIONS = frozenset(
    {
        F.max_pool1d,
        F.max_pool2d,
        F.max_pool3d,
        F.avg_pool1d,
        F.avg_pool2d,
        F.avg_pool3d,
        F.adaptive_avg_pool1d,
        F.adaptive_avg_pool2d,
        F.adaptive_avg_pool3d,
        F.adaptive_max_pool1d,
        F.adaptive_max_pool2d,
        F.adaptive_max_pool3d,
    }
)

RECTIFIER_MODULES: tuple[type[nn.Module], ...] = (nn.ReLU, nn.ReLU6)
RECTIFIER_FUNCTIONS = frozenset({F.relu, torch.relu, F.relu6})
RELU_FUNCTIONS = frozenset({F.relu, torch.relu})
RELU_METHODS = frozenset({"relu"})


def module_of(gm: fx.GraphModule, node: fx.Node) -> nn.Module | None:
    """The module a `call_module` node calls; None for any other node."""
    return gm.get_submodule(node.target) if node.op == "call_module" else None


def _matches(
    gm: fx.GraphModule, node: fx.Node, modules: tuple[type, ...], functions: frozenset, methods: frozenset
) -> bool:
    if node.op == "call_module":
        return isinstance(gm.get_submodule(node.target), modules)
    if node.op == "call_function":
        return node.target in functions
    return node.op == "call_method" and node.target in methods


def is_depthwise(module: nn.Module) -> bool:
    """True for a Conv2d with one group per input channel (more than one channel)."""
    return isinstance(module, nn.Conv2d) and module.groups == module.in_channels > 1


def is_activation(gm: fx.GraphModule, node: fx.Node) -> bool:
    """True for an element-wise nonlinearity (module, function or method)."""
    return _matches(gm, node, ACTIVATION_MODULES, ACTIVATION_FUNCTIONS, ACTIVATION_METHODS)


def is_rectifier(gm: fx.GraphModule, node: fx.Node) -> bool:
    """True for ReLU or ReLU6: an activation whose output is ≥ 0 and 0 wherever its input is ≤ 0."""
    return _matches(gm, node, RECTIFIER_MODULES, RECTIFIER_FUNCTIONS, RELU_METHODS)


def is_relu(gm: fx.GraphModule, node: fx.Node) -> bool:
    """True for exactly max(x, 0) (module, function or method), the rectifier that folds into a quantizer."""
    if node.op == "call_module":
        return type(gm.get_submodule(node.target)) is nn.ReLU
    return _matches(gm, node, (), RELU_FUNCTIONS, RELU_METHODS)


# The methods in which torch.nn layers do their arithmetic: a subclass that overrides one may compute something else.
_COMPUTING_METHODS = ("forward", "_conv_forward")


def overridden_methods(module: nn.Module, cls: type[nn.Module]) -> list[str]:
    """The arithmetic methods of `cls` (forward, a conv's `_conv_forward`) that `module`'s class overrides."""
    return [
        name
        for name in _COMPUTING_METHODS
        if hasattr(cls, name) and getattr(type(module), name) is not getattr(cls, name)
    ]


def computes_as(module: nn.Module, cls: type[nn.Module] | tuple[type[nn.Module], ...]) -> bool:
    """True when `module` is an instance of `cls` (a subclass defined anywhere included) that computes
    what `cls` computes: its class overrides none of the methods that do the arithmetic. A pass may then
    rewrite it like the torch.nn layer itself."""
    classes = cls if isinstance(cls, tuple) else (cls,)
    return any(isinstance(module, c) and not overridden_methods(module, c) for c in classes)


def only_user(node: fx.Node) -> fx.Node | None:
    """The single node that reads `node`'s output; None when it has no user or several."""
    return next(iter(node.users)) if len(node.users) == 1 else None


def call_counts(gm: fx.GraphModule) -> Counter[str]:
    """How many `call_module` nodes call each module (by qualified name): a module called from
    several places cannot be rewritten for one of them alone."""
    return Counter(node.target for node in gm.graph.nodes if node.op == "call_module")


def modules_sharing_parameters(gm: fx.GraphModule) -> set[str]:
    """Qualified names of modules that own a parameter together with another module name (the same
    module registered twice included): changing one would change the other."""
    owners: dict[int, set[str]] = defaultdict(set)
    for name, module in gm.named_modules(remove_duplicate=False):
        for parameter in module.parameters(recurse=False):
            owners[id(parameter)].add(name)
    return {name for names in owners.values() if len(names) > 1 for name in names}


def replace_module(gm: fx.GraphModule, target: str, module: nn.Module) -> None:
    """Put `module` at the qualified name `target` (`layer1.0.conv1`); the nodes calling it stay."""
    parent, _, name = target.rpartition(".")
    setattr(gm.get_submodule(parent), name, module)


def free_name(gm: fx.GraphModule, base: str) -> str:
    """`base`, or `base_1`, `base_2`, …: the first that is not an attribute of `gm`."""
    name, index = base, 1
    while hasattr(gm, name):
        name, index = f"{base}_{index}", index + 1
    return name


WEIGHT_LAYER_MODULES: tuple[type[nn.Module], ...] = (
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
    nn.Linear,
)
WEIGHT_LAYER_FUNCTIONS = frozenset(
    {
        torch.conv1d,
        torch.conv2d,
        torch.conv3d,
        torch.conv_transpose1d,
        torch.conv_transpose2d,
        torch.conv_transpose3d,
        F.conv1d,
        F.conv2d,
        F.conv3d,
        F.conv_transpose1d,
        F.conv_transpose2d,
        F.conv_transpose3d,
        F.linear,
    }
)


def weight_layers(gm: fx.GraphModule) -> dict[str, str]:
    """Every conv/linear computation in `gm`, by the name a pass reports it under, with what it is:
    a module call by its qualified name ("Conv1d"), a functional call by its node name ("functional
    conv2d": a weight computed at run time, or a layer defined outside torch.nn that traced into it).
    A pass that rewrites some kinds reports the others it leaves, so none is left silently."""
    found = {}
    for node in gm.graph.nodes:
        module = module_of(gm, node)
        if isinstance(module, WEIGHT_LAYER_MODULES):
            found.setdefault(str(node.target), type(module).__name__)
        elif node.op == "call_function" and node.target in WEIGHT_LAYER_FUNCTIONS:
            found[node.name] = f"functional {node.target.__name__}"
    return found
