"""`RankPrune`: HRank channel pruning with physical removal (Lin et al., "HRank: Filter Pruning
using High-Rank Feature Map", CVPR 2020).

1. The channel analysis (`pruning_groups`) finds the groups of channels that must go
   together (residual adds, concatenation offsets, depthwise convs, BatchNorm, flatten →
   linear) and the channels that must stay.
2. Each channel's score is the average matrix rank of its feature maps over the calibration
   batches (`feature_rank`), measured after conv+BN+activation: at every activation node
   the channel reaches, or, for a channel that reaches none (a linear bottleneck), at the
   conv+BN output. With `residual="stage"` (the default, a bitfx extension of HRank) scores
   are averaged over every place the channel appears, so a residual channel is scored over
   all blocks of its stage and removed stage-wide; the plan reports, per group, how well its
   taps agree (`tap_agreement`: mean pairwise Spearman correlation of the per-tap ranks).
   `residual="keep"` is HRank's own rule: channels joined across layers by an element-wise op
   (a residual add) stay, and each conv inside a block is ranked on its own output alone.
3. In a group with p prunable channels at rate r, the int(p·r) lowest-scoring channels go
   (ties: the lower channel index goes first); `round_to` rounds the kept count to a
   multiple. The rate of a group comes from `rates` (a `LayerSelection` over its layers:
   the strongest rule among them wins, the smallest rate among equals) or else from `rate`.
4. The channels are removed physically (`channel_surgery`): smaller convs, BatchNorms and
   linears. The model's output shape is unchanged; the classifier keeps its inputs unless
   `prune_classifier`.

`criterion="l1"` (mean |w| of each filter, Li et al. 2017) and `criterion="random"` use
the same groups, rates and removal, as baselines. `criterion="gate"` scores each channel by |g|,
its entry in the learned channel gates (`insert_gates`, trained with an ℓ1 penalty, with SGD or
`bitfx.train.CoGD`); a group without gates keeps its channels and is reported under `skipped`.
The gates of removed channels go with them; the others stay in the graph and lowering folds them.
"""

from __future__ import annotations

import copy
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import fx

from bitfx.errors import PassConfigError, PassError
from bitfx.ir import as_inputs, example_inputs_of, node_shape, propagate_shapes, summary
from bitfx.ir.distributed import gathered
from bitfx.ir.execution import Inputs
from bitfx.ir.gate import gate_nodes
from bitfx.ir.rewrite import module_of, only_user
from bitfx.passes.core.base import Pass, PassContext, PassResult
from bitfx.passes.core.ordering import BINARY_LAYERS
from bitfx.passes.core.registry import register_pass
from bitfx.passes.core.selection import Decision, LayerSelection
from bitfx.passes.prune import channel_ops as ops
from bitfx.passes.prune.feature_rank import average_feature_ranks, rank_agreement
from bitfx.passes.prune.groups import ChannelAnalysis, ChannelGroup, analyze_channels, unprunable_layers
from bitfx.passes.prune.plan import GroupPlan, PrunePlan, layer_changes
from bitfx.passes.prune.surgery import remove_channels

_RULE_STRENGTH = {"name": 3, "regex": 2, "type": 1, "default": 0}


@register_pass
@dataclass
class RankPrune(Pass):
    """HRank channel pruning: physically remove the channels whose feature maps have the lowest average rank."""

    name = "rank_prune"
    preserves_outputs = False
    conflicts = (BINARY_LAYERS,)

    rate: float = 0.5
    rates: LayerSelection = field(default_factory=LayerSelection)
    round_to: int = 1
    batches: int = 5
    prune_classifier: bool = False
    criterion: Literal["rank", "l1", "random", "gate"] = "rank"
    seed: int = 0
    residual: Literal["stage", "keep"] = "stage"

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_rate(self.rate, "rate")
        if self.round_to < 1 or self.batches < 1:
            raise PassConfigError(
                f"rank_prune: round_to ({self.round_to}) and batches ({self.batches}) must be at least 1"
            )

    def plan(
        self, gm: fx.GraphModule, data: Iterable[Any] | None = None, example_inputs: Inputs | None = None
    ) -> PrunePlan:
        """A dry run on a copy: the groups, the channels that would go and the resulting shapes
        and costs. `gm` is not changed. `str(plan)` prints it."""
        return self._prune(copy.deepcopy(gm), self._inputs(gm, data, example_inputs), data)

    def run(self, gm: fx.GraphModule, context: PassContext) -> PassResult:
        plan = self._prune(gm, context.example_inputs, context.data)
        return PassResult(gm, plan.channels_removed > 0, plan.stats())

    def _prune(self, gm: fx.GraphModule, inputs: tuple[torch.Tensor, ...], data: Iterable[Any] | None) -> PrunePlan:
        self.rates.check_names(gm)
        before = summary(gm)
        output_shapes = [node_shape(n) for n in gm.graph.find_nodes(op="output")]
        analysis = analyze_channels(gm, prune_classifier=self.prune_classifier)
        rates = {group.index: self._group_rate(gm, group) for group in analysis.groups}
        if self.residual == "keep":
            for group in analysis.groups:
                if sum(space.prunable for space in group.spaces) > 1:
                    rates[group.index] = (0.0, "residual channels kept (residual=keep, HRank's rule)")
        _keep_blocked(analysis, rates)
        if self.criterion == "gate":
            _keep_ungated(analysis, rates, _gate_magnitudes(gm, analysis))
        active = [g for g in analysis.groups if rates[g.index][0] > 0 and g.prunable()]
        scores, images, batches, agreement = self._scores(gm, analysis, active, data)
        removed = {g.index: self._choose(analysis, g, scores, rates[g.index][0]) for g in active}
        remove_channels(gm, analysis, {c for channels in removed.values() for c in channels})
        propagate_shapes(gm, inputs)
        if [node_shape(n) for n in gm.graph.find_nodes(op="output")] != output_shapes:
            raise PassError(f"pruning changed the output shape from {output_shapes}; please report this model")
        groups = [
            _group_plan(analysis, g, rates[g.index], removed.get(g.index, []), agreement.get(g.index))
            for g in analysis.groups
        ]
        after = summary(gm)
        changes = layer_changes(before, after)
        skipped = _skipped(gm, analysis, groups)
        return PrunePlan(self.criterion, groups, changes, before.total, after.total, images, batches, skipped)

    def _inputs(
        self, gm: fx.GraphModule, data: Iterable[Any] | None, example_inputs: Inputs | None
    ) -> tuple[torch.Tensor, ...]:
        if example_inputs is not None:
            return as_inputs(example_inputs)
        recorded = example_inputs_of(gm)
        if recorded is not None:
            return recorded
        if isinstance(data, (list, tuple)) and data:
            first = data[0]
            return as_inputs(first[0] if isinstance(first, (tuple, list)) else first)
        raise PassError(
            "rank_prune.plan needs example inputs: capture the model with bitfx.ir.capture(model, inputs) "
            "or pass example_inputs="
        )

    def _group_rate(self, gm: fx.GraphModule, group: ChannelGroup) -> tuple[float, str]:
        """The rate of a group: the strongest selection rule among its layers wins; among
        rules of equal strength, the smallest rate. No rule → the global `rate`."""
        decisions = [self.rates.resolve(layer, gm.get_submodule(layer)) for layer in group.layers]
        decisions = [d if d.value is not None else Decision(self.rate, "rate") for d in decisions]
        for layer, decision in zip(group.layers, decisions):
            _check_rate(decision.value, f"the rate for {layer!r} ({decision.rule})")
        strongest = max(_RULE_STRENGTH.get(d.rule.split(" ")[0], 0) for d in decisions)
        candidates = [d for d in decisions if _RULE_STRENGTH.get(d.rule.split(" ")[0], 0) == strongest]
        chosen = min(candidates, key=lambda d: d.value)
        return float(chosen.value), chosen.rule

    def _scores(
        self, gm: fx.GraphModule, analysis: ChannelAnalysis, groups: list[ChannelGroup], data: Iterable[Any] | None
    ) -> tuple[dict[int, float], int, int, dict[int, float | None]]:
        """A score per prunable channel (higher = keep), the calibration images/batches used, and
        per group with several taps the agreement of their ranks."""
        wanted = {c for g in groups for c in g.prunable()}
        if self.criterion == "rank" and not _ranks_agree_to_calibrate(bool(wanted), data is not None):
            return {}, 0, 0, {}
        if not wanted:
            return {}, 0, 0, {}
        if self.criterion == "random":
            generator = torch.Generator().manual_seed(self.seed)
            ordered = sorted(wanted)
            random_scores = torch.rand(len(ordered), generator=generator, dtype=torch.float64).tolist()
            return dict(zip(ordered, random_scores)), 0, 0, {}
        if self.criterion == "l1":
            return _filter_norms(gm, analysis, groups, wanted), 0, 0, {}
        if self.criterion == "gate":
            magnitudes = _gate_magnitudes(gm, analysis)
            return {c: magnitudes[c] for c in wanted}, 0, 0, {}
        if data is None:
            raise PassError(
                "rank_prune ranks feature maps on calibration batches, and none were given: pass --data "
                "package.module:function "
                "(e.g. --data bitfx.zoo:random) on the command line, or Pipeline.run(gm, data=batches) "
                "/ RankPrune(...).plan(gm, data=batches) in Python"
            )
        taps = _taps(gm, analysis, groups, wanted)
        stats = average_feature_ranks(gm, taps, data, max_batches=self.batches)
        occurrences: dict[int, list[float]] = defaultdict(list)
        per_tap: dict[str, dict[int, float]] = {}
        for tap in taps:
            per_tap[tap] = {}
            for slot, value in zip(analysis.maps[tap], stats.ranks[tap].tolist()):
                channel = analysis.channel_of(slot)
                if channel in wanted:
                    occurrences[channel].append(value)
                    per_tap[tap][channel] = value
        agreement = {}
        for group in groups:
            channels = group.prunable()
            vectors = [[values[c] for c in channels] for values in per_tap.values() if set(channels) <= set(values)]
            agreement[group.index] = rank_agreement(vectors)
        scores = {c: sum(v) / len(v) for c, v in occurrences.items()}
        return scores, stats.images, stats.batches, agreement

    def _choose(
        self, analysis: ChannelAnalysis, group: ChannelGroup, scores: dict[int, float], rate: float
    ) -> list[int]:
        """The channels to remove: lowest score first, ties by group position; `round_to` on the
        kept count; never the last channel of a layer."""
        candidates = group.prunable()
        position = {c: i for i, c in enumerate(group.channels)}
        total = len(group.channels)
        keep = total - int(len(candidates) * rate)
        if self.round_to > 1:
            keep = min(total, max(self.round_to, (keep + self.round_to // 2) // self.round_to * self.round_to))
        keep = max(keep, total - len(candidates))
        left = Counter({s.index: s.size for s in group.spaces})
        slot_spaces = defaultdict(Counter)
        for space in group.spaces:
            for slot in space.slots:
                slot_spaces[analysis.channel_of(slot)][space.index] += 1
        removed = []
        for channel in sorted(candidates, key=lambda c: (scores[c], position[c])):
            if total - len(removed) <= keep:
                break
            if all(left[s] > n for s, n in slot_spaces[channel].items()):
                removed.append(channel)
                left.subtract(slot_spaces[channel])
        return removed


def _taps(gm: fx.GraphModule, analysis: ChannelAnalysis, groups: list[ChannelGroup], wanted: set[int]) -> list[str]:
    """Where to measure ranks: every activation a wanted channel reaches; for a layer whose
    channels reach none, its output after the BatchNorm that directly follows it (if any)."""
    taps = [a for a in analysis.activations if any(analysis.channel_of(s) in wanted for s in analysis.maps[a])]
    uncovered = wanted - {analysis.channel_of(s) for tap in taps for s in analysis.maps[tap]}
    nodes = {n.name: n for n in gm.graph.nodes}
    for space in (s for g in groups for s in g.spaces if s.prunable):
        if any(analysis.channel_of(slot) in uncovered for slot in space.slots):
            node = nodes[space.node]
            user = only_user(node)
            if user is not None and ops.layer_type(module_of(gm, user)) in ops.BATCHNORM_TYPES:
                node = user
            taps.append(node.name)
    return list(dict.fromkeys(taps))


def _filter_norms(
    gm: fx.GraphModule, analysis: ChannelAnalysis, groups: list[ChannelGroup], wanted: set[int]
) -> dict[int, float]:
    """Mean |w| of each output filter of the group's layers, averaged over the layers a channel spans."""
    occurrences: dict[int, list[float]] = defaultdict(list)
    for space in (s for g in groups for s in g.spaces if s.prunable):
        weight = gm.get_submodule(space.layer).weight.detach()
        norms = weight.abs().flatten(1).mean(dim=1).tolist()
        for slot, norm in zip(space.slots, norms):
            channel = analysis.channel_of(slot)
            if channel in wanted:
                occurrences[channel].append(norm)
    return {c: sum(v) / len(v) for c, v in occurrences.items()}


def _gate_magnitudes(gm: fx.GraphModule, analysis: ChannelAnalysis) -> dict[int, float]:
    """|g| per channel, averaged over the gates that scale it (gates of one group share their values)."""
    occurrences: dict[int, list[float]] = defaultdict(list)
    for node in gate_nodes(gm):
        for slot, value in zip(analysis.maps[node.name], gm.get_submodule(node.target).gate.detach().abs().tolist()):
            occurrences[analysis.channel_of(slot)].append(value)
    return {c: sum(v) / len(v) for c, v in occurrences.items()}


def _keep_ungated(analysis: ChannelAnalysis, rates: dict[int, tuple[float, str]], gated: dict[int, float]) -> None:
    """With `criterion="gate"`, a group with a prunable channel that no gate scales keeps every channel."""
    for group in analysis.groups:
        if rates[group.index][0] > 0 and any(c not in gated for c in group.prunable()):
            rates[group.index] = (0.0, "no gate scales its channels (criterion='gate'): run insert_gates first")


def _keep_blocked(analysis: ChannelAnalysis, rates: dict[int, tuple[float, str]]) -> None:
    """A group whose channels flow into an op the analysis does not understand keeps every channel
    (pruning it could silently break the model), with the ops named; the other groups are pruned."""
    for group in analysis.groups:
        if group.blocked and rates[group.index][0] > 0:
            rates[group.index] = (
                0.0,
                f"its channels flow into {', '.join(group.blocking_ops())}, which the channel analysis does not "
                "understand: kept (express those ops with ones it knows, see bitfx.passes.prune.channel_ops)",
            )


def _group_plan(
    analysis: ChannelAnalysis,
    group: ChannelGroup,
    rate: tuple[float, str],
    removed: list[int],
    agreement: float | None = None,
) -> GroupPlan:
    gone = set(removed)
    position = {c: i for i, c in enumerate(group.channels)}
    by_layer = {
        space.layer: tuple(i for i, slot in enumerate(space.slots) if analysis.channel_of(slot) in gone)
        for space in group.spaces
        if space.prunable
    }
    reasons = tuple(sorted({r for rs in group.fixed.values() for r in rs}))
    return GroupPlan(
        group.name,
        group.layers,
        len(group.channels),
        len(group.prunable()),
        rate[0],
        rate[1],
        tuple(sorted(position[c] for c in gone)),
        by_layer,
        reasons,
        tuple(group.blocking_ops()),
        None if agreement is None else round(agreement, 4),
    )


def _skipped(gm: fx.GraphModule, analysis: ChannelAnalysis, groups: list[GroupPlan]) -> dict[str, str]:
    """Every conv/linear layer whose output channels stay, with the reason: the analysis keeps
    them all, or its group's rate removes none."""
    skipped = unprunable_layers(gm, analysis)
    for group in groups:
        if group.removed:
            continue
        if not group.prunable:
            reason = "no prunable channel: " + (group.kept_because or group.blocked_by or ("every channel is kept",))[0]
        elif group.rate == 0:
            reason = f"prune rate 0 ({group.rule})"
        else:
            reason = f"rate {group.rate:g} of {group.prunable} prunable channels removes none"
        skipped.update(dict.fromkeys(group.layers, reason))
    return skipped


def _check_rate(value: object, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise PassConfigError(
            f"rank_prune: {what} is {value!r}; a prune rate is a number in [0, 1) (0.5 removes half the channels)"
        )


def _ranks_agree_to_calibrate(wanted: bool, has_data: bool) -> bool:
    """Whether HRank calibration runs, decided alike on every torch.distributed rank (a collective):
    False when no rank has channels to rank, a `PassError` on every rank when only some have."""
    states = gathered((wanted, has_data))
    if not any(w for w, _ in states):
        return False
    odd = [rank for rank, state in enumerate(states) if state != (True, True)]
    if len(states) > 1 and odd:
        details = ", ".join(
            f"rank {rank}: {'no calibration data' if not states[rank][1] else 'nothing to prune'}" for rank in odd
        )
        raise PassError(
            f"HRank calibration is a collective and not every rank can take part ({details}); every rank must "
            "run rank_prune on the same model with the same parameters and calibration data"
        )
    return True
