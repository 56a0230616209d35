"""The emulated AArch64 check of the packed runtime's NEON kernels (`./dev arm`, tests/test_packed_arm.py).

Records random kernel calls on this machine (arm_cases.py), cross-compiles the kernel library's
C sources (all but module.c, which needs the Python headers) with the flags of setup.py (read from
it) and the driver arm_driver.c for AArch64 with Debian's `aarch64-linux-gnu-gcc`, and runs the
driver under user-mode emulation (`qemu-aarch64`): NEON against the scalar path of the same
library, and that scalar path against this machine's.

Usage: python tests/native/arm_check.py [--seed N] [--operations N] [--build DIR]
"""

from __future__ import annotations

import argparse
import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
CSRC = ROOT / "bitfx" / "backends" / "packed" / "csrc"
COMPILER, EMULATOR = "aarch64-linux-gnu-gcc", "qemu-aarch64"
SYSROOT = "/usr/aarch64-linux-gnu"  # where Debian's cross toolchain keeps the AArch64 C library
INSTALL = "apt-get install gcc-aarch64-linux-gnu qemu-user"


def setup_flags() -> list[str]:
    """The kernels' compile flags, read from setup.py (the ones `pip install` uses on any architecture)."""
    for node in ast.walk(ast.parse((ROOT / "setup.py").read_text())):
        if isinstance(node, ast.keyword) and node.arg == "extra_compile_args":
            return ast.literal_eval(node.value)
    raise RuntimeError("setup.py names no extra_compile_args")


def missing_tools() -> list[str]:
    """The cross compiler and emulator commands that are not on PATH."""
    return [tool for tool in (COMPILER, EMULATOR) if shutil.which(tool) is None]


def record(directory: Path, seed: int = 0, operations: int = 1200) -> Path:
    """Record `operations` random operations' kernel calls (arm_cases.py) into directory/cases.bin."""
    directory.mkdir(parents=True, exist_ok=True)
    cases = directory / "cases.bin"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    command = [sys.executable, str(HERE / "arm_cases.py"), str(cases), f"--seed={seed}", f"--operations={operations}"]
    subprocess.run(command, check=True, env=env)
    return cases


def build(directory: Path, csrc: Path = CSRC) -> Path:
    """Cross-compile the kernels of `csrc` and the driver into `directory`; returns the driver's path."""
    sources = [path for path in sorted(csrc.glob("*.c")) if path.name != "module.c"]
    directory.mkdir(parents=True, exist_ok=True)
    driver = directory / "arm_driver"
    command = [COMPILER, *setup_flags(), "-Werror=implicit-function-declaration", f"-I{csrc}"]
    subprocess.run([*command, *map(str, sources), str(HERE / "arm_driver.c"), "-lm", "-o", str(driver)], check=True)
    return driver


def emulate(driver: Path, cases: Path) -> subprocess.CompletedProcess:
    """Run the driver on the cases under the emulator (output captured)."""
    return subprocess.run([EMULATOR, "-L", SYSROOT, str(driver), str(cases)], capture_output=True, text=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--operations", type=int, default=1200)
    parser.add_argument("--build", type=Path, default=ROOT / "build" / "arm")
    args = parser.parse_args()
    missing = missing_tools()
    if missing:
        sys.exit(f"the AArch64 check needs {' and '.join(missing)}: {INSTALL}")
    result = emulate(build(args.build), record(args.build, args.seed, args.operations))
    print(result.stdout, end="")
    print(result.stderr, end="", file=sys.stderr)
    sys.exit(result.returncode)


if __name__ == "__main__":
    main()
