import math

import networkx as nx
import torch
from torch import nn

from bitfx import zoo
from bitfx.ir import capture, diff, graph_costs, summary, to_dot, to_networkx, write_graph_picture


class Mixed(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 8, 3, stride=2, padding=1, groups=2)
        self.up = nn.ConvTranspose2d(8, 6, 2, stride=2)
        self.fc = nn.Linear(6 * 8 * 8, 5)

    def forward(self, x):
        y = self.up(self.conv(x))
        return self.fc(torch.flatten(y, 1)) @ torch.ones(5, 3)


def test_macs_and_params_by_hand():
    gm = capture(Mixed(), torch.randn(2, 4, 8, 8))
    costs = graph_costs(gm)
    assert costs["conv"].macs == (8 * 4 * 4) * (4 // 2) * 9  # out per sample × (Cin/g) × k²
    assert costs["up"].macs == (8 * 4 * 4) * 6 * 4  # in per sample × Cout × k²
    assert costs["fc"].macs == 5 * 384
    matmul = next(n for n in gm.graph.nodes if n.target is torch.matmul or "matmul" in str(n.target))
    assert costs[matmul.name].macs == 3 * 5
    assert costs["conv"].params == 8 * 2 * 9 + 8
    assert costs["conv"].weight_bits == costs["conv"].params * 32


def test_functional_conv_macs_match_the_onnx_count_for_edsr():
    model = zoo.edsr_lite()
    costs = graph_costs(capture(model, torch.randn(1, 3, 48, 48)))
    mean_shifts = [costs[n] for n in costs if "conv2d" in n]
    assert [c.macs for c in mean_shifts] == [48 * 48 * 3 * 3, 96 * 96 * 3 * 3]  # the 1x1 RGB mean shifts


class OneBitConv(nn.Conv2d):
    bitfx_leaf = True
    bitfx_storage_bits = {"weight": 1}


class Int8Linear(nn.Linear):
    bitfx_leaf = True
    bitfx_storage_bits = {"weight": 8}


def test_declared_storage_width_counts_1_bit_and_8_bit_weights():
    model = nn.Sequential(OneBitConv(64, 64, 3, bias=False), nn.Flatten(), Int8Linear(64 * 2 * 2, 10))
    gm = capture(model, torch.randn(1, 64, 4, 4))
    costs = graph_costs(gm)
    assert costs["_0"].weight_bits == 64 * 64 * 9 * 1
    assert costs["_2"].weight_bits == 10 * 256 * 8 + 10 * 32  # int8 weight, float bias


def test_shared_module_is_counted_once():
    shared = nn.Linear(4, 4)
    model = nn.Sequential(shared, nn.ReLU(), shared)
    total = summary(capture(model, torch.randn(1, 4))).total
    assert total.params == 20
    assert total.macs == 2 * 16  # but both calls compute


def test_summary_totals_match_the_model_and_table_renders():
    model = zoo.resnet18()
    table = summary(capture(model, torch.randn(1, 3, 224, 224)))
    assert table.total.params == sum(p.numel() for p in model.parameters())
    assert 1.7e9 < table.total.macs < 1.9e9  # ResNet-18 is 1.82 GMACs
    text = str(table)
    for header in ("name", "op", "target", "output shape", "params", "MACs", "weight bytes"):
        assert header in text.splitlines()[0]
    assert text.splitlines()[-1].startswith("total") and "11,689,512" in text.splitlines()[-1]


def test_diff_reports_removed_replaced_and_changed_nodes():
    before = capture(nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU()), torch.randn(1, 3, 8, 8))
    after = capture(nn.Sequential(nn.Conv2d(3, 4, 3), nn.Identity(), nn.Sigmoid()), torch.randn(1, 3, 8, 8))
    change = diff(before, after)
    assert [(a.name, b.name) for a, b in change.replaced] == [("_1", "_1"), ("_2", "_2")]
    assert [a.name for a, _ in change.changed] == ["_0", "output"]
    assert change.before.params == 3 * 8 * 9 + 8 + 16 and change.after.params == 3 * 4 * 9 + 4
    assert "_0: shape (1, 8, 6, 6) -> (1, 4, 6, 6)" in str(change)
    assert diff(before, before).unchanged and "graphs are identical" in str(diff(before, before))


def test_networkx_view_mirrors_the_graph():
    gm = capture(zoo.resnet20(), torch.randn(1, 3, 32, 32))
    view = to_networkx(gm)
    nodes = list(gm.graph.nodes)
    assert set(view.nodes) == {n.name for n in nodes}
    assert view.number_of_edges() == sum(len(n.all_input_nodes) for n in nodes)
    assert nx.is_directed_acyclic_graph(view)
    add = next(n for n in nodes if n.op == "call_function" and "add" in n.name)
    assert view.in_degree(add.name) == 2  # residual
    attrs = view.nodes["conv1"]
    assert attrs["module_type"] == "Conv2d" and attrs["shape"] == (1, 16, 32, 32) and attrs["macs"] == 16 * 32 * 32 * 27
    assert math.isclose(sum(d["params"] for _, d in view.nodes(data=True)), 272474)


def test_dot_text_names_every_node_and_edge(tmp_path):
    gm = capture(nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU()), torch.randn(1, 3, 8, 8))
    dot = to_dot(gm)
    assert dot.startswith("digraph") and dot.rstrip().endswith("}")
    assert '"_0" -> "_1"' in dot and "1×8×6×6" in dot
    picture = write_graph_picture(gm, tmp_path / "g")
    assert picture.suffix in (".svg", ".dot") and picture.read_text()
    assert (tmp_path / "g.dot").read_text() == dot
