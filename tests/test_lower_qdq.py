"""The `qdq` lowering: file layout, onnxruntime fusion, and the code-level verification."""

import copy
from collections import Counter

import numpy as np
import onnx
import pytest
import torch
from helpers import randomize_batchnorm
from onnx import numpy_helper
from torch import nn

from bitfx.backends.onnx import export, load_model, quantized_layer_fusion, verifier_for
from bitfx.backends.onnx.qdq import ACTIVATION_ZERO_POINT, prepare_qdq
from bitfx.backends.onnx.verify import verify_qdq
from bitfx.errors import LoweringError
from bitfx.ir import capture, compare_outputs, run_eval
from bitfx.passes import Pipeline
from bitfx.zoo import edsr_lite

# EDSR's block convs, each reading a quantized input (conv1 too): integer from the first block to the last
BLOCK_CONVS_INTEGER = (
    "pams(bits=4, per_channel=true, placement=general, "
    "layers={'default': False, 'by_regex': {'body\\\\.\\\\d+\\\\.body\\\\.\\\\d+': True}})"
)


def _quantized_edsr(spec: str):
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(1)
    data = [torch.rand(2, 3, 24, 24, generator=generator) for _ in range(2)]
    gm = capture(edsr_lite().eval(), data[0])
    return Pipeline.from_spec(spec).run(gm, data=data).graph_module, data[0]


@pytest.fixture(scope="module")
def edsr8(tmp_path_factory):
    gm, x = _quantized_edsr("pams(placement=general)")
    return gm, x, export(gm, x, tmp_path_factory.mktemp("qdq") / "edsr8.onnx", lowering="qdq")


@pytest.fixture(scope="module")
def edsr4(tmp_path_factory):
    gm, x = _quantized_edsr(BLOCK_CONVS_INTEGER)
    return gm, x, export(gm, x, tmp_path_factory.mktemp("qdq") / "edsr4.onnx", lowering="qdq")


@pytest.fixture(scope="module")
def edsr_paper(tmp_path_factory):
    gm, x = _quantized_edsr("pams")
    return gm, x, export(gm, x, tmp_path_factory.mktemp("qdq") / "edsr_paper.onnx", lowering="qdq")


def _initializers(model):
    return {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}


def _constant(model, name):
    inits = _initializers(model)
    if name in inits:
        return inits[name]
    node = next(n for n in model.graph.node if n.op_type == "Constant" and n.output[0] == name)
    return numpy_helper.to_array(node.attribute[0].t)


@pytest.mark.parametrize("fixture, convs, quantizers", [("edsr8", 10, 16), ("edsr4", 8, 12)])
def test_every_quantized_conv_runs_as_qlinearconv_and_verifies(fixture, convs, quantizers, request):
    gm, x, path = request.getfixturevalue(fixture)
    fusion = quantized_layer_fusion(path)
    assert fusion["quantized_convs"] == convs and fusion["fused_convs"] == convs and fusion["all_fused"]
    report = verifier_for("qdq")(path, gm, x)
    assert report.ok, report.describe()
    assert len(report.quantizers) == quantizers
    assert report.max_code_diff <= 1
    codes = sum(q.elements for q in report.quantizers)
    assert sum(q.mismatched for q in report.quantizers) <= 1e-4 * codes


def test_file_layout_is_symmetric_uint8_codes_int8_weights_int32_bias(edsr4):
    gm, _, path = edsr4
    model = load_model(path)
    producers = {out: node for node in model.graph.node for out in node.output}
    readers = Counter(name for node in model.graph.node for name in node.input)
    clips = [n for n in model.graph.node if n.op_type == "Clip" and producers[n.input[0]].op_type == "QuantizeLinear"]
    assert len(clips) == 12
    for clip in clips:
        low, high = int(_constant(model, clip.input[1])), int(_constant(model, clip.input[2]))
        assert high == ACTIVATION_ZERO_POINT + 7 and low in (ACTIVATION_ZERO_POINT - 7, ACTIVATION_ZERO_POINT)
        assert int(_constant(model, producers[clip.input[0]].input[2])) == ACTIVATION_ZERO_POINT
    assert (
        sum(1 for c in clips if int(_constant(model, c.input[1])) == ACTIVATION_ZERO_POINT) == 4
    )  # the post-ReLU ones
    for node in model.graph.node:
        if node.op_type == "DequantizeLinear":
            assert readers[node.output[0]] + (node.output[0] in {o.name for o in model.graph.output}) == 1
    inits = _initializers(model)
    for conv in (
        n
        for n in model.graph.node
        if n.op_type == "Conv" and n.input[1] in producers and producers[n.input[1]].op_type == "DequantizeLinear"
    ):
        weight = producers[conv.input[1]]
        codes, scale = inits[weight.input[0]], inits[weight.input[1]]
        assert codes.dtype == np.int8 and np.abs(codes).max() == 7 and scale.shape == (codes.shape[0],)
        bias = producers[conv.input[2]]
        assert inits[bias.input[0]].dtype == np.int32


def test_paper_placement_conv1_lowers_as_dequantized_weights_on_a_float_input(edsr_paper, tmp_path):
    gm, x, path = edsr_paper
    fusion = quantized_layer_fusion(path)
    assert fusion["quantized_convs"] == 8 and fusion["fused_convs"] == 4 and not fusion["all_fused"]
    model = load_model(path)
    producers = {out: node for node in model.graph.node for out in node.output}
    inits = _initializers(model)
    float_input = {}
    for conv in (n for n in model.graph.node if n.op_type == "Conv" and n.input[1] in producers):
        if producers[conv.input[1]].op_type != "DequantizeLinear":
            continue
        reads_codes = conv.input[0] in producers and producers[conv.input[0]].op_type == "DequantizeLinear"
        if not reads_codes:  # no int32 bias: its scale s_in·s_w needs an input scale (a zero bias is dropped)
            float_input[conv.name] = len(conv.input) < 3 or inits[conv.input[2]].dtype == np.float32
        assert inits[producers[conv.input[1]].input[0]].dtype == np.int8
    assert len(float_input) == 4 and all(float_input.values())  # conv1 of every block
    report = verify_qdq(path, gm, x)
    assert report.ok and len(report.quantizers) == 12, report.describe()
    edited = _edit_initializer(path, tmp_path, "body_1_body_0_weight_codes", lambda w: -w)
    broken = verify_qdq(edited, gm, x)
    assert not broken.ok and next(q for q in broken.quantizers if q.name == "body_1_body_1_quant").max_code_diff > 1


def test_prepared_graph_computes_the_fake_quantized_module(edsr8):
    gm, x, _ = edsr8
    prepared = prepare_qdq(gm)
    assert not any(n.op == "call_module" and "quant" in str(n.target) for n in prepared.graph.nodes)
    error = compare_outputs(run_eval(gm, x), run_eval(prepared, x))[0]
    assert error.max_rel_error <= 1e-3


def _edit_initializer(path, tmp_path, name_part, edit):
    model = onnx.load(path)
    init = next(i for i in model.graph.initializer if name_part in i.name)
    init.CopyFrom(numpy_helper.from_array(edit(numpy_helper.to_array(init)), init.name))
    out = tmp_path / "edited.onnx"
    onnx.save(model, out)
    return out


def test_verification_catches_a_wrong_integer_weight(edsr8, tmp_path):
    gm, x, path = edsr8
    edited = _edit_initializer(path, tmp_path, "body_1_body_0_weight_codes", lambda w: -w)
    report = verify_qdq(edited, gm, x)
    assert not report.ok and report.max_code_diff > 1
    assert next(q for q in report.quantizers if q.name == "body_1_body_1_quant").max_code_diff > 1


def test_verification_catches_a_wrong_float_tail(edsr8, tmp_path):
    gm, x, path = edsr8
    edited = _edit_initializer(path, tmp_path, "tail.1.weight", lambda w: w * 1.01)
    report = verify_qdq(edited, gm, x)
    assert report.max_code_diff <= 1 and report.max_rel_error > 1e-4 and not report.ok


class _ScaledBranches(nn.Module):
    """Negative and fractional scalars after quantized layers, ReLU then division, and linears."""

    def __init__(self) -> None:
        super().__init__()
        self.c1, self.c2, self.c3 = (
            nn.Conv2d(3, 8, 3, padding=1),
            nn.Conv2d(8, 8, 3, padding=1),
            nn.Conv2d(8, 8, 3, padding=1),
        )
        self.fc1, self.fc2 = nn.Linear(8 * 8 * 8, 16), nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.c1(x)
        y = y + self.c2(y) * -0.5
        y = torch.relu(self.c3(y)) / 2
        return self.fc2(torch.relu(self.fc1(y.flatten(1))))


class _ResNetStyle(nn.Module):
    """Conv-BN-ReLU stem, a basic block with a 1x1 downsample shortcut and ReLU after the add, pooled linear."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.branch = nn.Sequential(
            nn.Conv2d(8, 16, 3, 2, 1),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.Conv2d(16, 16, 3, padding=1),
            nn.BatchNorm2d(16),
        )
        self.shortcut = nn.Sequential(nn.Conv2d(8, 16, 1, 2), nn.BatchNorm2d(16))
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.stem(x)
        return self.head(torch.relu(self.branch(y) + self.shortcut(y)))


@pytest.mark.parametrize("name", ["scaled_branches", "resnet_style"])
def test_other_graphs_fuse_and_verify(name, tmp_path):
    torch.manual_seed(0)
    model, spec = (
        (_ScaledBranches(), "pams(float_ends=false, placement=general)")
        if name == "scaled_branches"
        else (randomize_batchnorm(_ResNetStyle()), "fuse_bn,pams(placement=general)")
    )
    generator = torch.Generator().manual_seed(2)
    data = [torch.randn(4, 3, 8, 8, generator=generator) for _ in range(2)]
    gm = Pipeline.from_spec(spec).run(capture(model.eval(), data[0]), data=data).graph_module
    path = export(gm, data[0], tmp_path / f"{name}.onnx", lowering="qdq")
    fusion = quantized_layer_fusion(path)
    assert fusion["all_fused"] and fusion["fused_convs"] == fusion["quantized_convs"] > 0
    if name == "scaled_branches":
        assert fusion["quantized_matmuls"] == fusion["fused_matmuls"] == 2
    report = verify_qdq(path, gm, data[0])
    assert report.ok, report.describe()


def test_a_bias_that_does_not_fit_int32_is_a_clear_error(edsr8, tmp_path):
    gm, x, _ = edsr8
    broken = copy.deepcopy(gm)
    with torch.no_grad():
        broken.head_quant.alpha.fill_(1e-9)
        broken.get_submodule("body.0.body.0").bias.fill_(0.01)
    with pytest.raises(LoweringError, match="does not fit int32"):
        export(broken, x, tmp_path / "broken.onnx", lowering="qdq")
