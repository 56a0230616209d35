"""Graph passes, the pipeline that runs them, and layer selection."""

from bitfx.passes.base import Pass, PassContext, PassResult
from bitfx.passes.fuse_bn import FuseBN
from bitfx.passes.instruments import DumpAfterChange, Instrument, PrintAfterChange
from bitfx.passes.pipeline import PassRecord, Pipeline, PipelineResult
from bitfx.passes.registry import available_passes, create_pass, register_pass
from bitfx.passes.selection import Decision, LayerSelection

__all__ = [
    "Decision",
    "DumpAfterChange",
    "FuseBN",
    "Instrument",
    "LayerSelection",
    "Pass",
    "PassContext",
    "PassRecord",
    "PassResult",
    "Pipeline",
    "PipelineResult",
    "PrintAfterChange",
    "available_passes",
    "create_pass",
    "register_pass",
]
