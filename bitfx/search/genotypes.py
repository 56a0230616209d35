"""Released genotypes, as data.

- `DARTS_V2`: the DARTS (second order) CIFAR-10 cells, from the DARTS authors' release;
  published size 3.3 M parameters at 36 channels, 20 layers.
- `BNAS_XNOR_1`: a binarized DARTS-space genotype named after BNAS in the BNAS/CP-NAS authors'
  later evaluation code (its link to the BNAS paper's tables is not stated there).
- `ABANDIT_CIFAR_1`, `ABANDIT_CIFAR_2`: the ABanditNAS CIFAR-10 genotypes (six cells a–f, one
  input per cell, one edge per node), released with its test code (48 channels, 10 layers).
"""

from __future__ import annotations

from bitfx.search.space import CellGene, Genotype


def _darts_cell(pairs: list[tuple[str, int]]) -> CellGene:
    return CellGene(tuple(tuple(pairs[i : i + 2]) for i in range(0, len(pairs), 2)), (2, 3, 4, 5), inputs=2)


def _bandit_cell(edges: list[tuple[str, int]]) -> CellGene:
    return CellGene(tuple((edge,) for edge in edges), (1, 2, 3, 4), inputs=1)


DARTS_V2 = Genotype(
    {
        "normal": _darts_cell(
            [
                ("sep_conv_3x3", 0),
                ("sep_conv_3x3", 1),
                ("sep_conv_3x3", 0),
                ("sep_conv_3x3", 1),
                ("sep_conv_3x3", 1),
                ("skip_connect", 0),
                ("skip_connect", 0),
                ("dil_conv_3x3", 2),
            ]
        ),
        "reduce": _darts_cell(
            [
                ("max_pool_3x3", 0),
                ("max_pool_3x3", 1),
                ("skip_connect", 2),
                ("max_pool_3x3", 1),
                ("max_pool_3x3", 0),
                ("skip_connect", 2),
                ("skip_connect", 2),
                ("max_pool_3x3", 1),
            ]
        ),
    }
)

BNAS_XNOR_1 = Genotype(
    {
        "normal": _darts_cell(
            [
                ("skip_connect", 1),
                ("dil_conv_3x3", 0),
                ("skip_connect", 0),
                ("dil_conv_5x5", 2),
                ("max_pool_3x3", 1),
                ("max_pool_3x3", 0),
                ("dil_conv_5x5", 4),
                ("sep_conv_3x3", 2),
            ]
        ),
        "reduce": _darts_cell(
            [
                ("sep_conv_3x3", 1),
                ("dil_conv_5x5", 0),
                ("skip_connect", 1),
                ("max_pool_3x3", 2),
                ("dil_conv_5x5", 0),
                ("avg_pool_3x3", 3),
                ("skip_connect", 2),
                ("dil_conv_3x3", 4),
            ]
        ),
    }
)

ABANDIT_CIFAR_1 = Genotype(
    {
        "a": _bandit_cell([("conv_3x3", 0), ("gab_filt_3x3", 1), ("sep_conv_3x3", 2), ("dtp_blok_3x3", 1)]),
        "b": _bandit_cell([("avg_pool_3x3", 0), ("gab_filt_3x3", 0), ("sep_conv_5x5", 2), ("conv_3x3", 1)]),
        "c": _bandit_cell([("conv_3x3", 0), ("max_pool_3x3", 0), ("conv_5x5", 0), ("sep_conv_5x5", 3)]),
        "d": _bandit_cell([("dtp_blok_3x3", 0), ("sep_conv_5x5", 1), ("avg_pool_3x3", 2), ("conv_3x3", 3)]),
        "e": _bandit_cell([("dtp_blok_3x3", 0), ("sep_conv_5x5", 1), ("sep_conv_3x3", 1), ("avg_pool_3x3", 3)]),
        "f": _bandit_cell([("gab_filt_3x3", 0), ("conv_3x3", 0), ("dtp_blok_3x3", 1), ("avg_pool_3x3", 2)]),
    },
    layout="sequential",
)

ABANDIT_CIFAR_2 = Genotype(
    {
        "a": _bandit_cell([("dtp_blok_3x3", 0), ("sep_conv_3x3", 0), ("conv_3x3", 1), ("sep_conv_3x3", 3)]),
        "b": _bandit_cell([("conv_5x5", 0), ("gab_filt_3x3", 0), ("max_pool_3x3", 0), ("dtp_blok_3x3", 2)]),
        "c": _bandit_cell([("sep_conv_3x3", 0), ("dtp_blok_3x3", 0), ("max_pool_3x3", 1), ("sep_conv_5x5", 3)]),
        "d": _bandit_cell([("sep_conv_5x5", 0), ("dtp_blok_3x3", 0), ("gab_filt_3x3", 2), ("conv_3x3", 1)]),
        "e": _bandit_cell([("sep_conv_5x5", 0), ("skip_connect", 1), ("sep_conv_5x5", 1), ("sep_conv_5x5", 1)]),
        "f": _bandit_cell([("max_pool_3x3", 0), ("skip_connect", 0), ("sep_conv_5x5", 2), ("gab_filt_3x3", 0)]),
    },
    layout="sequential",
)

RELEASED = {
    "DARTS_V2": DARTS_V2,
    "BNAS_XNOR_1": BNAS_XNOR_1,
    "ABANDIT_CIFAR_1": ABANDIT_CIFAR_1,
    "ABANDIT_CIFAR_2": ABANDIT_CIFAR_2,
}
