"""`Pipeline`: run passes in order, check after each, never touch the caller's model."""

from __future__ import annotations

import copy
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import fx

from bitfx.errors import BitfxError, PassConfigError, PassError
from bitfx.ir import example_inputs_of, propagate_shapes, run_eval
from bitfx.ir.execution import Inputs, as_inputs, run_eval_float64
from bitfx.ir.table import format_table
from bitfx.passes.core.base import Pass, PassContext
from bitfx.passes.core.config import check_rtol, dump_toml, read_config
from bitfx.passes.core.instruments import Instrument
from bitfx.passes.core.ordering import check_order
from bitfx.passes.core.output_check import check_outputs
from bitfx.passes.core.registry import create_pass
from bitfx.passes.core.spec import parse_pass_list

DEFAULT_RTOL = 1e-5


@dataclass(frozen=True)
class PassRecord:
    """What one pass did: whether it changed the graph, how long it took, its statistics, and,
    when it claims to preserve outputs, the output error and the float32 noise floor it was
    judged against (see `bitfx.passes.core.output_check`; both None for other passes)."""

    name: str
    modified: bool
    seconds: float
    stats: dict[str, Any] = field(default_factory=dict)
    max_rel_error: float | None = None
    noise_floor: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "modified": self.modified,
            "seconds": self.seconds,
            "stats": self.stats,
            "max_rel_error": self.max_rel_error,
            "noise_floor": self.noise_floor,
        }


@dataclass(frozen=True)
class PipelineResult:
    """The rewritten graph and one record per pass; `str()` is a timing table followed by the
    layers each pass left unchanged and why."""

    graph_module: fx.GraphModule
    records: list[PassRecord]

    def __str__(self) -> str:
        rows = [
            (
                r.name,
                "yes" if r.modified else "no",
                f"{r.seconds * 1000:.1f}",
                _error_text(r.max_rel_error),
                _error_text(r.noise_floor),
                _stats_text(r.stats),
            )
            for r in self.records
        ]
        headers = ("pass", "changed", "ms", "check err", "noise floor", "stats")
        table = format_table(headers, rows, (False, False, True, True, True, False))
        return "\n".join([table, *(line for r in self.records for line in _skipped_lines(r))])


class Pipeline:
    """An ordered list of passes plus how to check them.

    Before any pass runs, the order is checked against what each pass needs, conflicts with
    and creates (`bitfx.passes.core.ordering`). After each pass: `graph.lint()`, recompile,
    shape re-propagation on the example inputs, the pass's `ensures`, and, when the pass
    claims to preserve outputs, a comparison of the eval-mode outputs with the graph before
    it: max relative error ≤ `rtol` plus a small multiple of that graph's own float32 noise
    floor, and no NaN/Inf where the graph before had none (`bitfx.passes.core.output_check`).
    A failure raises `PassError` naming the pass and those that ran before it; the model
    given to `run` is never modified (the pipeline works on a deep copy).
    """

    def __init__(
        self, passes: Sequence[Pass], *, rtol: float = DEFAULT_RTOL, instruments: Sequence[Instrument] = ()
    ) -> None:
        self.passes = list(passes)
        self.rtol = check_rtol(rtol, "Pipeline")
        self.instruments = list(instruments)

    @classmethod
    def from_spec(cls, text: str, **options: Any) -> Pipeline:
        """From a pass list such as `fuse_bn,binarize(scheme=xnor)`."""
        return cls([create_pass(name, params) for name, params in parse_pass_list(text)], **options)

    @classmethod
    def from_file(cls, path: str | Path, **options: Any) -> Pipeline:
        """From a TOML pipeline file (see `bitfx.passes.core.config`)."""
        config = read_config(path)
        passes = []
        for index, entry in enumerate(config.get("passes", [])):
            try:
                passes.append(create_pass(entry["name"], {k: v for k, v in entry.items() if k != "name"}))
            except PassConfigError as error:
                raise PassConfigError(f"{path}: [[passes]] entry {index + 1} ({entry['name']!r}): {error}") from error
        options.setdefault("rtol", config.get("check", {}).get("rtol", DEFAULT_RTOL))
        return cls(passes, **options)

    def to_config(self) -> dict[str, Any]:
        return {"check": {"rtol": self.rtol}, "passes": [{"name": p.name, **p.params()} for p in self.passes]}

    def save(self, path: str | Path) -> None:
        """Write the pipeline as TOML; `Pipeline.from_file` reads it back."""
        Path(path).write_text(dump_toml(self.to_config()))

    def run(
        self, gm: fx.GraphModule, example_inputs: Inputs | None = None, *, data: Iterable[Any] | None = None
    ) -> PipelineResult:
        """Run every pass on a copy of `gm`. `example_inputs` default to those `capture` recorded;
        `data` is handed to passes that calibrate on real batches."""
        inputs = as_inputs(example_inputs) if example_inputs is not None else example_inputs_of(gm)
        if inputs is None:
            raise PassError(
                "Pipeline.run needs example inputs: capture the model with bitfx.ir.capture(model, inputs) "
                "or pass example_inputs="
            )
        check_order(self.passes, gm)
        context = PassContext(example_inputs=inputs, data=data)
        work = copy.deepcopy(gm)
        reference: Any = None
        records: list[PassRecord] = []
        for index, pass_ in enumerate(self.passes):
            try:
                if pass_.preserves_outputs and reference is None:
                    reference = run_eval(work, inputs)
                work, record, reference = self._run_one(index, pass_, work, context, reference)
            except Exception as error:
                raise PassError(_failure_message(pass_, index, records, error)) from error
            records.append(record)
        return PipelineResult(work, records)

    def _run_one(
        self, index: int, pass_: Pass, gm: fx.GraphModule, context: PassContext, reference: Any
    ) -> tuple[fx.GraphModule, PassRecord, Any]:
        for instrument in self.instruments:
            instrument.before_pass(index, pass_.name, gm)
        pass_.requires(gm)
        exact = _float64_outputs(gm, context) if pass_.preserves_outputs else None
        start = time.perf_counter()
        result = pass_.run(gm, context)
        seconds = time.perf_counter() - start
        new = result.graph_module
        new.graph.lint()
        new.recompile()
        propagate_shapes(new, context.example_inputs)
        pass_.ensures(new)
        error = floor = None
        if pass_.preserves_outputs:
            outputs = run_eval(new, context.example_inputs)
            check = check_outputs(reference, exact, outputs, self.rtol)
            if not check.passed:
                raise PassError(f"outputs changed: {check.describe()}")
            error, floor, reference = check.error, check.noise_floor, outputs
        elif result.modified:
            reference = None
        record = PassRecord(pass_.name, result.modified, seconds, result.stats, error, floor)
        for instrument in self.instruments:
            instrument.after_pass(index, record, new)
        return new, record, reference


def _float64_outputs(gm: fx.GraphModule, context: PassContext) -> Any:
    """The graph's outputs computed in float64, or None when some module cannot run in float64."""
    try:
        return run_eval_float64(gm, context.example_inputs)
    except Exception:  # a module with float32-only code: the check falls back to the plain rtol
        return None


def _failure_message(pass_: Pass, index: int, done: list[PassRecord], error: Exception) -> str:
    before = ", ".join(r.name for r in done) or "none"
    detail = str(error) if isinstance(error, BitfxError) else f"{type(error).__name__}: {error}"
    return (
        f"pass {pass_.name!r} (number {index + 1}; passes run before it: {before}) failed: {detail}. The input "
        "model was left unchanged."
    )


def _error_text(error: float | None) -> str:
    return "" if error is None else f"{error:.1e}"


def _stats_text(stats: dict[str, Any]) -> str:
    """Short statistics in one cell; `skipped` as a count (its reasons follow the table)."""
    parts = [f"skipped={len(stats['skipped'])}"] if "skipped" in stats else []
    parts += [
        f"{k}={v}" for k, v in stats.items() if k != "skipped" and (not isinstance(v, (dict, list)) or len(str(v)) < 60)
    ]
    return ", ".join(parts)


def _skipped_lines(record: PassRecord, shown: int = 10) -> list[str]:
    """`pass skipped layer: reason` for the first `shown` skipped layers of a pass."""
    skipped = record.stats.get("skipped", {})
    lines = [f"{record.name} skipped {name}: {reason}" for name, reason in list(skipped.items())[:shown]]
    if len(skipped) > shown:
        lines.append(f"{record.name} skipped {len(skipped) - shown} more layers (all are in its statistics)")
    return lines
