"""One bandit core for operation search, with three policies (BNAS, CP-NAS, ABanditNAS).

Every edge of a cell is a multi-armed bandit whose arms are the candidate operations still
alive on it. A *sample* picks one operation per edge (one sub-network); the caller trains and
validates that sub-network and returns a reward, which is credited to every sampled arm. After
a round of samples each edge abandons one arm; the search ends when one arm is left per edge.

Bookkeeping per arm (edge e, operation k): mean reward m_k, count n_k; N is the number of
samples taken so far. The confidence bounds (ABanditNAS Eq. 4.9 and 4.12) are

    s_L(o_k) = m_k − √(2 ln N / n_k)          lower confidence bound (LCB)
    s_U(o_k) = m_k + √(2 ln N / n_k)          upper confidence bound (UCB)

Policies (each decides how a round is sampled, how a reward updates an arm, which arm goes):

- `bnas`: a round is T blocks of K samples, each block without replacement; an arm's score is the
  running mean of all its rewards; each edge abandons argmin s_U among its ⌈K/2⌉ operations of
  least potential (among all of them when no potentials are given).
- `cp`: T blocks of K samples without replacement; the evaluation returns the child's and the
  parent's accuracy and the reward is z = β_P(A_P − A_C) + A_C (Eq. 4.15); each edge abandons
  argmin softmax_k(z̄_k) (Eq. 4.16), z̄_k the mean of z over the round.
- `anti_bandit`: one block without replacement initialises m; a round is K·T draws from
  p(o_k) ∝ exp(−s_L(o_k)) (Eq. 4.10); m ← (1 − λ)m + λ·a; each edge abandons argmin s_U (Eq. 4.13).

"Without replacement" means: in a block of K samples every remaining operation of every edge
is sampled exactly once (each edge draws its own random order). Ties are broken towards the
operation listed first on the edge, so a search is deterministic for a seed.

All state lives in `SearchState`, plain data (`to_dict` / `from_dict`, JSON-able), so a search
can be stopped after any sample and resumed with the same result as an uninterrupted run.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

Sample = dict[str, str]


def ucb(mean: float, count: int, total: int) -> float:
    """Upper confidence bound m + √(2 ln N / n); +inf for an arm never sampled."""
    return math.inf if count == 0 else mean + math.sqrt(2.0 * math.log(total) / count)


def lcb(mean: float, count: int, total: int) -> float:
    """Lower confidence bound m − √(2 ln N / n); −inf for an arm never sampled."""
    return -math.inf if count == 0 else mean - math.sqrt(2.0 * math.log(total) / count)


def softmax(values: Sequence[float]) -> list[float]:
    """exp(v_k) / Σ_m exp(v_m), computed stably; arms at +inf share the whole mass."""
    top = max(values)
    if math.isinf(top):
        hits = [1.0 if v == top else 0.0 for v in values]
        return [h / sum(hits) for h in hits]
    weights = [math.exp(v - top) for v in values]
    return [w / sum(weights) for w in weights]


def cp_indicator(child_accuracy: float, parent_accuracy: float, beta_p: float) -> float:
    """CP-NAS's child–parent indicator z = β_P (A_P − A_C) + A_C (Eq. 4.15 as printed)."""
    return beta_p * (parent_accuracy - child_accuracy) + child_accuracy


def argmin_first(values: Sequence[float]) -> int:
    """Index of the smallest value; the first one on ties."""
    return min(range(len(values)), key=lambda i: (values[i], i))


@dataclass
class Arm:
    """Bookkeeping of one operation on one edge."""

    mean: float = 0.0
    count: int = 0
    round_rewards: list[float] = field(default_factory=list)


@dataclass
class SearchState:
    """Everything a search needs to continue: alive arms, statistics, the pending samples, the RNG."""

    policy: dict[str, Any]
    edges: dict[str, list[str]]
    arms: dict[str, dict[str, Arm]]
    total: int = 0
    round: int = 0
    round_samples: int = 0
    pending: list[Sample] = field(default_factory=list)
    initialised: bool = False
    potentials: dict[str, dict[str, float]] = field(default_factory=dict)
    abandoned: list[dict[str, Any]] = field(default_factory=list)
    rng_state: list[Any] = field(default_factory=list)

    @classmethod
    def start(cls, edges: Mapping[str, Iterable[str]], policy: Policy, seed: int = 0) -> SearchState:
        """A fresh search of `edges` (edge name → candidate operation names) under `policy`."""
        ops = {edge: list(names) for edge, names in edges.items()}
        for edge, names in ops.items():
            if not names or len(set(names)) != len(names):
                raise ValueError(f"edge {edge!r}: candidate operations must be distinct and non-empty, got {names}")
        arms = {edge: {name: Arm() for name in names} for edge, names in ops.items()}
        state = cls(policy.to_dict(), ops, arms)
        state.rng_state = _rng_to_data(random.Random(seed).getstate())
        return state

    @property
    def done(self) -> bool:
        """True when every edge has a single operation left."""
        return all(len(names) == 1 for names in self.edges.values())

    @property
    def choice(self) -> Sample:
        """The operation kept on every edge (the best guess so far while the search runs)."""
        return {edge: names[0] for edge, names in self.edges.items()}

    def to_dict(self) -> dict[str, Any]:
        """Plain data (JSON-able)."""
        arms = {
            e: {k: {"mean": a.mean, "count": a.count, "round_rewards": list(a.round_rewards)} for k, a in ops.items()}
            for e, ops in self.arms.items()
        }
        return {
            "policy": dict(self.policy),
            "edges": {e: list(v) for e, v in self.edges.items()},
            "arms": arms,
            "total": self.total,
            "round": self.round,
            "round_samples": self.round_samples,
            "pending": [dict(s) for s in self.pending],
            "initialised": self.initialised,
            "potentials": {e: dict(p) for e, p in self.potentials.items()},
            "abandoned": [dict(a) for a in self.abandoned],
            "rng_state": list(self.rng_state),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SearchState:
        """Inverse of `to_dict`."""
        arms = {
            e: {k: Arm(a["mean"], a["count"], list(a["round_rewards"])) for k, a in ops.items()}
            for e, ops in data["arms"].items()
        }
        return cls(
            dict(data["policy"]),
            {e: list(v) for e, v in data["edges"].items()},
            arms,
            data["total"],
            data["round"],
            data["round_samples"],
            [dict(s) for s in data["pending"]],
            data["initialised"],
            {e: dict(p) for e, p in data["potentials"].items()},
            [dict(a) for a in data["abandoned"]],
            list(data["rng_state"]),
        )


class Policy:
    """How a round is sampled, how a reward updates the sampled arms, which arm each edge abandons."""

    name = ""

    def to_dict(self) -> dict[str, Any]:
        """The policy and its parameters as plain data."""
        return {"name": self.name, **{k: v for k, v in vars(self).items()}}

    def round_length(self, state: SearchState) -> int:
        """Samples in the current round (K·T by default, K = operations left on an edge)."""
        return _alive(state) * self.rounds_t

    def next_sample(self, state: SearchState, rng: random.Random) -> Sample:
        """The next sub-network to evaluate (blocks without replacement by default)."""
        if not state.pending:
            state.pending = _block_without_replacement(state, rng)
        return state.pending.pop(0)

    def reward(self, result: float | tuple[float, float]) -> float:
        """The reward credited to the sampled arms for one evaluation result."""
        return float(result)  # type: ignore[arg-type]

    def update(self, arm: Arm, reward: float) -> None:
        """Running mean of every reward the arm received."""
        arm.count += 1
        arm.mean += (reward - arm.mean) / arm.count

    def scores(self, state: SearchState, edge: str) -> list[float]:
        """Per-operation scores of an edge at the end of a round (the smallest is abandoned)."""
        raise NotImplementedError

    def candidates(self, state: SearchState, edge: str) -> list[str]:
        """The operations of an edge that may be abandoned this round."""
        return list(state.edges[edge])


class BNAS(Policy):
    """BNAS: performance-based reduction; abandon argmin UCB among the less promising half.

    `rounds_t` blocks of K samples per round. When `state.potentials` holds the supernet's
    potential (architecture weight α) of every operation of an edge, only the ⌈K/2⌉ operations
    of least potential may be abandoned there; otherwise all may.
    """

    name = "bnas"

    def __init__(self, rounds_t: int = 1) -> None:
        self.rounds_t = rounds_t

    def scores(self, state: SearchState, edge: str) -> list[float]:
        arms = state.arms[edge]
        return [ucb(arms[k].mean, arms[k].count, state.total) for k in self.candidates(state, edge)]

    def candidates(self, state: SearchState, edge: str) -> list[str]:
        names = state.edges[edge]
        potential = state.potentials.get(edge)
        if not potential:
            return list(names)
        keep = math.ceil(len(names) / 2)
        least = sorted(names, key=lambda k: (potential[k], names.index(k)))[:keep]
        return [k for k in names if k in least]


class ChildParent(Policy):
    """CP-NAS: reward z = β_P(A_P − A_C) + A_C per sample; abandon argmin of softmax(z̄) per edge.

    The evaluation returns (child accuracy, parent accuracy) of the same sampled architecture
    (child binary, parent float). z̄_k is the mean of the operation's z over the current round.
    """

    name = "cp"

    def __init__(self, beta_p: float = 0.5, rounds_t: int = 1) -> None:
        self.beta_p = beta_p
        self.rounds_t = rounds_t

    def reward(self, result: float | tuple[float, float]) -> float:
        if not isinstance(result, (tuple, list)) or len(result) != 2:
            raise ValueError(
                f"the cp policy needs (child_accuracy, parent_accuracy) from the evaluation, got {result!r}"
            )
        return cp_indicator(float(result[0]), float(result[1]), self.beta_p)

    def scores(self, state: SearchState, edge: str) -> list[float]:
        arms = state.arms[edge]
        means = [_mean(arms[k].round_rewards) for k in state.edges[edge]]
        return softmax(means)


class AntiBandit(Policy):
    """ABanditNAS: sample by LCB (p ∝ exp(−s_L)), update m by a moving average, abandon argmin UCB.

    Before the first round, one block without replacement gives every arm its initial m (its
    first reward) and n = 1. A round is K·`rounds_t` draws; each edge draws its operation
    independently from p(o_k) = exp(−s_L(o_k)) / Σ_m exp(−s_L(o_m)).
    """

    name = "anti_bandit"

    def __init__(self, lam: float = 0.5, rounds_t: int = 1) -> None:
        self.lam = lam
        self.rounds_t = rounds_t

    def round_length(self, state: SearchState) -> int:
        initial = _alive(state) if state.round == 0 else 0
        return initial + _alive(state) * self.rounds_t

    def next_sample(self, state: SearchState, rng: random.Random) -> Sample:
        if not state.initialised:
            if not state.pending:
                state.pending = _block_without_replacement(state, rng)
            sample = state.pending.pop(0)
            state.initialised = not state.pending
            return sample
        sample = {}
        for edge, names in state.edges.items():
            weights = lcb_probabilities(state, edge)
            sample[edge] = names[_draw(weights, rng)]
        return sample

    def update(self, arm: Arm, reward: float) -> None:
        arm.mean = reward if arm.count == 0 else (1.0 - self.lam) * arm.mean + self.lam * reward
        arm.count += 1

    def scores(self, state: SearchState, edge: str) -> list[float]:
        arms = state.arms[edge]
        return [ucb(arms[k].mean, arms[k].count, state.total) for k in state.edges[edge]]


def lcb_probabilities(state: SearchState, edge: str) -> list[float]:
    """ABanditNAS Eq. 4.10: p(o_k) = softmax_k(−s_L(o_k)) over the operations alive on `edge`."""
    arms = state.arms[edge]
    return softmax([-lcb(arms[k].mean, arms[k].count, state.total) for k in state.edges[edge]])


POLICIES: dict[str, type[Policy]] = {cls.name: cls for cls in (BNAS, ChildParent, AntiBandit)}


def make_policy(data: Mapping[str, Any]) -> Policy:
    """The policy described by `Policy.to_dict()` output (or `{"name": ..., **params}`)."""
    params = dict(data)
    name = params.pop("name")
    if name not in POLICIES:
        raise ValueError(f"unknown search policy {name!r}; choose one of {sorted(POLICIES)}")
    return POLICIES[name](**params)


Evaluate = Callable[[Sample], "float | tuple[float, float]"]


def step(state: SearchState, evaluate: Evaluate) -> dict[str, str]:
    """Take one sample, evaluate it, credit the reward; at the end of a round abandon one arm per edge.

    Returns the operations abandoned by this step (edge → operation; empty inside a round).
    """
    if state.done:
        return {}
    policy = make_policy(state.policy)
    rng = random.Random()
    rng.setstate(_rng_from_data(state.rng_state))
    sample = policy.next_sample(state, rng)
    state.rng_state = _rng_to_data(rng.getstate())
    reward = policy.reward(evaluate(dict(sample)))
    state.total += 1
    state.round_samples += 1
    for edge, name in sample.items():
        arm = state.arms[edge][name]
        policy.update(arm, reward)
        arm.round_rewards.append(reward)
    if state.round_samples < policy.round_length(state):
        return {}
    removed = {}
    for edge, names in state.edges.items():
        if len(names) == 1:
            continue
        candidates = policy.candidates(state, edge)
        loser = candidates[argmin_first(policy.scores(state, edge))]
        names.remove(loser)
        removed[edge] = loser
        state.abandoned.append({"round": state.round, "edge": edge, "op": loser})
    for ops in state.arms.values():
        for arm in ops.values():
            arm.round_rewards.clear()
    state.round += 1
    state.round_samples = 0
    state.pending = []
    return removed


def run(
    state: SearchState, evaluate: Evaluate, on_step: Callable[[SearchState, dict[str, str]], None] | None = None
) -> Sample:
    """Step until one operation is left per edge; `on_step` sees the state after every sample (progress, saving)."""
    while not state.done:
        removed = step(state, evaluate)
        if on_step is not None:
            on_step(state, removed)
    return state.choice


def _alive(state: SearchState) -> int:
    return max(len(names) for names in state.edges.values())


def _block_without_replacement(state: SearchState, rng: random.Random) -> list[Sample]:
    """K samples in which every alive operation of every edge appears once (edges with fewer ops repeat)."""
    size = _alive(state)
    orders = {}
    for edge, names in state.edges.items():
        order = list(names)
        rng.shuffle(order)
        orders[edge] = [order[i % len(order)] for i in range(size)]
    return [{edge: orders[edge][i] for edge in state.edges} for i in range(size)]


def _draw(weights: Sequence[float], rng: random.Random) -> int:
    point = rng.random()
    cumulative = 0.0
    for index, weight in enumerate(weights):
        cumulative += weight
        if point < cumulative:
            return index
    return len(weights) - 1


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else -math.inf


def _rng_to_data(rng_state: tuple) -> list[Any]:
    version, internal, gauss = rng_state
    return [version, list(internal), gauss]


def _rng_from_data(data: Sequence[Any]) -> tuple:
    version, internal, gauss = data
    return (version, tuple(internal), gauss)
