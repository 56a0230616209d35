"""Channel pruning (`rank_prune`): the channel analysis (`groups`, with the op tables in
`channel_ops`), the HRank scores (`feature_rank`), the printable decision (`plan`), the
physical removal (`surgery`) and the pass that ties them together (`rank_prune`)."""

from bitfx.passes.prune.groups import ChannelAnalysis, ChannelGroup, analyze_channels
from bitfx.passes.prune.plan import PrunePlan
from bitfx.passes.prune.rank_prune import RankPrune

__all__ = ["ChannelAnalysis", "ChannelGroup", "PrunePlan", "RankPrune", "analyze_channels"]
