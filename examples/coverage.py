"""The coverage matrix: every pattern family of `bitfx.zoo.PATTERNS` through capture, each pass
alone, each lowering, onnxruntime and the packed runtime; each cell is ✓ or a one-line reason.

    python -m examples.coverage [--quick] [--families a,b] [--markdown docs/coverage.md] [--json docs/coverage.json]

Stages, each on the captured float model (eval mode, seeded random inputs, no trained weights):
capture; `fuse_bn`; `binarize` (xnor); `binarize,rotate`; `pams` (4 bits, calibrated on random
batches); `rank_prune` (rate 0.5, HRank on random batches); then the lowerings, each checked
with onnxruntime against torch by its style's verifier: `float` (the float model), `custom` and
`int8` (the binarized model), `qdq` (the `pams` model), and `packed` (the `custom` file in the
packed runtime, against onnxruntime on the same file). `--quick` leaves out `binarize,rotate`,
`int8` and `qdq`.

Silent problems are found here, not taken from the passes: a pass that rewrote nothing while the
model has candidates is "no-op: …"; a binarized model whose outputs are the same for two random
inputs is "WRONG: output independent of input"; a binary layer whose input was never negative is
"WRONG: binary layer NAME sees only non-negative input" (examples/coverage_checks.py). The
lowerings still run on what such a pass produced; a cell whose input stage raised is "–".
Totals count ✓ per stage over the cells that ran.
"""

from __future__ import annotations

import argparse
import json
import re
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import fx, nn

from bitfx import zoo
from bitfx.backends.onnx import export, run_session, session, verifier_for
from bitfx.backends.packed import load as load_packed
from bitfx.errors import BitfxError
from bitfx.ir import capture
from bitfx.ir.execution import compare_outputs
from bitfx.passes import Pipeline
from examples.coverage_checks import non_negative_binary_inputs, noop_reason, output_independent, unreported

OK = "✓"
NOT_RUN = "–"
NOT_APPLICABLE = "n/a"
STAGES = (
    "capture",
    "fuse_bn",
    "binarize",
    "binarize+rotate",
    "pams",
    "rank_prune",
    "float",
    "custom",
    "int8",
    "qdq",
    "packed",
)
QUICK_SKIPS = ("binarize+rotate", "int8", "qdq")
PACKED_RTOL = 1e-4
REASON_CHARS = 110
PIPELINE_PREAMBLE = re.compile(r"^pass '[\w+]+' \(number \d+; passes run before it: [^)]*\) failed: ")
TEMPORARY_PATH = re.compile(r"'[^']*/([^/']+\.onnx)'")
CONV_OR_LINEAR = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
FUNCTIONAL_CONV_OR_LINEAR = (F.conv1d, F.conv2d, F.conv3d, F.linear)
COMMAND = "python -m examples.coverage"


def short(error: BaseException) -> str:
    """An error message on one line, without the pipeline's "pass … failed:" preamble (the column
    says which pass) and with file paths shortened to their names, cut to one table cell."""
    text = " ".join(line.strip() for line in str(error).splitlines() if line.strip())
    text = TEMPORARY_PATH.sub(r"'\1'", PIPELINE_PREAMBLE.sub("", text))
    if not isinstance(error, BitfxError):
        text = f"{type(error).__name__}: {text}"
    return fit(text)


def fit(text: str) -> str:
    """`text` as one table cell: no column separator, at most REASON_CHARS characters."""
    text = text.replace("|", "/")
    return text if len(text) <= REASON_CHARS else text[: REASON_CHARS - 1] + "…"


def input_shapes(model: nn.Module) -> tuple[tuple[int, ...], ...]:
    """All input shapes of a pattern model (``example_input_shapes`` when it has several)."""
    return tuple(getattr(model, "example_input_shapes", (model.example_input_shape,)))


def random_inputs(shapes: tuple[tuple[int, ...], ...], batch: int, seed: int) -> tuple[torch.Tensor, ...]:
    generator = torch.Generator().manual_seed(seed)
    return tuple(torch.randn((batch, *shape[1:]), generator=generator) for shape in shapes)


def calibration_data(shapes: tuple[tuple[int, ...], ...]) -> list[Any]:
    """Two random batches of 8 in the data protocol: a tensor per batch, or for a model with
    several inputs an ``(inputs, labels)`` tuple whose inputs are the tuple of tensors."""
    batches = [random_inputs(shapes, 8, 100 + index) for index in range(2)]
    return [b[0] if len(b) == 1 else (b, torch.zeros(8, dtype=torch.long)) for b in batches]


@dataclass
class FamilyResult:
    """The cells of one family: stage → ✓ or reason, and the details each stage measured."""

    family: str
    cells: dict[str, str] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    stage_seconds: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0


def batch_norm_candidates(gm: fx.GraphModule) -> int:
    """BatchNorms with running statistics: modules, and ``F.batch_norm`` calls given running stats."""
    count = 0
    for node in gm.graph.nodes:
        if node.op == "call_module" and isinstance(gm.get_submodule(node.target), nn.modules.batchnorm._BatchNorm):
            count += gm.get_submodule(node.target).track_running_stats
        elif node.op == "call_function" and node.target in (F.batch_norm, torch.batch_norm):
            running_mean = node.args[1] if len(node.args) > 1 else node.kwargs.get("running_mean")
            count += running_mean is not None
    return count


def layer_candidates(gm: fx.GraphModule) -> int:
    """Conv and linear layers: modules (subclasses included) and functional calls, which is what
    a module defined outside ``torch.nn`` (e.g. a weight-standardised conv) is traced into."""
    return sum(
        1
        for n in gm.graph.nodes
        if (n.op == "call_module" and isinstance(gm.get_submodule(n.target), CONV_OR_LINEAR))
        or (n.op == "call_function" and n.target in FUNCTIONAL_CONV_OR_LINEAR)
    )


class Matrix:
    """Runs the stages of one family, recording a cell per stage."""

    def __init__(self, family: str, stages: tuple[str, ...], workdir: Path) -> None:
        self.result = FamilyResult(family)
        self.stages = stages
        self.workdir = workdir
        torch.manual_seed(0)
        self.model = getattr(zoo, family)().eval()
        self.shapes = input_shapes(self.model)
        self.inputs = random_inputs(self.shapes, 2, 0)
        self.other_inputs = random_inputs(self.shapes, 2, 1)
        self.data = calibration_data(self.shapes)
        self.graphs: dict[str, fx.GraphModule] = {}
        self.files: dict[str, Path] = {}
        self.onnx_outputs: dict[str, list[np.ndarray]] = {}

    def cell(self, stage: str, needs: str | None, run: Callable[[], str | None]) -> None:
        """Run a stage unless it is left out or the stage it needs did not succeed."""
        if stage not in self.stages:
            return
        if needs is not None and needs not in self.graphs and needs not in self.files:
            self.result.cells[stage] = NOT_RUN
            return
        start = time.perf_counter()
        try:
            problem = run()
        except Exception as error:  # every failure becomes the cell's reason
            problem = short(error)
        self.result.cells[stage] = fit(problem) if problem else OK
        self.result.stage_seconds[stage] = round(time.perf_counter() - start, 2)

    def run(self) -> FamilyResult:
        start = time.perf_counter()
        self.cell("capture", None, self.capture)
        self.cell("fuse_bn", "capture", self.fuse_bn)
        self.cell("binarize", "capture", lambda: self.binarize("binarize", "binarize"))
        self.cell("binarize+rotate", "capture", lambda: self.binarize("binarize+rotate", "binarize,rotate"))
        self.cell("pams", "capture", self.pams)
        self.cell("rank_prune", "capture", self.rank_prune)
        self.cell("float", "capture", lambda: self.lower("float", "capture"))
        self.cell("custom", "binarize", lambda: self.lower("custom", "binarize"))
        self.cell("int8", "binarize", lambda: self.lower("int8", "binarize"))
        self.cell("qdq", "pams", lambda: self.lower("qdq", "pams"))
        self.cell("packed", "custom", self.packed)
        self.result.seconds = round(time.perf_counter() - start, 2)
        return self.result

    def capture(self) -> None:
        self.graphs["capture"] = capture(self.model, self.inputs)

    def _pipeline(self, spec: str) -> tuple[fx.GraphModule, list[dict[str, Any]]]:
        result = Pipeline.from_spec(spec).run(self.graphs["capture"], self.inputs, data=self.data)
        return result.graph_module, [record.stats for record in result.records]

    def fuse_bn(self) -> str | None:
        candidates = batch_norm_candidates(self.graphs["capture"])
        gm, (stats,) = self._pipeline("fuse_bn")
        self.result.details["fuse_bn"] = {
            "candidates": candidates,
            "fused": stats["fused"],
            "skipped": stats["skipped"],
        }
        if candidates == 0:
            return f"{NOT_APPLICABLE}: no BatchNorm with running statistics"
        what = "BatchNorms folded"
        problem = unreported(stats["fused"], stats["skipped"], candidates, what) or noop_reason(
            stats["fused"], candidates, what, stats["skipped"]
        )
        if problem:
            return problem
        if stats["fused"] < candidates:
            layer, why = next(iter(stats["skipped"].items()))
            return f"partial: {stats['fused']} of {candidates} folded; {layer}: {why}"
        self.graphs["fuse_bn"] = gm
        return None

    def binarize(self, stage: str, spec: str) -> str | None:
        candidates = layer_candidates(self.graphs["capture"])
        gm, stats = self._pipeline(spec)
        binarized, skipped = stats[0]["binarized"], stats[0]["skipped"]
        self.result.details[stage] = {"candidates": candidates, "binarized": binarized, "skipped": skipped}
        what = "conv/linear layers binarized"
        problem = unreported(binarized, skipped, candidates, what) or noop_reason(binarized, candidates, what, skipped)
        if problem is None and len(stats) > 1:
            self.result.details[stage]["rotated"] = stats[1]["rotated"]
            problem = noop_reason(
                stats[1]["rotated"], stats[0]["binarized"], "binary layers rotated", stats[1]["skipped"]
            )
        # Lowered and run even when wrong: the lowerings are judged on what the pass produced.
        self.graphs[stage] = gm
        return (
            problem
            or output_independent(gm, self.inputs, self.other_inputs)
            or non_negative_binary_inputs(gm, [self.inputs, self.other_inputs])
        )

    def pams(self) -> str | None:
        candidates = layer_candidates(self.graphs["capture"])
        gm, (stats,) = self._pipeline("pams(bits=4)")
        self.result.details["pams"] = {
            "candidates": candidates,
            "quantized_layers": stats["quantized_layers"],
            "rel_error_vs_float": stats.get("rel_error_vs_float"),
        }
        quantized, skipped = stats["quantized_layers"], stats["skipped"]
        what = "conv/linear layers quantized"
        problem = unreported(quantized, skipped, candidates, what) or noop_reason(quantized, candidates, what, skipped)
        self.graphs["pams"] = gm
        return problem

    def rank_prune(self) -> str | None:
        gm, (stats,) = self._pipeline("rank_prune(rate=0.5)")
        self.result.details["rank_prune"] = {
            key: stats[key] for key in ("groups", "groups_pruned", "channels_removed", "macs_ratio", "skipped")
        }
        if stats["channels_removed"] == 0:
            return (
                noop_reason(0, stats["groups"], "channel groups pruned", stats["skipped"]) or "no-op: no channel group"
            )
        self.graphs["rank_prune"] = gm
        return None

    def lower(self, style: str, source: str) -> str | None:
        gm = self.graphs[source]
        path = export(gm, self.inputs, self.workdir / f"{self.result.family}_{style}.onnx", lowering=style)
        report = verifier_for(style)(path, gm, self.inputs)
        self.result.details[style] = report.to_json()
        if style == "custom":
            self.files["custom"] = path
        if not report.ok:
            return f"verify: max rel error {report.max_rel_error:.3g} > {report.rtol:g}"
        return None

    def packed(self) -> str | None:
        arrays = [t.numpy() for t in self.inputs]
        expected = run_session(session(self.files["custom"]), arrays)
        actual = load_packed(self.files["custom"]).run(arrays)
        error = max(e.max_rel_error for e in compare_outputs(expected, actual))
        self.result.details["packed"] = {"max_rel_error_vs_onnxruntime": error}
        if not error <= PACKED_RTOL:
            return f"differs from onnxruntime: max rel error {error:.3g} > {PACKED_RTOL:g}"
        return None


def run_matrix(families: list[str], stages: tuple[str, ...], progress: bool = False) -> list[FamilyResult]:
    """Every family through `stages`, one after the other."""
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for family in families:
            result = Matrix(family, stages, Path(tmp)).run()
            if progress:
                bad = {s: c for s, c in result.cells.items() if c != OK}
                print(f"{family:22s} {result.seconds:6.1f}s  {bad or 'all ✓'}", flush=True)
            results.append(result)
    return results


def totals(results: list[FamilyResult], stages: tuple[str, ...]) -> dict[str, dict[str, int]]:
    """Per stage: ✓ cells, cells that ran and apply (not "–", not "n/a"), n/a cells, cells not run."""
    out = {}
    for stage in stages:
        cells = [r.cells.get(stage, NOT_RUN) for r in results]
        not_applicable = sum(c.startswith(NOT_APPLICABLE) for c in cells)
        not_run = sum(c == NOT_RUN for c in cells)
        out[stage] = {
            "ok": sum(c == OK for c in cells),
            "ran": len(cells) - not_run - not_applicable,
            "not_applicable": not_applicable,
            "not_run": not_run,
        }
    return out


def markdown(results: list[FamilyResult], stages: tuple[str, ...], command: str, seconds: float) -> str:
    """docs/coverage.md: how to regenerate it, totals per stage, the table."""
    counts = totals(results, stages)
    lines = [
        "# Coverage matrix: real CNN patterns through every pass and lowering",
        "",
        "Each family of `bitfx.zoo.PATTERNS` (compact models of the block patterns of real CNNs, untrained,",
        "seeded random inputs) goes through capture, each pass alone, each lowering checked by onnxruntime,",
        "and the packed runtime. A cell is ✓ or the one-line reason it is not: the error raised, or a silent",
        'problem found by the matrix itself ("no-op": the pass rewrote nothing although the model has',
        'candidates; "WRONG": a binarized model whose output does not depend on its input, or a binary',
        'layer that never sees a negative input). "–" means the stage it needs raised an error; the',
        "lowerings of a model flagged no-op or WRONG still run.",
        "What each stage runs is in the docstring of `examples/coverage.py`.",
        "",
        f"Regenerate: `{command}` ({seconds:.0f} s on this machine; `--quick` leaves out",
        "`binarize+rotate`, `int8` and `qdq`). Details per cell are in `docs/coverage.json`.",
        "",
        "## Totals per stage",
        "",
        "✓ of the cells that ran and apply; n/a: nothing to do for the pass (e.g. no BatchNorm).",
        "",
        "| stage | ✓ / ran | n/a | not run (–) |",
        "|---|---|---|---|",
    ]
    lines += [f"| {s} | {c['ok']} / {c['ran']} | {c['not_applicable']} | {c['not_run']} |" for s, c in counts.items()]
    lines += ["", "## Matrix", "", "| family | " + " | ".join(stages) + " |", "|---" * (len(stages) + 1) + "|"]
    for result in results:
        lines.append(f"| {result.family} | " + " | ".join(result.cells.get(s, NOT_RUN) for s in stages) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="leave out binarize+rotate, int8 and qdq")
    parser.add_argument("--families", default="", help="comma-separated subset of bitfx.zoo.PATTERNS")
    parser.add_argument("--markdown", type=Path, default=Path("docs/coverage.md"))
    parser.add_argument("--json", type=Path, default=Path("docs/coverage.json"))
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    families = args.families.split(",") if args.families else list(zoo.PATTERNS)
    unknown = sorted(set(families) - set(zoo.PATTERNS))
    if unknown:
        parser.error(f"unknown families {unknown}; choose from {', '.join(zoo.PATTERNS)}")
    stages = tuple(s for s in STAGES if not (args.quick and s in QUICK_SKIPS))
    start = time.perf_counter()
    results = run_matrix(families, stages, progress=True)
    seconds = time.perf_counter() - start
    command = COMMAND + (" --quick" if args.quick else "") + (f" --families {args.families}" if args.families else "")
    args.markdown.parent.mkdir(parents=True, exist_ok=True)
    args.markdown.write_text(markdown(results, stages, command, seconds))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "command": command,
        "seconds": round(seconds, 1),
        "stages": list(stages),
        "totals": totals(results, stages),
        "families": [vars(r) for r in results],
    }
    args.json.write_text(json.dumps(payload, indent=1, default=str, ensure_ascii=False) + "\n")
    for stage, count in payload["totals"].items():
        print(
            f"{stage:16s} {count['ok']:3d} ✓ / {count['ran']:3d} ran "
            f"({count['not_applicable']} n/a, {count['not_run']} not run)"
        )
    print(f"wrote {args.markdown} and {args.json} in {seconds:.0f} s")


if __name__ == "__main__":
    main()
