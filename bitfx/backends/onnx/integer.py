"""The `integer` lowering: binary layers as the integer ops onnxruntime runs on its fast kernels.

Every binarizing layer reads its ±1 activations as uint8 codes (`integer_ops`: 1 for −1, 3 for
+1, zero point 2), made from a float input by one `Where(x < 0, 1, 3)`. What a layer writes
depends on who reads its output:

- **only binary layers that take its sign** (e.g. the first conv of a ResNet block): the
  layer is a `QLinearConv` (uint8 × int8, the kernels onnxruntime runs for int8 CNNs) whose
  requantization *is* the next sign. The float output y_c(k) = scale_c·k + bias_c (BatchNorm
  folded into scale and bias) only matters through sign(y_c(k)), and k is an integer in
  [−K, K] (K = C_in/group·kh·kw). Evaluating y_c(k) ≥ 0 with torch's float32 operations for
  every k gives the exact set of k that map to +1; for scale_c > 0 it is k ≥ t_c, for
  scale_c < 0 it is k ≤ t'_c, which is −k ≥ −t'_c: the weights of channel c are negated. The
  int32 bias −t_c and a saturating requantization then give the codes of sign(y) directly
  (exact by construction; the math is in `integer_ops`). No float tensor is written;
- **anything else** (a residual Add, a float layer, the graph output, an RSign threshold):
  the float value scale·k + bias must be exact, and k needs up to 14 bits, more than
  QLinearConv's 8-bit output holds. A group-1 conv is a channels-last im2col (`Transpose`,
  `Pad`, one `Gather` of precomputed rows) → uint8 × int8 `MatMulInteger` (int32 k, on
  onnxruntime's fast integer GEMM) → `Cast` → `Mul(scale)` → `Add(bias)` → `Transpose` back;
  a grouped conv is a uint8 × uint8 `ConvInteger` (int32 k) → `DequantizeLinear(k, scale)` →
  `Add(bias)`, as in the `int8` lowering.

Binary linear layers are `MatMulInteger` → `DequantizeLinear` → `Add`; W1A32 layers (real
activations) and everything that is not binary are written as in the `float` lowering.
`integer_sign_layers(gm)` says which layers take which form and why.
"""

from __future__ import annotations

import copy

import numpy as np
import onnx
import torch
from torch import fx

import bitfx.backends.onnx.float  # noqa: F401  (the float translation of W1A32 binary layers)
from bitfx.backends.onnx.integer_ops import TRANSLATIONS, conv_matrix, im2col_indices
from bitfx.backends.onnx.lowerings import register_lowering, torch_onnx_export
from bitfx.backends.onnx.translation import translation_table
from bitfx.ir.binary.deployed import DeployedBinaryConv2d, DeployedBinaryLinear
from bitfx.ir.deploy import deployed
from bitfx.ir.shapes import node_shape, propagate_shapes

_SIGN_CODES = torch.ops.bitfx_int.sign_codes.default
_CONV_FLOAT = torch.ops.bitfx_int.conv_float.default
_CONV_SIGN = torch.ops.bitfx_int.conv_sign.default
_CONV_MATMUL = torch.ops.bitfx_int.conv_matmul.default
_GEMM_FLOAT = torch.ops.bitfx_int.gemm_float.default


@register_lowering("integer")
def lower_integer(gm: fx.GraphModule, example_inputs: tuple[torch.Tensor, ...], dynamic_batch: bool) -> onnx.ModelProto:
    """Binary layers as QLinearConv (sign outputs) or MatMulInteger / ConvInteger (float outputs)."""
    table = {**translation_table("float"), **TRANSLATIONS}
    prepared = prepare_integer(gm, example_inputs)
    return torch_onnx_export(prepared, example_inputs, dynamic_batch, custom_translation_table=table)


def sign_thresholds(scale: torch.Tensor, bias: torch.Tensor, fan_in: int) -> tuple[np.ndarray, np.ndarray] | None:
    """(t, flip) per output channel with sign(scale·k + bias) = +1 ⇔ (−k if flip else k) ≥ t for
    every integer k in [−fan_in, fan_in], evaluated in float32 as torch computes it (NaN counts
    as +1, as in `Where(x < 0, −1, 1)`); None when some channel's sign is not monotone in k, which
    float32 rounding (monotone) rules out but the check keeps honest."""
    k = np.arange(-fan_in, fan_in + 1, dtype=np.float32)
    s = scale.detach().numpy().astype(np.float32)[:, None]
    b = bias.detach().numpy().astype(np.float32)[:, None]
    with np.errstate(invalid="ignore"):  # inf·0 is NaN, as in torch, and NaN counts as +1
        positive = ~((k[None, :] * s + b) < 0)
    flip = s[:, 0] < 0
    oriented = np.where(flip[:, None], positive[:, ::-1], positive)  # as a function of −k when flipped
    if np.any(oriented[:, 1:] < oriented[:, :-1]):
        return None
    threshold = fan_in + 1 - oriented.sum(axis=1)  # the first k' with +1, fan_in + 1 if none
    return threshold.astype(np.int64), flip


def integer_sign_layers(gm: fx.GraphModule) -> dict[str, str]:
    """For every binarizing conv of `deployed(gm)`: "sign" (written as QLinearConv) or the reason
    it keeps a float output (MatMulInteger, or ConvInteger when grouped)."""
    work = deployed(gm)
    return {
        node.target: _sign_form(work, node) or "sign"
        for node in work.graph.nodes
        if _binarizing(work, node, DeployedBinaryConv2d)
    }


def prepare_integer(gm: fx.GraphModule, example_inputs: tuple[torch.Tensor, ...]) -> fx.GraphModule:
    """A copy of `deployed(gm)` whose binarizing layers are the integer ops of `integer_ops` (the
    im2col of a channels-last conv is laid out for the spatial sizes `example_inputs` give)."""
    work = deployed(gm)
    work = work if work is not gm else copy.deepcopy(gm)
    propagate_shapes(work, example_inputs)
    codes_of: dict[fx.Node, fx.Node] = {}
    replaced: list[fx.Node] = []
    for node in list(work.graph.nodes):
        if _binarizing(work, node, DeployedBinaryConv2d) or _binarizing(work, node, DeployedBinaryLinear):
            _lower_layer(work, node, codes_of)
            replaced.append(node)
    for node in reversed(replaced):
        work.graph.erase_node(node)
    work.graph.eliminate_dead_code()
    work.recompile()
    return work


def _binarizing(gm: fx.GraphModule, node: fx.Node, kind: type) -> bool:
    if node.op != "call_module" or not isinstance(gm.get_submodule(node.target), kind):
        return False
    layer = gm.get_submodule(node.target)
    return bool(layer.geometry.binarize_input if isinstance(layer, DeployedBinaryConv2d) else layer.binarize_input)


def _sign_form(gm: fx.GraphModule, node: fx.Node) -> str | None:
    """None when the conv `node` can write the next layers' sign codes, else why not."""
    if not node.users:
        return "no readers"
    for user in node.users:
        if not (_binarizing(gm, user, DeployedBinaryConv2d) or _binarizing(gm, user, DeployedBinaryLinear)):
            return f"read by {user.op} {user.target} (needs the float value)"
        if gm.get_submodule(user.target).input_transform is not None:
            return f"read through the input transform of {user.target}"
    layer = gm.get_submodule(node.target)
    if sign_thresholds(layer.scale, layer.bias, layer.weight[0].numel()) is None:
        return "its sign is not monotone in the integer sum"
    return None


def _lower_layer(gm: fx.GraphModule, node: fx.Node, codes_of: dict[fx.Node, fx.Node]) -> None:
    layer = gm.get_submodule(node.target)
    graph = gm.graph
    prefix = node.target.replace(".", "_")
    with graph.inserting_before(node):
        source = node.args[0]
        if layer.input_transform is not None:
            codes = graph.call_function(_SIGN_CODES, (graph.call_module(f"{node.target}.input_transform", (source,)),))
        else:
            if source not in codes_of:
                codes_of[source] = graph.call_function(_SIGN_CODES, (source,))
            codes = codes_of[source]
        if isinstance(layer, DeployedBinaryLinear):
            _float_output(gm, node, _GEMM_FLOAT, codes, node.target)
            return
        g = layer.geometry
        attrs = (
            list(g.kernel_shape),
            list(g.strides),
            list(g.pads),
            list(g.dilations),
            g.group,
            g.pad_value,
            node.target,
        )
        if _sign_form(gm, node) is None:
            threshold, flip = sign_thresholds(layer.scale, layer.bias, layer.weight[0].numel())
            signs = torch.where(torch.from_numpy(flip).view(-1, 1, 1, 1), -layer.weight, layer.weight)
            channels = layer.weight.shape[0]
            weight = _buffer(gm, f"{prefix}_weight", signs.to(torch.int8))
            bias = _buffer(gm, f"{prefix}_bias", torch.from_numpy(-threshold).to(torch.int32))
            w_scale = _buffer(gm, f"{prefix}_w_scale", torch.ones(channels))
            w_zero = _buffer(gm, f"{prefix}_w_zero", torch.zeros(channels, dtype=torch.int8))
            codes_of[node] = graph.call_function(_CONV_SIGN, (codes, weight, bias, w_scale, w_zero, *attrs))
            return
        if g.group == 1:
            height, width = node_shape(source)[2:]
            geometry = (list(g.kernel_shape), list(g.strides), list(g.pads), list(g.dilations))
            key = "_".join(str(v) for part in ((height, width), *geometry) for v in part)
            args = (
                codes,
                _shared_buffer(gm, f"im2col_{key}", im2col_indices(height, width, *geometry)),
                _buffer(gm, f"{prefix}_w_matrix", conv_matrix(layer.weight)),
                _buffer(gm, f"{prefix}_scale", layer.scale),
                _buffer(gm, f"{prefix}_bias", layer.bias),
                list(g.pads),
                g.pad_value,
                g.in_channels,
                node.target,
            )
            _replace(node, graph.call_function(_CONV_MATMUL, args))
            return
        _float_output(gm, node, _CONV_FLOAT, codes, *attrs)


def _float_output(gm: fx.GraphModule, node: fx.Node, op: object, codes: fx.Node, *attrs: object) -> None:
    """Replace the binary layer `node` by `op` on the sign `codes` and the layer's weight codes, scale and
    bias (its float output), followed by `attrs`; inserted where the graph currently inserts."""
    layer = gm.get_submodule(node.target)
    prefix = node.target.replace(".", "_")
    w_codes = _buffer(gm, f"{prefix}_w_codes", (layer.weight + 1).to(torch.uint8))
    scale = _buffer(gm, f"{prefix}_scale", layer.scale)
    bias = _buffer(gm, f"{prefix}_bias", layer.bias)
    _replace(node, gm.graph.call_function(op, (codes, w_codes, scale, bias, *attrs)))


def _replace(node: fx.Node, replacement: fx.Node) -> None:
    """Let `replacement` (same float output) take the place of `node`, keeping its shape metadata for
    the layers after it that read their input size."""
    replacement.meta["tensor_meta"] = node.meta.get("tensor_meta")
    node.replace_all_uses_with(replacement)


def _shared_buffer(gm: fx.GraphModule, name: str, tensor: torch.Tensor) -> fx.Node:
    """A buffer that every layer asking for `name` shares (the same name means the same values)."""
    if not hasattr(gm, name):
        gm.register_buffer(name, tensor)
    return gm.graph.get_attr(name)


def _buffer(gm: fx.GraphModule, name: str, tensor: torch.Tensor) -> fx.Node:
    gm.register_buffer(name, tensor.detach().clone())
    return gm.graph.get_attr(name)
