"""`bitfx.ir.abandit_net.build_abandit`: the ABanditNAS network, its parameter counts and its operations."""

import pytest
import torch

from bitfx.ir import capture
from bitfx.ir.abandit_net import (
    DotProductMean,
    GaborConvFull,
    abandit_cell_index,
    build_abandit,
    make_abandit_op,
)
from bitfx.ir.search_ops import DenoisingBlock
from bitfx.search.genotypes import ABANDIT_CIFAR_1, ABANDIT_CIFAR_2

# Counted with the authors' definitions (48 channels, 10 layers): without / with the auxiliary head
COUNTS = {"ABANDIT_CIFAR_1": (5_187_898, 5_688_900), "ABANDIT_CIFAR_2": (7_603_018, 8_104_020)}
GENOTYPES = {"ABANDIT_CIFAR_1": ABANDIT_CIFAR_1, "ABANDIT_CIFAR_2": ABANDIT_CIFAR_2}


def _params(model):
    return sum(p.numel() for p in model.parameters())


def _bn(c):
    return 2 * c


def _op_params(name, c, stride):
    """Parameters of one edge from per-op formulas (weights k²·c_in·c_out, BN 2c)."""
    k = {"3x3": 3, "5x5": 5}.get(name[-3:])
    if name.startswith("sep_conv"):
        return k * k * c + _bn(c) + k * k * c * c + _bn(c)
    if name.startswith("conv"):
        return k * k * c * c + _bn(c)
    if name.endswith("pool_3x3"):
        return _bn(c)
    if name == "skip_connect":
        return 0 if stride == 1 else c * c + _bn(c)
    if name == "gab_filt_3x3":
        return 5 * c + _bn(c)
    if name == "dtp_blok_3x3":
        return _bn(c)
    raise AssertionError(name)


def _analytic_count(genotype, channels, layers, auxiliary):
    order = "aabbcddeff"  # the authors' layer → cell order for 6 cells, 10 layers
    c_prev, c = 3 * channels, channels
    total = 3 * 3 * 3 * c_prev + _bn(c_prev)
    for layer, name in enumerate(order):
        reduction = layer in (3, 6)
        c = 2 * c if reduction else c
        total += c_prev * c + _bn(c)
        for (op, src), *_ in genotype.cells[name].nodes:
            total += _op_params(op, c, 2 if reduction and src == 0 else 1)
        c_prev = 4 * c
        if layer in (2, 5, 7):
            total += _bn(c_prev)
        if auxiliary and layer == 6:
            total += c_prev * 128 + _bn(128) + 128 * 768 * 2 * 2 + _bn(768) + 768 * 10 + 10
    return total + c_prev * 10 + 10


@pytest.mark.parametrize("name", sorted(COUNTS))
@pytest.mark.parametrize("auxiliary", [False, True])
def test_parameter_count_matches_the_authors_definitions_and_the_per_op_formulas(name, auxiliary):
    model = build_abandit(GENOTYPES[name], 48, 10, auxiliary=auxiliary)
    assert _params(model) == COUNTS[name][auxiliary]
    assert _params(model) == _analytic_count(GENOTYPES[name], 48, 10, auxiliary)


def test_layers_use_cells_in_the_authors_order():
    assert "".join("abcdef"[abandit_cell_index(i, 10, 6)] for i in range(10)) == "aabbcddeff"
    assert [abandit_cell_index(i, 6, 6) for i in range(6)] == list(range(6))


def test_forward_runs_and_captures_to_the_same_outputs():
    model = build_abandit(ABANDIT_CIFAR_1, 48, 10, auxiliary=True)
    x = torch.randn(2, 3, 32, 32)
    logits, aux = model.train()(x)
    assert logits.shape == aux.shape == (2, 10)
    model.eval()
    gm = capture(model, x)
    assert torch.allclose(gm(x), model(x), atol=1e-5)


def test_gabor_conv_applies_each_output_kernel_to_every_input_channel():
    gabor = GaborConvFull(4)
    with torch.no_grad():
        gabor.theta.zero_()  # θ = π: x' = −x, y' = −y
        gabor.sigma.zero_()
        gabor.lam.zero_()
    kernel = gabor.kernel()
    assert kernel.shape == (4, 4, 3, 3)
    assert torch.equal(kernel[:, 0], kernel[:, 3])
    # first axis is x: at (x, y) = (1, 0), exp(−1 / (2σ²)) cos(−2π / λ + ψ) with σ = 0.3, λ = 0.5005
    psi = gabor.psi[1].item()
    expected = torch.exp(torch.tensor(-1 / (2 * 0.3**2))) * torch.cos(torch.tensor(-2 * torch.pi / 0.5005 + psi))
    assert kernel[1, 2, 2, 1].item() == pytest.approx(expected.item(), rel=1e-5)
    x = torch.randn(1, 4, 5, 5)
    summed = torch.nn.functional.conv2d(x.sum(1, keepdim=True), kernel[:, :1], padding=1)
    assert torch.allclose(gabor(x), summed, atol=1e-5)


def test_dot_product_filter_divides_by_channels_times_positions():
    x = torch.randn(2, 3, 4, 5)
    flat = x.flatten(2)
    expected = torch.einsum("bci,bcj,bdj->bdi", flat, flat, flat) / (3 * 20)
    assert torch.allclose(DotProductMean()(x).flatten(2), expected, atol=1e-5)


def test_denoising_block_filters_before_down_sampling():
    block = DenoisingBlock(3, 2, DotProductMean(), downsample_last=True)
    with torch.no_grad():
        block.bn.weight.fill_(1.0)
    block.eval()
    x = torch.randn(1, 3, 8, 8)
    full = x + block.bn(DotProductMean()(x))
    expected = torch.nn.functional.interpolate(full, scale_factor=0.5, mode="bilinear", align_corners=True)
    assert torch.allclose(block(x), expected, atol=1e-5)
    assert make_abandit_op("dtp_blok_3x3", 3, 2).eval()(x).shape == (1, 3, 4, 4)
