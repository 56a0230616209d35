"""Binarization schemes: named recipes that say how a float layer becomes a binary one.

A scheme fixes the weight quantizer (scale, estimator, standardisation, how the gradient
treats the scale, latent clipping), the activation quantizer (None: W1A32) and what replaces
a ReLU in front of a binary layer: sign(ReLU(x)) is +1 everywhere, so binary networks put
another nonlinearity there (or none). A scheme also says whether the paper's network has a
real-valued shortcut around every binary conv and keeps its 1×1 downsample convs real
(`bireal`: both; the `binarize` pass's `shortcuts` and `keep_downsample` override it).
The math of each is in
the module docstrings of `estimators`, `scales`
and `quantizers`. Register new schemes with `register_scheme` (RBNN does).

| scheme      | weights                                    | activations            | ReLU in front becomes |
|-------------|--------------------------------------------|------------------------|-----------------------|
| `bnn`       | sign(W), clipped STE, latent W clipped to [−1, 1] | sign, clipped STE | Hardtanh              |
| `xnor`      | mean\\|W_o\\|·sign(W), gradient through the scale, clipped STE | sign, clipped STE | nothing (removed) |
| `bireal`    | mean\\|W_o\\|·sign(W), scale detached, gradient straight to W (clipped) | sign, ApproxSign | nothing |
| `reactnet`  | as `bireal`                                | RSign (learnable threshold), ApproxSign | RPReLU |
| `irnet`     | standardised W, 2^round(log2 mean\\|Ŵ_o\\|)·sign(Ŵ), EDE | sign, EDE   | Hardtanh              |
| `dorefa_w1` | mean\\|W\\| of the layer·sign(W), identity STE straight to W | real (W1A32) | (kept)         |
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import Tensor, nn

from bitfx.ir.binary.activations import RPReLU
from bitfx.ir.binary.estimators import EDE, ApproxSign, ClippedSTE, Estimator, IdentitySTE
from bitfx.ir.binary.layers import BinaryConv2d, BinaryLinear
from bitfx.ir.binary.quantizers import RSign, SignActivation, WeightBinarizer, standardize_filters
from bitfx.ir.binary.scales import make_scale


@dataclass(frozen=True)
class BinaryScheme:
    """A named binarization recipe; `reference` names the paper it follows."""

    name: str
    reference: str
    scale: str
    weight_estimator: Callable[[], Estimator]
    activation: Callable[[int], nn.Module] | None  # input channels → activation quantizer; None: W1A32
    relu_replacement: Callable[[int], nn.Module] | None  # channels → module; None: the ReLU is removed
    standardize: bool = False
    gradient_skips_scale: bool = False
    clip_latent: bool = False
    pad_value: int = 0
    shortcuts: bool = False  # the paper's network has a real-valued shortcut around every binary conv
    keep_downsample: bool = False  # the paper's network keeps its 1×1 downsample convs real-valued

    def weight_quantizer(self, weight: Tensor, scale: str | None = None) -> WeightBinarizer:
        """The weight quantizer for a layer with this latent weight; `scale` overrides the scheme's.

        A scale that learns or takes a gradient cannot be skipped by the gradient, so with
        such an override the gradient goes through the product scale·sign."""
        transformed = standardize_filters(weight) if self.standardize else weight
        chosen = make_scale(scale or self.scale, transformed.detach())
        skips = self.gradient_skips_scale and chosen.detached
        return WeightBinarizer(
            chosen,
            self.weight_estimator(),
            standardize=self.standardize,
            gradient_skips_scale=skips,
            clip_latent=self.clip_latent,
        )

    def input_quantizer(self, channels: int) -> nn.Module | None:
        return None if self.activation is None else self.activation(channels)

    def binary_layer(
        self,
        module: nn.Conv2d | nn.Linear,
        scale: str | None = None,
        pad_value: int | None = None,
        input_quantizer: nn.Module | None = None,
    ) -> BinaryConv2d | BinaryLinear:
        """The binary layer this scheme makes of a float Conv2d or Linear (weights copied, same train mode).

        `scale` and `pad_value` override the scheme's; `input_quantizer` (a trained one carried over from an
        activations-only step) replaces the scheme's fresh one. The `binarize` pass and the search supernet
        both make their binary layers here, so search and deployment share one binarization."""
        weight_quantizer = self.weight_quantizer(module.weight, scale)
        if isinstance(module, nn.Conv2d):
            pad = self.pad_value if pad_value is None else pad_value
            quantizer = input_quantizer or self.input_quantizer(module.in_channels)
            layer = BinaryConv2d.from_conv(module, weight_quantizer, quantizer, pad_value=pad)
        else:
            quantizer = input_quantizer or self.input_quantizer(module.in_features)
            layer = BinaryLinear.from_linear(module, weight_quantizer, quantizer)
        return layer.train(module.training)


_SCHEMES: dict[str, BinaryScheme] = {}


def register_scheme(scheme: BinaryScheme) -> BinaryScheme:
    """Make `scheme` available by name to the `binarize` pass."""
    if scheme.name in _SCHEMES and _SCHEMES[scheme.name] != scheme:
        raise ValueError(f"binarization scheme {scheme.name!r} is already registered")
    _SCHEMES[scheme.name] = scheme
    return scheme


def available_schemes() -> dict[str, BinaryScheme]:
    return dict(sorted(_SCHEMES.items()))


def get_scheme(name: str) -> BinaryScheme:
    if name not in _SCHEMES:
        raise ValueError(f"unknown binarization scheme {name!r}; available: {', '.join(available_schemes())}")
    return _SCHEMES[name]


def _hardtanh(channels: int) -> nn.Module:
    return nn.Hardtanh()


BNN = register_scheme(BinaryScheme(
    name="bnn",
    reference="Hubara, Courbariaux, Soudry, El-Yaniv, Bengio. Binarized Neural Networks. NeurIPS 2016",
    scale="none", weight_estimator=ClippedSTE, clip_latent=True,
    activation=lambda channels: SignActivation(ClippedSTE()), relu_replacement=_hardtanh,
))  # fmt: skip

XNOR = register_scheme(BinaryScheme(
    name="xnor",
    reference=(
        "Rastegari, Ordonez, Redmon, Farhadi. "
        "XNOR-Net: ImageNet Classification Using Binary Convolutional Neural Networks. ECCV 2016"
    ),
    scale="mean", weight_estimator=ClippedSTE,
    activation=lambda channels: SignActivation(ClippedSTE()), relu_replacement=None,
))  # fmt: skip

BIREAL = register_scheme(BinaryScheme(
    name="bireal",
    reference="Liu, Wu, Luo, Yang, Liu, Cheng. Bi-Real Net: Enhancing the Performance of 1-bit CNNs. ECCV 2018",
    scale="mean_detached", weight_estimator=ClippedSTE, gradient_skips_scale=True,
    activation=lambda channels: SignActivation(ApproxSign()), relu_replacement=None,
    shortcuts=True, keep_downsample=True,
))  # fmt: skip

REACTNET = register_scheme(BinaryScheme(
    name="reactnet",
    reference=(
        "Liu, Shen, Savvides, Cheng. "
        "ReActNet: Towards Precise Binary Neural Network with Generalized Activation Functions. ECCV 2020"
    ),
    scale="mean_detached", weight_estimator=ClippedSTE, gradient_skips_scale=True,
    activation=lambda channels: RSign(channels, ApproxSign()), relu_replacement=RPReLU,
))  # fmt: skip

IRNET = register_scheme(BinaryScheme(
    name="irnet",
    reference=(
        "Qin, Gong, Liu, Shen, Wei, Yu, Song. "
        "Forward and Backward Information Retention for Accurate Binary Neural Networks. CVPR 2020"
    ),
    scale="pow2", weight_estimator=EDE, standardize=True,
    activation=lambda channels: SignActivation(EDE()), relu_replacement=_hardtanh,
))  # fmt: skip

DOREFA_W1 = register_scheme(BinaryScheme(
    name="dorefa_w1",
    reference=(
        "Zhou, Wu, Ni, Zhou, Wen, Zou. "
        "DoReFa-Net: Training Low Bitwidth Convolutional Neural Networks with Low Bitwidth Gradients. "
        "arXiv:1606.06160, 2016 (W1A32)"
    ),
    scale="layer_mean", weight_estimator=IdentitySTE, gradient_skips_scale=True,
    activation=None, relu_replacement=None,
))  # fmt: skip
