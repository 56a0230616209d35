"""The model zoo and data functions (bitfx.zoo): shapes, fx traceability, architecture facts."""

import subprocess
import sys

import pytest
import torch
from torch import nn

from bitfx import zoo
from bitfx.zoo import data

CLASSIFIERS = {
    "resnet20": 10,
    "resnet56": 10,
    "resnet18": 1000,
    "vgg_small": 10,
    "mobilenet_v2": 10,
    "densenet_tiny": 10,
}


def _expected_output_shape(name: str, input_shape: tuple[int, ...]) -> tuple[int, ...]:
    if name == "edsr_lite":
        n, c, h, w = input_shape
        return (n, c, 2 * h, 2 * w)
    return (input_shape[0], CLASSIFIERS[name])


@pytest.mark.parametrize("name", zoo.MODELS)
def test_forward_shape_and_fx_trace_match_eager(name: str) -> None:
    torch.manual_seed(0)
    model = getattr(zoo, name)().eval()
    shape = model.example_input_shape
    assert isinstance(shape, tuple) and len(shape) == 4 and shape[0] == 1
    x = torch.randn(2, *shape[1:])
    with torch.no_grad():
        eager = model(x)
        traced = torch.fx.symbolic_trace(model)(x)
    assert eager.shape == _expected_output_shape(name, x.shape)
    torch.testing.assert_close(traced, eager)


def _weight_layers(model: nn.Module) -> int:
    """Convs and linears on the main path, i.e. not counting 1x1 shortcut projections."""
    return sum(
        isinstance(module, (nn.Conv2d, nn.Linear)) and "shortcut" not in name for name, module in model.named_modules()
    )


@pytest.mark.parametrize(("name", "depth"), [("resnet20", 20), ("resnet56", 56)])
def test_cifar_resnet_depth(name: str, depth: int) -> None:
    assert _weight_layers(getattr(zoo, name)()) == depth


def test_resnet_shortcuts_are_1x1_conv_bn() -> None:
    model = zoo.resnet20()
    projections = [m for n, m in model.named_modules() if "shortcut" in n and isinstance(m, nn.Conv2d)]
    assert len(projections) == 2
    assert all(conv.kernel_size == (1, 1) and conv.stride == (2, 2) for conv in projections)


def test_mobilenet_v2_has_depthwise_convs() -> None:
    convs = [m for m in zoo.mobilenet_v2().modules() if isinstance(m, nn.Conv2d)]
    assert any(conv.groups == conv.in_channels > 1 for conv in convs)


def test_densenet_tiny_concatenates() -> None:
    graph = torch.fx.symbolic_trace(zoo.densenet_tiny()).graph
    assert any(node.op == "call_function" and node.target is torch.cat for node in graph.nodes)


def test_edsr_lite_has_pixel_shuffle_and_no_batchnorm() -> None:
    model = zoo.edsr_lite()
    kinds = {type(m) for m in model.modules()}
    assert nn.PixelShuffle in kinds
    assert not any(issubclass(kind, nn.modules.batchnorm._BatchNorm) for kind in kinds)
    assert not list(model.sub_mean.parameters())
    x = torch.rand(1, 3, 4, 4)
    mean = torch.tensor((0.4488, 0.4371, 0.4040)).view(1, 3, 1, 1)
    torch.testing.assert_close(model.sub_mean(x), x - mean)
    torch.testing.assert_close(model.add_mean(model.sub_mean(x)), x)


def test_edsr_lite_scale_4() -> None:
    with torch.no_grad():
        out = zoo.edsr_lite(scale=4)(torch.rand(1, 3, 12, 12))
    assert out.shape == (1, 3, 48, 48)


def test_digits_shapes_dtypes_and_labels() -> None:
    train = data.digits((1, 3, 32, 32), split="train", batch_size=64)
    test = data.digits((1, 1, 16, 16), split="test", batch_size=100)
    assert train[0][0].shape == (64, 3, 32, 32)
    assert test[0][0].shape == (100, 1, 16, 16)
    for images, labels in train + test:
        assert images.dtype == torch.float32 and labels.dtype == torch.int64
        assert images.shape[0] == labels.shape[0]
        assert -1.0 <= images.min() and images.max() <= 1.0
        assert 0 <= labels.min() and labels.max() <= 9
    n_train = sum(len(labels) for _, labels in train)
    n_test = sum(len(labels) for _, labels in test)
    assert n_train + n_test == 1797
    assert n_test == 360


def test_digits_channels_are_replicas() -> None:
    images, _ = data.digits((1, 3, 32, 32), batch_size=8)[0]
    torch.testing.assert_close(images[:, 0], images[:, 2])


def test_digits_train_and_test_are_disjoint() -> None:
    # At 8x8 the bilinear resize is the identity, and the 1797 images are all distinct.
    def rows(split: str) -> set[tuple[float, ...]]:
        batches = data.digits((1, 1, 8, 8), split=split)
        return {tuple(row.tolist()) for images, _ in batches for row in images.flatten(1)}

    train, test = rows("train"), rows("test")
    assert len(train) == 1437 and len(test) == 360
    assert not train & test


def test_digits_deterministic_per_seed() -> None:
    first = data.digits((1, 1, 8, 8), batch_size=32, seed=3)
    again = data.digits((1, 1, 8, 8), batch_size=32, seed=3)
    other = data.digits((1, 1, 8, 8), batch_size=32, seed=4)
    for (xa, ya), (xb, yb) in zip(first, again, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert not torch.equal(first[0][1], other[0][1])


def test_digits_bad_split() -> None:
    with pytest.raises(ValueError, match="train"):
        data.digits(split="validation")


def test_digits_without_sklearn(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(ImportError, match="pip install scikit-learn"):
        data.digits()


def test_random_shape_and_determinism() -> None:
    batches = data.random((4, 3, 8, 8), batches=3, seed=1)
    assert len(batches) == 3 and all(b.shape == (4, 3, 8, 8) for b in batches)
    again = data.random((4, 3, 8, 8), batches=3, seed=1)
    assert all(torch.equal(a, b) for a, b in zip(batches, again, strict=True))
    assert not torch.equal(batches[0], batches[1])
    assert data.random((4, 3, 8, 8), batch_size=2)[0].shape == (2, 3, 8, 8)


@pytest.mark.parametrize("name", zoo.MODELS)
def test_untrained_models_pass_signal_in_eval_mode(name):
    """Output checks of passes and lowerings are only meaningful if the output depends on the
    input (with fan-out init, mobilenet_v2's input-dependent part was ~1e-7 of its output)."""
    model = getattr(zoo, name)().eval()
    generator = torch.Generator().manual_seed(0)
    a, b = (torch.randn(model.example_input_shape, generator=generator) for _ in range(2))
    with torch.no_grad():
        ya, yb = model(a), model(b)
    assert float((ya - yb).abs().max()) > 0.01 * float(ya.abs().max())


def test_zoo_imports_without_optional_packages_and_without_passes_or_backends() -> None:
    """`import bitfx.zoo` needs neither scikit-learn nor scikit-image, and pulls in no pass or back end."""
    code = (
        "import sys\n"
        "for name in ('sklearn', 'skimage'):\n"
        "    sys.modules[name] = None\n"
        "import bitfx.zoo\n"
        "loaded = [m for m in sys.modules if m.startswith(('bitfx.passes', 'bitfx.backends'))]\n"
        "assert not loaded, loaded\n"
        "try:\n"
        "    bitfx.zoo.digits()\n"
        "except ImportError as error:\n"
        "    assert 'bitfx[examples]' in str(error), error\n"
        "else:\n"
        "    raise AssertionError('digits ran without scikit-learn')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
