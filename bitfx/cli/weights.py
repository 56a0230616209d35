"""`--weights FILE`: trained weights for the model a command names.

FILE is either a state dict of the float model (`torch.save(model.state_dict(), FILE)`, also
accepted inside a training checkpoint dict under `state_dict` or `model`), loaded into the
model before capture, or a `bitfx.save` file, which is the rewritten model itself (its recipe
must name the same factory). Both are read with `torch.load(weights_only=True)`: no code from
the file runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import fx, nn

from bitfx.checkpoint import FORMAT, load_checkpoint
from bitfx.errors import ModelSpecError

_WRAPPER_KEYS = ("state_dict", "model")
WEIGHTS_HELP = (
    "trained weights: a state dict of the float model (loaded before capture) "
    "or a bitfx.save file of the rewritten model (used as it is; its passes are not run again)"
)


def read_weights(path: str, model: nn.Module, model_spec: str) -> fx.GraphModule | None:
    """Load FILE into `model` (a state dict; returns None) or rebuild the `bitfx.save` model it holds (returned)."""
    payload = _torch_load(path)
    if isinstance(payload, Mapping) and payload.get("format") == FORMAT:
        checkpoint = load_checkpoint(path)
        if checkpoint.recipe.model != model_spec:
            raise ModelSpecError(
                f"--weights {path!r} is a bitfx checkpoint of {checkpoint.recipe.model!r}, not of {model_spec!r}"
            )
        return checkpoint.model.eval()
    _load_state_dict(model, _state_dict_in(payload, path), path)
    return None


def _torch_load(path: str) -> Any:
    if not Path(path).is_file():
        raise ModelSpecError(f"--weights {path!r} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ModelSpecError(
            f"--weights {path!r} cannot be read as a state dict with torch.load(weights_only=True) "
            f"({type(error).__name__}); save model.state_dict() or use bitfx.save"
        ) from error


def _state_dict_in(payload: Any, path: str) -> Mapping[str, torch.Tensor]:
    """The tensor mapping of `payload`, looking one level into a training checkpoint dict."""
    if _is_state_dict(payload):
        return payload
    if isinstance(payload, Mapping):
        for key in _WRAPPER_KEYS:
            if _is_state_dict(payload.get(key)):
                return payload[key]
    raise ModelSpecError(
        f"--weights {path!r} holds a {type(payload).__name__} that is not a state dict "
        f"(a mapping of names to tensors, or one under {' or '.join(map(repr, _WRAPPER_KEYS))})"
    )


def _is_state_dict(value: Any) -> bool:
    return isinstance(value, Mapping) and bool(value) and all(isinstance(v, torch.Tensor) for v in value.values())


def _load_state_dict(model: nn.Module, state: Mapping[str, torch.Tensor], path: str) -> None:
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = [k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or shapes:
        parts = [f"{len(missing)} missing (e.g. {missing[0]!r})"] if missing else []
        parts += [f"{len(unexpected)} unexpected (e.g. {unexpected[0]!r})"] if unexpected else []
        parts += [f"{len(shapes)} of another shape (e.g. {shapes[0]!r})"] if shapes else []
        hint = ""
        if unexpected and all(k.startswith("module.") for k in unexpected):
            hint = "; the names start with 'module.' (a DataParallel model): save model.module.state_dict()"
        elif missing and unexpected:
            hint = "; a state dict of a rewritten model is saved with bitfx.save, not state_dict()"
        raise ModelSpecError(f"--weights {path!r} does not fit the model: {', '.join(parts)} state-dict entries{hint}")
    model.load_state_dict(state)
