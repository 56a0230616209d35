"""Compact versions of the block patterns of real CNN families, written here to exercise every
pass and lowering on the constructs that popular model libraries use (``PATTERNS`` names them).

Each factory takes no argument and returns a small model (3x32x32 images, or as its
``example_input_shape`` says) with weights initialised so that it passes signal in eval mode and
BatchNorm statistics that are not the identity. Capture them in eval mode.
"""

from bitfx.zoo.patterns.constructs import bn_act_net, conv1d_net, convnext, two_input_net, vgg_adaptive, ws_conv_net
from bitfx.zoo.patterns.mobile import efficientnet, ghostnet, mobilenet_v2_compact, mobilenet_v3, regnet, shufflenet_v2
from bitfx.zoo.patterns.multibranch import densenet_bc, dla, dpn, hrnet, inception, repvgg, squeezenet
from bitfx.zoo.patterns.resnets import preact_resnet, resnet_basic, resnet_bottleneck, resnet_d, resnext, wide_resnet

PATTERNS = (
    "resnet_basic",
    "resnet_bottleneck",
    "resnet_d",
    "preact_resnet",
    "resnext",
    "wide_resnet",
    "mobilenet_v2_compact",
    "mobilenet_v3",
    "efficientnet",
    "shufflenet_v2",
    "ghostnet",
    "regnet",
    "squeezenet",
    "densenet_bc",
    "inception",
    "repvgg",
    "dla",
    "dpn",
    "hrnet",
    "vgg_adaptive",
    "convnext",
    "bn_act_net",
    "ws_conv_net",
    "two_input_net",
    "conv1d_net",
)
"""Names of the pattern factories, one per family."""

__all__ = [
    "PATTERNS",
    "bn_act_net",
    "conv1d_net",
    "convnext",
    "densenet_bc",
    "dla",
    "dpn",
    "efficientnet",
    "ghostnet",
    "hrnet",
    "inception",
    "mobilenet_v2_compact",
    "mobilenet_v3",
    "preact_resnet",
    "regnet",
    "repvgg",
    "resnet_basic",
    "resnet_bottleneck",
    "resnet_d",
    "resnext",
    "shufflenet_v2",
    "squeezenet",
    "two_input_net",
    "vgg_adaptive",
    "wide_resnet",
    "ws_conv_net",
]
