"""The packed-bit runtime: XNOR/popcount kernels (C, chosen per CPU at load) and a torch-free
executor for ONNX files lowered with the `custom` style (docs/packed-runtime.md).

    from bitfx.backends.packed import load
    model = load("m.onnx")           # checks every op, prepares the kernels
    logits, = model.run([x])          # numpy in, numpy out

Importing this package never imports torch.
"""

from bitfx.backends.packed._native import available_isas, cpu_count, get_isa, get_threads, set_isa, set_threads
from bitfx.backends.packed.compiler import supported_ops
from bitfx.backends.packed.errors import PackedKernelError, PackedModelError
from bitfx.backends.packed.executor import PackedModel, load
from bitfx.backends.packed.kernels import popcount_peak
from bitfx.backends.packed.program import CompileReport

__all__ = [
    "CompileReport",
    "PackedKernelError",
    "PackedModel",
    "PackedModelError",
    "available_isas",
    "cpu_count",
    "get_isa",
    "get_threads",
    "load",
    "popcount_peak",
    "set_isa",
    "set_threads",
    "supported_ops",
]
