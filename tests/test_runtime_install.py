"""bitfx-runtime, the device-only distribution (runtime/): it installs into a clean venv with
numpy and onnx only, torch and onnxruntime stay absent, and a `custom` file lowered here runs
there with the same outputs; without a C compiler its build fails with one line saying what to do."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import numpy as np
import pytest
import torch
from test_packaging import NOT_COPIED
from torch import nn

from bitfx.backends.onnx import export
from bitfx.backends.packed import load
from bitfx.ir import capture
from bitfx.passes import Pipeline

ROOT = Path(__file__).resolve().parent.parent
RUN_ON_DEVICE = """
import sys
import numpy as np
from bitfx.backends.packed import load
for name in ("torch", "onnxruntime"):
    try:
        __import__(name)
    except ImportError:
        print(f"no {name}")
(y,) = load(sys.argv[1]).run([np.load(sys.argv[2])])
np.save(sys.argv[3], y)
"""


def _pip(python: Path | str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    command = [str(python), "-m", "pip", *args, "--quiet", "--disable-pip-version-check"]
    return subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT)


def _build_wheel(tmp_path: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Build the runtime wheel into tmp_path/dist from a fresh copy of the repository (no earlier build output)."""
    source = tmp_path / "src"
    shutil.copytree(ROOT, source, ignore=NOT_COPIED)
    args = ("wheel", "--no-deps", "--no-build-isolation", str(source / "runtime"), "-w", str(tmp_path / "dist"))
    return _pip(sys.executable, *args, env=env)


def _lowered_binary_file(path: Path) -> tuple[Path, np.ndarray]:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.BatchNorm2d(32),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(32, 10),
    ).eval()
    x = torch.randn(2, 3, 12, 12)
    binary = Pipeline.from_spec("binarize").run(capture(model, x)).graph_module.eval()
    return export(binary, x, path, lowering="custom"), x.numpy()


@pytest.mark.slow
def test_runtime_wheel_runs_a_lowered_file_in_a_venv_without_torch(tmp_path: Path) -> None:
    build = _build_wheel(tmp_path)
    assert build.returncode == 0, build.stderr
    (wheel,) = (tmp_path / "dist").glob("bitfx_runtime-*.whl")

    venv.create(tmp_path / "device", with_pip=True)  # a clean venv: no system site-packages
    python = tmp_path / "device" / "bin" / "python"
    installed = _pip(python, "install", "-c", str(ROOT / "constraints.txt"), str(wheel))
    assert installed.returncode == 0, installed.stderr
    freeze = subprocess.run([str(python), "-m", "pip", "freeze"], capture_output=True, text=True).stdout.lower()
    names = {line.split("==")[0].split(" @ ")[0] for line in freeze.splitlines()}
    assert {"bitfx-runtime", "numpy", "onnx"} <= names and not names & {"torch", "onnxruntime", "onnxscript"}

    path, x = _lowered_binary_file(tmp_path / "m.onnx")
    np.save(tmp_path / "x.npy", x)
    ran = subprocess.run(
        [str(python), "-c", RUN_ON_DEVICE, str(path), str(tmp_path / "x.npy"), str(tmp_path / "y.npy")],
        capture_output=True,
        text=True,
        cwd=tmp_path,  # not the repository root, so the repository's bitfx cannot be imported by accident
    )
    assert ran.returncode == 0, ran.stderr
    assert "no torch" in ran.stdout and "no onnxruntime" in ran.stdout
    (expected,) = load(path).run([x])
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), expected)


@pytest.mark.slow
def test_runtime_build_without_a_c_compiler_says_what_to_install(tmp_path: Path) -> None:
    env = {**os.environ, "CC": str(tmp_path / "no-such-compiler")}
    build = _build_wheel(tmp_path, env=env)
    assert build.returncode != 0
    assert "bitfx-runtime: compiling the packed kernels failed" in build.stderr
    assert "install a C compiler with OpenMP" in build.stderr
