"""Architecture search drivers: spaces, genotypes, the bandit core and its policies.

A search emits a *value*, a `Genotype`; `bitfx.ir.cells.build` makes a plain model of it and
everything 1-bit is then done by the usual passes (`capture` → `binarize` → lowering).
"""

from bitfx.search.bandit import BNAS, POLICIES, AntiBandit, ChildParent, Policy, SearchState, make_policy, run, step

__all__ = ["BNAS", "POLICIES", "AntiBandit", "ChildParent", "Policy", "SearchState", "make_policy", "run", "step"]
