"""`InsertRotation` (`rotate`): RBNN's rotated binary weights on the binary convolutions.

Runs after `binarize` (`--passes fuse_bn,binarize,rotate`). Each binary conv chosen by the
layer selection (default: all) becomes a `RotatedBinaryConv2d` with RBNN's recipe
(`bitfx.ir.binary.rbnn`; Lin et al., "Rotated Binary Neural Network", NeurIPS 2020):
standardised filters, one pair of rotations R1 (a×a), R2 (b×b) shared by the layer's
filters, the adjustable rotated weight with θ per output channel (starting at π/2), a
learnable α per output channel (starting at mean|W|) and the training-aware sign estimator for weights and activations,
scheduled by `bitfx.train.on_epoch_start`, which also runs `iterations` Procrustes steps on
R1, R2 at every epoch start. The latent weights, bias, geometry and padding of each layer
are kept, and so is the kind of activation quantizer (only its estimator changes).

Parameters: `seed` (R1, R2 start as seeded random orthogonal matrices, drawn in graph
order; `init="identity"` starts them at I), `iterations` (Procrustes steps per epoch; 0
keeps R1, R2 fixed: with `init="identity"` that is RBNN without rotation, an ablation),
`angle_init` (θ starts at π/2, as in the paper and the authors' released ImageNet code, or
`uniform` in [0, π/2] per channel, seeded, as a version of their CIFAR code does),
`standardize_activations` (default on: each rotated layer's input is standardised per sample
before its sign, as in both trees of the
authors' released code; it costs one ReduceMean and one Sub per layer when deployed; off is an
ablation), `t_min`, `t_max` (the estimator schedule).

The rotation is baked at deployment: the lowered layer is an ordinary binary conv.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import fx

from bitfx.errors import PassConfigError, PassError
from bitfx.ir.binary import BinaryConv2d, SignActivation
from bitfx.ir.binary.estimators import Estimator
from bitfx.ir.binary.rbnn import (
    T_MAX,
    T_MIN,
    RotatedBinaryConv2d,
    RotatedWeightBinarizer,
    StandardizedSign,
    TrainingAwareSign,
)
from bitfx.ir.binary.rotation import factor_pair, random_orthogonal
from bitfx.ir.protocol import sign_estimator
from bitfx.passes.core.base import Pass, PassContext, PassResult
from bitfx.passes.core.ordering import BINARY_LAYERS
from bitfx.passes.core.registry import register_pass
from bitfx.passes.core.selection import LayerSelection


@register_pass
@dataclass
class InsertRotation(Pass):
    """RBNN: learnable bi-rotations of binary conv weights, updated each epoch, baked at deployment."""

    name = "rotate"
    preserves_outputs = False
    needs = (BINARY_LAYERS,)

    layers: LayerSelection = field(default_factory=lambda: LayerSelection(default=True))
    seed: int = 0
    init: Literal["random", "identity"] = "random"
    iterations: int = 3
    angle_init: Literal["half_pi", "uniform"] = "half_pi"
    standardize_activations: bool = True
    t_min: float = T_MIN
    t_max: float = T_MAX

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.iterations, bool) or not isinstance(self.iterations, int) or self.iterations < 0:
            raise PassConfigError(
                f"pass 'rotate': iterations={self.iterations!r} must be an integer ≥ 0 (Procrustes steps "
                "per epoch; 0 keeps the rotations fixed)"
            )
        if not 0 < self.t_min <= self.t_max:
            raise PassConfigError(f"pass 'rotate': need 0 < t_min ≤ t_max, got t_min={self.t_min}, t_max={self.t_max}")

    def requires(self, gm: fx.GraphModule) -> None:
        if not any(isinstance(module, BinaryConv2d) for module in gm.modules()):
            raise PassError(
                "pass 'rotate' rotates the weights of binary convolutions and this graph has none; run "
                "'binarize' before it (e.g. --passes fuse_bn,binarize,rotate)"
            )

    def run(self, gm: fx.GraphModule, context: PassContext) -> PassResult:
        generator = torch.Generator().manual_seed(self.seed)
        rotated: dict[str, str] = {}
        skipped: dict[str, str] = {}
        notes: dict[str, str] = {}
        standardized = 0
        for node, layer, decision in self.layers.select(gm, (BinaryConv2d,)):
            if isinstance(layer, RotatedBinaryConv2d):
                skipped[node.target] = "already rotated"
                continue
            if decision.value is not True:
                skipped[node.target] = f"not selected ({decision.rule} → {decision.value})"
                continue
            standardize, note = self._standardizes(layer)
            if note:
                notes[node.target] = note
            gm.add_submodule(node.target, self._rotated(layer, generator, standardize))
            standardized += standardize
            a, b = factor_pair(layer.weight[0].numel())
            rotated[node.target] = f"R1 {a}×{a}, R2 {b}×{b}"
        stats: dict[str, Any] = {
            "rotated": len(rotated),
            "activations_standardized": standardized,
            "layers": rotated,
            "skipped": skipped,
            "notes": notes,
        }
        return PassResult(gm, bool(rotated), stats)

    def _standardizes(self, layer: BinaryConv2d) -> tuple[bool, str]:
        """Whether this layer's input gets standardised, and a note when it was asked but cannot be."""
        if not self.standardize_activations:
            return False, ""
        if layer.input_quantizer is None:
            return False, "input not standardised: it stays real (W1A32)"
        if type(layer.input_quantizer) is not SignActivation:
            return (
                False,
                "input not standardised: standardisation replaces a plain sign, and this input quantizer "
                f"is {type(layer.input_quantizer).__name__}",
            )
        return True, ""

    def _rotated(self, layer: BinaryConv2d, generator: torch.Generator, standardize: bool) -> RotatedBinaryConv2d:
        a, b = factor_pair(layer.weight[0].numel())
        if self.init == "random":
            left, right = random_orthogonal(a, generator), random_orthogonal(b, generator)
        else:
            left, right = torch.eye(a), torch.eye(b)
        angle = (
            torch.rand(layer.out_channels, generator=generator) * (math.pi / 2)
            if self.angle_init == "uniform"
            else None
        )
        weight_quantizer = RotatedWeightBinarizer(
            layer.weight, left, right, angle=angle, iterations=self.iterations, t_min=self.t_min, t_max=self.t_max
        )
        estimator = TrainingAwareSign(activations=True, t_min=self.t_min, t_max=self.t_max)
        input_quantizer = layer.input_quantizer
        if standardize:
            input_quantizer = StandardizedSign(estimator)
        elif isinstance(sign_estimator(input_quantizer), Estimator):
            input_quantizer.estimator = estimator
        return RotatedBinaryConv2d.from_binary_conv(layer, weight_quantizer.train(layer.training), input_quantizer)
