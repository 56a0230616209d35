"""Graph passes (one module or subpackage per pass family) and, in `core`, the pipeline that runs
them, the registry and layer selection."""

from bitfx.passes.binarize import BinarizeConvs
from bitfx.passes.core.base import Pass, PassContext, PassResult
from bitfx.passes.core.instruments import DumpAfterChange, Instrument, PrintAfterChange
from bitfx.passes.core.pipeline import PassRecord, Pipeline, PipelineResult
from bitfx.passes.core.registry import available_passes, create_pass, register_pass
from bitfx.passes.core.selection import Decision, LayerSelection
from bitfx.passes.fold_gabor import FoldGabor
from bitfx.passes.fuse_bn import FuseBN
from bitfx.passes.iff import InsertIFF
from bitfx.passes.insert_gates import InsertGates
from bitfx.passes.pams import PAMSQuantize
from bitfx.passes.prune import RankPrune
from bitfx.passes.rotate import InsertRotation

__all__ = [
    "BinarizeConvs",
    "Decision",
    "DumpAfterChange",
    "FoldGabor",
    "FuseBN",
    "InsertGates",
    "InsertIFF",
    "InsertRotation",
    "Instrument",
    "LayerSelection",
    "PAMSQuantize",
    "Pass",
    "PassContext",
    "PassRecord",
    "PassResult",
    "Pipeline",
    "PipelineResult",
    "PrintAfterChange",
    "RankPrune",
    "available_passes",
    "create_pass",
    "register_pass",
]
