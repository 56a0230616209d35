"""The wheel installs `bitfx` and nothing else: no `examples`, no tests, no C sources."""

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import bitfx

ROOT = Path(__file__).resolve().parent.parent
# Left out of the copy that is built: local environments and earlier build output (a stale
# build/lib would otherwise put files that no longer exist into the wheel).
NOT_COPIED = shutil.ignore_patterns(
    ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", "*.so", ".pytest_cache", ".hypothesis", ".ruff_cache"
)


@pytest.mark.slow
def test_wheel_holds_only_the_bitfx_package(tmp_path: Path) -> None:
    source = tmp_path / "src"
    shutil.copytree(ROOT, source, ignore=NOT_COPIED)
    build = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            str(source),
            "-w",
            str(tmp_path / "dist"),
            "--no-deps",
            "--no-build-isolation",
            "--quiet",
            "--disable-pip-version-check",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert build.returncode == 0, build.stderr
    (wheel,) = (tmp_path / "dist").glob("bitfx-*.whl")
    assert wheel.name.startswith(f"bitfx-{bitfx.__version__}-")  # the version is read from bitfx/__init__.py
    names = zipfile.ZipFile(wheel).namelist()

    top_level = {name.split("/", 1)[0] for name in names}
    assert {name for name in top_level if not name.endswith(".dist-info")} == {"bitfx"}
    assert not [name for name in names if name.endswith((".c", ".h"))]
    assert not [name for name in names if "/tests/" in name or Path(name).name.startswith("test_")]
    assert "bitfx/zoo/__init__.py" in names
    assert any(name.startswith("bitfx/backends/packed/_kernels") and name.endswith(".so") for name in names)
