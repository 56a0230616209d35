"""Prepared kernel calls and the tables that run many of them in one C call.

A bound kernel (kernels.py) is a `KernelCall`: the entry point and its arguments, fixed when the
layer is bound. Called alone it is one ctypes call. A plan (executor.py) puts each run of
consecutive kernel calls into a `CallTable`, which the C side runs in order (`bitfx_run_calls`),
so a run of the whole network costs a few ctypes round trips instead of one or two per step;
numpy steps between them stay Python calls. A failed kernel stops the table and raises
`PackedKernelError` naming the step it belongs to.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable, Sequence

from bitfx.backends.packed._native import CALL_ARGS, CALL_KERNELS, STATUS_OK, Call, lib, status_meaning
from bitfx.backends.packed.errors import PackedKernelError


class KernelCall:
    """One call of the kernel entry point `name` with `args` (descriptor structs, typed pointers or
    None, in the prototype's order); `keep` holds whatever else must outlive the call."""

    __slots__ = ("name", "args", "keep", "_function")

    def __init__(self, name: str, *args: object, keep: object = ()) -> None:
        if name not in CALL_KERNELS or len(args) > CALL_ARGS:
            raise ValueError(f"{name} with {len(args)} arguments cannot be a table entry")
        self.name, self.args, self.keep = name, args, keep
        self._function = getattr(lib, name)

    def __call__(self) -> None:
        self._function(*self.args)

    def entry(self) -> Call:
        """This call as a table entry: the entry point's index and the arguments' addresses."""
        addresses = [_address(arg) for arg in self.args]
        return Call(CALL_KERNELS.index(self.name), (ctypes.c_void_p * CALL_ARGS)(*addresses))


class CallSequence:
    """Several bound calls run in order as one (a kernel and the border fill after it, an input
    conversion before a kernel)."""

    def __init__(self, calls: Sequence[Callable[[], None]]) -> None:
        self.calls = [part for call in calls for part in parts(call)]

    def __call__(self) -> None:
        for call in self.calls:
            call()


def parts(call: Callable[[], None]) -> list[Callable[[], None]]:
    """The calls a bound call is made of, in order (itself when it is not a `CallSequence`)."""
    return list(call.calls) if isinstance(call, CallSequence) else [call]


class CallTable:
    """Consecutive kernel calls run by one C call; `steps[i]` names the step `calls[i]` belongs to."""

    def __init__(self, calls: Sequence[KernelCall], steps: Sequence[str]) -> None:
        self.calls, self.steps = list(calls), list(steps)
        self.table = (Call * len(self.calls))(*[call.entry() for call in self.calls])
        self.failed = ctypes.c_int64()
        self._args = (self.table, len(self.calls), ctypes.byref(self.failed))

    def __call__(self) -> None:
        status = lib.bitfx_run_calls(*self._args)
        if status != STATUS_OK:
            index = self.failed.value
            raise PackedKernelError(
                f"{self.steps[index]}: the packed kernel {self.calls[index].name} {status_meaning(status)}; "
                "its output was not written"
            )


def batched(calls: Sequence[Callable[[], None]], steps: Sequence[str]) -> list[Callable[[], None]]:
    """The bound `calls` of a plan (one per step, named by `steps`) as few callables as possible:
    every run of consecutive kernel calls becomes one `CallTable`, any other call stays as it is."""
    runners: list[Callable[[], None]] = []
    pending: list[KernelCall] = []
    names: list[str] = []
    for call, step in zip(calls, steps):
        for part in parts(call):
            if isinstance(part, KernelCall):
                pending.append(part)
                names.append(step)
                continue
            if pending:
                runners.append(CallTable(pending, names))
                pending, names = [], []
            runners.append(part)
    if pending:
        runners.append(CallTable(pending, names))
    return runners


def _address(arg: object) -> int | None:
    """The address a kernel argument stands for: a descriptor struct's, a typed pointer's target, or null."""
    if arg is None:
        return None
    if isinstance(arg, ctypes.Structure):
        return ctypes.addressof(arg)
    return ctypes.cast(arg, ctypes.c_void_p).value
