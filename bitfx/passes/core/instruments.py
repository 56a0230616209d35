"""Pipeline instruments: hooks that watch passes run, kept apart from the list of passes."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from torch import fx

from bitfx.ir import summary, to_dot

if TYPE_CHECKING:
    from bitfx.passes.core.pipeline import PassRecord


class Instrument:
    """Base of pipeline instruments; override the hooks you need."""

    def before_pass(self, index: int, pass_name: str, gm: fx.GraphModule) -> None:
        """Called before pass number `index` (from 0) runs on `gm`."""

    def after_pass(self, index: int, record: PassRecord, gm: fx.GraphModule) -> None:
        """Called after a pass ran and its checks passed; `gm` is the rewritten graph."""


class PrintAfterChange(Instrument):
    """Print the graph (its summary table, or its generated code) after each pass that changed it."""

    def __init__(self, stream: TextIO | None = None, what: str = "summary") -> None:
        if what not in ("summary", "code"):
            raise ValueError(f"what={what!r}: choose 'summary' or 'code'")
        self.stream, self.what = stream, what

    def after_pass(self, index: int, record: PassRecord, gm: fx.GraphModule) -> None:
        if record.modified:
            text = str(summary(gm)) if self.what == "summary" else gm.code
            print(f"--- after pass {index + 1}: {record.name} ---\n{text}", file=self.stream or sys.stdout)


class DumpAfterChange(Instrument):
    """Write `NN-name.py` (code), `.txt` (summary) and `.dot` (graph) after each pass that changed it."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)

    def after_pass(self, index: int, record: PassRecord, gm: fx.GraphModule) -> None:
        if not record.modified:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        stem = self.directory / f"{index + 1:02d}-{record.name}"
        stem.with_suffix(".py").write_text(gm.code)
        stem.with_suffix(".txt").write_text(str(summary(gm)) + "\n")
        stem.with_suffix(".dot").write_text(to_dot(gm, title=record.name))
