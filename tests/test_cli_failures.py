"""`bitfx compile` under careless or hostile input: every failure is one line on stderr with exit
code 2 (1 only for a verification mismatch), output paths are checked before any work, outputs
are replaced atomically, and `--data` is read lazily."""

from __future__ import annotations

import errno
import importlib
import itertools
import os
import uuid
from pathlib import Path

import onnx
import pytest

from bitfx.cli import main

TINY_MODEL = """
import torch
from torch import nn

CALLS = []

def tiny():
    CALLS.append(1)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4),
    )
    model.example_input_shape = (2, 3, 8, 8)
    return model
"""


@pytest.fixture
def user_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """`user_module(source)` writes `source` as a new importable module and returns its name."""
    folder = tmp_path / "user_code"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))

    def make(source: str) -> str:
        name = f"user_{uuid.uuid4().hex[:12]}"
        (folder / f"{name}.py").write_text(source)
        return name

    return make


@pytest.fixture
def tiny(user_module) -> str:
    return user_module(TINY_MODEL) + ":tiny"


def run_failing(args: list[str], capsys: pytest.CaptureFixture[str], code: int = 2) -> str:
    """Run the command, check it failed with `code` and one `bitfx...: ` line on stderr; return that line."""
    assert main(args) == code
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().split("\n")
    assert len(lines) == 1, err
    line = lines[0].split("\r")[-1].strip()  # after the progress bars a pass drew and cleared
    assert line.startswith("bitfx")
    return line


def compile_args(model: str, out: Path, *extra: str) -> list[str]:
    return ["compile", model, "-o", str(out / "m.onnx"), *extra]


# --- the user's model factory, module and data function -----------------------------------------

FACTORIES = {
    "ValueError": ("def f():\n    raise ValueError('needs a config file')\n", "needs a config file"),
    "own exception": ("class Oops(Exception):\n    pass\ndef f():\n    raise Oops('boom')\n", "Oops: boom"),
    "KeyError": ("def f():\n    return {}['weights']\n", "KeyError"),
    "sys.exit": ("import sys\ndef f():\n    sys.exit(3)\n", "SystemExit"),
    "needs arguments": ("def f(depth):\n    pass\n", "TypeError"),
}


@pytest.mark.parametrize("case", FACTORIES)
def test_a_raising_model_factory_is_one_line(case: str, user_module, tmp_path: Path, capsys) -> None:
    source, mentioned = FACTORIES[case]
    name = user_module(source)
    line = run_failing(compile_args(f"{name}:f", tmp_path, "--passes", "fuse_bn"), capsys)
    assert f"{name}:f" in line and mentioned in line


@pytest.mark.parametrize(
    ("source", "mentioned"),
    [("raise RuntimeError('no GPU')\n", "no GPU"), ("def f(:\n", "SyntaxError"), ("import nonexistent_pkg_x\n", "")],
)
def test_a_module_that_fails_to_import_is_one_line(source: str, mentioned: str, user_module, tmp_path, capsys) -> None:
    name = user_module(source)
    line = run_failing(compile_args(f"{name}:f", tmp_path, "--passes", "fuse_bn"), capsys)
    assert name in line and mentioned in line


DATA_FUNCTIONS = {
    "raises": ("def d(shape):\n    raise OSError('dataset not found')\n", "dataset not found"),
    "not iterable": ("def d(shape):\n    return 42\n", "not iterable"),
    "one tensor": ("import torch\ndef d(shape):\n    return torch.zeros(shape)\n", "one tensor"),
    "garbage batches": ("def d(shape):\n    yield 'hello'\n", "batch 0 is a str"),
    "empty": ("def d(shape):\n    return []\n", "no batches"),
    "raises while iterating": (
        "import torch\ndef d(shape):\n    yield torch.zeros(shape)\n    raise ValueError('corrupt record')\n",
        "corrupt record",
    ),
    "odd shape": (
        "import torch\ndef d(shape):\n    for size in (8, 8, 8, 9):\n        yield torch.zeros(2, 3, size, size)\n",
        "batch 3",
    ),
    "odd dtype": (
        "import torch\ndef d(shape):\n    yield torch.zeros(shape)\n    yield torch.zeros(shape).double()\n",
        "batch 1",
    ),
}


@pytest.mark.parametrize("case", DATA_FUNCTIONS)
def test_a_failing_data_function_is_one_line(case: str, user_module, tiny: str, tmp_path: Path, capsys) -> None:
    source, mentioned = DATA_FUNCTIONS[case]
    data = user_module(source) + ":d"
    line = run_failing(compile_args(tiny, tmp_path, "--passes", "pams", "--data", data), capsys)
    assert data in line and mentioned in line


def test_an_unexpected_error_is_one_line(tiny: str, tmp_path: Path, capsys, monkeypatch) -> None:
    def broken(*args, **kwargs):
        raise TypeError("unsupported operand")

    monkeypatch.setattr("bitfx.cli.compile.capture", broken)
    line = run_failing(compile_args(tiny, tmp_path, "--passes", "fuse_bn"), capsys)
    assert "unexpected TypeError: unsupported operand" in line and "BITFX_TRACEBACK=1" in line


@pytest.mark.parametrize("extra", [["--rtol", "nan"], ["--rtol", "-1"], ["--frobnicate"], []])
def test_usage_errors_are_one_line(extra: list[str], tmp_path: Path, capsys) -> None:
    passes = ["--passes", "fuse_bn"] if extra else []
    line = run_failing(compile_args("bitfx.zoo:resnet20", tmp_path, *passes, *extra), capsys)
    assert "--help" in line


# --- output paths, checked before anything runs -------------------------------------------------

BAD_OUTPUTS = {
    "a directory": (lambda t: ["-o", str(t)], "is a directory"),
    "in a missing directory": (lambda t: ["-o", str(t / "missing" / "m.onnx")], "does not exist"),
    "under a file": (lambda t: ["-o", str(t / "file.txt" / "m.onnx")], "is not a directory"),
    "unwritable": (lambda t: ["-o", "/proc/bitfx-test.onnx"], "cannot write in '/proc'"),
    "a device": (lambda t: ["-o", "/dev/null"], "not a regular file"),
    "report in a missing directory": (
        lambda t: ["-o", str(t / "m.onnx"), "--report", str(t / "no" / "r.json")],
        "--report",
    ),
    "-o and --report the same": (
        lambda t: ["-o", str(t / "m.onnx"), "--report", str(t / "sub" / ".." / "m.onnx")],
        "-o and --report both name",
    ),
    "-o and --save-pipeline the same through a link": (
        lambda t: ["-o", str(t / "m.onnx"), "--save-pipeline", str(t / "link.onnx")],
        "-o and --save-pipeline both name",
    ),
    "--report and --save-pipeline the same": (
        lambda t: ["-o", str(t / "m.onnx"), "--report", str(t / "p"), "--save-pipeline", str(t / "p")],
        "--report and --save-pipeline both name",
    ),
}


@pytest.mark.parametrize("case", BAD_OUTPUTS)
def test_bad_output_paths_are_refused_before_the_model_is_built(case: str, tiny: str, tmp_path: Path, capsys) -> None:
    (tmp_path / "file.txt").write_text("x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "link.onnx").symlink_to(tmp_path / "m.onnx")
    make_outputs, mentioned = BAD_OUTPUTS[case]
    before = sorted(p.name for p in tmp_path.iterdir())
    line = run_failing(["compile", tiny, "--passes", "fuse_bn", *make_outputs(tmp_path)], capsys)
    assert mentioned in line
    module = __import__(tiny.split(":")[0])
    assert module.CALLS == [], "the model factory ran before the output paths were checked"
    assert sorted(p.name for p in tmp_path.iterdir()) == before


# --- atomic outputs ---------------------------------------------------------------------------------


def _old_outputs(folder: Path) -> dict[Path, bytes]:
    files = {folder / "m.onnx": b"old onnx", folder / "r.json": b'{"old": 1}', folder / "p.toml": b"# old"}
    for path, content in files.items():
        path.write_bytes(content)
    return files


def _all_outputs(folder: Path) -> list[str]:
    return ["-o", str(folder / "m.onnx"), "--report", str(folder / "r.json"), "--save-pipeline", str(folder / "p.toml")]


def test_a_lowering_that_raises_leaves_the_old_files(tiny: str, tmp_path: Path, capsys, monkeypatch) -> None:
    old = _old_outputs(tmp_path)

    def raising_lowering(name):
        def lower(gm, inputs, dynamic_batch):
            raise RuntimeError("unsupported op halfway through the graph")

        return lower

    monkeypatch.setattr(importlib.import_module("bitfx.backends.onnx.export"), "get_lowering", raising_lowering)
    line = run_failing(["compile", tiny, "--passes", "fuse_bn", *_all_outputs(tmp_path)], capsys)
    assert "unsupported op halfway" in line
    assert {path: path.read_bytes() for path in old} == old
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*(p.name for p in old), "user_code"])


def test_a_disk_full_while_saving_leaves_the_old_files(tiny: str, tmp_path: Path, capsys, monkeypatch) -> None:
    old = _old_outputs(tmp_path)

    def save_half(model: onnx.ModelProto, path: str) -> None:
        Path(path).write_bytes(model.SerializeToString()[:100])
        raise OSError(errno.ENOSPC, "No space left on device", path)

    monkeypatch.setattr(onnx, "save", save_half)
    line = run_failing(["compile", tiny, "--passes", "fuse_bn", *_all_outputs(tmp_path)], capsys)
    assert "No space left on device" in line
    assert {path: path.read_bytes() for path in old} == old
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*(p.name for p in old), "user_code"])


def test_an_interrupted_compile_leaves_the_old_files(tiny: str, tmp_path: Path, capsys, monkeypatch) -> None:
    old = _old_outputs(tmp_path)

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("bitfx.cli.compile.verifier_for", lambda lowering: interrupt)
    line = run_failing(["compile", tiny, "--passes", "fuse_bn", *_all_outputs(tmp_path)], capsys, code=130)
    assert "interrupted" in line
    assert {path: path.read_bytes() for path in old} == old
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*(p.name for p in old), "user_code"])


def test_a_successful_compile_replaces_the_files_with_ordinary_permissions(tiny: str, tmp_path: Path) -> None:
    old = _old_outputs(tmp_path)
    (tmp_path / "p.toml").chmod(0o640)
    assert main(["compile", tiny, "--passes", "fuse_bn", *_all_outputs(tmp_path)]) == 0
    assert all(path.read_bytes() != content for path, content in old.items())
    onnx.checker.check_model(onnx.load(str(tmp_path / "m.onnx")))
    mask = os.umask(0)
    os.umask(mask)
    assert (tmp_path / "m.onnx").stat().st_mode & 0o777 == 0o666 & ~mask
    assert (tmp_path / "p.toml").stat().st_mode & 0o777 == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*(p.name for p in old), "user_code"])


# --- --data is streamed -----------------------------------------------------------------------------

COUNTING_DATA = """
import torch

READ = []

def endless(shape):
    for index in range(10_000):
        if index >= 50:
            raise RuntimeError("read 50 batches of an endless loader")
        READ.append(index)
        yield torch.randn(shape, generator=torch.Generator().manual_seed(index))
"""


@pytest.mark.parametrize(("passes", "read"), [("rank_prune(batches=1)", 1), ("rank_prune(batches=3)", 3)])
def test_rank_prune_reads_only_the_batches_it_needs(passes, read, user_module, tiny, tmp_path) -> None:
    name = user_module(COUNTING_DATA)
    assert main(compile_args(tiny, tmp_path, "--passes", f"fuse_bn,{passes}", "--data", f"{name}:endless")) == 0
    assert __import__(name).READ == list(range(read))


def test_pams_reads_only_the_batches_it_needs(user_module, tiny, tmp_path) -> None:
    name = user_module(COUNTING_DATA)
    args = compile_args(tiny, tmp_path, "--passes", "pams(batches=2)", "--data", f"{name}:endless", "--lowering", "qdq")
    assert main(args) == 0
    assert __import__(name).READ == [0, 1]


def test_each_pass_reads_the_data_from_its_start(user_module, tiny, tmp_path) -> None:
    name = user_module(COUNTING_DATA)
    args = compile_args(
        tiny,
        tmp_path,
        "--passes",
        "rank_prune(batches=2),pams(batches=2)",
        "--data",
        f"{name}:endless",
        "--lowering",
        "qdq",
    )
    assert main(args) == 0
    assert __import__(name).READ == [0, 1, 0, 1]


def test_data_batches_read_lazily(user_module) -> None:
    from bitfx.cli.batches import DataBatches

    name = user_module(COUNTING_DATA)
    batches = DataBatches(f"{name}:endless", (2, 3, 8, 8))
    assert __import__(name).READ == [0]
    assert len(list(itertools.islice(batches, 4))) == 4
    assert __import__(name).READ == [0, 1, 2, 3]


def test_a_bad_pass_list_is_refused_before_the_model_is_built(tiny: str, tmp_path: Path, capsys) -> None:
    line = run_failing(compile_args(tiny, tmp_path, "--passes", "fuse_bn,rank_prune(rate=nan)"), capsys)
    assert "rank_prune" in line and "rate='nan'" in line
    assert __import__(tiny.split(":")[0]).CALLS == []
