"""`bitfx.save` / `bitfx.load`: a rewritten model as a recipe plus its weights, loaded without unpickling code.

A checkpoint file (written by `torch.save`, read by `torch.load(..., weights_only=True)`) holds
only plain data and tensors:

- the recipe: the model factory (`package.module:factory`) and its keyword arguments, the
  shape and dtype of the capture inputs, and the pass pipeline as `Pipeline.to_config` writes it;
- the example inputs the model was captured with, the state dict, the train/eval mode;
- `extra`: anything else of plain data and tensors the caller wants kept with it (an
  optimizer's state dict, the epoch).

Loading calls the factory, captures, replays the pipeline and loads the state dict, so no code
from the file ever runs. Passes that calibrate on data replay without it: their calibrated
values (PAMS's α, BatchNorm statistics) are in the state dict; `rank_prune` ranks channels on
data, and which channels it keeps is in the weights, so it replays with `criterion="random"`,
which removes as many channels per group and so builds the same shapes. `save` rebuilds the
model from the recipe before it writes and refuses a recipe that does not rebuild the graph it
is given (same generated code, module types, state-dict names and shapes), so a file that was
written always loads.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import fx, nn

from bitfx.errors import BitfxError, CheckpointError, ModelSpecError
from bitfx.ir import capture, example_inputs_of
from bitfx.passes import LayerSelection, Pipeline, create_pass
from bitfx.specs import load_callable

FORMAT = "bitfx-checkpoint"
VERSION = 1
RECIPE_KEY = "bitfx_recipe"
_NO_PASSES: dict[str, Any] = {"passes": []}
_REPLAY_PARAMS: dict[str, dict[str, Any]] = {"rank_prune": {"criterion": "random"}}


@dataclass(frozen=True)
class Recipe:
    """How to rebuild a model: factory spec and arguments, capture inputs, pipeline config (plain data)."""

    model: str
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    inputs: list[dict[str, Any]] = field(default_factory=list)
    pipeline: dict[str, Any] = field(default_factory=lambda: {"passes": []})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Checkpoint:
    """What `load_checkpoint` returns: the rebuilt model, the recipe, and the caller's `extra`."""

    model: fx.GraphModule
    recipe: Recipe
    extra: dict[str, Any]


def save(
    gm: fx.GraphModule,
    path: str | os.PathLike[str],
    *,
    model: str | None = None,
    model_kwargs: Mapping[str, Any] | None = None,
    pipeline: Pipeline | str | None = None,
    example_inputs: tuple[torch.Tensor, ...] | None = None,
    extra: Mapping[str, Any] | None = None,
    check: bool = True,
) -> Path:
    """Write `gm` as a checkpoint at `path` (atomically: a temp file in the same directory, then a rename).

    `model` is the `package.module:factory` that builds the float model (called with
    `model_kwargs`, plain data only); `pipeline` is the `Pipeline` (or its spec text, e.g.
    `"fuse_bn,binarize"`) that was run on the captured model; no pipeline means `gm` is the
    captured model itself. For a model that came from `load`, both default to the recipe it was
    loaded with. `example_inputs` default to those `capture` recorded. `extra` is stored as is
    and must hold only tensors and plain data (e.g. `{"optimizer": optimizer.state_dict()}`).
    With `check` (the default), the model is first rebuilt from the recipe and compared with `gm`.
    """
    recorded: Recipe | None = gm.meta.get(RECIPE_KEY)
    if model is None and recorded is None:
        raise CheckpointError(
            "bitfx.save needs model='package.module:factory', the function that builds the float model"
        )
    inputs = tuple(example_inputs) if example_inputs is not None else example_inputs_of(gm)
    if inputs is None:
        raise CheckpointError(
            "bitfx.save needs the capture inputs: capture the model with bitfx.ir.capture or pass example_inputs="
        )
    if isinstance(pipeline, str):
        pipeline = Pipeline.from_spec(pipeline)
    if model is None:
        model, model_kwargs = recorded.model, recorded.model_kwargs if model_kwargs is None else model_kwargs
    recipe = Recipe(
        model=model,
        model_kwargs=_plain(dict(model_kwargs or {}), "model_kwargs"),
        inputs=[{"shape": list(t.shape), "dtype": str(t.dtype).removeprefix("torch.")} for t in inputs],
        pipeline=_plain_pipeline(pipeline) if pipeline is not None else recorded.pipeline if recorded else _NO_PASSES,
    )
    if check:
        _check_rebuilds(gm, recipe, inputs)
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "recipe": recipe.to_dict(),
        "example_inputs": [t.detach().clone() for t in inputs],
        "training": gm.training,
        "state_dict": gm.state_dict(),
        "extra": dict(extra or {}),
    }
    return _write_atomically(payload, Path(path))


def load(path: str | os.PathLike[str]) -> fx.GraphModule:
    """Rebuild the model saved at `path` by `save` (see `load_checkpoint` for the `extra` too)."""
    return load_checkpoint(path).model


def load_checkpoint(path: str | os.PathLike[str]) -> Checkpoint:
    """Read `path` with `torch.load(weights_only=True)`, rebuild the model from its recipe and load its state dict."""
    path = Path(path)
    payload = _read(path)
    recipe = Recipe(**payload["recipe"])
    inputs = tuple(payload["example_inputs"])
    gm = _rebuild(recipe, inputs, where=str(path))
    _load_state(gm, payload["state_dict"], recipe, str(path))
    gm.train(bool(payload.get("training", False)))
    return Checkpoint(gm, recipe, payload.get("extra", {}))


def _rebuild(recipe: Recipe, inputs: tuple[torch.Tensor, ...], where: str) -> fx.GraphModule:
    """Factory → capture → pipeline replayed without data; the recipe is recorded in `gm.meta`."""
    float_model = _factory(recipe.model, where)(**recipe.model_kwargs)
    if not isinstance(float_model, nn.Module):
        raise CheckpointError(
            f"{where}: model factory {recipe.model!r} returned a {type(float_model).__name__}, not a torch.nn.Module"
        )
    gm = capture(float_model, inputs)
    passes = []
    for entry in recipe.pipeline.get("passes", []):
        params = {k: v for k, v in entry.items() if k != "name"}
        passes.append(create_pass(entry["name"], {**params, **_replay_params(entry["name"], params)}))
    rtol = recipe.pipeline.get("check", {}).get("rtol")
    try:
        rebuilt = Pipeline(passes, **({"rtol": rtol} if rtol is not None else {})).run(gm).graph_module
    except BitfxError as error:
        raise CheckpointError(
            f"{where}: cannot rebuild the model from its recipe (model {recipe.model!r}, passes "
            f"{[e['name'] for e in recipe.pipeline.get('passes', [])]}), replayed without calibration data: {error}"
        ) from error
    rebuilt.meta[RECIPE_KEY] = recipe
    return rebuilt


def _replay_params(name: str, params: dict[str, Any]) -> dict[str, Any]:
    """Parameter overrides that let a data-calibrated pass replay without data (see the module docstring)."""
    if name == "rank_prune" and params.get("criterion", "rank") != "rank":
        return {}
    return _REPLAY_PARAMS.get(name, {})


def _check_rebuilds(gm: fx.GraphModule, recipe: Recipe, inputs: tuple[torch.Tensor, ...]) -> None:
    """Refuse to write a recipe that does not rebuild `gm`: same code, module types, state-dict names and shapes."""
    rebuilt = _rebuild(recipe, inputs, where="bitfx.save")
    problem = _first_difference(gm, rebuilt)
    if problem:
        raise CheckpointError(
            f"bitfx.save: the recipe (model {recipe.model!r}, passes {[e['name'] for e in recipe.pipeline['passes']]}) "
            f"does not rebuild this model: {problem}. Pass the factory and the full pipeline that produced it "
            "(model=..., model_kwargs=..., pipeline=...), or, for a graph edited by hand, pickle it with torch.save "
            "and load it with torch.load(weights_only=False) from trusted files only"
        )


def _first_difference(gm: fx.GraphModule, rebuilt: fx.GraphModule) -> str | None:
    types = {name: type(m).__name__ for name, m in gm.named_modules() if name}
    rebuilt_types = {name: type(m).__name__ for name, m in rebuilt.named_modules() if name}
    for name in [*types, *(n for n in rebuilt_types if n not in types)]:
        if types.get(name) != rebuilt_types.get(name):
            return f"module {name!r} is {types.get(name)} here and {rebuilt_types.get(name)} when rebuilt"
    if gm.code != rebuilt.code:
        return "the graphs differ (generated code is not the same)"
    return _state_mismatch(rebuilt.state_dict(), gm.state_dict())


def _state_mismatch(expected: Mapping[str, torch.Tensor], given: Mapping[str, Any]) -> str | None:
    missing = [k for k in expected if k not in given]
    unexpected = [k for k in given if k not in expected]
    if missing or unexpected:
        return f"state dict keys differ: missing {missing[:5]}, unexpected {unexpected[:5]}"
    for key, value in expected.items():
        other = given[key]
        if not isinstance(other, torch.Tensor) or other.shape != value.shape or other.dtype != value.dtype:
            found = f"{tuple(other.shape)} {other.dtype}" if isinstance(other, torch.Tensor) else type(other).__name__
            return f"state dict entry {key!r} is {found}, the model needs {tuple(value.shape)} {value.dtype}"
    return None


def _load_state(gm: fx.GraphModule, state: Any, recipe: Recipe, where: str) -> None:
    if not isinstance(state, Mapping):
        raise CheckpointError(f"{where}: the state dict is a {type(state).__name__}, not a mapping of names to tensors")
    problem = _state_mismatch(gm.state_dict(), state)
    if problem:
        raise CheckpointError(
            f"{where}: the saved weights do not fit the model rebuilt from its recipe "
            f"(model {recipe.model!r}): {problem}. "
            "Was the model factory changed since the file was written?"
        )
    gm.load_state_dict(state)


def _read(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        hint = ""
        if "weights_only" in str(error) or "Unpickl" in type(error).__name__:
            hint = (
                "; it holds pickled objects (a torch.save of a whole model?): only if you trust the file, "
                "load it with torch.load(path, weights_only=False)"
            )
        raise CheckpointError(
            f"{str(path)!r} is not a bitfx checkpoint: torch.load failed ({type(error).__name__}){hint}"
        ) from error
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(
            f"{str(path)!r} is not a bitfx checkpoint (written by bitfx.save); "
            "for a plain state dict use model.load_state_dict(torch.load(path))"
        )
    version = payload.get("version")
    if version != VERSION:
        newer = isinstance(version, int) and version > VERSION
        raise CheckpointError(
            f"{str(path)!r} is a bitfx checkpoint of format version {version!r}; this bitfx reads version {VERSION}"
            + ("; upgrade bitfx to load it" if newer else "")
        )
    missing = [k for k in ("recipe", "example_inputs", "state_dict") if k not in payload]
    if missing or not isinstance(payload["recipe"], dict) or set(payload["recipe"]) != set(Recipe.__dataclass_fields__):
        what = missing or ["recipe"]
        raise CheckpointError(f"{str(path)!r} is a damaged bitfx checkpoint: missing or malformed {what}")
    return payload


def _write_atomically(payload: dict[str, Any], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as file:
            torch.save(payload, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    return path


def _factory(spec: str, where: str) -> Any:
    try:
        return load_callable(spec, "model")
    except ModelSpecError as error:
        raise CheckpointError(f"{where}: {error}") from error


def _plain_pipeline(pipeline: Pipeline) -> dict[str, Any]:
    config = copy.deepcopy(pipeline.to_config())
    for entry in config["passes"]:
        for key, value in entry.items():
            if isinstance(value, LayerSelection):
                entry[key] = value.to_config()
    return _plain(config, "pipeline")


def _plain(value: Any, what: str) -> Any:
    """`value` when it is made of None, bool, int, float, str, lists, tuples (as lists) and str-keyed dicts."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(v, what) for v in value]
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {k: _plain(v, what) for k, v in value.items()}
    raise CheckpointError(
        f"bitfx.save: {what} must be plain data (numbers, strings, lists, dicts) not {value!r} ({type(value).__name__})"
    )


__all__ = ["Checkpoint", "Recipe", "load", "load_checkpoint", "save"]
