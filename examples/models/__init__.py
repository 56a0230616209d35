"""Model zoo: factories for the networks bitfx is exercised on.

Every factory returns an ``nn.Module`` carrying ``example_input_shape`` (batch 1),
the input shape the command line uses when no ``--input-shape`` is given.
"""

from examples.models.densenet import densenet_tiny
from examples.models.edsr import edsr_lite
from examples.models.mobilenet import mobilenet_v2
from examples.models.resnet_cifar import resnet20, resnet56
from examples.models.resnet_imagenet import resnet18
from examples.models.vgg import vgg_small

__all__ = [
    "densenet_tiny",
    "edsr_lite",
    "mobilenet_v2",
    "resnet18",
    "resnet20",
    "resnet56",
    "vgg_small",
]
