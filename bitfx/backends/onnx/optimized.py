"""What onnxruntime actually runs: the op counts of its optimized graph.

onnxruntime rewrites a model when it loads it (for example fusing
DequantizeLinear → Conv → QuantizeLinear into QLinearConv). Whether integer kernels run is
only visible in that optimized graph, so lowering styles report its op counts.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from bitfx.backends.onnx.inspect import op_counts
from bitfx.backends.onnx.session import load_model, session


def optimized_op_counts(path: str | Path) -> dict[str, int]:
    """Op counts of the graph onnxruntime (CPU, all optimizations) builds from `path`."""
    with tempfile.TemporaryDirectory() as tmp:
        optimized = Path(tmp) / "optimized.onnx"
        session(path, optimized_model_path=optimized)
        return op_counts(load_model(optimized))
