"""PAMS on blocks of real models: one quantizer per tensor, the fusion report through weight layout ops,
and a clear message when a lowering style cannot express a quantized model."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import fx, nn

from bitfx.backends.onnx import export, quantized_layer_fusion
from bitfx.backends.onnx.verify import verify_qdq
from bitfx.errors import LoweringError, PassError
from bitfx.ir import capture
from bitfx.ir.quant import ActQuant
from bitfx.passes import Pipeline, create_pass


class ThroughIdentity(nn.Module):
    """conv → conv → ReLU → Identity → conv → conv: the Identity's input and output are one value."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1)
        self.mid = nn.Identity()
        self.c, self.d = nn.Conv2d(8, 8, 3, padding=1), nn.Conv2d(8, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.d(self.c(self.mid(torch.relu(self.b(self.a(x)))).contiguous()))


def _pams(model: nn.Module) -> tuple[fx.GraphModule, torch.Tensor]:
    torch.manual_seed(0)
    x = torch.rand(2, 3, 8, 8)
    return Pipeline.from_spec("pams").run(capture(model.eval(), x), data=[x]).graph_module, x


def _quantizer_nodes(gm: fx.GraphModule) -> list[fx.Node]:
    return [n for n in gm.graph.nodes if n.op == "call_module" and isinstance(gm.get_submodule(n.target), ActQuant)]


def test_an_identity_between_quantized_layers_does_not_get_a_second_quantizer(tmp_path) -> None:
    gm, x = _pams(ThroughIdentity())
    quantizers = _quantizer_nodes(gm)
    assert [n.args[0].name for n in quantizers] == ["a", "relu", "c"]
    c = next(n for n in gm.graph.nodes if n.target == "c")
    assert c.args[0] is quantizers[1]
    path = export(gm, x, tmp_path / "m.onnx", lowering="qdq")
    report = verify_qdq(path, gm, x)
    assert report.ok, report
    assert quantized_layer_fusion(path)["all_fused"]


def test_ensures_refuses_two_quantizers_on_one_tensor() -> None:
    gm, _ = _pams(ThroughIdentity())
    first = _quantizer_nodes(gm)[1]
    gm.add_submodule("again", ActQuant(8))
    with gm.graph.inserting_after(first):
        identity = gm.graph.call_module("mid", (first,))
    with gm.graph.inserting_after(identity):
        again = gm.graph.call_module("again", (identity,))
    user = next(u for u in first.users if u is not identity)
    user.replace_input_with(first, again)
    gm.recompile()
    with pytest.raises(PassError, match="quantize the same tensor"):
        create_pass("pams").ensures(gm)


@pytest.mark.parametrize("style", ["float", "custom", "int8"])
def test_a_style_that_cannot_express_pams_says_which_one_can(style: str, tmp_path) -> None:
    gm, x = _pams(ThroughIdentity())
    with pytest.raises(LoweringError) as error:
        export(gm, x, tmp_path / "m.onnx", lowering=style)
    message = str(error.value)
    assert "use --lowering qdq" in message and "\n" not in message and len(message) < 300


def _weight_through(layout: str, tmp_path) -> str:
    """A file whose MatMul / Conv reads a DequantizeLinear weight through a Transpose or a Reshape."""
    codes = numpy_helper.from_array(np.ones((4, 6), np.int8), "w_codes")
    scale = numpy_helper.from_array(np.array(0.1, np.float32), "w_scale")
    nodes = [helper.make_node("DequantizeLinear", ["w_codes", "w_scale"], ["w"])]
    if layout == "transpose":
        nodes += [
            helper.make_node("Transpose", ["w"], ["w_t"], perm=[1, 0]),
            helper.make_node("MatMul", ["x", "w_t"], ["y"]),
        ]
        x_shape, y_shape, inits = [2, 6], [2, 4], [codes, scale]
    else:
        shape = numpy_helper.from_array(np.array([4, 6, 1, 1], np.int64), "shape")
        nodes += [
            helper.make_node("Reshape", ["w", "shape"], ["w_4d"]),
            helper.make_node("Conv", ["x", "w_4d"], ["y"]),
        ]
        x_shape, y_shape, inits = [2, 6, 3, 3], [2, 4, 3, 3], [codes, scale, shape]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, y_shape)],
        inits,
    )
    path = tmp_path / f"{layout}.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return str(path)


@pytest.mark.parametrize(("layout", "key"), [("transpose", "quantized_matmuls"), ("reshape", "quantized_convs")])
def test_the_fusion_report_follows_weights_through_layout_ops(layout: str, key: str, tmp_path) -> None:
    report = quantized_layer_fusion(_weight_through(layout, tmp_path), optimized_ops={})
    assert report[key] == 1 and not report["all_fused"]


class TwinPools(nn.Module):
    """Two equal max pools of one tensor, each feeding its own conv (a DLA tree's shapes): the
    exporter merges the pools and their equal quantizers into one."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.pool_left, self.pool_right = nn.MaxPool2d(2), nn.MaxPool2d(2)
        self.left, self.right = nn.Conv2d(8, 8, 1), nn.Conv2d(8, 8, 1)
        self.out = nn.Conv2d(16, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.a(x))
        return self.out(torch.cat([self.left(self.pool_left(y)), self.right(self.pool_right(y))], 1))


def test_quantizers_the_exporter_merges_are_verified_through_their_twin(tmp_path) -> None:
    gm, x = _pams(TwinPools())
    path = export(gm, x, tmp_path / "m.onnx", lowering="qdq")
    pools = [node for node in onnx.load(str(path)).graph.node if node.op_type == "MaxPool"]
    assert len(pools) == 1  # the two equal pools became one, and so did their quantizers
    report = verify_qdq(path, gm, x)
    assert report.ok, report
    assert len(report.quantizers) == len(_quantizer_nodes(gm))
