"""`DeployedCache`: a binary layer's deployed form, kept between eval-mode forwards.

Outside training a binary layer runs its deployed form (sign(W), scale, bias, input transform).
Building it standardises, rotates and binarizes the latent weight, which costs more than the
op itself on small inputs; in eval mode the layer keeps the built form here and builds it again
only when it could differ.

The cached form is stale as soon as anything it was built from changes, so it is keyed on a
snapshot of the owning module's state, compared before every use:

- every parameter and buffer of the module and its submodules: object identity, version counter
  (bumped by every in-place write, e.g. `weight.mul_(2)` under `no_grad`, `load_state_dict`,
  an optimizer step), storage address (changed by `weight.data = ...`), dtype, device and shape;
- every submodule's identity, type and public scalar attributes (stride, padding, pad value,
  standardisation flag, ...), so replacing a quantizer or changing the geometry rebuilds.

While a form is cached, the cache holds the tensors, storages and submodules its key names, so
none of them can be freed and their identities or addresses reused by a replacement.

The owner also clears the cache on `train()`/`eval()`, on `_apply` (`.to()`, `.double()`, ...)
and when a state dict is loaded. Copies (`copy.deepcopy`, pickling) start with an empty cache.
The cached tensors are detached copies, so no gradient can flow through them; the owner uses
the cache only in eval mode when no gradient is needed.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from itertools import chain

from torch import nn

_SCALARS = (bool, int, float, str)


def state_key(module: nn.Module) -> tuple[Hashable, ...] | None:
    """A snapshot of everything `module`'s deployed form is built from; None when it cannot be
    taken (inference-mode tensors keep no version counter), and the form must not be cached."""
    parts = []
    for child in module.modules():
        tensors = []
        for t in chain(child._parameters.values(), child._buffers.values()):
            if t is not None and t.is_inference():
                return None
            tensors.append(None if t is None else (id(t), t._version, t.data_ptr(), t.dtype, t.device, t.shape))
        names = (tuple(child._parameters), tuple(child._buffers), tuple(child._modules))
        parts.append((id(child), type(child), names, tuple(tensors), _plain_attributes(child)))
    return tuple(parts)


def _referents(module: nn.Module) -> tuple[object, ...]:
    """What `state_key(module)` names by identity or address: kept alive while the key is in use."""
    tensors = [t for child in module.modules() for t in chain(child._parameters.values(), child._buffers.values())]
    tensors = [t for t in tensors if t is not None]
    children = list(module.modules())[1:]  # not `module` itself: no reference cycle through its cache
    return (*tensors, *(t.untyped_storage() for t in tensors), *children)


def _plain_attributes(module: nn.Module) -> tuple[tuple[str, object], ...]:
    """The public plain-value attributes of `module` (geometry, flags), in definition order."""
    return tuple((k, v) for k, v in vars(module).items() if not k.startswith("_") and _is_plain(v))


def _is_plain(value: object) -> bool:
    """A scalar, or a tuple of scalars (a stride): values compared by `==` without touching tensors."""
    return isinstance(value, _SCALARS) or (isinstance(value, tuple) and all(isinstance(v, _SCALARS) for v in value))


class DeployedCache:
    """The deployed form of one module, with the state key it was built under."""

    def __init__(self) -> None:
        self._key: tuple[Hashable, ...] | None = None
        self._form: nn.Module | None = None
        self._referents: tuple[object, ...] = ()

    def get(self, owner: nn.Module, build: Callable[[], nn.Module]) -> nn.Module:
        """The cached form when `owner`'s state key is unchanged since it was built, else `build()`
        (kept for the next call when the key could be taken)."""
        key = state_key(owner)
        if key is None:
            self.clear()
            return build()
        if self._form is None or key != self._key:
            self._form, self._key, self._referents = build(), key, _referents(owner)
        return self._form

    def clear(self) -> None:
        """Forget the cached form; the next `get` builds it again."""
        self._key, self._form, self._referents = None, None, ()

    def __reduce__(self) -> tuple[type[DeployedCache], tuple[()]]:
        """Copies and pickles hold an empty cache: the key names the original's tensors."""
        return DeployedCache, ()
