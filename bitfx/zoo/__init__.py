"""Model zoo and data functions: the networks and the real data bitfx is exercised on.

Every model factory returns an ``nn.Module`` carrying ``example_input_shape`` (batch 1),
the input shape the command line uses when no ``--input-shape`` is given. A data function
takes an input shape ``(N, C, H, W)`` and returns an iterable of batches (``bitfx.zoo.data``
states the protocol). On the command line both are named ``bitfx.zoo:NAME``. ``PATTERNS`` names
compact models of real CNN families (``bitfx.zoo.patterns``), exported here too.

The zoo imports torch and ``bitfx.ir`` only. Data that needs an optional package
(scikit-learn for ``digits``, scikit-image for ``bitfx.zoo.sr_data``) imports it when
called and, if it is missing, says to install the ``bitfx[examples]`` extra.
"""

from bitfx.zoo import patterns
from bitfx.zoo.data import digits, random
from bitfx.zoo.densenet import densenet_tiny
from bitfx.zoo.detection_data import tiny_objects
from bitfx.zoo.edsr import edsr_lite
from bitfx.zoo.mobilenet import mobilenet_v2
from bitfx.zoo.patterns import *  # noqa: F403 (PATTERNS and the factories it names)
from bitfx.zoo.resnet_cifar import resnet20, resnet56
from bitfx.zoo.resnet_imagenet import resnet18
from bitfx.zoo.tiny_detector import tiny_detector
from bitfx.zoo.vgg import vgg_small

MODELS = ("resnet20", "resnet56", "resnet18", "vgg_small", "mobilenet_v2", "densenet_tiny", "edsr_lite")
"""Names of the classifier and super-resolution factories; the detector is ``tiny_detector``,
the data functions are ``digits``, ``random`` and ``tiny_objects``."""

__all__ = [
    "MODELS",
    "densenet_tiny",
    "digits",
    "edsr_lite",
    "mobilenet_v2",
    "random",
    "resnet18",
    "resnet20",
    "resnet56",
    "tiny_detector",
    "tiny_objects",
    "vgg_small",
    *patterns.__all__,
]
