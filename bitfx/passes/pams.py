"""`PAMSQuantize`: k-bit PAMS quantization of conv/linear weights and of the activations
around them (Li et al., ECCV 2020; the math is in `bitfx.ir.quant`).

Which layers: every Conv1d/2d/3d and Linear chosen by `layers` (a `LayerSelection` with
True/False values). A layer that `layers` leaves at its default is quantized by `placement`:

- `paper` (default): only the layers on the branch of a residual block — an add x + f(x)
  whose branch f reaches x through single-input ops and contains no other add. For EDSR those
  are the two convs of every residual block, the paper's placement: the head, the body's last
  conv (its branch holds the blocks' adds), the upsampler and the tail stay float;
- `general`: every layer but the first and the last in graph order (`float_ends`). A graph
  without any residual block holding a candidate layer gets this placement under `paper` too
  (PAMS's placement is defined by those blocks); `stats["placement"]` says which ran.

Where activation quantizers go (one `ActQuant` per quantized tensor, shared by the uses
that read it):

1. the input of every quantized layer, except under the `paper` placement the layer of each
   residual branch nearest the block input (EDSR's conv1): as in PAMS's released code it reads
   the float block input with k-bit weights (`stats["float_input_layers"]` lists them);
2. both operands of a residual add one of whose operands comes from a quantized layer
   (through `× scalar` / ReLU, see `bitfx.ir.output_chain`): for an EDSR block
   `x + conv2(relu(conv1(x))) · res_scale` that is the shortcut and the branch output after
   res_scale, with the post-ReLU input of conv2 from rule 1 — the released code's three
   quantizers; `general` also quantizes conv1's input, sharing the shortcut's quantizer;
3. the output of every quantized layer (after its foldable chain), unless every use of
   it is already quantized, so that integer execution never leaves a quantized layer in
   float (a branch's first layer then reads that quantizer too).

A tensor gets one quantizer: when a tensor to quantize is another quantized tensor seen through
ops that return their input's value and gradient (Identity, contiguous, clone), its readers read
the quantizer of that tensor directly instead of quantizing it a second time.

α of every quantizer starts at the mean over calibration samples of the per-sample max|x|,
measured on the float activations (quantizers pass values through while calibrating), over
the first `batches` calibration batches (every batch when None). The sums are reduced across
torch.distributed ranks when a process group is initialised (after the ranks agree that they
hold the same graph and that no rank's calibration failed).
"""

from __future__ import annotations

import itertools
import operator
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.distributed as dist
from torch import fx, nn
from tqdm import tqdm

from bitfx.errors import PassConfigError, PassError
from bitfx.ir.distributed import agree, check_same_model, is_distributed
from bitfx.ir.execution import batch_inputs, compare_outputs, eval_mode, run_eval
from bitfx.ir.output_chain import chain_after, chain_before
from bitfx.ir.quant import MAX_BITS, MIN_BITS, QUANT_LAYER_TYPES, QUANTIZED_LAYERS, ActQuant, quantize_layer
from bitfx.ir.rewrite import call_counts, computes_as, free_name, module_of, replace_module, weight_layers
from bitfx.passes.core.base import Pass, PassContext, PassResult
from bitfx.passes.core.ordering import BINARY_LAYERS
from bitfx.passes.core.registry import register_pass
from bitfx.passes.core.selection import LayerSelection

_ADD_FUNCTIONS = (operator.add, operator.iadd, torch.add)
_CANDIDATES = tuple(QUANTIZED_LAYERS)
# ops whose output is their input's value, with the same gradient, in training and in eval mode
_SAME_VALUE_MODULES = (nn.Identity,)
_SAME_VALUE_FUNCTIONS = frozenset({torch.clone})
_SAME_VALUE_METHODS = frozenset({"contiguous", "clone"})


@register_pass
@dataclass
class PAMSQuantize(Pass):
    """PAMS k-bit quantization: max-scale weights, learnable-α activations, calibrated."""

    name = "pams"
    preserves_outputs = False
    conflicts = (BINARY_LAYERS,)

    bits: int = 8
    per_channel: bool = False
    layers: LayerSelection = field(default_factory=lambda: LayerSelection(default=True))
    float_ends: bool = True
    batches: int | None = None
    placement: Literal["paper", "general"] = "paper"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.placement not in ("paper", "general"):
            raise PassConfigError(f"pass 'pams': placement={self.placement!r} must be 'paper' or 'general'")
        if self.batches is not None and (
            isinstance(self.batches, bool) or not isinstance(self.batches, int) or self.batches < 1
        ):
            raise PassConfigError(f"pass 'pams': batches={self.batches!r} must be at least 1, or None for every batch")
        if isinstance(self.bits, bool) or not isinstance(self.bits, int) or not MIN_BITS <= self.bits <= MAX_BITS:
            raise PassConfigError(
                f"pass 'pams': bits={self.bits!r} is not supported; use an integer from {MIN_BITS} to {MAX_BITS}"
            )

    def requires(self, gm: fx.GraphModule) -> None:
        done = [name for name, m in gm.named_modules() if isinstance(m, (ActQuant, *QUANT_LAYER_TYPES))]
        if done:
            raise PassError(
                f"the graph is already PAMS-quantized (e.g. {done[0]!r}); run 'pams' once, on the float model"
            )

    def run(self, gm: fx.GraphModule, context: PassContext) -> PassResult:
        float_outputs = run_eval(gm, context.example_inputs)
        chosen, skipped, placement = self._choose(gm)
        if not chosen:
            return PassResult(gm, False, {"quantized_layers": 0, "placement": placement, "skipped": skipped})
        float_inputs = _first_branch_layers(gm) if placement == "paper" else set()
        for node in chosen:
            replace_module(gm, node.target, quantize_layer(gm.get_submodule(node.target), self.bits, self.per_channel))
        quantizers = _insert_quantizers(gm, _quantized_edges(gm, chosen, float_inputs), self.bits)
        gm.recompile()
        calibration = _calibrate(gm, quantizers, context, self.batches)
        error = max(e.max_rel_error for e in compare_outputs(float_outputs, run_eval(gm, context.example_inputs)))
        stats = {
            "bits": self.bits,
            "per_channel": self.per_channel,
            "quantized_layers": len(chosen),
            "placement": placement,
            "activation_quantizers": len(quantizers),
            "calibration": calibration,
            "rel_error_vs_float": error,
            "layers": [node.target for node in chosen],
            "float_input_layers": [node.target for node in chosen if not _reads_quantizer(gm, node)],
            "skipped": skipped,
        }
        return PassResult(gm, True, stats)

    def ensures(self, gm: fx.GraphModule) -> None:
        float_inputs = _first_branch_layers(gm) if self.placement == "paper" else set()
        for node in gm.graph.nodes:
            if isinstance(module_of(gm, node), QUANT_LAYER_TYPES) and not _reads_quantizer(gm, node):
                if node not in float_inputs:
                    raise PassError(f"quantized layer {node.target!r} does not read a quantized activation")
        for node in gm.graph.nodes:
            if isinstance(module_of(gm, node), ActQuant):
                source = node.args[0]
                while isinstance(source, fx.Node) and _is_same_value(gm, source):
                    source = source.args[0]
                if isinstance(source, fx.Node) and isinstance(module_of(gm, source), ActQuant):
                    raise PassError(f"quantizers {source.target!r} and {node.target!r} quantize the same tensor")
        for name, module in gm.named_modules():
            if isinstance(module, ActQuant) and not (torch.isfinite(module.alpha) and module.alpha > 0):
                raise PassError(
                    f"quantizer {name!r} has α = {float(module.alpha)}; calibration data must give it "
                    "a positive finite value"
                )

    def _choose(self, gm: fx.GraphModule) -> tuple[list[fx.Node], dict[str, str], str]:
        """The layer nodes to quantize, why each other candidate stays float, and the placement that ran."""
        candidates = self.layers.select(gm, _CANDIDATES)
        selected = [(n, m, d) for n, m, d in candidates if computes_as(m, _CANDIDATES)]
        calls = call_counts(gm)
        ends = {selected[0][0].target, selected[-1][0].target} if selected and self.float_ends else set()
        branches = _residual_branch_layers(gm) if self.placement == "paper" else set()
        in_blocks = branches if any(node in branches for node, _, _ in selected) else None
        placement = "paper" if in_blocks is not None else "general"
        if self.placement == "paper" and in_blocks is None:
            placement = "general (no residual block)"
        chosen: list[fx.Node] = []
        skipped = {
            n.target: f"{type(m).__name__} overrides forward: what it computes is not a plain conv/linear"
            for n, m, _ in candidates
            if not computes_as(m, _CANDIDATES)
        }
        for node, module, decision in selected:
            if decision.rule == "default" and node.target in ends:
                skipped[node.target] = "first/last layer (float_ends)"
            elif decision.rule == "default" and in_blocks is not None and node not in in_blocks:
                skipped[node.target] = (
                    "not on a residual block's branch (placement='paper' quantizes those only, as PAMS quantizes "
                    "EDSR's block convs; placement='general' quantizes every layer but the first and last)"
                )
            elif decision.value not in (True, False, None):
                raise PassConfigError(
                    f"pass 'pams': layers must map to true/false, got {decision.value!r} for {node.target!r} "
                    f"({decision.rule})"
                )
            elif not decision.value:
                skipped[node.target] = f"not selected ({decision.rule})"
            elif calls[node.target] > 1:
                skipped[node.target] = f"called from {calls[node.target]} places"
            elif getattr(module, "padding_mode", "zeros") != "zeros":
                skipped[node.target] = f"padding_mode={module.padding_mode!r} (integer convs pad with zeros)"
            elif len(node.args) != 1 or node.kwargs:
                skipped[node.target] = "called with more than one argument"
            else:
                chosen.append(node)
        chosen_names = {node.target for node in chosen}
        for name, kind in weight_layers(gm).items():
            if name not in chosen_names and name not in skipped:
                skipped[name] = f"a {kind}: pams quantizes Conv1d/2d/3d and Linear modules and leaves this float"
        return chosen, skipped, placement


def _residual_branch_layers(gm: fx.GraphModule) -> set[fx.Node]:
    """The nodes on the branches of innermost residual blocks (see `_residual_branches`)."""
    return {node for branch in _residual_branches(gm) for node in branch}


def _first_branch_layers(gm: fx.GraphModule) -> set[fx.Node]:
    """The conv/linear layer of each residual branch nearest the block input: EDSR's conv1, which PAMS's
    released code runs on the unquantized block input (k-bit weights, float activations)."""
    firsts = (next((n for n in branch if _is_layer(gm, n)), None) for branch in _residual_branches(gm))
    return {node for node in firsts if node is not None}


def _residual_branches(gm: fx.GraphModule) -> list[list[fx.Node]]:
    """The branches of innermost residual blocks: for an add of two values that, followed back through
    single-input ops, meet at one tensor x without passing another add, the nodes between x and the add,
    one list per operand, in graph order (an operand that is x itself gives an empty list)."""
    found: list[list[fx.Node]] = []
    for node in gm.graph.nodes:
        operands = [a for a in node.args[:2] if isinstance(a, fx.Node)] if _is_add(node) else []
        if len(operands) != 2:
            continue
        chains = [_single_input_chain(operand) for operand in operands]
        meeting = next((n for n in chains[0] if n in chains[1]), None)
        if meeting is None:
            continue
        branches = [chain[: chain.index(meeting)][::-1] for chain in chains]
        if not any(_is_add(n) for branch in branches for n in branch):
            found.extend(branches)
    return found


def _is_layer(gm: fx.GraphModule, node: fx.Node) -> bool:
    return node.op == "call_module" and isinstance(gm.get_submodule(node.target), _CANDIDATES)


def _single_input_chain(node: fx.Node) -> list[fx.Node]:
    """`node` and the nodes before it for as long as each has exactly one node input."""
    chain = [node]
    while node.op != "placeholder" and not _is_add(node):
        inputs = node.all_input_nodes
        if len(inputs) != 1:
            break
        node = inputs[0]
        chain.append(node)
    return chain


def _reads_quantizer(gm: fx.GraphModule, node: fx.Node) -> bool:
    source = node.args[0]
    return isinstance(source, fx.Node) and isinstance(module_of(gm, source), ActQuant)


def _quantized_edges(
    gm: fx.GraphModule, layers: list[fx.Node], float_inputs: set[fx.Node]
) -> dict[fx.Node, set[fx.Node]]:
    """source node → the users whose reads of it go through one quantizer (rules 1–3; rule 1 skips the
    layers in `float_inputs`)."""
    layer_set = set(layers)
    edges: dict[fx.Node, set[fx.Node]] = {}
    for layer in layers:
        if layer not in float_inputs:
            edges.setdefault(layer.args[0], set()).add(layer)
    for node in gm.graph.nodes:
        if _is_add(node):
            operands = [a for a in node.args[:2] if isinstance(a, fx.Node)]
            if len(operands) == 2 and any(chain_before(gm, a, layer_set.__contains__) is not None for a in operands):
                for operand in operands:
                    edges.setdefault(operand, set()).add(node)
    for layer in layers:
        end = chain_after(gm, layer).end
        if not set(end.users) <= edges.get(end, set()):
            edges.setdefault(end, set()).update(end.users)
    return _one_quantizer_per_value(gm, edges)


def _one_quantizer_per_value(gm: fx.GraphModule, edges: dict[fx.Node, set[fx.Node]]) -> dict[fx.Node, set[fx.Node]]:
    """Merge the edges whose source is another source's value seen through same-value ops: their users
    read that other source (and so its quantizer) directly, and the value is quantized once."""
    for source in list(edges):
        origin = source
        while _is_same_value(gm, origin) and isinstance(origin.args[0], fx.Node):
            origin = origin.args[0]
        if origin is not source and origin in edges:
            for user in edges.pop(source):
                user.replace_input_with(source, origin)
                edges[origin].add(user)
            while source is not origin and not source.users:
                source, dead = source.args[0], source
                gm.graph.erase_node(dead)
    return edges


def _is_same_value(gm: fx.GraphModule, node: fx.Node) -> bool:
    """True for an op whose output is its first argument's value, in training and in eval mode."""
    if not node.args:
        return False
    if node.op == "call_module":
        return isinstance(gm.get_submodule(node.target), _SAME_VALUE_MODULES)
    if node.op == "call_method":
        return node.target in _SAME_VALUE_METHODS
    return node.op == "call_function" and node.target in _SAME_VALUE_FUNCTIONS


def _is_add(node: fx.Node) -> bool:
    if node.kwargs or len(node.args) != 2:
        return False
    return (node.op == "call_function" and node.target in _ADD_FUNCTIONS) or (
        node.op == "call_method" and node.target in ("add", "add_")
    )


def _insert_quantizers(gm: fx.GraphModule, edges: dict[fx.Node, set[fx.Node]], bits: int) -> list[ActQuant]:
    """One `ActQuant` after each source node, read by that source's quantized users."""
    last_placeholder = [n for n in gm.graph.nodes if n.op == "placeholder"][-1]
    quantizers = []
    for source, users in edges.items():
        name = free_name(gm, f"{source.name}_quant")
        gm.add_submodule(name, ActQuant(bits))
        quantizers.append(gm.get_submodule(name))
        with gm.graph.inserting_after(last_placeholder if source.op == "placeholder" else source):
            quant_node = gm.graph.call_module(name, (source,))
        for user in users:
            user.replace_input_with(source, quant_node)
    return quantizers


def _calibrate(gm: fx.GraphModule, quantizers: list[ActQuant], context: PassContext, limit: int | None) -> str:
    """Set every α to the mean per-sample max|x| of its input on the first `limit` calibration batches.

    Under torch.distributed the ranks first check that they hold the same graph and agree on
    whether any rank's shard failed (empty, a bad batch, NaN/Inf) before reducing the sums."""
    check_same_model(gm, PassError, "pams calibration", plan=_names(gm, quantizers))
    batches, source = _calibration_batches(context)
    batches = itertools.islice(batches, limit)
    sums = torch.zeros(len(quantizers), dtype=torch.float64)
    samples, failure = 0, None
    try:
        samples = _observe(gm, quantizers, batches, context, sums)
        bad = [name for name, q in zip(_names(gm, quantizers), sums) if not bool(torch.isfinite(q))]
        if bad:
            raise PassError(f"the calibration data gives NaN or Inf at the quantizers {bad}")
        if samples == 0:
            raise PassError("calibration saw no samples: the calibration data yielded no batches")
    except Exception as error:
        failure = error
    agree(failure, PassError, "pams calibration")
    totals = torch.cat([sums, torch.tensor([float(samples)], dtype=torch.float64)])
    ranks = 1
    if is_distributed():
        dist.all_reduce(totals, op=dist.ReduceOp.SUM)
        ranks = dist.get_world_size()
    with torch.no_grad():
        for quantizer, total in zip(quantizers, totals[:-1]):
            quantizer.alpha.fill_(float(total / totals[-1]))
    across = f" across {ranks} ranks" if ranks > 1 else ""
    return f"{int(totals[-1])} samples{across} from {source}"


def _observe(
    gm: fx.GraphModule, quantizers: list[ActQuant], batches: Iterable[Any], context: PassContext, sums: torch.Tensor
) -> int:
    """Add each quantizer's per-sample max|x| over `batches` to `sums`; the number of samples."""
    index = {id(q): i for i, q in enumerate(quantizers)}

    def observe(module: nn.Module, args: tuple[Any, ...], output: torch.Tensor) -> torch.Tensor:
        x = args[0].detach()
        sums[index[id(module)]] += x.abs().reshape(x.shape[0], -1).amax(dim=1).double().sum()
        return x

    handles = [q.register_forward_hook(observe) for q in quantizers]
    samples = 0
    try:
        with eval_mode(gm), torch.no_grad():
            for batch in tqdm(batches, desc="pams calibration", unit="batch", leave=False):
                inputs = batch_inputs(batch)
                gm(*inputs)
                samples += int(inputs[0].shape[0])
    finally:
        for handle in handles:
            handle.remove()
    return samples


def _names(gm: fx.GraphModule, quantizers: list[ActQuant]) -> list[str]:
    names = {id(m): name for name, m in gm.named_modules()}
    return [names.get(id(q), "?") for q in quantizers]


def _calibration_batches(context: PassContext) -> tuple[Iterable[Any], str]:
    if context.data is None:
        return [context.example_inputs], "the example inputs (no calibration data given; pass --data or data=)"
    return context.data, "the calibration data"
