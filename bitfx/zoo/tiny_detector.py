"""A tiny one-level anchor-free detector (CenterNet-style) and its box encoding.

The network is a small CNN backbone down to one stride-4 feature map (the IFF pass's feature
node; `iff_spec` names it in a captured graph) and a head on that map: a class tower (3×3 conv + ReLU)
and a 3×3 class-score conv (`cls`: one logit per class and location), and a 3×3 box-regression
conv (`reg`). It returns (class logits, box regression), both maps of the feature map's size, so
`iff(features=backbone_4_2, outputs=cls+reg)` applies to it.

Box encoding (one class, each object owned by the location of its centre): the heatmap target
is a Gaussian around each object's centre cell (σ = max(0.5, side / stride / 6) cells, 1 at the
centre cell), learnt with CenterNet's penalty-reduced focal loss; the regression at the centre
cell is (dx, dy, log(w / stride), log(h / stride)), with (dx, dy) the centre's offset in its
cell, learnt with an L1 loss. Ignored and uncertain ground truth is masked out of the heatmap loss
over its box. Decoding runs outside the traced graph (numpy): sigmoid scores, CenterNet's 3×3
max-pool peak extraction in place of NMS, the `top_k` best peaks per image.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, fx, nn

STRIDE = 4
PRIOR = 0.05


def _conv_bn_relu(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())


class TinyDetector(nn.Module):
    """Backbone to a stride-4 map, then a class head and a box head that read only that map."""

    def __init__(self, width: int = 32, in_channels: int = 1, num_classes: int = 1) -> None:
        super().__init__()
        self.backbone = nn.Sequential(
            _conv_bn_relu(in_channels, width // 2),
            _conv_bn_relu(width // 2, width, 2),
            _conv_bn_relu(width, width),
            _conv_bn_relu(width, width, 2),
            _conv_bn_relu(width, width),
        )
        self.cls_tower = nn.Sequential(nn.Conv2d(width, width, 3, padding=1), nn.ReLU())
        self.cls = nn.Conv2d(width, num_classes, 3, padding=1)
        self.reg = nn.Conv2d(width, 4, 3, padding=1)
        nn.init.constant_(self.cls.bias, float(np.log(PRIOR / (1 - PRIOR))))
        self.example_input_shape = (1, in_channels, 64, 64)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        features = self.backbone(x)
        return self.cls(self.cls_tower(features)), self.reg(features)


def tiny_detector(width: int = 32, in_channels: int = 1) -> TinyDetector:
    """The zoo's tiny anchor-free detector for `bitfx.zoo.tiny_objects` (one class, 64 × 64 gray input)."""
    return TinyDetector(width, in_channels)


def iff_spec(gm: fx.GraphModule, activation: str = "leaky_relu", init: str = "zero") -> str:
    """The `iff` pass spec for a captured (possibly rewritten) detector: its feature node is whatever
    feeds the box conv `reg` (a pass such as `binarize` may have removed the ReLU that ended the backbone)."""
    (features,) = next(n for n in gm.graph.nodes if n.op == "call_module" and n.target == "reg").all_input_nodes
    return f"iff(features={features.name}, outputs=cls+reg, activation={activation}, init={init})"


def targets(truths: Sequence, height: int, width: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Training targets at stride 4 for a batch of ground truths (objects with `boxes`, `ignore`,
    `uncertain`): heatmap (N×1×h×w), heatmap-loss mask, regression (N×4×h×w), centre-cell mask."""
    h, w = height // STRIDE, width // STRIDE
    heat, mask = torch.zeros(len(truths), 1, h, w), torch.ones(len(truths), 1, h, w)
    regression, centres = torch.zeros(len(truths), 4, h, w), torch.zeros(len(truths), 1, h, w)
    ys, xs = torch.meshgrid(torch.arange(h).float(), torch.arange(w).float(), indexing="ij")
    for i, truth in enumerate(truths):
        for (bx, by, bw, bh), skip in zip(truth.boxes, truth.ignore | truth.uncertain):
            if skip:
                rows = slice(int(by // STRIDE), math.ceil((by + bh) / STRIDE))
                mask[i, 0, rows, int(bx // STRIDE) : math.ceil((bx + bw) / STRIDE)] = 0
                continue
            cx, cy = (bx + bw / 2) / STRIDE, (by + bh / 2) / STRIDE
            col, row = min(int(cx), w - 1), min(int(cy), h - 1)
            sigma = max(0.5, max(bw, bh) / STRIDE / 6)
            gaussian = torch.exp(-((xs - col) ** 2 + (ys - row) ** 2) / (2 * sigma**2))
            heat[i, 0] = torch.maximum(heat[i, 0], gaussian)
            regression[i, :, row, col] = torch.tensor(
                [cx - col, cy - row, np.log(bw / STRIDE), np.log(bh / STRIDE)], dtype=torch.float32
            )
            centres[i, 0, row, col] = 1
    return heat, torch.maximum(mask, centres), regression, centres


def loss(outputs: tuple[Tensor, Tensor], target: tuple[Tensor, Tensor, Tensor, Tensor]) -> Tensor:
    """CenterNet's penalty-reduced focal loss on the heatmap plus L1 on the centre cells' regression,
    both normalised by the number of objects."""
    logits, regression = outputs
    heat, mask, wanted, centres = target
    p = torch.sigmoid(logits).clamp(1e-4, 1 - 1e-4)
    positive = centres > 0
    focal = torch.where(positive, -((1 - p) ** 2) * torch.log(p), -((1 - heat) ** 4) * p**2 * torch.log(1 - p))
    count = centres.sum().clamp(min=1)
    return (focal * mask).sum() / count + (torch.abs(regression - wanted) * centres).sum() / count


def decode(logits: np.ndarray, regression: np.ndarray, top_k: int = 100) -> list[tuple[np.ndarray, np.ndarray]]:
    """Boxes (x, y, w, h in input pixels) and scores per image from the network's two outputs:
    the `top_k` highest 3×3 local maxima of the sigmoid heatmap (class 0)."""
    scores = 1 / (1 + np.exp(-logits[:, 0].astype(np.float64)))
    n, h, w = scores.shape
    padded = np.pad(scores, ((0, 0), (1, 1), (1, 1)), constant_values=-1)
    neighbours = np.stack([padded[:, dy : dy + h, dx : dx + w] for dy in range(3) for dx in range(3)])
    peaks = scores >= neighbours.max(axis=0)
    out = []
    for i in range(n):
        rows, cols = np.nonzero(peaks[i])
        order = np.argsort(-scores[i, rows, cols], kind="mergesort")[:top_k]
        rows, cols = rows[order], cols[order]
        dx, dy, lw, lh = regression[i][:, rows, cols].astype(np.float64)
        bw, bh = np.exp(lw) * STRIDE, np.exp(lh) * STRIDE
        cx, cy = (cols + dx) * STRIDE, (rows + dy) * STRIDE
        boxes = np.stack([cx - bw / 2, cy - bh / 2, bw, bh], axis=1)
        out.append((boxes, scores[i, rows, cols]))
    return out
