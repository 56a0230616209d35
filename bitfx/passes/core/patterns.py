"""Regular expressions from layer selections, compiled only when their matching cost is bounded.

Python's `re` backtracks, so a pattern such as `(a+)+b` takes exponential time on a name
that almost matches, and a long chain of `.*` takes polynomial time of a high degree. A
pipeline file is input like any other, so a selection's pattern is refused when it

- is longer than `MAX_PATTERN_LENGTH` characters;
- repeats a group that itself holds a quantifier or an alternation (`(a+)+`, `(a?){30}`, `(a|ab)*`);
- has more than `MAX_QUANTIFIERS` quantifiers (`*`, `+`, `{m,n}` with n > 1).

Layer-name patterns need none of these: `layer1\\..*`, `.*\\.conv\\d`, `(layer1|layer2)\\..*`.
"""

from __future__ import annotations

import re
import re._constants as sre
import re._parser as sre_parse
from typing import Any

from bitfx.errors import PassConfigError

MAX_PATTERN_LENGTH = 256
MAX_QUANTIFIERS = 4

_REPEATS = {sre.MAX_REPEAT, sre.MIN_REPEAT, sre.POSSESSIVE_REPEAT}


def compile_layer_pattern(pattern: str) -> re.Pattern[str]:
    """`pattern` compiled, or `PassConfigError` saying why it is invalid or too costly to match."""
    if not isinstance(pattern, str):
        raise PassConfigError(f"layer selection: a by_regex key must be a string, got {pattern!r}")
    if len(pattern) > MAX_PATTERN_LENGTH:
        raise PassConfigError(
            f"layer selection: regex {pattern[:40]!r}... is {len(pattern)} characters long; "
            f"the limit is {MAX_PATTERN_LENGTH} (list the layers in by_name instead)"
        )
    try:
        compiled = re.compile(pattern)
        parsed = sre_parse.parse(pattern)
    except re.error as error:
        raise PassConfigError(f"layer selection: invalid regex {pattern!r}: {error}") from error
    problem = _costly(list(parsed), inside_repeat=False)
    quantifiers = _count_repeats(list(parsed))
    if problem is None and quantifiers > MAX_QUANTIFIERS:
        problem = f"has {quantifiers} quantifiers, more than {MAX_QUANTIFIERS}"
    if problem is not None:
        raise PassConfigError(
            f"layer selection: regex {pattern!r} {problem}, which can make matching take very long; "
            r"write it without repeating a group that holds a quantifier or '|' (e.g. 'layer\d+\..*')"
        )
    return compiled


def _is_repeat(op: Any, arg: Any) -> bool:
    return op in _REPEATS and arg[1] > 1


def _children(op: Any, arg: Any) -> list[list[tuple[Any, Any]]]:
    """The sub-patterns of one parsed item (groups, repeats, alternations, lookarounds)."""
    if op in _REPEATS:
        return [list(arg[2])]
    if op in (sre.SUBPATTERN,):
        return [list(arg[-1])]
    if op == sre.ATOMIC_GROUP:
        return [list(arg)]
    if op in (sre.ASSERT, sre.ASSERT_NOT):
        return [list(arg[1])]
    if op == sre.BRANCH:
        return [list(branch) for branch in arg[1]]
    if op == sre.GROUPREF_EXISTS:
        return [list(part) for part in arg[1:] if part is not None]
    return []


def _costly(items: list[tuple[Any, Any]], *, inside_repeat: bool) -> str | None:
    for op, arg in items:
        if inside_repeat and op in _REPEATS:
            return "repeats a group that holds a quantifier"
        if inside_repeat and op == sre.BRANCH:
            return "repeats a group that holds an alternation '|'"
        for child in _children(op, arg):
            problem = _costly(child, inside_repeat=inside_repeat or _is_repeat(op, arg))
            if problem is not None:
                return problem
    return None


def _count_repeats(items: list[tuple[Any, Any]]) -> int:
    return sum(
        int(_is_repeat(op, arg)) + sum(_count_repeats(child) for child in _children(op, arg)) for op, arg in items
    )
