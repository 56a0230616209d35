"""`fuse_bn` on binary layers: BatchNorm folded into the output scale and bias after training,
so the lowered file keeps binary outputs packed in the packed runtime."""

import numpy as np
import pytest
import torch
from torch import nn

import bitfx
from bitfx import zoo
from bitfx.backends import packed
from bitfx.backends.onnx import export
from bitfx.ir import capture
from bitfx.ir.binary import BinaryConv2d, BinaryLinear
from bitfx.passes import Pipeline


def _trained_binary_vgg() -> tuple[torch.fx.GraphModule, torch.Tensor]:
    """vgg_small binarized (BNN: BatchNorm and hardtanh after every binary conv), trained a few steps."""
    torch.manual_seed(0)
    model = zoo.vgg_small()
    x = torch.randn(8, *model.example_input_shape[1:])
    labels = torch.randint(0, 10, (8,))
    gm = Pipeline.from_spec("binarize(scheme=bnn)").run(capture(model, (x[:1],))).graph_module
    gm.train()
    optimizer = torch.optim.SGD(gm.parameters(), lr=0.05, momentum=0.9)
    for _ in range(3):
        optimizer.zero_grad()
        nn.functional.cross_entropy(gm(x), labels).backward()
        optimizer.step()
    return gm.eval(), x


def _packed_report(gm: torch.fx.GraphModule, x: torch.Tensor, path) -> tuple[packed.CompileReport, np.ndarray]:
    export(gm, (x[:1],), path, lowering="custom")
    model = packed.load(path)
    return model.report, model.run([x[:2].numpy()])[0]


@pytest.mark.slow
def test_trained_binary_model_folds_and_keeps_binary_outputs_packed(tmp_path):
    gm, x = _trained_binary_vgg()
    before, _ = _packed_report(gm, x, tmp_path / "unfolded.onnx")
    with torch.no_grad():
        expected = gm(x[:2])

    result = Pipeline.from_spec("fuse_bn").run(gm)
    record = result.records[0]
    assert record.stats["fused"] == 6 and record.stats["skipped"] == {}
    assert record.max_rel_error is not None and record.max_rel_error < 1e-4  # the pipeline's output check
    folded = result.graph_module
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert all(m.output_scale is not None for m in folded.modules() if isinstance(m, BinaryConv2d))

    after, output = _packed_report(folded, x, tmp_path / "folded.onnx")
    assert before.binary_layers == after.binary_layers == 5
    # Folded, every binary conv that feeds another binary conv writes packed bits (the last feeds the
    # float classifier) and no BatchNormalization is left; unfolded, the packed runtime reaches the same
    # chain by evaluating each BatchNormalization inside the next layer's threshold.
    assert after.packed_outputs == 4 and after.packs == 1
    assert "BatchNormalization" not in after.ops
    assert before.packed_outputs == 4 and before.ops.get("BatchNormalization") == 5
    np.testing.assert_allclose(output, expected.numpy(), rtol=1e-3, atol=1e-3)


@pytest.mark.slow
def test_negative_and_zero_channel_scales_are_reported_and_stay_exact_in_the_packed_runtime(tmp_path):
    torch.manual_seed(1)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.Hardtanh(),
        nn.Conv2d(8, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.Hardtanh(),
        nn.Conv2d(8, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.Hardtanh(),
        nn.Flatten(),
        nn.Linear(8 * 6 * 6, 4),
    )
    x = torch.randn(2, 3, 6, 6)
    gm = Pipeline.from_spec("binarize(scheme=bnn)").run(capture(model, (x,))).graph_module.eval()
    with torch.no_grad():
        bn = gm.get_submodule("4")
        bn.running_mean.normal_()
        bn.weight.copy_(torch.tensor([1.0, -2.0, 0.5, 0.0, 1.5, -0.3, 2.0, 1.0]))
        expected = gm(x)

    result = Pipeline.from_spec("fuse_bn").run(gm)
    warning = result.records[0].stats["warnings"]["3"]
    assert "channels [1, 5] have a negative scale" in warning and "flipped threshold" in warning
    assert "channels [3] have a zero scale" in warning
    assert result.records[0].max_rel_error < 1e-4

    report, output = _packed_report(result.graph_module, x, tmp_path / "signs.onnx")
    assert report.packed_outputs == 1  # layer 3 → layer 6 stays packed, flipped and constant channels included
    np.testing.assert_allclose(output, expected.numpy(), rtol=1e-4, atol=1e-4)


def test_folded_binary_linear_trains_and_deploys_the_same_function():
    torch.manual_seed(2)
    model = nn.Sequential(nn.Linear(16, 12), nn.Hardtanh(), nn.Linear(12, 10), nn.BatchNorm1d(10), nn.Linear(10, 3))
    x = torch.randn(5, 16)
    gm = Pipeline.from_spec("binarize(scheme=xnor, keep_first=false)").run(capture(model, (x,))).graph_module
    with torch.no_grad():
        gm.get_submodule("3").running_var.uniform_(0.5, 2.0)
    gm.eval()
    folded = Pipeline.from_spec("fuse_bn").run(gm).graph_module
    layer = folded.get_submodule("2")
    assert isinstance(layer, BinaryLinear) and layer.output_scale is not None
    with torch.no_grad():
        deployed = folded(x)
    trained = folded(x.requires_grad_())  # the differentiable path, with output_scale in the effective weight
    torch.testing.assert_close(trained.detach(), deployed, rtol=1e-5, atol=1e-5)
    trained.sum().backward()
    assert layer.weight.grad is not None


@pytest.mark.slow
def test_folded_binary_model_saves_and_loads(tmp_path):
    torch.manual_seed(3)
    model = zoo.resnet20()
    x = torch.randn(1, 3, 32, 32)
    binarized = Pipeline.from_spec("binarize").run(capture(model, (x,))).graph_module.eval()
    folded = Pipeline.from_spec("fuse_bn").run(binarized).graph_module
    path = bitfx.save(folded, tmp_path / "folded.pt", model="bitfx.zoo:resnet20", pipeline="binarize,fuse_bn")
    loaded = bitfx.load(path).eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), folded(x))


class FunctionalBatchNorm(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.register_buffer("mean", torch.zeros(4))
        self.register_buffer("var", torch.ones(4))

    def forward(self, x):
        return nn.functional.batch_norm(self.conv(x), self.mean, self.var)


def test_a_functional_batch_norm_on_stored_statistics_is_folded_not_silently_left():
    gm = capture(FunctionalBatchNorm(), (torch.randn(1, 3, 6, 6),))
    stats = Pipeline.from_spec("fuse_bn").run(gm).records[0].stats
    assert stats["fused"] == 1 and stats["skipped"] == {}
