"""`PackedModel`: load a lowered ONNX file once, plan buffers once per input shape, run.

The first run for an input shape executes every step into fresh arrays, which gives every
value's size; the planner then packs the values into a few reusable buffers by lifetime
(greedy best fit; a float value the compiler keeps channels-last gets NHWC memory, layout.py)
and binds every step to its buffers. Later runs with that shape only copy
the inputs in, call the bound steps, and copy the outputs out; consecutive kernel calls run from
one table in one C call (call_table.py), so Python is entered only between them and numpy steps. The plans are kept in a
least-recently-used cache of `plan_cache_size` input signatures (`plan_cache_info()` reports
its entries and bytes).

Inputs are converted to the dtype the file declares (numbers and booleans; anything else is
refused) and made C-contiguous on every run, before they are copied into the plan.
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from bitfx.backends.packed._native import check_thread_count, get_threads, set_threads
from bitfx.backends.packed.call_table import batched
from bitfx.backends.packed.compiler import NATIVE_FUNCTIONS, compile_graph
from bitfx.backends.packed.errors import PackedKernelError, PackedModelError
from bitfx.backends.packed.graph import load_graph
from bitfx.backends.packed.kernels import PackedTensor
from bitfx.backends.packed.program import CompileReport, Program
from bitfx.backends.packed.steps import Step, Value
from bitfx.backends.packed.validate import marked_int8_convs
from bitfx.errors import BitfxError
from bitfx.format.int8_marker import input_range

_ALIGN = 64
DEFAULT_PLAN_CACHE_SIZE = 8  # input signatures whose plans (buffers and bound calls) are kept


@dataclass
class Plan:
    """The buffers and bound calls for one input signature: `calls` has one bound call per step that
    is not a view (`steps` names them), `runners` the same calls with consecutive kernel calls in
    tables, which `run` executes."""

    inputs: list[np.ndarray]
    calls: list[Callable[[], None]]
    outputs: list[Value]
    buffer_bytes: list[int]
    steps: list[str]
    runners: list[Callable[[], None]] = dataclasses.field(init=False)

    def __post_init__(self) -> None:
        self.runners = batched(self.calls, self.steps)

    @property
    def activation_bytes(self) -> int:
        """Bytes of the reusable activation buffers plus the input copies."""
        return sum(self.buffer_bytes) + sum(x.nbytes for x in self.inputs)

    def run(self, arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
        for buffer, array in zip(self.inputs, arrays):
            np.copyto(buffer, array)
        for runner in self.runners:
            runner()
        return [np.array(value, copy=True, order="C") for value in self.outputs]


class PackedModel:
    """A lowered ONNX model on the packed-bit runtime (no torch).

    `PackedModel(path)` reads the file, checks every op is supported (one error lists those that
    are not) and prepares the binary kernels; `run(inputs)` returns the outputs as numpy arrays.
    `threads` fixes the kernels' thread count for this model's runs (default: the global setting).
    `plan_cache_size` is how many input signatures (shapes and dtypes) keep their plan; the least
    recently used plan is dropped when another is needed.
    `int8_float_convs` chooses the float Convs that run on the int8 kernel (`report.int8_nodes`,
    `report.int8_skipped`): by default (None) those the file's int8 marker names, with its ranges
    (bitfx.format.int8_marker; no marker: none); True the same but a file without a marker is
    refused; False none; the model input's range as (low, high), or a calibration batch whose
    minimum and maximum are used, every float Conv that reads a model input (the stem), ignoring the
    marker. Inputs outside a range saturate.
    `channels_last=False` keeps every float value NCHW (by default the values between binary layers
    whose readers all read channels-last live in NHWC memory, `report.channels_last`; the outputs are
    the same either way).
    """

    def __init__(
        self,
        model: str | Path | onnx.ModelProto,
        *,
        threads: int | None = None,
        plan_cache_size: int = DEFAULT_PLAN_CACHE_SIZE,
        int8_float_convs: tuple[float, float] | np.ndarray | bool | None = None,
        channels_last: bool = True,
    ) -> None:
        if not isinstance(plan_cache_size, int) or isinstance(plan_cache_size, bool) or plan_cache_size < 1:
            raise BitfxError(f"plan_cache_size must be an integer >= 1, got {plan_cache_size!r}")
        int8_range = (
            None if int8_float_convs is None or isinstance(int8_float_convs, bool) else input_range(int8_float_convs)
        )
        self.graph = load_graph(model, NATIVE_FUNCTIONS)
        int8_marked = None
        if int8_range is None and int8_float_convs is not False:
            int8_marked = marked_int8_convs(self.graph)
            if int8_marked is None and int8_float_convs is True:
                raise BitfxError(
                    "int8_float_convs=True runs the float Convs the file's int8 marker names, but the file has no "
                    "marker: write one with export(..., int8_float_convs=...) or pass the input's range"
                )
        self.program: Program = compile_graph(self.graph, int8_range, int8_marked, channels_last=channels_last)
        self.threads = None if threads is None else check_thread_count(threads)
        self.plan_cache_size = plan_cache_size
        self._plans: OrderedDict[tuple, Plan] = OrderedDict()

    @property
    def input_names(self) -> list[str]:
        return list(self.graph.inputs)

    @property
    def output_names(self) -> list[str]:
        return list(self.graph.outputs)

    @property
    def report(self) -> CompileReport:
        return self.program.report

    def weight_bytes(self) -> int:
        """Bytes of the constants the file holds (packed binary weights count as stored)."""
        return sum(value.nbytes for value in self.graph.constants.values())

    def plan_cache_info(self) -> dict[str, int]:
        """The plan cache: `entries` kept, `max_entries` allowed, and the `bytes` of their buffers."""
        return {
            "entries": len(self._plans),
            "max_entries": self.plan_cache_size,
            "bytes": sum(plan.activation_bytes for plan in self._plans.values()),
        }

    def activation_bytes(self, *inputs: np.ndarray) -> int:
        """Planned activation memory for inputs of these shapes (plans them if needed)."""
        arrays = self._as_arrays(inputs)
        if self._signature(arrays) not in self._plans:
            self.run(arrays)
        return self._plans[self._signature(arrays)].activation_bytes

    def run(self, inputs: Sequence[np.ndarray] | Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """Outputs for `inputs` (positional in graph order, or a name → array mapping)."""
        arrays = self._as_arrays(inputs)
        previous = get_threads()
        if self.threads is not None:
            set_threads(self.threads)
        try:
            signature = self._signature(arrays)
            plan = self._plans.get(signature)
            if plan is None:
                plan, outputs = self._plan(arrays)
                self._plans[signature] = plan
                while len(self._plans) > self.plan_cache_size:
                    self._plans.popitem(last=False)
                return outputs
            self._plans.move_to_end(signature)
            return plan.run(arrays)
        finally:
            if self.threads is not None:
                set_threads(previous)

    def __call__(self, *inputs: np.ndarray) -> list[np.ndarray]:
        return self.run(inputs)

    @staticmethod
    def _signature(arrays: Sequence[np.ndarray]) -> tuple:
        return tuple((a.shape, a.dtype.str) for a in arrays)

    def _as_arrays(self, inputs: Sequence[np.ndarray] | Mapping[str, np.ndarray]) -> list[np.ndarray]:
        names = self.graph.inputs
        if isinstance(inputs, Mapping):
            missing = [n for n in names if n not in inputs]
            if missing:
                raise PackedModelError(f"missing model input(s) {missing}; the model takes {names}")
            inputs = [inputs[n] for n in names]
        if len(inputs) != len(names):
            raise PackedModelError(f"the model takes {len(names)} input(s) {names}, got {len(inputs)}")
        arrays = []
        for name, value in zip(names, inputs):
            array = _converted(name, value, self.graph.input_dtypes.get(name, np.dtype(np.float32)))
            declared = self.graph.input_shapes.get(name, ())
            if declared and (
                array.ndim != len(declared) or any(isinstance(d, int) and d != s for d, s in zip(declared, array.shape))
            ):
                raise PackedModelError(f"input {name!r} has shape {array.shape}; the model declares {declared}")
            arrays.append(array)
        return arrays

    def _plan(self, arrays: list[np.ndarray]) -> tuple[Plan, list[np.ndarray]]:
        steps, graph = self.program.steps, self.graph
        values: dict[str, Value] = {**graph.constants, **dict(zip(graph.inputs, arrays))}
        for step in steps:
            outs = _first_run(step, _lookup(values, step.inputs, step))
            values.update(zip(step.outputs, outs))
        first_outputs = [np.array(values[name], copy=True, order="C") for name in graph.outputs]

        root = {name: name for name in values}
        for step in steps:
            for name in step.outputs:
                root[name] = root[step.inputs[0]] if step.is_view else name
        external = set(graph.constants) | set(graph.inputs)
        last_use = {}
        for index, step in enumerate(steps):
            for name in step.inputs + step.outputs:
                if name:
                    last_use[root[name]] = index
        for name in graph.outputs:
            last_use[root[name]] = len(steps)

        buffers: list[np.ndarray] = []
        free: list[int] = []
        assigned: dict[str, int] = {}
        for index, step in enumerate(steps):
            if not step.is_view:
                for name in step.outputs:
                    size = _nbytes(values[name])
                    fits = [b for b in free if buffers[b].nbytes - _ALIGN >= size]
                    if fits:
                        chosen = min(fits, key=lambda b: buffers[b].nbytes)
                        free.remove(chosen)
                    else:
                        chosen = len(buffers)
                        buffers.append(np.empty(size + _ALIGN, np.uint8))
                    assigned[name] = chosen
            for name in {root[n] for n in step.inputs + step.outputs if n}:
                if name in assigned and name not in external and last_use[name] == index:
                    free.append(assigned[name])

        channels_last = set(self.program.report.channels_last)
        inputs = [np.empty_like(a) for a in arrays]
        bound: dict[str, Value] = {**graph.constants, **dict(zip(graph.inputs, inputs))}
        calls, names = [], []
        for step in steps:
            ins = _lookup(bound, step.inputs, step)
            if step.is_view:
                outs = step.eager(ins)
            else:
                outs = [
                    _in_buffer(values[name], buffers[assigned[name]], name in channels_last) for name in step.outputs
                ]
                calls.append(step.bind(ins, outs))
                names.append(step.name)
            bound.update(zip(step.outputs, outs))
        outputs = [bound[name] for name in graph.outputs]
        plan = Plan(inputs, calls, outputs, [b.nbytes - _ALIGN for b in buffers], names)
        return plan, first_outputs


def _converted(name: str, value: object, dtype: np.dtype) -> np.ndarray:
    """`value` as a C-contiguous array of the declared `dtype`; numbers and booleans convert, nothing else does."""
    array = np.asarray(value)
    if array.dtype != dtype and not np.can_cast(array.dtype, dtype, casting="same_kind"):
        raise PackedModelError(
            f"input {name!r} has dtype {array.dtype}; the model takes {dtype} "
            "(numbers and booleans of another dtype are converted, other values are refused)"
        )
    return np.ascontiguousarray(array, dtype)


def _first_run(step: Step, inputs: list[Value]) -> list[Value]:
    """`step.eager(inputs)`, with the step named in the error when these inputs do not fit it."""
    try:
        return step.eager(inputs)
    except (PackedModelError, PackedKernelError):
        raise
    except (BitfxError, ValueError, TypeError, IndexError, MemoryError) as error:
        shapes = ", ".join(str(getattr(v, "shape", "packed")) for v in inputs if v is not None)
        raise PackedModelError(f"{step.name} cannot run on inputs of shape {shapes}: {error}") from error


def _lookup(values: dict[str, Value], names: list[str], step: object) -> list[Value]:
    try:
        return [values[name] if name else None for name in names]
    except KeyError as error:
        raise PackedModelError(
            f"{step}: input {error.args[0]!r} is not produced by any earlier node; is the graph topologically sorted?"
        ) from error


def _nbytes(value: Value) -> int:
    return value.data.nbytes if isinstance(value, PackedTensor) else np.asarray(value).nbytes


def _in_buffer(template: Value, buffer: np.ndarray, channels_last: bool = False) -> Value:
    """An array (or packed tensor) shaped like `template`, living in `buffer` at a 64-byte boundary;
    C-contiguous, or with NHWC memory for a value the compiler keeps `channels_last` (layout.py)."""
    start = -buffer.ctypes.data % _ALIGN
    data = template.data if isinstance(template, PackedTensor) else np.asarray(template)
    memory = buffer[start : start + data.nbytes].view(data.dtype)
    if channels_last:
        n, c, h, w = data.shape
        return memory.reshape(n, h, w, c).transpose(0, 3, 1, 2)
    array = memory.reshape(data.shape)
    return dataclasses.replace(template, data=array) if isinstance(template, PackedTensor) else array


def load(
    path: str | Path | onnx.ModelProto,
    *,
    threads: int | None = None,
    plan_cache_size: int = DEFAULT_PLAN_CACHE_SIZE,
    int8_float_convs: tuple[float, float] | np.ndarray | bool | None = None,
    channels_last: bool = True,
) -> PackedModel:
    """Load a lowered ONNX file on the packed runtime (arguments: see `PackedModel`)."""
    return PackedModel(
        path,
        threads=threads,
        plan_cache_size=plan_cache_size,
        int8_float_convs=int8_float_convs,
        channels_last=channels_last,
    )
