"""Genotypes as data, the cell frontend `bitfx.ir.cells.build`, and the path capture → binarize."""

import pytest
import torch
from torch import nn

from bitfx.ir import capture
from bitfx.ir.binary import BinaryConv2d
from bitfx.ir.cells import build
from bitfx.ir.search_ops import OPS, GaborConv2d, gabor_kernel, make_op
from bitfx.passes import Pipeline
from bitfx.search.genotypes import ABANDIT_CIFAR_1, DARTS_V2, RELEASED
from bitfx.search.space import CellGene, Genotype, Space


def _params(model):
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", sorted(RELEASED))
def test_released_genotypes_round_trip_through_toml_and_json(name, tmp_path):
    genotype = RELEASED[name]
    assert Genotype.from_toml(genotype.to_toml()) == genotype
    assert Genotype.from_json(genotype.to_json()) == genotype
    genotype.save(tmp_path / "g.toml")
    assert Genotype.load(tmp_path / "g.toml") == genotype
    assert genotype.ops() <= set(OPS)


def test_darts_v2_matches_its_published_size():
    # DARTS reports 3.3 M parameters for this genotype at 36 channels, 20 layers (auxiliary head not counted)
    count = _params(build(DARTS_V2, 36, 20))
    assert round(count / 1e6, 1) == 3.3
    assert count == 3_349_342


def test_abandit_genotype_builds_with_its_published_width_and_depth():
    model = build(ABANDIT_CIFAR_1, 48, 10).eval()
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    # layer i uses cell ⌊6i/10⌋: a a b b c d d e e f; gab_filt_3x3 appears once in a, b and f
    assert [ABANDIT_CIFAR_1.cell_for_layer(i, 10)[0] for i in range(10)] == list("aabbcddeef")
    assert sum(isinstance(m, GaborConv2d) for m in model.modules()) == 2 + 2 + 1
    assert _params(model) == 2_518_474  # DARTS-style network; the authors' network is abandit_net.build_abandit


def test_every_op_keeps_channels_and_divides_the_size_by_its_stride():
    x = torch.randn(2, 8, 8, 8)
    for name in OPS:
        for stride in (1, 2):
            assert make_op(name, 8, stride).eval()(x).shape == (2, 8, 8 // stride, 8 // stride), (name, stride)


def test_gabor_kernel_follows_the_formula_at_a_point():
    raw = {k: torch.tensor([v]) for k, v in dict(theta=0.0, sigma=0.0, lam=0.0, psi=0.3, gamma=0.0).items()}
    kernel = gabor_kernel(raw["theta"], raw["sigma"], raw["lam"], raw["psi"], raw["gamma"], 3)
    # θ = π, σ = 0.3, λ = 0.5005, γ = 1; at (x, y) = (1, 0): x' = −1, y' = 0
    expected = torch.exp(torch.tensor(-1 / (2 * 0.3**2))) * torch.cos(torch.tensor(2 * torch.pi * -1 / 0.5005 + 0.3))
    assert kernel.shape == (1, 1, 3, 3)
    assert kernel[0, 0, 1, 2].item() == pytest.approx(expected.item(), rel=1e-5)
    assert kernel[0, 0, 1, 1].item() == pytest.approx(torch.cos(torch.tensor(0.3)).item(), rel=1e-6)


def _small_genotype():
    space = Space(ops=("max_pool_3x3", "sep_conv_3x3", "dil_conv_3x3", "skip_connect", "none"), nodes=2)
    choice = {edge: ops[(i * 3) % len(ops)] for i, (edge, ops) in enumerate(space.edges().items())}
    return space, space.genotype(choice)


def test_space_edges_and_genotype_of_a_choice():
    space, genotype = _small_genotype()
    assert len(space.edges()) == 2 * (2 + 3)  # node 2 has 2 incoming edges, node 3 has 3, in both cells
    for cell in genotype.cells.values():
        assert all(op != "none" for edges in cell.nodes for op, _ in edges if len(edges) > 1)
    assert Genotype.from_toml(genotype.to_toml()) == genotype


def test_cell_gene_rejects_a_later_source():
    with pytest.raises(ValueError, match="earlier nodes"):
        CellGene(((("skip_connect", 2),),), (2,), inputs=2)


def test_built_model_captures_and_binarizes():
    _, genotype = _small_genotype()
    model = build(genotype, 8, 3, in_channels=1).eval()
    x = torch.randn(2, 1, 16, 16)
    gm = capture(model, x)
    assert torch.allclose(gm(x), model(x))
    result = Pipeline.from_spec("binarize(keep_depthwise=false)").run(gm)
    binary = result.graph_module
    convs = [m for m in binary.modules() if isinstance(m, nn.Conv2d)]
    binary_convs = [m for m in convs if isinstance(m, BinaryConv2d)]
    float_convs = [m for m in convs if not isinstance(m, BinaryConv2d)]
    assert len(binary_convs) == len(convs) - 1 and len(float_convs) == 1  # only the stem (first conv) stays float
    assert binary(x).shape == (2, 10)


def test_gabor_cells_capture_with_the_gabor_filter_as_one_node():
    genotype = Genotype(
        {"a": CellGene(((("gab_filt_3x3", 0),), (("dtp_blok_3x3", 1),)), (1, 2), inputs=1)}, layout="sequential"
    )
    model = build(genotype, 4, 3, in_channels=1).eval()
    x = torch.randn(1, 1, 8, 8)
    gm = capture(model, x)
    assert torch.allclose(gm(x), model(x), atol=1e-6)
    gabor_nodes = [
        n for n in gm.graph.nodes if n.op == "call_module" and isinstance(gm.get_submodule(n.target), GaborConv2d)
    ]
    assert len(gabor_nodes) == 3


def test_fold_gabor_bakes_the_kernels_into_plain_convs_and_preserves_outputs():
    genotype = Genotype(
        {"a": CellGene(((("gab_filt_3x3", 0),), (("gab_filt_3x3", 1),)), (1, 2), inputs=1)}, layout="sequential"
    )
    model = build(genotype, 4, 2, in_channels=1)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            nn.init.uniform_(module.weight, 0.5, 1.5)  # the denoising BN starts at zero: make the filter count
    model.eval()
    x = torch.randn(2, 1, 8, 8)
    result = Pipeline.from_spec("fold_gabor").run(capture(model, x))
    folded = result.graph_module
    assert result.records[0].stats["folded"] == 4 and result.records[0].stats["skipped"] == {}
    assert not any(isinstance(m, GaborConv2d) for m in folded.modules())
    assert torch.allclose(folded(x), model(x), atol=1e-5)
