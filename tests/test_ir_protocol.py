"""The IR-module protocol: each accessor reads its hook, and a module without it gets the default."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bitfx.ir.binary import EDE, BinaryConv2d, DeployedBinaryConv2d, RSign, SignActivation, get_scheme
from bitfx.ir.binary.estimators import ApproxSign
from bitfx.ir.protocol import (
    ActivationQuantizer,
    DeclaresMacs,
    Deployable,
    TrainingHooks,
    declared_macs,
    deployed_form,
    deployed_input,
    is_leaf,
    sign_estimator,
    storage_bits,
    training_hook_modules,
)
from bitfx.ir.quant import QuantConv2d


def _binary_conv() -> BinaryConv2d:
    conv = nn.Conv2d(4, 3, 3)
    scheme = get_scheme("irnet")
    return BinaryConv2d.from_conv(conv, scheme.weight_quantizer(conv.weight), scheme.input_quantizer(4))


def test_accessors_read_the_hooks_and_default_for_plain_modules() -> None:
    layer, plain = _binary_conv(), nn.Conv2d(4, 3, 3)
    assert is_leaf(layer) and not is_leaf(plain)
    assert storage_bits(layer, "weight") == 1 and storage_bits(layer, "bias") is None
    assert storage_bits(plain, "weight") is None
    assert storage_bits(QuantConv2d(4, 3, 3, bits=4), "weight") == 4
    assert declared_macs(layer, (2, 3, 5, 5)) == 3 * 5 * 5 * 4 * 9 and declared_macs(plain, (2, 3, 5, 5)) is None
    assert isinstance(layer, Deployable) and isinstance(layer, DeclaresMacs) and not isinstance(plain, Deployable)
    assert deployed_form(plain) is None


def test_deployed_form_keeps_the_training_mode_and_shares_no_tensors() -> None:
    layer = _binary_conv().eval()
    form = deployed_form(layer)
    assert isinstance(form, DeployedBinaryConv2d) and not form.training
    assert form.weight.data_ptr() != layer.weight.data_ptr() and not list(form.parameters())


def test_activation_quantizers_and_their_estimators() -> None:
    assert deployed_input(SignActivation(ApproxSign())) is None
    shift = deployed_input(RSign(2, ApproxSign()))
    assert shift(torch.zeros(1, 2, 1, 1)).shape == (1, 2, 1, 1)
    assert isinstance(RSign(2, ApproxSign()), ActivationQuantizer)
    assert isinstance(sign_estimator(SignActivation(ApproxSign())), ApproxSign)
    assert sign_estimator(nn.Hardtanh()) is None
    with pytest.raises(TypeError, match="deployed_input"):
        deployed_input(nn.Hardtanh())


def test_training_hook_modules_lists_every_subclass_by_name() -> None:
    model = nn.Sequential(_binary_conv(), nn.ReLU())
    found = dict(training_hook_modules(model))
    assert set(found) == {"0", "0.weight_quantizer.estimator", "0.input_quantizer.estimator"}
    assert all(isinstance(m, TrainingHooks) for m in found.values())
    assert isinstance(found["0.weight_quantizer.estimator"], EDE)
