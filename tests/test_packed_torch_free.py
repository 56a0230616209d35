"""The packed runtime imports and runs with torch made unimportable."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
from packed_models import NetBuilder

BLOCK_TORCH_AND_RUN = """
import importlib.abc, sys

class NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError(f"torch is blocked in this test ({name})")

sys.meta_path.insert(0, NoTorch())
import numpy as np
from bitfx.backends.packed import load

model = load(sys.argv[1])
outputs = model.run([np.load(sys.argv[2])])
np.save(sys.argv[3], outputs[0])
loaded = sorted(m for m in sys.modules if m == "torch" or m.startswith("torch."))
assert not loaded, loaded
print("ran without torch")
"""


def test_runtime_imports_and_runs_without_torch(tmp_path) -> None:
    b = NetBuilder((1, 3, 10, 10), seed=7)
    h = b.op("Relu", [b.conv("x", 3, 16, 3, pad=1)])
    h = b.binary_conv(h, 16, 32, stride=2)
    h = b.op("Relu", [h])
    h = b.binary_conv(h, 32, 32)
    logits = b.op("Flatten", [b.op("GlobalAveragePool", [h])])
    model, twin = b.build([logits])
    onnx.save(model, str(tmp_path / "m.onnx"))
    x = b.input(2)
    np.save(tmp_path / "x.npy", x)
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            BLOCK_TORCH_AND_RUN,
            str(tmp_path / "m.onnx"),
            str(tmp_path / "x.npy"),
            str(tmp_path / "y.npy"),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert "ran without torch" in result.stdout
    expected = ort.InferenceSession(twin.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())
