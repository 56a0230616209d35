"""`--data` batches, read lazily: a pass takes only the batches it needs, so a data function
may be a generator over a large or endless source.

A data function is `fn(input_shape) -> iterable of batches`, a batch being a tensor or an
`(inputs, labels)` tuple. Its first batch is read up front (it is the example input); each
further pass that iterates the data calls the function again. Every batch is checked as it is
read: its inputs must be a tensor of the first batch's dtype and shape (only the batch size,
dimension 0, may differ).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch

from bitfx.cli.specs import first_input
from bitfx.errors import ModelSpecError
from bitfx.specs import load_callable

_END = object()


class DataBatches:
    """The batches of the data function named by `spec`, called with `input_shape`."""

    def __init__(self, spec: str, input_shape: tuple[int, ...]) -> None:
        self.spec = spec
        self.input_shape = input_shape
        self._function: Callable[..., Any] = load_callable(spec, "data")
        self._pending: Iterator[Any] | None = self._open()
        first = self._next(self._pending, 0)
        if first is _END:
            raise ModelSpecError(f"data spec {spec!r} returned no batches")
        self.first = first
        self._reference: torch.Tensor = first_input(first)

    @property
    def example(self) -> torch.Tensor:
        """The inputs of the first batch."""
        return self._reference

    def __iter__(self) -> Iterator[Any]:
        iterator, self._pending = self._pending, None
        index = 0
        if iterator is None:
            iterator = self._open()
        else:
            yield self.first
            index = 1
        while (batch := self._next(iterator, index)) is not _END:
            yield batch
            index += 1

    def _open(self) -> Iterator[Any]:
        try:
            source = self._function(self.input_shape)
        except Exception as error:
            raise ModelSpecError(
                f"data function {self.spec!r} raised {type(error).__name__}: {error} "
                f"(it was called with the input shape {self.input_shape})"
            ) from error
        if isinstance(source, torch.Tensor):
            raise ModelSpecError(
                f"data function {self.spec!r} returned one tensor; return an iterable of batches, e.g. [tensor]"
            )
        try:
            return iter(source)
        except TypeError as error:
            raise ModelSpecError(
                f"data function {self.spec!r} returned a {type(source).__name__}, which is not iterable; "
                "return a list or a generator of batches"
            ) from error

    def _next(self, iterator: Iterator[Any], index: int) -> Any:
        try:
            batch = next(iterator)
        except StopIteration:
            return _END
        except Exception as error:
            raise ModelSpecError(
                f"data function {self.spec!r} raised {type(error).__name__} while producing batch {index}: {error}"
            ) from error
        self._check(batch, index)
        return batch

    def _check(self, batch: Any, index: int) -> None:
        inputs = first_input(batch)
        if not isinstance(inputs, torch.Tensor) or inputs.dim() == 0:
            raise ModelSpecError(
                f"data function {self.spec!r}: batch {index} is a {type(batch).__name__}; a batch must be a tensor "
                "with a batch dimension or an (inputs, labels) tuple"
            )
        if index == 0:
            return
        reference = self._reference
        if inputs.shape[1:] != reference.shape[1:] or inputs.dtype != reference.dtype:
            raise ModelSpecError(
                f"data function {self.spec!r}: batch {index} (counting from 0) has inputs of shape "
                f"{tuple(inputs.shape)} and dtype {inputs.dtype}, unlike batch 0 ({tuple(reference.shape)}, "
                f"{reference.dtype}); every batch must have the same shape and dtype, only the batch size may differ"
            )
