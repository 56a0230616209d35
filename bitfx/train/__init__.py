"""Training rewritten graphs: schedule and constraint hooks, distillation from the float model
(logits, features, PAMS's SKT attention loss), CP-NAS's Child-Parent kernel loss, optimizer groups for
learned quantizer scales, the CoGD optimizer for gated weights, and the PGD attack with adversarial training."""

from bitfx.train.child_parent import ChildParentLoss
from bitfx.train.cogd import CoGD, GatedWeight
from bitfx.train.distill import Distillation
from bitfx.train.gate_penalty import gate_l1_penalty
from bitfx.train.hooks import after_optimizer_step, on_epoch_start
from bitfx.train.param_groups import pams_parameter_groups
from bitfx.train.pgd import PGD, AdversarialLoss, robust_accuracy
from bitfx.train.skt import DEFAULT_SKT_WEIGHT, attention_map, skt_loss, with_taps

__all__ = [
    "PGD",
    "AdversarialLoss",
    "DEFAULT_SKT_WEIGHT",
    "ChildParentLoss",
    "CoGD",
    "Distillation",
    "GatedWeight",
    "after_optimizer_step",
    "attention_map",
    "gate_l1_penalty",
    "on_epoch_start",
    "pams_parameter_groups",
    "robust_accuracy",
    "skt_loss",
    "with_taps",
]
