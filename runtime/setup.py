"""Builds bitfx-runtime: the modules of the packed runtime, staged from the repository's `bitfx/`.

Only the torch-free part of bitfx is copied (the package map in docs/architecture.md keeps it
importable on its own), with the C kernels compiled as in the repository's setup.py. The version
is read from `bitfx/__init__.py`, the one place it is written. A machine without a working C
compiler gets one line saying what to install instead of a compiler log.
"""

import re
import shutil
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = Path(__file__).resolve().parent
SOURCE = HERE.parent / "bitfx"
STAGE = HERE / "build" / "staging"
# The runtime's modules: what `bitfx.backends.packed` imports, and nothing that imports torch.
MODULES = ["__init__.py", "errors.py", "format", "backends/__init__.py", "backends/packed"]
PACKAGES = ["bitfx", "bitfx.format", "bitfx.backends", "bitfx.backends.packed"]
CSRC = STAGE / "bitfx" / "backends" / "packed" / "csrc"


def _stage() -> None:
    shutil.rmtree(STAGE, ignore_errors=True)
    for name in MODULES:
        source, target = SOURCE / name, STAGE / "bitfx" / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__", "*.so"))
        else:
            shutil.copy2(source, target)


def _version() -> str:
    return re.search(r'^__version__ = "([^"]+)"', (SOURCE / "__init__.py").read_text(), re.M).group(1)


class BuildKernels(build_ext):
    """build_ext that turns a missing or broken C compiler into one line naming what to install."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as error:  # distutils raises CompileError, LinkError, PlatformError, OSError ...
            sys.exit(
                "bitfx-runtime: compiling the packed kernels failed "
                f"({type(error).__name__}); install a C compiler with OpenMP (Debian/Ubuntu: apt-get install gcc) "
                "or install a bitfx_runtime wheel built on a machine that has one"
            )


_stage()
kernels = Extension(
    "bitfx.backends.packed._kernels",
    sources=[str(path.relative_to(HERE)) for path in sorted(CSRC.glob("*.c"))],
    depends=[str(path.relative_to(HERE)) for path in sorted(CSRC.glob("*.h"))],
    include_dirs=[str(CSRC.relative_to(HERE))],
    # The flags of the repository's setup.py (see the comments there).
    extra_compile_args=["-O3", "-std=gnu11", "-fopenmp", "-ffp-contract=off", "-fno-strict-aliasing"],
    extra_link_args=["-fopenmp"],
)
setup(
    version=_version(),
    packages=PACKAGES,
    package_dir={"": str(STAGE.relative_to(HERE))},
    exclude_package_data={"": ["*.c", "*.h"]},
    ext_modules=[kernels],
    cmdclass={"build_ext": BuildKernels},
)
