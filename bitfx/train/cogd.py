"""Cogradient descent (CoGD; Zhuo et al., "Cogradient Descent for Bilinear Optimization", CVPR 2020)
for models whose weights W are coupled to learnable gates g (a sparse factor: y = g ⊙ (W * x)).

Plain alternating descent on such a bilinear problem converges asynchronously: once the sparse
factor settles, the other factor's gradient vanishes where the factor is large and its
updates there stop being informative. CoGD couples the two: after every step, the weights
paired with the most active gate entries have their update drawn back towards their previous
value, by a fraction of positions that shrinks over training.

The rule is the one of the authors' released convolutional-sparse-coding solver (MATLAB,
`backtracking_d`, called after each kernel update of the outer iteration i of max_it):

    α_i = (max_it − i) / (2 · max_it)
    P   = the α_i fraction of kernel positions with the largest Σ_images z (the codes the
          kernel gradient was computed with)
    d[P] ← 0.01 · d[P] + 0.99 · d_old[P]

Here, with W the weights, g the gates (both taking one SGD step per call), t the step count,
T = `total_steps`, `fraction` = 1/2 and `backtrack` = 0.99 giving the solver's constants:

    α_t = fraction · (T − t) / T
    P   = the top round(α_t · n) entries of score(g_old)
    W[P] ← W_old[P] + (1 − backtrack) · (W_new[P] − W_old[P])

Where this generalises (or departs from) the MATLAB code:
- the MATLAB kernel step is an ADMM solve; here the step is SGD (with momentum and weight decay,
  as `torch.optim.SGD`), so CoGD applies to any differentiable model; momentum buffers are
  left as SGD computed them;
- the MATLAB code pairs the padded kernel array d[y, x, k] entry by entry with Σ_n z[y, x, k, n];
  `GatedWeight(dim=None)` is that pairing (the gate has the weight's shape after its leading
  extra axes, which are summed), `GatedWeight(dim=c)` pairs one gate per slice of axis c of
  the weight (a per-channel gate of a pruning mask) and draws back whole slices;
- the MATLAB loop converts its count with uint8 (at most 255 positions), takes the sorted
  ranks 2..n+1 (never the largest) and decodes positions with a slice stride of 110·110 + 1,
  which matches the array's own layout only within the first kernel; here exactly the
  top n positions are drawn back;
- the authors' sparse-reconstruction variant (`backtracking_btb`, which scales the push-back by
  ‖Δz‖ / |Δd| and a data-dependent factor) is not implemented.

`backtrack=0` (or no pairs) leaves plain SGD.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.optim import Optimizer


@dataclass(frozen=True)
class GatedWeight:
    """A weight tensor and the gate it is coupled to.

    `dim`: the weight axis that the 1-D gate indexes (0 for a gate per output channel), or None
    for an entry-wise pairing in which the gate's trailing axes have the weight's shape and its
    leading axes are summed (the codes z of sparse coding, one map per image)."""

    weight: nn.Parameter
    gate: nn.Parameter
    dim: int | None = 0

    def __post_init__(self) -> None:
        weight, gate = self.weight.shape, self.gate.shape
        if self.dim is None:
            if len(gate) < len(weight) or tuple(gate[len(gate) - len(weight) :]) != tuple(weight):
                raise ValueError(f"an entry-wise gate must end with the weight's shape, got {tuple(gate)}")
        elif not -len(weight) <= self.dim < len(weight):
            raise ValueError(f"dim {self.dim} is not an axis of a weight of shape {tuple(weight)}")
        elif tuple(gate) != (weight[self.dim],):
            raise ValueError(f"a gate along axis {self.dim} needs shape ({weight[self.dim]},), got {tuple(gate)}")

    def score(self, gate: Tensor) -> Tensor:
        """One score per drawn-back unit: per weight entry (dim=None) or per slice along `dim`."""
        if self.dim is None:
            extra = gate.dim() - self.weight.dim()
            return gate.sum(dim=tuple(range(extra))) if extra else gate
        return gate

    def draw_back(self, old: Tensor, chosen: Tensor, keep: float) -> None:
        """W[chosen] ← old[chosen] + keep · (W[chosen] − old[chosen]), `chosen` a mask over score()."""
        if self.dim is None:
            mask = chosen
        else:
            axis = self.dim % self.weight.dim()
            mask = chosen.view(*[-1 if i == axis else 1 for i in range(self.weight.dim())])
        new = self.weight.detach()
        new.copy_(torch.where(mask, old + keep * (new - old), new))


class CoGD(Optimizer):
    """SGD over weights and gates plus the cogradient draw-back of the gated weights (module docstring).

    `params`: every parameter to optimise (tensors or param groups, as for `torch.optim.SGD`);
    `pairs`: the coupled (weight, gate) pairs, whose weights and gates must be among them;
    `total_steps`: T of the α schedule (after T steps no weight is drawn back)."""

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict],
        pairs: Sequence[GatedWeight],
        *,
        lr: float,
        total_steps: int,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
        backtrack: float = 0.99,
        fraction: float = 0.5,
    ) -> None:
        if lr <= 0 or momentum < 0 or weight_decay < 0:
            raise ValueError(f"CoGD needs lr > 0, momentum, weight_decay ≥ 0; got {lr}, {momentum}, {weight_decay}")
        if total_steps < 1:
            raise ValueError(f"CoGD needs total_steps ≥ 1, got {total_steps}")
        if not 0 <= backtrack <= 1 or not 0 <= fraction <= 1:
            raise ValueError(f"CoGD needs backtrack and fraction in [0, 1]; got {backtrack=}, {fraction=}")
        super().__init__(params, {"lr": lr, "momentum": momentum, "weight_decay": weight_decay})
        optimised = {id(p) for group in self.param_groups for p in group["params"]}
        roles = [(name, p) for pair in pairs for name, p in (("weight", pair.weight), ("gate", pair.gate))]
        missing = [name for name, p in roles if id(p) not in optimised]
        if missing:
            raise ValueError(f"every paired weight and gate must be optimised; missing: {', '.join(missing)}")
        self.pairs = tuple(pairs)
        self.total_steps, self.backtrack, self.fraction = total_steps, backtrack, fraction
        self.steps_taken = 0

    def fraction_at(self, step: int) -> float:
        """α_t: the share of each pair's units drawn back at step t (1-based)."""
        return self.fraction * max(self.total_steps - step, 0) / self.total_steps

    @torch.no_grad()
    def step(self, closure=None) -> Tensor | None:  # noqa: ANN001 (torch's Optimizer signature)
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self.steps_taken += 1
        alpha = self.fraction_at(self.steps_taken)
        coupled = self.backtrack > 0 and alpha > 0
        pairs = self.pairs if coupled else ()
        before = [(pair.weight.detach().clone(), pair.score(pair.gate.detach()).clone()) for pair in pairs]
        for group in self.param_groups:
            self._sgd(group)
        for pair, (old_weight, score) in zip(self.pairs, before):
            count = round(alpha * score.numel())
            if count:
                chosen = torch.zeros(score.numel(), dtype=torch.bool, device=score.device)
                chosen[torch.sort(score.flatten(), descending=True, stable=True).indices[:count]] = True
                pair.draw_back(old_weight, chosen.view_as(score), 1 - self.backtrack)
        return loss

    def _sgd(self, group: dict) -> None:
        """torch.optim.SGD's update (no dampening, no Nesterov)."""
        for p in group["params"]:
            if p.grad is None:
                continue
            grad = p.grad if group["weight_decay"] == 0 else p.grad.add(p, alpha=group["weight_decay"])
            if group["momentum"]:
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = grad.detach().clone()
                else:
                    state["momentum_buffer"].mul_(group["momentum"]).add_(grad)
                grad = state["momentum_buffer"]
            p.add_(grad, alpha=-group["lr"])
