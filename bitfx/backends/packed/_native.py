"""The ctypes binding of the compiled kernels (csrc/): struct mirrors, typed prototypes, status
checks, ISA and thread choice. This is the only module that talks to the C library; `kernels.py`
builds the prepared kernels on top of it.

The library is built by `pip install` as the extension module `bitfx.backends.packed._kernels`
(see setup.py); its functions are plain C called through ctypes. Every prototype declares its
argument and return types; every kernel entry point returns a status (csrc/bitfx_kernels.h) that
is checked on each call, so a failed call raises `PackedKernelError` instead of leaving its output
unwritten. Environment variables read at import: `BITFX_PACKED_ISA` (scalar | avx2 | avx512 | neon)
forces an instruction set, `BITFX_PACKED_THREADS` sets the thread count, `BITFX_PACKED_LIBRARY`
loads the kernels from another build of the same sources (`./dev sanitize` uses it).
"""

from __future__ import annotations

import ctypes
import importlib.util
import numbers
import os

from bitfx.backends.packed.errors import PackedKernelError
from bitfx.errors import BitfxError

ISA_NAMES = ("scalar", "avx2", "avx512", "neon")  # enum bitfx_isa; neon exists on AArch64 only
OUT_FLOAT, OUT_PACKED = 0, 1
BLOCK = 32  # output channels per block of the binary convolution (BITFX_BLOCK)
FLOAT_TILE = 4  # output channels per tile of the float convolution (BITFX_FLOAT_TILE)
FLOAT_BLOCK = 64  # output channels per block of the direct float convolution (BITFX_FLOAT_BLOCK)

_i64 = ctypes.c_int64
_f64 = ctypes.c_double
_status = ctypes.c_int
STATUS_OK, STATUS_ALLOC, STATUS_ARGUMENT = 0, 1, 2  # enum bitfx_status
_STATUS_MEANING = {
    STATUS_ALLOC: "could not allocate its working memory (the machine is out of memory)",
    STATUS_ARGUMENT: "was given an invalid argument (a null pointer or inconsistent sizes)",
}


def _fields(*names: str, kind: type = _i64) -> list[tuple[str, type]]:
    return [(name, kind) for name in names]


class PackedGeom(ctypes.Structure):
    _fields_ = _fields("batch", "height", "width", "pad_top", "pad_left", "pad_bottom", "pad_right", "words")


class PackDesc(ctypes.Structure):
    _fields_ = [*_fields("channels", "groups", "group_words"), ("out", PackedGeom), *_fields("channels_last")]


class BinaryConvDesc(ctypes.Structure):
    _fields_ = [
        ("input", PackedGeom),
        *_fields("groups", "group_words", "kernel_h", "kernel_w", "stride_h", "stride_w", "dilation_h", "dilation_w"),
        *_fields(
            "pad_top", "pad_left", "out_h", "out_w", "out_channels", "blocks", "patterns", "out_mode", "has_residual"
        ),
        *_fields("clamp_lo", "clamp_hi", kind=_f64),
        ("out", PackedGeom),
        *_fields("channels_last"),
    ]


# The window of a max pool, in the order both pool descriptors declare it.
_POOL_WINDOW = _fields(
    "kernel_h", "kernel_w", "stride_h", "stride_w", "dilation_h", "dilation_w", "pad_top", "pad_left", "out_h", "out_w"
)


class BinaryMaxPoolDesc(ctypes.Structure):
    _fields_ = [("input", PackedGeom), ("out", PackedGeom), *_POOL_WINDOW]


class FloatConvDesc(ctypes.Structure):
    _fields_ = [
        *_fields("batch", "channels", "height", "width", "groups", "out_channels", "tiles"),
        *_fields("kernel_h", "kernel_w", "stride_h", "stride_w", "dilation_h", "dilation_w"),
        *_fields("pad_top", "pad_left", "out_h", "out_w", "has_residual"),
        *_fields("pad_value", "clamp_lo", "clamp_hi", kind=_f64),
        *_fields("channels_last"),
    ]


class Int8Desc(ctypes.Structure):
    _fields_ = [("inv_scale", _f64), *_fields("zero_point", "quads")]


class FloatGemmDesc(ctypes.Structure):
    _fields_ = [*_fields("rows", "k", "channels", "has_bias"), *_fields("alpha", "beta", kind=_f64)]


class FloatMaxPoolDesc(ctypes.Structure):
    _fields_ = [*_fields("planes", "height", "width"), *_POOL_WINDOW]


class AvgPoolDesc(ctypes.Structure):
    _fields_ = _fields("batch", "channels", "pixels", "channels_last")


CALL_ARGS = 12  # BITFX_CALL_ARGS
# The entry points a call table may hold (bitfx_run_calls), in the order of enum bitfx_call_kernel.
CALL_KERNELS = (
    "bitfx_pack",
    "bitfx_fill_border",
    "bitfx_binary_conv",
    "bitfx_binary_maxpool",
    "bitfx_float_conv",
    "bitfx_float_maxpool",
    "bitfx_float_conv_maxpool",
    "bitfx_float_gemm",
    "bitfx_int8_conv",
    "bitfx_global_avgpool",
)


class Call(ctypes.Structure):
    """One entry of a call table (bitfx_call): the entry point's index in CALL_KERNELS and its arguments."""

    _fields_ = [("kernel", _i64), ("args", ctypes.c_void_p * CALL_ARGS)]


def _library_path() -> str:
    override = os.environ.get("BITFX_PACKED_LIBRARY")
    if override:
        if not os.path.isfile(override):
            raise BitfxError(f"BITFX_PACKED_LIBRARY names {override!r}, which is not a file")
        return override
    spec = importlib.util.find_spec("bitfx.backends.packed._kernels")
    if spec is None or spec.origin is None:
        raise BitfxError(
            "the packed runtime's compiled kernels (bitfx.backends.packed._kernels) are missing; "
            "reinstall bitfx with `pip install -e .` (needs a C compiler and the Python headers)"
        )
    return spec.origin


def _pointer(ctype: type) -> type:
    return ctypes.POINTER(ctype)


def status_meaning(status: int) -> str:
    """What a nonzero kernel status means, as the end of a sentence naming the kernel."""
    return _STATUS_MEANING.get(status, f"failed with unknown status {status}")


def _check_status(status: int, function: ctypes._CFuncPtr, arguments: tuple) -> int:
    """ctypes `errcheck` of every kernel entry point: raise on a nonzero status."""
    if status != STATUS_OK:
        raise PackedKernelError(
            f"the packed kernel {function.__name__} {status_meaning(status)}; its output was not written"
        )
    return status


def _load() -> ctypes.CDLL:
    lib = ctypes.CDLL(_library_path())
    element_types = (ctypes.c_uint64, _i64, ctypes.c_int32, ctypes.c_uint32, ctypes.c_float)
    u64, i64, i32, u32, f32 = (_pointer(t) for t in element_types)
    queries = {
        "bitfx_isa_supported": (ctypes.c_int, [_i64]),
        "bitfx_best_isa": (_i64, []),
        "bitfx_set_isa": (ctypes.c_int, [_i64]),
        "bitfx_get_isa": (_i64, []),
        "bitfx_set_threads": (None, [_i64]),
        "bitfx_get_threads": (_i64, []),
        "bitfx_max_threads": (_i64, []),
        "bitfx_popcount_peak": (_f64, [_i64]),
        "bitfx_run_calls": (_status, [_pointer(Call), _i64, _pointer(_i64)]),  # status checked by its caller
    }
    kernels = {
        "bitfx_pack": [_pointer(PackDesc), f32, u64],
        "bitfx_fill_border": [_pointer(PackedGeom), u64, u64],
        "bitfx_binary_conv": [
            _pointer(BinaryConvDesc),
            u64,
            u64,
            i64,
            i64,
            i64,
            f32,
            f32,
            f32,
            i64,
            u32,
            ctypes.c_void_p,
        ],
        "bitfx_binary_maxpool": [_pointer(BinaryMaxPoolDesc), u64, u64],
        "bitfx_float_conv": [_pointer(FloatConvDesc), f32, f32, f32, f32, f32, f32, f32],
        "bitfx_float_maxpool": [_pointer(FloatMaxPoolDesc), f32, f32],
        "bitfx_int8_conv": [
            _pointer(FloatConvDesc),
            _pointer(Int8Desc),
            _pointer(FloatMaxPoolDesc),
            f32,
            _pointer(ctypes.c_int8),
            i32,
            f32,
            f32,
            f32,
        ],
        "bitfx_float_conv_maxpool": [_pointer(FloatConvDesc), _pointer(FloatMaxPoolDesc), f32, f32, f32, f32, f32, f32],
        "bitfx_float_gemm": [_pointer(FloatGemmDesc), f32, f32, f32, f32],
        "bitfx_global_avgpool": [_pointer(AvgPoolDesc), f32, f32],
    }
    for name, (restype, argtypes) in queries.items():
        function = getattr(lib, name)
        function.restype, function.argtypes = restype, argtypes
    for name, argtypes in kernels.items():
        function = getattr(lib, name)
        function.restype, function.argtypes, function.errcheck = _status, argtypes, _check_status
    return lib


lib = _load()


def available_isas() -> list[str]:
    """The instruction sets this CPU can run, slowest first."""
    return [name for index, name in enumerate(ISA_NAMES) if lib.bitfx_isa_supported(index)]


def get_isa() -> str:
    """The instruction set the kernels use now."""
    return ISA_NAMES[lib.bitfx_get_isa()]


def set_isa(name: str | None) -> None:
    """Force an instruction set (`scalar`, `avx2`, `avx512`, `neon`); None picks the best this CPU has."""
    if name is None:
        lib.bitfx_set_isa(lib.bitfx_best_isa())
        return
    if name not in ISA_NAMES:
        raise BitfxError(f"unknown instruction set {name!r}; choose one of {', '.join(ISA_NAMES)}")
    if lib.bitfx_set_isa(ISA_NAMES.index(name)) != 0:
        raise BitfxError(f"this CPU cannot run the {name} kernels; it supports {', '.join(available_isas())}")


def get_threads() -> int:
    """How many threads each kernel call uses."""
    return int(lib.bitfx_get_threads())


MAX_THREADS = 1024
"""The largest thread count `set_threads` accepts (more only adds scheduling overhead)."""


def set_threads(count: int | None) -> None:
    """Threads per kernel call, an integer in 1..`MAX_THREADS`; None restores the default
    (one per core, or OMP_NUM_THREADS)."""
    lib.bitfx_set_threads(0 if count is None else check_thread_count(count))


def check_thread_count(count: object) -> int:
    """`count` as an int when it is an integer (not a bool) in 1..`MAX_THREADS`; else `BitfxError`."""
    if isinstance(count, bool) or not isinstance(count, numbers.Integral):
        raise BitfxError(f"thread count must be an integer (at least 1, at most {MAX_THREADS}), got {count!r}")
    if not 1 <= count <= MAX_THREADS:
        raise BitfxError(f"thread count must be at least 1 and at most {MAX_THREADS}, got {count}")
    return int(count)


def cpu_count() -> int:
    """Cores available to the kernels."""
    return int(lib.bitfx_max_threads())


def _apply_environment() -> None:
    isa = os.environ.get("BITFX_PACKED_ISA")
    if isa:
        set_isa(isa.strip().lower())
    threads = os.environ.get("BITFX_PACKED_THREADS")
    if threads:
        if not threads.strip().isdigit():
            raise BitfxError(f"BITFX_PACKED_THREADS must be a positive integer, got {threads!r}")
        set_threads(int(threads))


_apply_environment()
