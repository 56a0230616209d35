"""RBNN under DistributedDataParallel (2 CPU processes, gloo): after every rotation update all
ranks hold the same R1, R2 — rank 0's — even when the ranks' rotations had drifted apart and
DDP does not broadcast buffers."""

from __future__ import annotations

from pathlib import Path

import torch
from distributed import run_on_two_ranks
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from bitfx.ir import capture
from bitfx.ir.binary import RotatedBinaryConv2d
from bitfx.ir.binary.rotation import procrustes_update, random_orthogonal
from bitfx.passes import Pipeline
from bitfx.train import after_optimizer_step, on_epoch_start

EPOCHS = 2


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 12, 3, padding=1), nn.BatchNorm2d(12), nn.ReLU(),
        nn.Conv2d(12, 12, 3, padding=1), nn.BatchNorm2d(12), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(12, 10),
    ).eval()  # fmt: skip


def _rotated_layers(model: nn.Module) -> dict[str, RotatedBinaryConv2d]:
    return {name: m for name, m in model.named_modules() if isinstance(m, RotatedBinaryConv2d)}


def _rotations(model: nn.Module) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    return {
        name: (m.weight_quantizer.left_rotation.clone(), m.weight_quantizer.right_rotation.clone())
        for name, m in _rotated_layers(model).items()
    }


def _on_rank(rank: int) -> dict:
    student = Pipeline.from_spec("binarize,rotate").run(capture(_model(), torch.zeros(2, 1, 8, 8))).graph_module.train()
    ddp = DistributedDataParallel(student, broadcast_buffers=False)
    if rank == 1:  # a rank whose rotations drifted (another seed, another checkpoint, another BLAS)
        generator = torch.Generator().manual_seed(99)
        for layer in _rotated_layers(student).values():
            q = layer.weight_quantizer
            q.left_rotation.copy_(random_orthogonal(q.shape[0], generator))
            q.right_rotation.copy_(random_orthogonal(q.shape[1], generator))
    optimizer = torch.optim.Adam(ddp.parameters(), lr=1e-2)
    data = torch.Generator().manual_seed(100 + rank)  # each rank trains on its own shard
    record = {"before": [], "local_update": [], "after": []}
    for epoch in range(EPOCHS):
        record["before"].append(_rotations(student))
        record["local_update"].append(
            {  # what this rank alone would compute
                name: procrustes_update(
                    layer.weight_quantizer.filter_matrices(layer.weight),
                    *record["before"][-1][name],
                    layer.weight_quantizer.iterations,
                )
                for name, layer in _rotated_layers(student).items()
            }
        )
        on_epoch_start(ddp, epoch, EPOCHS)
        record["after"].append(_rotations(student))
        for _ in range(3):
            images, labels = torch.randn(4, 1, 8, 8, generator=data), torch.randint(0, 10, (4,), generator=data)
            optimizer.zero_grad()
            nn.functional.cross_entropy(ddp(images), labels).backward()
            optimizer.step()
            after_optimizer_step(ddp)
    student.eval()
    record["signs"] = {name: layer.deploy_tensors()[0] for name, layer in _rotated_layers(student).items()}
    record["parameters"] = {name: p.detach().clone() for name, p in student.named_parameters()}
    return record


def test_every_rank_holds_rank_zeros_rotations_after_each_update(tmp_path: Path) -> None:
    first, second = run_on_two_ranks(_on_rank, tmp_path)
    assert set(first["after"][0]) == {"3", "6"}
    for name in first["after"][0]:
        assert not torch.equal(first["before"][0][name][0], second["before"][0][name][0])  # the ranks did disagree
        for epoch in range(EPOCHS):
            for index in range(2):  # R1, R2
                ours, theirs = first["after"][epoch][name][index], second["after"][epoch][name][index]
                assert torch.equal(ours, theirs), (name, epoch, index)
                assert torch.equal(ours, first["local_update"][epoch][name][index])  # rank 0's update, not rank 1's:
        assert not torch.equal(second["after"][0][name][0], second["local_update"][0][name][0])
        assert torch.equal(first["signs"][name], second["signs"][name])
    for name, value in first["parameters"].items():
        assert torch.equal(value, second["parameters"][name]), name
