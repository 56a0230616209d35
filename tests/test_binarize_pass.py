"""The `binarize` pass: layer choice and its reasons, ReLU replacement, shortcuts, configuration."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import assert_same_state, state_snapshot
from torch import fx, nn

from bitfx import zoo
from bitfx.backends.onnx import export
from bitfx.errors import LoweringError, PassConfigError, PassError
from bitfx.ir import capture, run_eval
from bitfx.ir.binary import BinaryConv2d, BinaryInput, BinaryLinear, RPReLU, RSign
from bitfx.passes import BinarizeConvs, LayerSelection, Pipeline, create_pass


def _binarize(
    model: nn.Module, spec: str = "binarize", shape: tuple[int, ...] = (1, 3, 16, 16)
) -> tuple[fx.GraphModule, dict]:
    torch.manual_seed(0)
    result = Pipeline.from_spec(spec).run(capture(model.eval(), torch.randn(shape)))
    return result.graph_module, result.records[-1].stats


def _binary_targets(gm: fx.GraphModule) -> set[str]:
    return {name for name, module in gm.named_modules() if isinstance(module, (BinaryConv2d, BinaryLinear))}


def test_default_keeps_first_conv_and_last_layer_float_and_says_why() -> None:
    gm, stats = _binarize(zoo.resnet20())
    assert stats["skipped"] == {
        "conv1": "first conv (keep_first=True)",
        "fc": "last layer, the classifier or output (keep_last=True)",
    }
    assert stats["binarized"] == 20 == len(_binary_targets(gm))
    assert isinstance(gm.get_submodule("layers.3.shortcut.0"), BinaryConv2d)
    assert type(gm.get_submodule("conv1")) is nn.Conv2d and type(gm.get_submodule("fc")) is nn.Linear
    assert set(stats["layers"].values()) == {"xnor"}


def test_selection_overrides_the_defaults_and_picks_schemes_per_layer() -> None:
    layers = LayerSelection(
        default=True, by_name={"conv1": "bireal", "layers.0.conv1": False}, by_regex={r"layers\.8\..*": "reactnet"}
    )
    result = Pipeline([BinarizeConvs(scheme="bnn", layers=layers)]).run(
        capture(zoo.resnet20().eval(), torch.randn(1, 3, 16, 16))
    )
    stats = result.records[0].stats
    assert stats["layers"]["conv1"] == "bireal"
    assert stats["layers"]["layers.8.conv2"] == "reactnet"
    assert stats["layers"]["layers.1.conv1"] == "bnn"
    assert stats["skipped"]["layers.0.conv1"] == "not selected (name 'layers.0.conv1' → False)"
    assert "fc" in stats["skipped"]


def test_unknown_names_schemes_and_values_are_clear_errors() -> None:
    with pytest.raises(PassError, match="not modules of the model"):
        _binarize(zoo.resnet20(), "binarize(layers={'by_name': {'nope': True}})")
    with pytest.raises(Exception, match="reactnet"):
        create_pass("binarize", {"scheme": "nope"})
    with pytest.raises(Exception, match="pad_value"):
        create_pass("binarize", {"pad_value": 2})
    with pytest.raises(Exception, match="learned"):
        create_pass("binarize", {"scale": "bogus"})


def test_the_input_model_is_left_unchanged() -> None:
    model = zoo.resnet20().eval()
    gm = capture(model, torch.randn(1, 3, 16, 16))
    before = state_snapshot(gm)
    Pipeline.from_spec("fuse_bn,binarize(scheme=reactnet, shortcuts=true)").run(gm)
    assert_same_state(gm, before)
    assert not _binary_targets(gm)


@pytest.mark.parametrize(
    ("scheme", "replacement"),
    [("xnor", "removed"), ("bireal", "removed"), ("bnn", "Hardtanh"), ("irnet", "Hardtanh"), ("reactnet", "RPReLU")],
)
def test_relus_in_front_of_binary_layers_are_replaced(scheme: str, replacement: str) -> None:
    gm, stats = _binarize(zoo.resnet20(), f"fuse_bn,binarize(scheme={scheme})")
    replaced = stats["activations_replaced"]
    assert replaced and all(text.startswith(replacement) for text in replaced.values())
    assert replaced["layers_0_relu1"] == f"{replacement} (feeds binary layers.0.conv2)"
    relus = [n for n in gm.graph.nodes if n.op == "call_module" and isinstance(gm.get_submodule(n.target), nn.ReLU)]
    assert [n.target for n in relus] == ["layers.8.relu2"]  # feeds the float classifier only
    if replacement == "RPReLU":
        assert isinstance(gm.get_submodule("layers.0.relu1"), RPReLU)


def test_relu_behind_max_pool_is_found_and_w1a32_keeps_relus() -> None:
    _, stats = _binarize(zoo.vgg_small(), "binarize(scheme=xnor)", shape=(1, 3, 32, 32))
    assert stats["activations_replaced"]["features_5"] == "removed (feeds binary features.7)"  # ReLU → MaxPool → conv
    _, stats = _binarize(zoo.vgg_small(), "binarize(scheme=dorefa_w1)", shape=(1, 3, 32, 32))
    assert stats["activations_replaced"] == {}
    _, stats = _binarize(zoo.vgg_small(), "binarize(scheme=xnor, activations=keep)", shape=(1, 3, 32, 32))
    assert stats["activations_replaced"] == {}


def test_depthwise_convs_stay_float_unless_asked() -> None:
    _, stats = _binarize(zoo.mobilenet_v2(width_mult=0.25))
    depthwise = [name for name, reason in stats["skipped"].items() if reason.startswith("depthwise")]
    assert len(depthwise) == 17
    gm, _ = _binarize(zoo.mobilenet_v2(width_mult=0.25), "binarize(keep_depthwise=false)")
    assert gm.get_submodule(depthwise[0]).groups > 1 and isinstance(gm.get_submodule(depthwise[0]), BinaryConv2d)


def test_bireal_shortcuts_wrap_convs_whose_shape_is_kept() -> None:
    gm, stats = _binarize(zoo.resnet20(), "binarize(scheme=bireal, shortcuts=true)")
    assert stats["shortcuts"] == 16  # 20 binary convs minus the 2 strided ones, their 2 downsample shortcuts
    x = torch.randn(2, 3, 16, 16)
    plain, _ = _binarize(zoo.resnet20(), "binarize(scheme=bireal)")
    assert run_eval(gm, x).shape == run_eval(plain, x).shape
    # the shortcut sits after the BatchNorm that follows the conv
    bn = next(n for n in gm.graph.nodes if n.target == "layers.0.bn1")
    assert [u.target.__name__ for u in bn.users] == ["add"] and bn in next(iter(bn.users)).args


def test_a_module_called_twice_stays_float() -> None:
    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem, self.conv, self.head = (
                nn.Conv2d(3, 8, 3, padding=1),
                nn.Conv2d(8, 8, 3, padding=1),
                nn.Conv2d(8, 2, 1),
            )

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.conv(self.conv(self.stem(x))))

    _, stats = _binarize(Twice(), shape=(1, 3, 8, 8))
    assert stats["skipped"]["conv"] == "called from 2 places"
    assert stats["binarized"] == 0


def test_pipeline_file_round_trip(tmp_path: Path) -> None:
    pipeline = Pipeline.from_spec(
        "fuse_bn,binarize(scheme=reactnet, pad_value=1, "
        "layers={'default': True, 'by_regex': {'layers\\\\.8\\\\..*': False}})"
    )
    pipeline.save(tmp_path / "p.toml")
    loaded = Pipeline.from_file(tmp_path / "p.toml")
    assert loaded.to_config() == pipeline.to_config()
    gm = loaded.run(capture(zoo.resnet20().eval(), torch.randn(1, 3, 16, 16))).graph_module
    assert gm.get_submodule("layers.0.conv1").pad_value == 1
    assert type(gm.get_submodule("layers.8.conv1")) is nn.Conv2d


def test_bireal_defaults_to_its_papers_network_shortcuts_and_real_downsample_convs() -> None:
    gm, stats = _binarize(zoo.resnet20(), "binarize(scheme=bireal)")
    downsample = {"layers.3.shortcut.0", "layers.6.shortcut.0"}
    assert {name for name, reason in stats["skipped"].items() if "keep_downsample" in reason} == downsample
    assert stats["binarized"] == 18 and stats["shortcuts"] == 16
    assert all(type(gm.get_submodule(name)) is nn.Conv2d for name in downsample)
    _, overridden = _binarize(zoo.resnet20(), "binarize(scheme=bireal, shortcuts=false, keep_downsample=false)")
    assert overridden["binarized"] == 20 and overridden["shortcuts"] == 0
    _, xnor = _binarize(zoo.resnet20(), "binarize(keep_downsample=true)")
    assert xnor["binarized"] == 18 and xnor["shortcuts"] == 0


def test_a_1x1_conv_fed_by_an_average_pool_counts_as_downsample() -> None:
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1), nn.AvgPool2d(2), nn.Conv2d(8, 16, 1),
        nn.Conv2d(16, 16, 1), nn.Flatten(), nn.Linear(16 * 64, 4),
    )  # fmt: skip
    _, stats = _binarize(model, "binarize(keep_downsample=true)")
    assert stats["skipped"]["3"] == "1×1 downsample conv (keep_downsample=True)" and stats["layers"] == {
        "1": "xnor",
        "4": "xnor",
    }


def _small_cnn() -> nn.Sequential:
    torch.manual_seed(0)

    def block(channels: int) -> list[nn.Module]:
        return [nn.Conv2d(channels, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU()]

    return nn.Sequential(*block(3), *block(8), *block(8), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))


def test_activations_only_keeps_real_weights_and_refuses_to_lower(tmp_path: Path) -> None:
    gm, stats = _binarize(_small_cnn(), "binarize(scheme=reactnet, weights=real, shortcuts=true)", (2, 3, 8, 8))
    assert stats["weights"] == "real" and stats["binarized"] == 2 and stats["shortcuts"] == 2
    assert not _binary_targets(gm)
    assert type(gm.get_submodule("3")) is nn.Conv2d and type(gm.get_submodule("6")) is nn.Conv2d
    signs = {name: m for name, m in gm.named_modules() if isinstance(m, BinaryInput)}
    assert set(signs) == {"3_binary_input", "6_binary_input"}
    assert all(isinstance(m.quantizer, RSign) for m in signs.values())
    assert sum(isinstance(m, RPReLU) for m in gm.modules()) == 2
    x = torch.randn(2, 3, 8, 8)
    seen = []
    handle = gm.get_submodule("3").register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    gm(x)
    handle.remove()
    assert set(seen[0].unique().tolist()) <= {-1.0, 1.0}  # the float conv reads ±1
    with pytest.raises(LoweringError, match="binary activations but real weights"):
        export(gm, x, tmp_path / "a.onnx", lowering="custom")


def test_second_binarize_carries_weights_and_thresholds_of_the_activations_only_step() -> None:
    step1, _ = _binarize(_small_cnn(), "binarize(scheme=reactnet, weights=real, shortcuts=true)", (2, 3, 8, 8))
    with torch.no_grad():
        step1.get_submodule("3_binary_input").quantizer.beta.fill_(0.3)
        step1.get_submodule("3").weight.mul_(2.0)
    weight = step1.get_submodule("3").weight.detach().clone()
    x = torch.randn(2, 3, 8, 8)
    result = Pipeline.from_spec("binarize(scheme=reactnet, shortcuts=true)").run(step1)
    step2, stats = result.graph_module, result.records[-1].stats
    assert stats["activations_carried_over"] == ["3", "6"] and stats["shortcuts"] == 0
    assert not any(isinstance(m, BinaryInput) for m in step2.modules())
    layer = step2.get_submodule("3")
    assert isinstance(layer, BinaryConv2d) and torch.equal(layer.weight.detach(), weight)
    assert torch.allclose(layer.input_quantizer.beta.detach(), torch.full((8,), 0.3))
    adds = [n for n in step2.graph.nodes if n.op == "call_function" and "add" in str(n.target)]
    assert len(adds) == 2  # the first step's shortcuts, no second pair
    assert step2(x).shape == (2, 4)


def test_activations_only_needs_a_scheme_that_binarizes_activations() -> None:
    with pytest.raises(PassConfigError, match="W1A32"):
        BinarizeConvs(scheme="dorefa_w1", weights="real")


def test_activations_only_keeps_a_plain_sign_on_a_never_negative_input_float() -> None:
    gm, stats = _binarize(_small_cnn(), "binarize(scheme=xnor, weights=real, activations=keep)", (2, 3, 8, 8))
    assert stats["binarized"] == 0
    assert "never negative" in stats["skipped"]["3"] and "never negative" in stats["skipped"]["6"]
    assert not [n for n in gm.graph.nodes if "binary_input" in n.name]
