"""PAMS quantizers (bitfx.ir.quant) and the `pams` pass: math, gradients, placement, calibration."""

import operator

import pytest
import torch
from helpers import assert_same_state, state_snapshot
from torch import nn

from bitfx.errors import PassConfigError, PassError
from bitfx.ir import capture, summary
from bitfx.ir.output_chain import chain_after
from bitfx.ir.quant import ActQuant, QuantConv2d, QuantLinear, qmax, quantize_layer
from bitfx.passes import LayerSelection, PAMSQuantize, Pipeline, create_pass
from bitfx.zoo import edsr_lite

PAPER_LAYERS = {"default": False, "by_regex": {r"body\.\d+\.body\.\d+": True}}


def test_qmax_and_its_range_check():
    assert [qmax(b) for b in (2, 4, 8)] == [1, 7, 127]
    with pytest.raises(ValueError, match="between 2 and 8"):
        qmax(9)


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_activation_quantizer_forward_is_the_pams_formula(bits):
    q = qmax(bits)
    quant = ActQuant(bits, alpha=1.5)
    x = torch.linspace(-3, 3, 1001)
    step = 1.5 / q
    expected = torch.round(x.clamp(-1.5, 1.5) / step) * step
    torch.testing.assert_close(quant(x), expected, rtol=0, atol=0)
    codes = quant.codes(x)
    assert codes.min() == -q and codes.max() == q
    assert len(torch.unique(codes)) == 2 * q + 1


def test_activation_quantizer_gradients_are_pams_ste_and_alpha_rule():
    alpha = 1.0
    for value in [-2.5, -1.2, -0.37, 0.0, 0.26, 0.61, 0.999, 1.3]:
        quant = ActQuant(4, alpha=alpha)
        x = torch.tensor(value, requires_grad=True)
        out = quant(x)
        out.backward()
        inside = abs(value) < alpha
        expected_alpha = (float(out.detach()) - value) / alpha if inside else (1.0 if value > 0 else -1.0)
        assert float(quant.alpha.grad) == pytest.approx(expected_alpha, abs=1e-6), value
        assert float(x.grad) == (1.0 if inside else 0.0), value


@pytest.mark.parametrize("per_channel", [False, True])
def test_weight_quantizer_codes_scale_and_ste(per_channel):
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 4, 3)
    with torch.no_grad():
        conv.weight[2] *= 10  # channels of very different range
    layer = quantize_layer(conv, 4, per_channel)
    assert layer.weight is conv.weight and layer.bias is conv.bias
    codes = layer.weight_codes()
    assert codes.abs().max() == 7 and torch.equal(codes, codes.round())
    per_filter_peak = codes.abs().flatten(1).amax(dim=1)
    assert bool((per_filter_peak == 7).all()) == per_channel
    scale = layer.weight_scale()
    assert scale.shape == ((4,) if per_channel else ())
    torch.testing.assert_close(layer.quantized_weight(), codes * (scale.reshape(-1, 1, 1, 1) if per_channel else scale))
    x = torch.randn(2, 3, 5, 5)
    torch.testing.assert_close(layer(x), nn.functional.conv2d(x, layer.quantized_weight(), conv.bias))
    layer(x).sum().backward()
    reference = conv.weight.detach().clone().requires_grad_()
    nn.functional.conv2d(x, reference, conv.bias).sum().backward()
    torch.testing.assert_close(conv.weight.grad, reference.grad)  # straight-through


def test_quantized_layers_declare_their_storage_bits():
    gm = capture(
        nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2)), torch.randn(2, 8)
    )
    result = Pipeline([PAMSQuantize(bits=4)]).run(gm)
    middle = result.graph_module.get_submodule("2")
    assert isinstance(middle, QuantLinear)
    row = next(r for r in summary(result.graph_module).rows if r.name == "_2")
    assert row.cost.weight_bits == 64 * 4 + 8 * 32


def _edsr(seed=0):
    torch.manual_seed(seed)
    return edsr_lite().eval()


def _data(batches=2, batch=3, seed=1):
    generator = torch.Generator().manual_seed(seed)
    return [torch.rand(batch, 3, 48, 48, generator=generator) for _ in range(batches)]


def _quant_input(gm, node):
    source = node.args[0]
    return source.op == "call_module" and isinstance(gm.get_submodule(source.target), ActQuant)


@pytest.mark.parametrize("layers", [None, PAPER_LAYERS])
def test_edsr_placement_is_the_official_codes(layers):
    """PAMS_ResBlock (colorjam/PAMS model/edsr.py): quant_act1 on the shortcut, conv1 on the unquantized block
    input, quant_act2 after the ReLU into conv2, quant_act3 on the branch after res_scale, the add of both."""
    model, data = _edsr(), _data()
    gm = capture(model, data[0])
    selection = LayerSelection.from_config(layers) if layers else LayerSelection(default=True)
    result = Pipeline([PAMSQuantize(layers=selection)]).run(gm, data=data)
    out = result.graph_module
    stats = result.records[0].stats
    assert stats["placement"] == "paper"
    assert stats["quantized_layers"] == 8 and stats["activation_quantizers"] == 12
    assert stats["float_input_layers"] == [f"body.{block}.body.0" for block in range(4)]
    for block in range(4):
        conv1 = out.get_submodule(f"body.{block}.body.0")
        conv2 = out.get_submodule(f"body.{block}.body.2")
        assert isinstance(conv1, QuantConv2d) and isinstance(conv2, QuantConv2d)
    assert all(type(out.get_submodule(name)) is nn.Conv2d for name in ("head", "body.4", "tail.0.0", "tail.1"))
    nodes = {n.name: n for n in out.graph.nodes}
    adds = [n for n in out.graph.nodes if n.op == "call_function" and n.target is operator.add]
    block_adds, global_add = adds[:4], adds[4]
    block_inputs = ["head"] + [add.name for add in block_adds[:3]]
    quantizers = {name for name, m in out.named_modules() if isinstance(m, ActQuant)}
    expected = set()
    for block, add in enumerate(block_adds):
        shortcut, branch = add.args
        assert _quant_input(out, add) and shortcut.args[0].name == block_inputs[block]  # quant_act1
        assert shortcut.users.keys() == {add}  # the shortcut quantizer feeds the add only
        assert branch.op == "call_module" and isinstance(out.get_submodule(branch.target), ActQuant)
        assert branch.args[0].target is operator.mul  # quant_act3: after res_scale, before the add
        conv1 = nodes[f"body_{block}_body_0"]
        assert conv1.args[0].name == block_inputs[block]  # the float block input, as in the official code
        conv2 = nodes[f"body_{block}_body_2"]
        assert _quant_input(out, conv2) and conv2.args[0].args[0].name == f"body_{block}_body_1"  # quant_act2
        expected |= {shortcut.target, conv2.args[0].target, branch.target}
    assert quantizers == expected
    assert not any(
        a.op == "call_module" and isinstance(out.get_submodule(a.target), ActQuant) for a in global_add.args
    )  # float body.4


def test_a_quantized_block_input_feeds_conv1_its_quantizer_and_the_stats_say_so():
    model, data = _edsr(), _data()
    selection = LayerSelection(default=True, by_name={"head": True})
    result = Pipeline([PAMSQuantize(layers=selection)]).run(capture(model, data[0]), data=data)
    out, stats = result.graph_module, result.records[0].stats
    assert stats["layers"][0] == "head" and stats["placement"] == "paper"
    assert stats["float_input_layers"] == [f"body.{block}.body.0" for block in (1, 2, 3)]
    conv1 = next(n for n in out.graph.nodes if n.target == "body.0.body.0")
    assert _quant_input(out, conv1) and conv1.args[0].args[0].name == "head"  # rule 3: head's output is quantized


def test_ensures_allows_float_input_only_to_each_branchs_first_layer():
    model, data = _edsr(), _data()
    out = Pipeline([PAMSQuantize()]).run(capture(model, data[0]), data=data).graph_module
    PAMSQuantize().ensures(out)
    with pytest.raises(PassError, match="does not read a quantized activation"):
        PAMSQuantize(placement="general").ensures(out)  # general quantizes conv1's input
    conv2 = next(n for n in out.graph.nodes if n.target == "body.0.body.2")
    conv2.replace_input_with(conv2.args[0], conv2.args[0].args[0])  # conv2 reads the float ReLU output
    with pytest.raises(PassError, match="'body.0.body.2' does not read a quantized activation"):
        PAMSQuantize().ensures(out)


class _OfficialBlock(nn.Module):
    """The layout of PAMS_ResBlock: an identity `shortcut` module, `body` = conv-ReLU-conv, `.mul(res_scale)`,
    the branch added to the shortcut in place."""

    def __init__(self) -> None:
        super().__init__()
        self.shortcut = nn.Identity()
        self.body = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(True), nn.Conv2d(4, 4, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = self.shortcut(x)
        res = self.body(x).mul(0.5)
        res += residual
        return res


class _OfficialBlocks(nn.Module):
    """A float head conv, two official-layout blocks, a float tail conv."""

    def __init__(self) -> None:
        super().__init__()
        self.head, self.tail = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 3, 3, padding=1)
        self.blocks = nn.Sequential(_OfficialBlock(), _OfficialBlock())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.tail(self.blocks(self.head(x)))


def test_official_block_layout_gets_the_official_quantizers():
    torch.manual_seed(0)
    data = [torch.randn(2, 3, 10, 10) for _ in range(2)]
    result = Pipeline([PAMSQuantize(bits=4)]).run(capture(_OfficialBlocks().eval(), data[0]), data=data)
    out, stats = result.graph_module, result.records[0].stats
    assert stats["layers"] == ["blocks.0.body.0", "blocks.0.body.2", "blocks.1.body.0", "blocks.1.body.2"]
    assert stats["float_input_layers"] == ["blocks.0.body.0", "blocks.1.body.0"]
    quantizer_inputs = {
        n.args[0].name
        for n in out.graph.nodes
        if n.op == "call_module" and isinstance(out.get_submodule(n.target), ActQuant)
    }
    # per block, as quant_act1/2/3: the shortcut's output, the post-ReLU input of conv2, the branch after mul
    assert quantizer_inputs == {
        "blocks_0_shortcut",
        "blocks_0_body_1",
        "mul",
        "blocks_1_shortcut",
        "blocks_1_body_1",
        "mul_1",
    }
    nodes = {n.name: n for n in out.graph.nodes}
    assert nodes["blocks_0_body_0"].args[0].name == "head"
    assert nodes["blocks_1_body_0"].args[0].name == "add"  # the float sum of block 0
    assert all(_quant_input(out, nodes[f"blocks_{b}_body_2"]) for b in range(2))


def test_default_placement_is_the_papers_edsr_block_convs():
    model, data = _edsr(), _data()
    result = Pipeline([PAMSQuantize()]).run(capture(model, data[0]), data=data)
    stats = result.records[0].stats
    assert stats["placement"] == "paper"
    assert stats["layers"] == [f"body.{block}.body.{conv}" for block in range(4) for conv in (0, 2)]
    assert stats["quantized_layers"] == 8 and stats["activation_quantizers"] == 12
    assert stats["skipped"]["head"] == stats["skipped"]["tail.1"] == "first/last layer (float_ends)"
    for name in ("body.4", "tail.0.0"):  # the body's last conv and the upsampler stay float, as in PAMS
        assert stats["skipped"][name].startswith("not on a residual block's branch (placement='paper'")


def test_paper_placement_without_residual_blocks_is_the_general_one_and_says_so():
    gm = capture(
        nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2)), torch.randn(2, 8)
    )
    stats = Pipeline([PAMSQuantize(bits=4)]).run(gm).records[0].stats
    assert stats["placement"] == "general (no residual block)" and stats["layers"] == ["2"]


class _LayerFreeResidual(nn.Module):
    """Three convs; the only residual add, y + relu(y), has no layer on its branch."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.c = nn.Conv2d(3, 4, 3), nn.Conv2d(4, 4, 3), nn.Conv2d(4, 2, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.a(x)
        return self.c(self.b(y + torch.relu(y)))


def test_paper_placement_with_no_layer_on_a_residual_branch_is_the_general_one():
    gm = capture(_LayerFreeResidual().eval(), torch.randn(2, 3, 12, 12))
    stats = Pipeline([PAMSQuantize()]).run(gm).records[0].stats
    assert stats["placement"] == "general (no residual block)" and stats["layers"] == ["b"]


def test_general_placement_keeps_first_and_last_float_and_quantizes_every_output():
    model, data = _edsr(), _data()
    result = Pipeline([PAMSQuantize(placement="general")]).run(capture(model, data[0]), data=data)
    out, stats = result.graph_module, result.records[0].stats
    mean_shifts = {name: why for name, why in stats["skipped"].items() if name.startswith("conv2d")}
    assert sorted(mean_shifts) == ["conv2d", "conv2d_1"]  # MeanShift's fixed F.conv2d, reported, not silent
    assert all(why.startswith("a functional conv2d: pams quantizes") for why in mean_shifts.values())
    assert {k: v for k, v in stats["skipped"].items() if k not in mean_shifts} == {
        "head": "first/last layer (float_ends)",
        "tail.1": "first/last layer (float_ends)",
    }
    assert stats["quantized_layers"] == 10
    for node in out.graph.nodes:
        if node.op == "call_module" and isinstance(out.get_submodule(node.target), QuantConv2d):
            assert _quant_input(out, node)
            end = chain_after(out, node).end
            assert all(
                u.op == "call_module" and isinstance(out.get_submodule(u.target), ActQuant) for u in end.users
            ), node.name


def test_calibration_sets_alpha_to_mean_per_sample_max():
    model, data = _edsr(), _data(batches=3, batch=2)
    result = Pipeline([PAMSQuantize()]).run(capture(model, data[0]), data=data)
    with torch.no_grad():
        heads = torch.cat([model.head(model.sub_mean(x)) for x in data])
    expected = heads.abs().flatten(1).amax(dim=1).mean()
    assert float(result.graph_module.head_quant.alpha.detach()) == pytest.approx(float(expected), rel=1e-5)
    assert result.records[0].stats["calibration"] == "6 samples from the calibration data"


def test_without_data_the_example_inputs_calibrate_and_the_stats_say_so():
    model, data = _edsr(), _data()
    result = Pipeline([PAMSQuantize(bits=4)]).run(capture(model, data[0]))
    assert "example inputs" in result.records[0].stats["calibration"]
    assert all(float(m.alpha.detach()) > 0 for m in result.graph_module.modules() if isinstance(m, ActQuant))


def test_pass_leaves_the_input_untouched_and_refuses_a_second_run():
    model, data = _edsr(), _data()
    gm = capture(model, data[0])
    snapshot = state_snapshot(gm)
    result = Pipeline.from_spec("pams(bits=6, per_channel=true)").run(gm, data=data)
    assert_same_state(gm, snapshot)
    assert not any(isinstance(m, (ActQuant, QuantConv2d)) for m in gm.modules())
    assert result.graph_module.get_submodule("body.0.body.0").bits == 6
    with pytest.raises(PassError, match="already PAMS-quantized"):
        Pipeline([PAMSQuantize()]).run(result.graph_module)


@pytest.mark.parametrize("bits", [1, 9, True, "8"])
def test_bad_bit_widths_are_rejected_with_the_valid_range(bits):
    with pytest.raises(PassConfigError, match="from 2 to 8"):
        PAMSQuantize(bits=bits)
    if isinstance(bits, int) and not isinstance(bits, bool):
        with pytest.raises(PassConfigError, match="from 2 to 8"):
            create_pass("pams", {"bits": bits})


def test_layer_selection_names_are_checked_and_obeyed():
    model, data = _edsr(), _data()
    gm = capture(model, data[0])
    with pytest.raises(PassError, match="not modules of the model"):
        Pipeline.from_spec("pams(layers={'by_name': {'body.9': True}})").run(gm)
    result = Pipeline.from_spec(
        "pams(layers={'default': True, 'by_name': {'body.1.body.2': False, 'head': True}})"
    ).run(gm, data=data)
    stats = result.records[0].stats
    assert "head" in stats["layers"] and "body.1.body.2" not in stats["layers"]
    assert stats["skipped"]["body.1.body.2"] == "not selected (name 'body.1.body.2')"


def test_pipeline_file_round_trip(tmp_path):
    pipeline = Pipeline.from_spec(f"pams(bits=4, per_channel=true, layers={PAPER_LAYERS!r})")
    pipeline.save(tmp_path / "p.toml")
    again = Pipeline.from_file(tmp_path / "p.toml")
    assert again.passes[0].params() == pipeline.passes[0].params()
