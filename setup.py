"""Builds the packed-bit runtime's C kernels; everything else is configured in pyproject.toml.

One build runs on any x86-64: the library is compiled for the baseline ISA, and only the
functions of isa_avx2.c / isa_avx512.c carry AVX2 / AVX-512 target attributes; the best path
is chosen at load time (bitfx.backends.packed). On AArch64 the same sources and flags build the
NEON path (isa_neon.c; AdvSIMD is part of the AArch64 baseline) and the x86 files compile to
nothing. Never add -march or -mavx* here (tests/native/arm_check.py cross-compiles with these flags).
"""

from pathlib import Path

from setuptools import Extension, setup

CSRC = Path("bitfx/backends/packed/csrc")

kernels = Extension(
    "bitfx.backends.packed._kernels",
    sources=[str(path) for path in sorted(CSRC.glob("*.c"))],
    depends=[str(path) for path in sorted(CSRC.glob("*.h"))],
    include_dirs=[str(CSRC)],
    # -ffp-contract=off: a*b + c stays two roundings, as onnxruntime computes a Mul then an Add.
    extra_compile_args=["-O3", "-std=gnu11", "-fopenmp", "-ffp-contract=off", "-fno-strict-aliasing"],
    extra_link_args=["-fopenmp"],
)

setup(ext_modules=[kernels])
