"""The textual pipeline: `fuse_bn,binarize(scheme=xnor)` to and from (name, params) pairs."""

from __future__ import annotations

import ast
from typing import Any

from bitfx.errors import PassConfigError

_OPEN, _CLOSE = "([{", ")]}"


def parse_pass_list(text: str) -> list[tuple[str, dict[str, Any]]]:
    """Parse `name` / `name(key=value, …)` items separated by commas.

    Values are Python literals (`0.5`, `'a'`, `[1, 2]`, `True`,
    `{'by_name': {'fc': False}}`); a bare word is a string, also inside a literal, so
    `scheme=xnor` means `scheme='xnor'` and `{by_name: {fc: false}}` means
    `{'by_name': {'fc': False}}`; `true`/`false` are booleans. A value that starts like
    a literal (a bracket, brace or quote) but does not parse as one is an error, never a string.
    """
    items = []
    for item in _split_top_level(text, ","):
        item = item.strip()
        if not item:
            raise PassConfigError(f"empty pass name in pass list {text!r}")
        name, _, rest = item.partition("(")
        name = name.strip()
        if not name.isidentifier():
            raise PassConfigError(
                f"{name!r} in pass list {text!r} is not a pass name; write name or name(key=value, ...)"
            )
        if rest and not rest.rstrip().endswith(")"):
            raise PassConfigError(f"{item!r} in {text!r} must be written name(key=value, ...) with nothing after ')'")
        items.append((name, _parse_params(name, rest.rstrip()[:-1]) if rest else {}))
    return items


def _parse_params(pass_name: str, text: str) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for assignment in _split_top_level(text, ","):
        if not assignment.strip():
            continue
        key, equals, value = assignment.partition("=")
        key = key.strip()
        if not equals or not key.isidentifier():
            raise PassConfigError(f"parameter {assignment.strip()!r} of pass {pass_name!r} must be written key=value")
        params[key] = _parse_value(pass_name, key, value.strip())
    return params


def _parse_value(pass_name: str, key: str, text: str) -> Any:
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    try:
        return ast.literal_eval(_bare_words_as_strings(ast.parse(text, mode="eval")))
    except (ValueError, SyntaxError) as error:
        if text[:1] in _OPEN + "'\"":
            raise PassConfigError(
                f"parameter {key}={text} of pass {pass_name!r} cannot be parsed as a Python literal; "
                "quote names that are not plain words, e.g. layers={'by_name': {'layer1.0.conv1': False}}"
            ) from error
        return text


class _BareWords(ast.NodeTransformer):
    """Plain words inside a literal are strings (`[x, y]` → `['x', 'y']`); true/false are booleans."""

    def visit_Name(self, node: ast.Name) -> ast.Constant:
        value = {"true": True, "false": False}.get(node.id.lower(), node.id)
        return ast.copy_location(ast.Constant(value), node)


def _bare_words_as_strings(tree: ast.Expression) -> ast.Expression:
    return ast.fix_missing_locations(_BareWords().visit(tree))


def _split_top_level(text: str, separator: str) -> list[str]:
    """Split on `separator` outside brackets and quotes."""
    parts, depth, quote, current = [], 0, None, []
    for char in text:
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char in _OPEN:
            depth += 1
        elif char in _CLOSE:
            depth -= 1
            if depth < 0:
                raise PassConfigError(f"unbalanced {char!r} in {text!r}")
        elif char == separator and depth == 0:
            parts.append("".join(current))
            current = []
            continue
        current.append(char)
    if depth or quote:
        raise PassConfigError(f"unbalanced brackets or quotes in {text!r}")
    parts.append("".join(current))
    return parts
