"""The binary vocabulary of the IR: 1-bit layers, their quantizers, estimators, scales and schemes.

See docs/binarization.md for the schemes and docs/binary-format.md for the ONNX contract.
"""

from bitfx.ir.binary.activations import RPReLU
from bitfx.ir.binary.binary_input import BinaryInput
from bitfx.ir.binary.deployed import ConvGeometry, DeployedBinaryConv2d, DeployedBinaryLinear
from bitfx.ir.binary.estimators import EDE, ESTIMATORS, ApproxSign, ClippedSTE, Estimator, IdentitySTE
from bitfx.ir.binary.layers import BinaryConv2d, BinaryLayer, BinaryLinear
from bitfx.ir.binary.ops import binary_conv2d, binary_gemm
from bitfx.ir.binary.quantizers import RSign, ShiftChannels, SignActivation, WeightBinarizer, standardize_filters
from bitfx.ir.binary.rbnn import (
    RotatedBinaryConv2d,
    RotatedWeightBinarizer,
    SampleCentering,
    StandardizedSign,
    TrainingAwareSign,
)
from bitfx.ir.binary.scales import (
    SCALE_NAMES,
    LayerMeanAbsScale,
    LearnedScale,
    MeanAbsScale,
    NoScale,
    PowerOfTwoScale,
    Scale,
    make_scale,
)
from bitfx.ir.binary.schemes import BinaryScheme, available_schemes, get_scheme, register_scheme
from bitfx.ir.binary.sign import binary_sign, sign_with, straight_through

__all__ = [
    "EDE",
    "ESTIMATORS",
    "SCALE_NAMES",
    "ApproxSign",
    "BinaryConv2d",
    "BinaryInput",
    "BinaryLayer",
    "BinaryLinear",
    "BinaryScheme",
    "ClippedSTE",
    "ConvGeometry",
    "DeployedBinaryConv2d",
    "DeployedBinaryLinear",
    "Estimator",
    "IdentitySTE",
    "LayerMeanAbsScale",
    "LearnedScale",
    "MeanAbsScale",
    "NoScale",
    "PowerOfTwoScale",
    "RPReLU",
    "RSign",
    "RotatedBinaryConv2d",
    "RotatedWeightBinarizer",
    "Scale",
    "ShiftChannels",
    "SampleCentering",
    "SignActivation",
    "StandardizedSign",
    "TrainingAwareSign",
    "WeightBinarizer",
    "available_schemes",
    "binary_conv2d",
    "binary_gemm",
    "binary_sign",
    "get_scheme",
    "make_scale",
    "register_scheme",
    "sign_with",
    "standardize_filters",
    "straight_through",
]
