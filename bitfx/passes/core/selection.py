"""Layer selection: one object, one precedence rule, used by every pass to choose targets.

Precedence, from weakest to strongest:

1. `default`   — the value for every layer;
2. `by_type`   — by module class name (`"Conv2d"`); a subclass matches its base's entry,
                 the most specific class in the module's MRO wins;
3. `by_regex`  — by a regular expression that must match the whole qualified module
                 name (`r"layer1\\..*"`); when several match, the one listed last wins; a
                 pattern whose matching cost is unbounded is refused (`patterns`);
4. `by_name`   — by exact qualified module name (`"layer1.0.conv1"`).

Values are whatever the pass needs: `True`/`False` to include a layer, a prune rate, a
scheme name. `None` means "not chosen". Every decision carries the rule that made it, so a
pass can report why a layer was or was not rewritten.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import fx, nn

from bitfx.errors import PassConfigError
from bitfx.passes.core.patterns import compile_layer_pattern


@dataclass(frozen=True)
class Decision:
    """The value chosen for one layer and the rule that chose it (e.g. `name 'fc'`)."""

    value: Any
    rule: str


@dataclass
class LayerSelection:
    """Chooses a value per layer; see the module docstring for the precedence."""

    default: Any = None
    by_type: dict[str, Any] = field(default_factory=dict)
    by_regex: dict[str, Any] = field(default_factory=dict)
    by_name: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for key in ("by_type", "by_regex", "by_name"):
            if not isinstance(getattr(self, key), dict):
                raise PassConfigError(
                    f"layer selection: {key} must be a table of {{key = value}}, got {getattr(self, key)!r}"
                )
        self.by_type = {(k.__name__ if isinstance(k, type) else str(k)): v for k, v in self.by_type.items()}
        self._patterns = [(compile_layer_pattern(pattern), pattern, value) for pattern, value in self.by_regex.items()]

    def resolve(self, name: str, module: nn.Module) -> Decision:
        """The value for the layer `name` (qualified module name) holding `module`."""
        if name in self.by_name:
            return Decision(self.by_name[name], f"name {name!r}")
        for compiled, pattern, value in reversed(self._patterns):
            if compiled.fullmatch(name):
                return Decision(value, f"regex {pattern!r}")
        for cls in type(module).__mro__:
            if cls.__name__ in self.by_type:
                return Decision(self.by_type[cls.__name__], f"type {cls.__name__}")
        return Decision(self.default, "default")

    def select(
        self, gm: fx.GraphModule, candidate_types: tuple[type[nn.Module], ...]
    ) -> list[tuple[fx.Node, nn.Module, Decision]]:
        """Every `call_module` node whose module is one of `candidate_types`, with its decision.

        Names in `by_name` that are not modules of `gm` are an error, so a typo never
        silently selects nothing.
        """
        self.check_names(gm)
        chosen = []
        for node in gm.graph.nodes:
            if node.op == "call_module":
                module = gm.get_submodule(node.target)
                if isinstance(module, candidate_types):
                    chosen.append((node, module, self.resolve(node.target, module)))
        return chosen

    def check_names(self, gm: fx.GraphModule) -> None:
        """Raise `PassConfigError` for `by_name` entries that name no module of `gm`."""
        names = {name for name, _ in gm.named_modules()}
        unknown = sorted(set(self.by_name) - names)
        if unknown:
            examples = sorted(n for n in names if n)[:8]
            raise PassConfigError(
                f"layer selection names {unknown}, which are not modules of the model; modules are named "
                f"like {examples}"
            )

    def to_config(self) -> dict[str, Any]:
        """A plain dict (only the non-empty parts) for config files."""
        config = {"default": self.default, "by_type": self.by_type, "by_regex": self.by_regex, "by_name": self.by_name}
        return {key: value for key, value in config.items() if value not in (None, {})}

    @classmethod
    def from_config(cls, config: Any, base: LayerSelection | None = None) -> LayerSelection:
        """Build from `to_config`'s dict; a bare value means `default` for every layer.

        A dict's missing keys come from `base` (a pass's own default selection), so
        `{"by_name": {"fc": False}}` excludes `fc` and keeps the pass's default for every
        other layer; write `"default"` to replace it (e.g. `{"default": False, "by_name": {"fc": True}}`).
        """
        if isinstance(config, LayerSelection):
            return config
        if not isinstance(config, dict):
            return cls(default=config)
        unknown = set(config) - {"default", "by_type", "by_regex", "by_name"}
        if unknown:
            raise PassConfigError(
                f"layer selection has unknown keys {sorted(unknown)}; valid keys: default, by_type, by_regex, by_name"
            )
        if base is not None:
            inherited = {"default": base.default, "by_type": base.by_type, "by_regex": base.by_regex}
            config = {**inherited, "by_name": base.by_name, **config}
        return cls(**config)
