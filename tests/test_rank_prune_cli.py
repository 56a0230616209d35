"""`bitfx compile … --passes "fuse_bn,rank_prune(rate=0.5)" --data …`: the issue's "done when"
commands, run in-process: exit 0, onnxruntime agrees with torch, MACs ≤ 0.6× before."""

import json

import numpy as np
import pytest

from bitfx.backends.onnx import run_session, session
from bitfx.cli import main


def _compile(tmp_path, model, passes, *extra):
    args = [
        "compile",
        f"bitfx.zoo:{model}",
        "--passes",
        passes,
        "-o",
        str(tmp_path / "m.onnx"),
        "--report",
        str(tmp_path / "r.json"),
        *extra,
    ]
    code = main(args)
    report = json.loads((tmp_path / "r.json").read_text()) if (tmp_path / "r.json").exists() else None
    return code, report


@pytest.mark.parametrize("model", ["resnet56", "mobilenet_v2", "densenet_tiny"])
def test_done_when_commands_prune_to_at_most_60_percent_of_the_macs(tmp_path, model):
    code, report = _compile(tmp_path, model, "fuse_bn,rank_prune(rate=0.5)", "--data", "bitfx.zoo:random")
    assert code == 0
    assert report["verify"]["ok"] is True
    assert report["after"]["macs"] <= 0.6 * report["before"]["macs"]
    stats = report["passes"][1]["stats"]
    assert stats["channels_removed"] > 0 and stats["calibration_images"] == 2
    layers = {layer["name"]: layer for layer in stats["layers"]}
    assert (
        sum(layer["macs_before"] - layer["macs_after"] for layer in layers.values())
        == report["before"]["macs"] - report["after"]["macs"]
    )
    outputs = run_session(
        session(tmp_path / "m.onnx"), [np.random.default_rng(0).standard_normal((3, 3, 32, 32), dtype=np.float32)]
    )
    assert outputs[0].shape == (3, 10)


def test_vgg_small_prunes_through_flatten_into_the_classifier_when_asked(tmp_path):
    code, report = _compile(
        tmp_path, "vgg_small", "fuse_bn,rank_prune(rate=0.5, prune_classifier=true)", "--data", "bitfx.zoo:random"
    )
    assert code == 0 and report["verify"]["ok"] is True
    fc = next(layer for layer in report["passes"][1]["stats"]["layers"] if layer["name"] == "fc")
    assert fc["params_after"] == 10 * 256 * 16 + 10
    assert report["after"]["macs"] <= 0.3 * report["before"]["macs"]


def test_without_data_the_command_exits_2_and_says_how_to_give_it(tmp_path, capsys):
    code, report = _compile(tmp_path, "resnet20", "rank_prune(rate=0.5)")
    assert code == 2 and report is None
    assert "--data package.module:function" in capsys.readouterr().err
