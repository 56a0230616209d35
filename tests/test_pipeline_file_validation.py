"""Pipeline files are input like any other: every key and value is checked, the error names the
file, the pass and the key, and a layer-selection regex whose matching cost is unbounded is refused."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from bitfx.cli import main
from bitfx.errors import PassConfigError
from bitfx.passes import LayerSelection, Pipeline

BAD_FILES = {
    "boolean rtol": ("[check]\nrtol = true\n", ["[check]", "rtol = True"]),
    "NaN rtol": ("[check]\nrtol = nan\n", ["[check]", "rtol = nan"]),
    "infinite rtol": ("[check]\nrtol = inf\n", ["rtol = inf"]),
    "negative rtol": ("[check]\nrtol = -1e-5\n", ["rtol = -1e-05"]),
    "string rtol": ('[check]\nrtol = "small"\n', ["rtol = 'small'"]),
    "check not a table": ("check = 3\n", ["[check] table"]),
    "passes not tables": ("passes = 3\n", ["[[passes]] tables"]),
    "name not a string": ("[[passes]]\nname = 3\n", ["entry 1", "no name"]),
    "unknown key": ('[[passes]]\nname = "fuse_bn"\n[[passes]]\nname = "rank_prune"\nrat = 0.5\n', ["entry 2", "'rat'"]),
    "boolean rate": ('[[passes]]\nname = "rank_prune"\nrate = true\n', ["entry 1", "'rank_prune'", "rate=True"]),
    "NaN rate": ('[[passes]]\nname = "rank_prune"\nrate = nan\n', ["entry 1", "rate=nan"]),
    "negative rate": ('[[passes]]\nname = "rank_prune"\nrate = -0.5\n', ["rank_prune", "-0.5"]),
    "negative batches": ('[[passes]]\nname = "rank_prune"\nbatches = -1\n', ["batches (-1)"]),
    "infinite temperature": ('[[passes]]\nname = "rotate"\nt_max = inf\n', ["'rotate'", "t_max=inf"]),
    "boolean bits": ('[[passes]]\nname = "pams"\nbits = true\n', ["'pams'", "bits=True"]),
    "float batches": ('[[passes]]\nname = "pams"\nbatches = 2.5\n', ["'pams'", "batches=2.5"]),
    "zero batches": ('[[passes]]\nname = "pams"\nbatches = 0\n', ["'pams'", "batches=0"]),
    "selection not a table": ('[[passes]]\nname = "binarize"\nlayers = { by_name = 3 }\n', ["by_name", "table"]),
    "catastrophic regex": (
        '[[passes]]\nname = "binarize"\nlayers = { by_regex = { "(layer\\\\d+)+x" = false } }\n',
        ["entry 1", "'binarize'", "repeats a group that holds a quantifier"],
    ),
    "invalid regex": ('[[passes]]\nname = "binarize"\nlayers = { by_regex = { "(" = false } }\n', ["invalid regex"]),
}


@pytest.mark.parametrize("case", BAD_FILES)
def test_bad_pipeline_files_are_refused_naming_file_pass_and_key(case: str, tmp_path: Path) -> None:
    text, mentioned = BAD_FILES[case]
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(PassConfigError) as raised:
        Pipeline.from_file(path)
    message = str(raised.value)
    assert str(path) in message
    for fragment in mentioned:
        assert fragment in message


def test_a_bad_pipeline_file_on_the_command_line_is_one_line(tmp_path: Path, capsys) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('[[passes]]\nname = "rank_prune"\nrate = nan\n')
    code = main(["compile", "bitfx.zoo:resnet20", "--pipeline", str(path), "-o", str(tmp_path / "m.onnx")])
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and "bad.toml" in err and "rate=nan" in err


@pytest.mark.parametrize("rtol", [float("nan"), float("inf"), -1.0, True, "1e-5"])
def test_pipeline_tolerance_is_checked_in_python_too(rtol: object) -> None:
    with pytest.raises(PassConfigError, match="rtol"):
        Pipeline([], rtol=rtol)


@pytest.mark.parametrize(
    "pattern", [r"(a+)+b", r"(a?){25}a{25}", r"(a|aa)+b", r"(.*a){12}", r".*.*.*.*.*b", "layer" * 60, r"(?>a+)+b"]
)
def test_costly_regexes_are_refused_quickly(pattern: str) -> None:
    start = time.perf_counter()
    with pytest.raises(PassConfigError, match="layer selection: regex"):
        LayerSelection(by_regex={pattern: True})
    assert time.perf_counter() - start < 0.1


@pytest.mark.parametrize("pattern", [r"layer1\..*", r".*\.conv\d", r"(layer1|layer2)\..*", r"layer\d+\.\d+\.conv\d+"])
def test_ordinary_layer_regexes_are_accepted(pattern: str) -> None:
    assert LayerSelection(by_regex={pattern: True})._patterns
