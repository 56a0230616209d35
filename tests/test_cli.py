"""The `bitfx` command: compile, inspect, passes, and its error handling."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bitfx import zoo
from bitfx.cli import main


def compile_args(model: str, out_dir: Path, *extra: str) -> list[str]:
    return ["compile", model, "-o", str(out_dir / "m.onnx"), "--report", str(out_dir / "r.json"), *extra]


def run_compile(model: str, out_dir: Path, *extra: str) -> tuple[int, dict]:
    """Run `bitfx compile` in-process; returns the exit code and the JSON report."""
    out_dir.mkdir(parents=True, exist_ok=True)
    code = main(compile_args(model, out_dir, *extra))
    return code, json.loads((out_dir / "r.json").read_text())


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory):
    """`compiled(name)` -> (exit code, report, output dir) of `compile --passes fuse_bn`,
    run once per model and module; the run also saves its pipeline to P.toml."""
    cache: dict[str, tuple[int, dict, Path]] = {}

    def get(name: str):
        if name not in cache:
            out = tmp_path_factory.mktemp(name)
            code, report = run_compile(
                f"bitfx.zoo:{name}", out, "--passes", "fuse_bn", "--save-pipeline", str(out / "P.toml")
            )
            cache[name] = (code, report, out)
        return cache[name]

    return get


def test_compile_resnet20_report(compiled) -> None:
    code, report, out = compiled("resnet20")
    assert code == 0

    assert [p["name"] for p in report["passes"]] == ["fuse_bn"]
    for record in report["passes"]:
        assert set(record) >= {"name", "modified", "seconds", "stats"}
        assert record["modified"] is True
        assert isinstance(record["seconds"], float) and record["seconds"] >= 0
        assert isinstance(record["stats"], dict)

    for side in ("before", "after"):
        assert set(report[side]) >= {"params", "macs", "weight_bytes"}
        assert report[side]["params"] > 0
    assert report["after"]["macs"] == report["before"]["macs"] > 0
    assert report["after"]["params"] < report["before"]["params"]

    check = report["verify"]
    assert set(check) >= {"max_abs_error", "max_rel_error", "ok"}
    assert check["ok"] is True
    assert 0 <= check["max_rel_error"] <= 1e-4

    onnx_info = report["onnx"]
    assert Path(onnx_info["path"]) == out / "m.onnx"
    assert onnx_info["bytes"] == (out / "m.onnx").stat().st_size
    assert onnx_info["ops"]["Conv"] == 21
    assert "BatchNormalization" not in onnx_info["ops"]


@pytest.mark.parametrize("name", zoo.MODELS)
def test_compile_every_model(name: str, compiled) -> None:
    code, report, out = compiled(name)
    assert code == 0
    assert report["verify"]["ok"] is True
    assert (out / "m.onnx").is_file()


def test_saved_pipeline_replays(compiled, tmp_path: Path) -> None:
    _, first, out = compiled("resnet20")
    assert (out / "P.toml").is_file()
    code, replay = run_compile("bitfx.zoo:resnet20", tmp_path, "--pipeline", str(out / "P.toml"))
    assert code == 0
    assert [p["name"] for p in replay["passes"]] == [p["name"] for p in first["passes"]]
    assert replay["pipeline"] == first["pipeline"]


@pytest.mark.parametrize(("data", "batch"), [("bitfx.zoo:random", 1), ("bitfx.zoo:digits", 64)])
def test_compile_with_data(data: str, batch: int, tmp_path: Path) -> None:
    code, report = run_compile("bitfx.zoo:resnet20", tmp_path, "--passes", "fuse_bn", "--data", data)
    assert code == 0
    assert report["verify"]["ok"] is True
    assert report["input_shape"] == [batch, 3, 32, 32]


def test_compile_input_shape(tmp_path: Path) -> None:
    code, report = run_compile("bitfx.zoo:resnet20", tmp_path, "--passes", "fuse_bn", "--input-shape", "2,3,32,32")
    assert code == 0
    assert report["input_shape"] == [2, 3, 32, 32]


def test_verification_failure_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, report = run_compile("bitfx.zoo:resnet20", tmp_path, "--passes", "fuse_bn", "--rtol", "0")
    if report["verify"]["max_rel_error"] == 0:
        pytest.skip("onnxruntime matched torch exactly, so a zero tolerance cannot fail")
    assert code == 1
    assert report["verify"]["ok"] is False
    assert "FAILED" in capsys.readouterr().out


def _corrupt(tmp_path: Path) -> str:
    path = tmp_path / "bad.onnx"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    return str(path)


BAD_INPUTS = {
    "unknown factory": (lambda t: compile_args("bitfx.zoo:nope", t, "--passes", "fuse_bn"), "nope"),
    "unknown module": (lambda t: compile_args("nomodule:x", t, "--passes", "fuse_bn"), "nomodule"),
    "no colon": (lambda t: compile_args("noColonSpec", t, "--passes", "fuse_bn"), "noColonSpec"),
    "bad shape": (
        lambda t: compile_args("bitfx.zoo:resnet20", t, "--passes", "fuse_bn", "--input-shape", "1,3,x"),
        "1,3,x",
    ),
    "unknown pass": (lambda t: compile_args("bitfx.zoo:resnet20", t, "--passes", "fuse_bn,nope"), "fuse_bn"),
    "unknown parameter": (lambda t: compile_args("bitfx.zoo:resnet20", t, "--passes", "fuse_bn(foo=1)"), "foo"),
    "missing pipeline": (
        lambda t: compile_args("bitfx.zoo:resnet20", t, "--pipeline", str(t / "missing.toml")),
        "missing.toml",
    ),
    "corrupt onnx": (lambda t: ["inspect", _corrupt(t)], "bad.onnx"),
    "missing onnx": (lambda t: ["inspect", str(t / "missing.onnx")], "missing.onnx"),
}


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_is_one_line_and_exit_2(case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_args, mentioned = BAD_INPUTS[case]
    code = main(make_args(tmp_path))
    err = capsys.readouterr().err
    assert code == 2
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("bitfx: error:")
    assert mentioned in lines[0]


def test_unknown_pass_lists_available_passes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(compile_args("bitfx.zoo:resnet20", tmp_path, "--passes", "fuse_bn,nope")) == 2
    err = capsys.readouterr().err
    assert "'nope'" in err and "fuse_bn" in err.split("'nope'", 1)[1]


def test_inspect_model_spec(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect", "bitfx.zoo:resnet18"]) == 0
    out = capsys.readouterr().out
    total = [line for line in out.splitlines() if line.startswith("total")]
    assert len(total) == 1
    assert "11,689,512" in total[0]


def test_inspect_onnx_file(compiled, capsys: pytest.CaptureFixture[str]) -> None:
    _, report, out = compiled("resnet20")
    capsys.readouterr()
    assert main(["inspect", str(out / "m.onnx")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any(line.startswith("total") for line in lines)
    ops = [line for line in lines if line.startswith("ops:")]
    assert len(ops) == 1
    assert f"Conv×{report['onnx']['ops']['Conv']}" in ops[0]


def test_passes_lists_fuse_bn(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["passes"]) == 0
    assert any(line.startswith("fuse_bn") for line in capsys.readouterr().out.splitlines())


def test_console_script(tmp_path: Path) -> None:
    script = Path(sys.executable).parent / "bitfx"
    result = subprocess.run([str(script), "passes"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "fuse_bn" in result.stdout
