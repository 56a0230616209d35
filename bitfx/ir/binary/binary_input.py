"""`BinaryInput`: binary activations in front of a layer whose weights stay real.

ReActNet trains in two steps: first binary activations with real-valued weights, then both
binary, starting from the first step's weights. `binarize(weights=real)` expresses the first
step by putting a `BinaryInput` (holding the scheme's activation quantizer, e.g. RSign) in
front of each selected float Conv2d / Linear; a later `binarize` that makes such a layer binary
moves the quantizer into the binary layer, so its learned thresholds are carried over.

A float layer reading ±1 activations has no binary deployed form: the packed runtime's binary
ops need 1-bit weights, and a float lowering would compute sign(0) = 0 where bitfx computes +1.
The ONNX lowerings therefore refuse a graph that still holds a `BinaryInput`.
"""

from __future__ import annotations

from torch import Tensor, nn


class BinaryInput(nn.Module):
    """sign(x) (through `quantizer`, with its estimator) feeding a layer whose weights are real."""

    bitfx_leaf = True

    def __init__(self, quantizer: nn.Module) -> None:
        super().__init__()
        self.quantizer = quantizer

    def forward(self, x: Tensor) -> Tensor:
        return self.quantizer(x)
