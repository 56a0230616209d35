"""The pieces of the gated-pruning and sparse-coding examples: CSC descends with both contenders and
CoGD changes the kernels' path; every gate of a gated ResNet is paired with the conv it scales."""

from __future__ import annotations

import argparse

import torch

from bitfx.ir import capture
from bitfx.ir.gate import gate_nodes
from bitfx.passes import Pipeline
from bitfx.zoo import resnet20
from examples.csc_cogd import photographs, reconstruct, solve
from examples.gate_prune_digits import gated_weights


def test_sparse_coding_descends_with_both_contenders_and_cogd_changes_the_path() -> None:
    x = photographs(16, 2)
    args = argparse.Namespace(kernels=4, support=3, beta=0.02, iterations=6)
    plain, cogd = solve(x, args, 0, cogd=False), solve(x, args, 0, cogd=True)
    for history in (plain, cogd):
        objectives = [objective for objective, _ in history]
        assert objectives[-1] < objectives[0] and all(b <= a * 1.001 for a, b in zip(objectives, objectives[1:]))
    assert plain[-1] != cogd[-1]


def test_circular_reconstruction_of_a_delta_kernel_returns_the_codes() -> None:
    z = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    d = torch.zeros(3, 8, 8, dtype=torch.float64)
    d[:, 0, 0] = 1
    assert torch.allclose(reconstruct(d, z), z.sum(dim=1))


def test_every_gate_is_paired_with_the_conv_whose_channels_it_scales() -> None:
    gm = Pipeline.from_spec("insert_gates").run(capture(resnet20().eval(), torch.randn(1, 3, 8, 8))).graph_module
    pairs = gated_weights(gm)
    assert len(pairs) == len(gate_nodes(gm)) > 0
    assert all(pair.weight.shape[0] == pair.gate.numel() and pair.weight.dim() == 4 for pair in pairs)
