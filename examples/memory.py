"""Peak memory of a runtime running one ONNX file, measured in a fresh process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

# Runs in a fresh interpreter: imports only the runtime (never torch), loads the file, runs five
# batch-1 inferences at one thread, and prints the RSS after the imports and the peak RSS (MB).
_PROBE = """
import sys
import numpy as np

def rss_mb(field):
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(field)) / 1024

kind, path, shape = sys.argv[1], sys.argv[2], tuple(int(v) for v in sys.argv[3].split(","))
x = np.random.default_rng(0).normal(size=shape).astype(np.float32)
if kind == "packed":
    from bitfx.backends.packed import PackedModel
    before = rss_mb("VmRSS")
    model = PackedModel(path, threads=1)
    run = lambda: model.run([x])
else:
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    before = rss_mb("VmRSS")
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    run = lambda: session.run(None, {session.get_inputs()[0].name: x})
for _ in range(5):
    run()
print(before, rss_mb("VmHWM"))
"""


def peak_memory_mb(kind: str, path: Path, shape: tuple[int, ...]) -> dict[str, float]:
    """Peak RSS (VmHWM, Linux) of a fresh process that loads `path` in the packed runtime
    (`kind="packed"`) or onnxruntime (`"ort"`) and runs an input of `shape` five times, and how
    much it grew over the RSS after its imports (the model's own share)."""
    result = subprocess.run(
        [sys.executable, "-c", _PROBE, kind, str(path), ",".join(map(str, shape))],
        capture_output=True,
        text=True,
        check=True,
    )
    before, peak = (float(v) for v in result.stdout.split())
    return {"peak_rss_mb": peak, "model_rss_mb": peak - before}
