"""Graph passes, the pipeline that runs them, and layer selection."""

from bitfx.passes.base import Pass, PassContext, PassResult
from bitfx.passes.binarize import BinarizeConvs
from bitfx.passes.fold_gabor import FoldGabor
from bitfx.passes.fuse_bn import FuseBN
from bitfx.passes.instruments import DumpAfterChange, Instrument, PrintAfterChange
from bitfx.passes.pams import PAMSQuantize
from bitfx.passes.pipeline import PassRecord, Pipeline, PipelineResult
from bitfx.passes.rank_prune import RankPrune
from bitfx.passes.registry import available_passes, create_pass, register_pass
from bitfx.passes.rotate import InsertRotation
from bitfx.passes.selection import Decision, LayerSelection

__all__ = [
    "BinarizeConvs",
    "Decision",
    "DumpAfterChange",
    "FoldGabor",
    "FuseBN",
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
