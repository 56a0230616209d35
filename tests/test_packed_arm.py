"""The NEON kernels of the packed runtime, cross-compiled for AArch64 and run under qemu-aarch64
(tests/native/arm_check.py; `./dev arm` installs the toolchain, this test skips without it)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.native import arm_check

pytestmark = pytest.mark.skipif(
    bool(arm_check.missing_tools()),
    reason=f"needs {' and '.join(arm_check.missing_tools())} ({arm_check.INSTALL}; ./dev arm installs them)",
)


@pytest.fixture(scope="module")
def cases(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return arm_check.record(tmp_path_factory.mktemp("arm"), seed=1, operations=300)


def test_neon_matches_scalar_under_emulation(cases: Path) -> None:
    result = arm_check.emulate(arm_check.build(cases.parent), cases)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK: " in result.stdout and "bitfx_binary_conv" in result.stdout


def test_a_broken_neon_tile_is_caught(cases: Path, tmp_path: Path) -> None:
    """The same check fails when the NEON tile reads the wrong weights for 2 channels of every 8."""
    csrc = tmp_path / "csrc"
    shutil.copytree(arm_check.CSRC, csrc)
    source = (csrc / "isa_neon.c").read_text()
    assert source.count("vld1q_u64(w + 6)") == 1
    (csrc / "isa_neon.c").write_text(source.replace("vld1q_u64(w + 6)", "vld1q_u64(w + 4)"))
    result = arm_check.emulate(arm_check.build(tmp_path, csrc), cases)
    assert result.returncode == 1
    assert (
        "FAIL" in result.stderr
        and "bitfx_binary_conv" in result.stderr
        and "neon (1 thread) and scalar" in result.stderr
    )
