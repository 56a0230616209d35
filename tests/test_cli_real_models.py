"""The `bitfx` command on a user's own model: a factory in the current directory, trained weights
(`--weights`), `--version`, the pass/lowering catalogue, selection parsing, `verify` choosing its
check from the file, `plan` and `benchmark`."""

from __future__ import annotations

import json
import re
import sys
import textwrap

import numpy as np
import onnx
import pytest
import torch

import bitfx
import bitfx.zoo
from bitfx.backends.onnx import available_lowerings, load_model, lowering_of, run_session, session
from bitfx.cli import main
from bitfx.ir import capture
from bitfx.passes import Pipeline

USER_MODEL = textwrap.dedent(
    """
    from torch import nn

    def build():
        model = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
            nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
            nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10),
        )
        model.example_input_shape = (1, 3, 16, 16)
        return model
    """
)


@pytest.fixture
def user_dir(tmp_path, monkeypatch):
    """A directory holding `usernet.py` (not on the module path), made the current directory;
    returns a function that builds the model, with trained-looking weights saved as `w.pt`."""
    (tmp_path / "usernet.py").write_text(USER_MODEL)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    monkeypatch.delitem(sys.modules, "usernet", raising=False)
    namespace: dict = {}
    exec(USER_MODEL, namespace)
    model = namespace["build"]()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for tensor in model.state_dict().values():
            if tensor.is_floating_point():
                tensor.copy_(torch.randn(tensor.shape, generator=generator).abs() + 0.1)
    torch.save(model.state_dict(), tmp_path / "w.pt")
    return model.eval()


def _onnx_output(path, x: torch.Tensor) -> np.ndarray:
    return run_session(session(path), [x.numpy()])[0]


def test_version_comes_from_the_package(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"bitfx {bitfx.__version__}"


@pytest.mark.slow
def test_factory_in_the_current_directory_compiles_with_its_state_dict(user_dir, tmp_path):
    assert "usernet" not in sys.modules and str(tmp_path) not in sys.path
    code = main(["compile", "usernet:build", "--weights", "w.pt", "--passes", "fuse_bn", "-o", "m.onnx"])
    assert code == 0
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        expected = user_dir(x).numpy()
    np.testing.assert_allclose(_onnx_output(tmp_path / "m.onnx", x), expected, rtol=1e-4, atol=1e-4)
    # without --weights the file differs: the weights were really used
    assert main(["compile", "usernet:build", "--passes", "fuse_bn", "-o", "fresh.onnx", "--no-verify"]) == 0
    assert not np.allclose(_onnx_output(tmp_path / "fresh.onnx", x), expected, atol=1e-3)


def test_a_training_checkpoint_dict_is_read_and_a_wrong_state_dict_is_one_line(user_dir, tmp_path, capsys):
    torch.save({"epoch": 3, "state_dict": user_dir.state_dict()}, tmp_path / "train.pt")
    assert main(["inspect", "usernet:build", "--weights", "train.pt"]) == 0
    torch.save({"conv.weight": torch.zeros(3)}, tmp_path / "other.pt")
    capsys.readouterr()
    assert main(["inspect", "usernet:build", "--weights", "other.pt"]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1
    assert "does not fit the model" in error and "missing" in error and "unexpected" in error
    assert main(["inspect", "usernet:build", "--weights", "nope.pt"]) == 2


@pytest.mark.slow
def test_a_bitfx_save_file_is_the_rewritten_model(user_dir, tmp_path, capsys):
    sys.path.insert(0, str(tmp_path))
    import usernet

    gm = Pipeline.from_spec("binarize(scheme=bnn)").run(capture(usernet.build(), (torch.randn(1, 3, 16, 16),)))
    path = bitfx.save(gm.graph_module.eval(), tmp_path / "b.pt", model="usernet:build", pipeline="binarize(scheme=bnn)")
    sys.path.remove(str(tmp_path))
    assert main(["inspect", "usernet:build", "--weights", str(path)]) == 0
    assert "BinaryConv2d" in capsys.readouterr().out
    code = main(
        ["compile", "usernet:build", "--weights", "b.pt", "--passes", "fuse_bn", "--lowering", "custom", "-o", "b.onnx"]
        + ["--report", "r.json"]
    )
    assert code == 0
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["passes"][0]["stats"]["fused"] == 3 and report["verify"]["ok"]  # the float first conv and 2 binary
    assert main(["inspect", "bitfx.zoo:resnet20", "--weights", "b.pt"]) == 2
    assert "checkpoint of 'usernet:build', not of 'bitfx.zoo:resnet20'" in capsys.readouterr().err


def test_help_and_passes_list_lowerings_every_parameter_and_the_selection_syntax(capsys):
    assert main(["passes"]) == 0
    listing = capsys.readouterr().out
    for style in available_lowerings():
        assert f"  {style} " in listing
    for parameter in ("layers: LayerSelection = True", "rates: LayerSelection = None", "scheme: str = 'xnor'"):
        assert parameter in listing
    assert "by_name" in listing and "by_regex" in listing and "Keys left out keep the pass's own default" in listing
    assert main(["compile", "--help"]) == 0
    help_text = capsys.readouterr().out
    assert "lowering styles:" in help_text and "custom" in help_text and "round_to: int = 1" in help_text


def test_a_selection_that_does_not_parse_is_an_error(tmp_path, capsys):
    code = main(
        ["compile", "bitfx.zoo:resnet20", "--passes", "binarize(layers={by_name: {layers.0.conv1: false}})"]
        + ["-o", str(tmp_path / "x.onnx")]
    )
    assert code == 2
    assert "cannot be parsed as a Python literal" in capsys.readouterr().err
    assert not (tmp_path / "x.onnx").exists()


@pytest.mark.parametrize(
    "selection", ["{'by_name': {'layers.0.conv1': False}}", "{by_name: {'layers.0.conv1': false}}"]
)
def test_excluding_one_layer_by_name_keeps_the_default_selection(selection):
    gm = capture(bitfx.zoo.resnet20(), (torch.randn(1, 3, 32, 32),))
    result = Pipeline.from_spec(f"binarize(layers={selection})").run(gm)
    stats = result.records[0].stats
    assert stats["skipped"]["layers.0.conv1"] == "not selected (name 'layers.0.conv1' → False)"
    assert stats["binarized"] == 19  # 21 convs and shortcuts but the first and the excluded one
    assert "layers.0.conv2" in stats["layers"] and "fc" in stats["skipped"]


@pytest.mark.slow
def test_verify_reads_the_lowering_style_from_the_file(user_dir, tmp_path, capsys, monkeypatch):
    assert main(["compile", "usernet:build", "--weights", "w.pt", "--passes", "fuse_bn", "-o", "f.onnx"]) == 0
    assert lowering_of(load_model("f.onnx")) == "float"
    chosen = []
    import bitfx.cli.verify as verify_command

    original = verify_command.verifier_for
    monkeypatch.setattr(verify_command, "verifier_for", lambda style: chosen.append(style) or original(style))
    capsys.readouterr()
    assert main(["verify", "f.onnx", "usernet:build", "--weights", "w.pt"]) == 0
    assert chosen == ["float"] and "verify (float lowering)" in capsys.readouterr().out
    assert main(["verify", "f.onnx", "usernet:build"]) == 1  # other weights: the check fails
    assert main(["verify", "f.onnx", "usernet:build", "--weights", "w.pt", "--lowering", "int8"]) == 2
    model = load_model("f.onnx")
    del model.metadata_props[:]
    onnx.save(model, "bare.onnx")
    assert main(["verify", "bare.onnx", "usernet:build", "--weights", "w.pt"]) == 2
    assert "does not record its lowering style" in capsys.readouterr().err
    assert main(["verify", "bare.onnx", "usernet:build", "--weights", "w.pt", "--lowering", "float"]) == 0


def test_plan_prints_the_pruning_dry_run(user_dir, capsys):
    passes = "fuse_bn,rank_prune(rate=0.5)"
    assert main(["plan", "usernet:build", "--weights", "w.pt", "--passes", passes, "--data", "bitfx.zoo:random"]) == 0
    out = capsys.readouterr().out
    assert "ran fuse_bn first" in out and "channel pruning plan (rank, calibrated on 2 images" in out and "MACs:" in out
    assert main(["plan", "usernet:build", "--passes", "fuse_bn"]) == 2
    assert "no pass in --passes (fuse_bn) has a dry run" in capsys.readouterr().err


@pytest.mark.slow
def test_benchmark_times_onnxruntime_the_packed_runtime_and_the_float_model(user_dir, capsys):
    passes = "binarize(scheme=bnn),fuse_bn"
    assert main(["compile", "usernet:build", "--passes", passes, "--lowering", "custom", "-o", "c.onnx"]) == 0
    capsys.readouterr()
    assert main(["benchmark", "c.onnx", "--model", "usernet:build", "--runs", "3", "--warmup", "1"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if "median" not in line and ("onnxruntime" in line or "packed" in line)]
    assert [row.split("  ")[0] for row in rows] == [
        "c.onnx (custom), onnxruntime",
        "c.onnx (custom), onnxruntime",
        "c.onnx (custom), packed runtime",
        "c.onnx (custom), packed runtime",
        "usernet:build (float), onnxruntime",
        "usernet:build (float), onnxruntime",
    ]
    assert all(float(re.search(r"(\d+\.\d{3})  (thread CPU|wall)$", row).group(1)) > 0 for row in rows)
    assert sum("thread CPU" in row for row in rows) == 3 and sum(row.endswith("wall") for row in rows) == 3
    assert "load average before:" in out and "load average after:" in out
