"""The search supernet: per-edge op sampling, partial channels, binarization shared with `binarize`, rewards."""

import pytest
import torch
from torch import nn

from bitfx.ir import capture
from bitfx.ir.binary import BinaryConv2d, get_scheme
from bitfx.ir.cells import build
from bitfx.passes import Pipeline
from bitfx.search import SearchState, make_policy, run
from bitfx.search.space import Space
from bitfx.search.supernet import MixedEdge, Supernet, SupernetEvaluator, binarize_supernet, channel_shuffle

SPACE = Space(ops=("max_pool_3x3", "skip_connect", "sep_conv_3x3", "conv_3x3"), nodes=2)


def _choice(op_of_edge):
    return {edge: op_of_edge(i, ops) for i, (edge, ops) in enumerate(SPACE.edges().items())}


def test_every_edge_of_the_space_is_a_mixed_edge_of_every_layer():
    net = Supernet(SPACE, 4, 3, in_channels=1)
    names = {edge.name for edge in net.mixed_edges()}
    assert names == set(SPACE.edges())
    assert len(net.mixed_edges()) == 3 * len(SPACE.edges()) // 2  # three layers, each one cell of five edges
    assert all(set(edge.ops) == set(SPACE.ops) for edge in net.mixed_edges())


def test_the_output_depends_on_the_sampled_operations_only():
    torch.manual_seed(0)
    net = Supernet(SPACE, 4, 3, in_channels=1).eval()
    net.sample(_choice(lambda i, ops: "conv_3x3"))
    x = torch.randn(2, 1, 8, 8)
    before = net(x)
    with torch.no_grad():
        for edge in net.mixed_edges():
            for p in edge.ops["sep_conv_3x3"].parameters():
                p.add_(1.0)
    assert torch.equal(net(x), before)  # an operation that is not sampled does not take part
    net.sample(_choice(lambda i, ops: "sep_conv_3x3"))
    assert not torch.allclose(net(x), before)


def test_a_sampled_subnetwork_computes_what_the_built_genotype_computes():
    torch.manual_seed(0)
    net = Supernet(SPACE, 4, 3, in_channels=1).eval()
    choice = _choice(lambda i, ops: ops[i % len(ops)])
    net.sample(choice)
    model = build(SPACE.genotype(choice), 4, 3, in_channels=1).eval()
    # copy the shared layers and the sampled operation of each edge into the built model
    state = {}
    for key, value in net.state_dict().items():
        parts = key.split(".")
        if "edges" in parts:
            at = parts.index("edges")
            cell, node, src = int(parts[1]), int(parts[at + 1]), int(parts[at + 2])
            edge = net.cells[cell].edges[node][src]
            if parts[at + 4] != edge.active:
                continue
            key = ".".join(parts[: at + 3] + parts[at + 5 :])
        state[key] = value
    model.load_state_dict(state)
    x = torch.randn(2, 1, 8, 8)
    assert torch.allclose(net(x), model(x), atol=1e-6)


def test_sampling_an_unknown_operation_fails():
    net = Supernet(SPACE, 4, 3, in_channels=1)
    with pytest.raises(ValueError, match="has no operation"):
        net.sample(_choice(lambda i, ops: "dil_conv_5x5"))


def test_partial_channels_keep_the_shape_and_bypass_the_rest():
    assert channel_shuffle(torch.arange(6.0).view(1, 6, 1, 1), 2).flatten().tolist() == [0, 3, 1, 4, 2, 5]
    edge = MixedEdge("e", ("conv_3x3",), 8, 1, partial=4)
    x = torch.randn(2, 8, 6, 6)
    y = edge.eval()(x)
    assert y.shape == x.shape and edge.ops["conv_3x3"][1].in_channels == 2
    # channels 2..7 bypass the operation: after the shuffle they sit at every position but 0, 4
    assert torch.equal(y[:, [1, 2, 3, 5, 6, 7]], x[:, [2, 4, 6, 3, 5, 7]])
    strided = MixedEdge("e", ("conv_3x3", "skip_connect"), 8, 2, partial=2).eval()
    assert strided(x).shape == (2, 8, 3, 3)
    with pytest.raises(ValueError, match="must divide"):
        MixedEdge("e", ("conv_3x3",), 6, 1, partial=4)


@pytest.mark.parametrize("scheme", ["xnor", "bnn"])
def test_binarize_supernet_makes_the_layers_binarize_makes(scheme):
    space = Space(ops=("conv_3x3", "sep_conv_3x3", "skip_connect", "dtp_blok_3x3"), nodes=2)
    for op in space.ops:
        net = Supernet(Space(ops=(op,), nodes=2), 4, 3, in_channels=1)
        count = binarize_supernet(net, get_scheme(scheme))
        model = build(space.genotype({e: op for e in space.edges()}), 4, 3, in_channels=1)
        result = Pipeline.from_spec(f"binarize(scheme={scheme})").run(capture(model, torch.randn(1, 1, 8, 8)))
        assert count == result.records[0].stats["binarized"], op
        ours = [m for m in net.modules() if isinstance(m, BinaryConv2d)]
        theirs = [m for m in result.graph_module.modules() if isinstance(m, BinaryConv2d)]
        assert {(type(m.weight_quantizer.scale), type(m.input_quantizer)) for m in ours} == {
            (type(m.weight_quantizer.scale), type(m.input_quantizer)) for m in theirs
        }
        relus = sum(isinstance(m, nn.ReLU) for m in net.modules())
        pass_relus = sum(isinstance(m, nn.ReLU) for m in result.graph_module.modules())
        assert relus == pass_relus, op
    assert not isinstance(net.stem[0], BinaryConv2d)  # the first conv stays float, as binarize's keep_first


def _batches(count, seed):
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(count, 16, 1, 8, 8, generator=generator)
    labels = (images.mean(dim=(2, 3, 4)) > 0).long()  # a learnable two-class rule
    return list(zip(images, labels))


def test_the_evaluator_trains_only_the_sampled_operations_and_returns_accuracies():
    torch.manual_seed(0)
    child = Supernet(SPACE, 4, 3, in_channels=1, num_classes=2)
    binarize_supernet(child, get_scheme("xnor"))
    parent = Supernet(SPACE, 4, 3, in_channels=1, num_classes=2)
    evaluator = SupernetEvaluator(child, _batches(4, 0), _batches(2, 1), steps=2, parent=parent)
    choice = _choice(lambda i, ops: "conv_3x3")
    untouched = {k: v.clone() for k, v in child.state_dict().items() if ".ops.sep_conv_3x3." in k}
    child_accuracy, parent_accuracy = evaluator(choice)
    assert 0 <= child_accuracy <= 1 and 0 <= parent_accuracy <= 1 and evaluator.samples == 1
    assert all(torch.equal(child.state_dict()[k], v) for k, v in untouched.items())
    evaluator.parent = None
    assert isinstance(evaluator(choice), float)


def test_a_bandit_search_over_the_supernet_ends_with_a_genotype_that_builds():
    torch.manual_seed(0)
    space = Space(ops=("max_pool_3x3", "conv_3x3"), nodes=1)
    child = Supernet(space, 4, 3, in_channels=1, num_classes=2)
    binarize_supernet(child, get_scheme("xnor"))
    evaluator = SupernetEvaluator(child, _batches(4, 0), _batches(1, 1), steps=1)
    evaluator.warm_up(2)
    state = SearchState.start(space.edges(), make_policy({"name": "anti_bandit"}), seed=0)
    choice = run(state, evaluator)
    assert state.done and evaluator.samples == 2 + 2  # the initial block (K = 2), then one round of K·T = 2
    genotype = space.genotype(choice)
    assert build(genotype, 4, 3, in_channels=1).eval()(torch.randn(1, 1, 8, 8)).shape == (1, 10)
