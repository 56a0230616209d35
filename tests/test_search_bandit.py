"""The bandit core and its three policies on synthetic reward streams, against hand-computed values."""

import json
import math
from collections import Counter

import pytest

from bitfx.search.bandit import (
    BNAS,
    AntiBandit,
    Arm,
    ChildParent,
    SearchState,
    cp_indicator,
    lcb,
    lcb_probabilities,
    run,
    softmax,
    step,
    ucb,
)


class FixedDraws:
    """A stand-in RNG whose random() returns the given numbers in order."""

    def __init__(self, values):
        self.values = list(values)

    def random(self):
        return self.values.pop(0)


def _by_op(values):
    """An evaluation whose reward depends only on the operation of the single edge 'e'."""
    return lambda sample: values[sample["e"]]


def test_confidence_bounds_eq_4_9_and_4_12():
    # m = 0.5, n = 2, N = 4: √(2 ln 4 / 2) = √(ln 4) = 1.1774100225154747
    assert ucb(0.5, 2, 4) == pytest.approx(0.5 + 1.1774100225154747, abs=1e-15)
    assert lcb(0.5, 2, 4) == pytest.approx(0.5 - 1.1774100225154747, abs=1e-15)
    assert ucb(0.1, 0, 4) == math.inf and lcb(0.1, 0, 4) == -math.inf


def test_softmax_and_cp_indicator_eq_4_15_4_16():
    e = softmax([0.75, 0.7])
    assert e[0] == pytest.approx(1 / (1 + math.exp(-0.05)), abs=1e-15)
    assert sum(e) == pytest.approx(1.0)
    # z = β_P (A_P − A_C) + A_C
    assert cp_indicator(0.6, 0.9, 0.5) == pytest.approx(0.75)
    assert cp_indicator(0.6, 0.9, 0.0) == pytest.approx(0.6)
    assert cp_indicator(0.6, 0.9, 1.0) == pytest.approx(0.9)


def test_bnas_every_op_rewarded_once_per_round_and_argmin_ucb_goes():
    calls = Counter()

    def evaluate(sample):
        calls[(sample["e"], sample["f"])] += 1
        return {"a": 0.9, "b": 0.5, "c": 0.7}[sample["e"]] + {"a": 0.0, "b": 0.05, "c": 0.02}[sample["f"]]

    state = SearchState.start({"e": ["a", "b", "c"], "f": ["a", "b", "c"]}, BNAS(), seed=3)
    seen = Counter()
    for _ in range(3):
        step_removed = step(state, lambda s: (seen.update([("e", s["e"]), ("f", s["f"])]), evaluate(s))[1])
    assert seen == Counter({(edge, op): 1 for edge in "ef" for op in "abc"})  # one reward per op per round
    # the counts are equal, so the UCB order is the mean order; on "e" the 0.2 gaps dominate the "f" bonus
    f_means = {op: arm.mean for op, arm in state.arms["f"].items()}
    assert step_removed == {"e": "b", "f": min(f_means, key=f_means.get)}
    assert state.arms["e"]["b"].count == 1 and state.total == 3
    choice = run(state, evaluate)
    assert choice["e"] == "a"
    assert [(a["round"], a["edge"]) for a in state.abandoned] == [(0, "e"), (0, "f"), (1, "e"), (1, "f")]
    assert state.abandoned[2]["op"] == "c"
    assert state.total == 3 + 2


def test_bnas_abandons_only_among_the_less_promising_half():
    state = SearchState.start({"e": ["a", "b", "c"]}, BNAS())
    # ⌈3/2⌉ = 2 operations of least potential: a (0.1) and c (0.2); b has the worst reward but stays
    state.potentials = {"e": {"a": 0.1, "b": 0.9, "c": 0.2}}
    removed = [step(state, _by_op({"a": 0.9, "b": 0.5, "c": 0.7})) for _ in range(3)]
    assert removed[-1] == {"e": "c"}


def test_bnas_ucb_prefers_the_less_explored_arm():
    state = SearchState.start({"e": ["a", "b"]}, BNAS())
    state.total = 4
    state.arms["e"]["a"] = Arm(mean=0.7, count=3)
    state.arms["e"]["b"] = Arm(mean=0.6, count=1)
    # s_U(a) = 0.7 + √(2 ln 4 / 3) = 1.661351…,  s_U(b) = 0.6 + √(2 ln 4) = 2.265109…
    assert BNAS().scores(state, "e") == pytest.approx(
        [0.7 + math.sqrt(2 * math.log(4) / 3), 0.6 + math.sqrt(2 * math.log(4))]
    )


def test_cp_scores_are_the_softmax_of_the_round_mean_indicator():
    policy = ChildParent(beta_p=0.5, rounds_t=2)
    results = {"a": [(0.6, 0.9), (0.5, 0.7)], "b": [(0.7, 0.7), (0.8, 0.9)]}
    # z_a = 0.75, 0.6 → z̄_a = 0.675;  z_b = 0.7, 0.85 → z̄_b = 0.775
    state = SearchState.start({"e": ["a", "b"]}, policy)
    for op, pairs in results.items():
        for pair in pairs:
            state.arms["e"][op].round_rewards.append(policy.reward(pair))
    expected_a = math.exp(0.675) / (math.exp(0.675) + math.exp(0.775))
    assert policy.scores(state, "e") == pytest.approx([expected_a, 1 - expected_a], abs=1e-12)


def test_cp_run_abandons_the_smallest_indicator_per_round():
    pairs = {"a": (0.6, 0.9), "b": (0.7, 0.7), "c": (0.5, 0.6)}  # z = 0.75, 0.70, 0.55
    state = SearchState.start({"e": ["a", "b", "c"]}, ChildParent(beta_p=0.5, rounds_t=2), seed=1)
    calls = []
    choice = run(state, lambda s: (calls.append(s["e"]), pairs[s["e"]])[1])
    assert [a["op"] for a in state.abandoned] == ["c", "b"]
    assert choice == {"e": "a"}
    assert len(calls) == 3 * 2 + 2 * 2  # K·T samples per round
    assert Counter(calls[:6]) == Counter({"a": 2, "b": 2, "c": 2})
    # with β_P = 2 the parent–child gap is amplified: z = 1.2, 0.7, 0.7 → b (listed first among ties) goes
    state = SearchState.start({"e": ["a", "b", "c"]}, ChildParent(beta_p=2.0), seed=1)
    for _ in range(3):
        removed = step(state, lambda s: pairs[s["e"]])
    assert removed == {"e": "b"}


def test_cp_rejects_a_single_accuracy():
    state = SearchState.start({"e": ["a", "b"]}, ChildParent())
    with pytest.raises(ValueError, match="child_accuracy, parent_accuracy"):
        step(state, lambda s: 0.5)


def test_anti_bandit_moving_average_update():
    policy = AntiBandit(lam=0.25)
    arm = Arm()
    policy.update(arm, 0.8)
    assert (arm.mean, arm.count) == (0.8, 1)  # m_{k,0}: the first reward
    policy.update(arm, 0.4)
    assert arm.mean == pytest.approx(0.75 * 0.8 + 0.25 * 0.4) and arm.count == 2


def test_anti_bandit_initialisation_then_lcb_sampling_eq_4_10():
    state = SearchState.start({"e": ["a", "b"]}, AntiBandit(lam=0.5), seed=0)
    rewards = _by_op({"a": 0.8, "b": 0.4})
    step(state, rewards)
    step(state, rewards)
    assert state.initialised and state.total == 2
    assert {k: (a.mean, a.count) for k, a in state.arms["e"].items()} == {"a": (0.8, 1), "b": (0.4, 1)}
    # s_L(a) = 0.8 − √(2 ln 2), s_L(b) = 0.4 − √(2 ln 2); p ∝ exp(−s_L) → p_b = 1 / (1 + e^{−0.4})
    p_a, p_b = lcb_probabilities(state, "e")
    assert p_b == pytest.approx(1 / (1 + math.exp(-0.4)), abs=1e-12) and p_a == pytest.approx(1 - p_b, abs=1e-12)
    policy = AntiBandit(lam=0.5)
    assert policy.next_sample(state, FixedDraws([p_a - 1e-9])) == {"e": "a"}
    assert policy.next_sample(state, FixedDraws([p_a + 1e-9])) == {"e": "b"}


def test_anti_bandit_abandons_argmin_ucb_eq_4_13():
    state = SearchState.start({"e": ["a", "b"]}, AntiBandit())
    state.total, state.initialised, state.round = 4, True, 1
    state.arms["e"]["a"] = Arm(mean=0.7, count=3)
    state.arms["e"]["b"] = Arm(mean=0.6, count=1)
    policy = AntiBandit()
    assert policy.scores(state, "e") == pytest.approx(
        [0.7 + math.sqrt(2 * math.log(4) / 3), 0.6 + math.sqrt(2 * math.log(4))]
    )


def test_anti_bandit_round_lengths_and_counts():
    state = SearchState.start({"e": ["a", "b", "c"], "f": ["a", "b", "c"]}, AntiBandit(lam=0.5, rounds_t=2), seed=5)
    lengths, taken = [], 0
    while not state.done:
        taken += 1
        if step(state, lambda s: 0.1 * len(s["e"]) + (0.3 if s["f"] == "b" else 0.0)):
            lengths.append(taken)
            taken = 0
    # round 0: K initial samples + K·T draws; then (K−1)·T
    assert lengths == [3 + 3 * 2, 2 * 2]
    assert state.total == 13
    assert all(sum(a.count for a in state.arms[e].values()) == 13 for e in "ef")  # n counts every sample once


@pytest.mark.parametrize(
    "policy", [BNAS(rounds_t=2), ChildParent(beta_p=0.3, rounds_t=2), AntiBandit(lam=0.4, rounds_t=2)]
)
def test_search_resumed_from_plain_data_matches_an_uninterrupted_run(policy):
    edges = {f"n{i}": ["max_pool_3x3", "avg_pool_3x3", "skip_connect", "sep_conv_3x3"] for i in range(3)}

    def evaluate(sample):
        score = sum(len(op) * (i + 1) % 7 for i, op in enumerate(sample.values())) / 50
        return (score, score + 0.1 * ("sep" in sample["n0"])) if policy.name == "cp" else score

    whole = SearchState.start(edges, policy, seed=11)
    run(whole, evaluate)
    part = SearchState.start(edges, policy, seed=11)
    for _ in range(7):
        step(part, evaluate)
    resumed = SearchState.from_dict(json.loads(json.dumps(part.to_dict())))
    assert resumed.to_dict() == part.to_dict()
    run(resumed, evaluate)
    assert resumed.to_dict() == whole.to_dict()
    assert resumed.done and len(resumed.abandoned) == 3 * 3
