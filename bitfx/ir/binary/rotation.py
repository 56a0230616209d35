"""The bi-rotation of RBNN (Lin et al., "Rotated Binary Neural Network", NeurIPS 2020).

Each filter of a layer (n = C_in·kh·kw weights, standardised) is seen as an a×b matrix X_i,
a the largest divisor of n with a ≤ √n. One pair of orthogonal matrices R1 (a×a), R2 (b×b)
is shared by all filters; the rotated filter is R1ᵀ X_i R2, i.e. the Kronecker rotation
(R1 ⊗ R2) of the flattened filter. R1 and R2 are chosen to bring the rotated filters close
to their signs: they minimise

    E(R1, R2) = Σ_i ‖sign(R1ᵀ X_i R2) − R1ᵀ X_i R2‖²

by alternating three exact minimisations (each an orthogonal Procrustes problem solved by
one SVD), so no step can increase E:

    B_i = sign(R1ᵀ X_i R2)
    D1  = Σ_i B_i R2ᵀ X_iᵀ = U S Vᵀ   →  R1 = V Uᵀ
    D2  = Σ_i X_iᵀ R1 B_i  = U S Vᵀ   →  R2 = U Vᵀ

The exact statement is in the RBNN paper (Lin et al., NeurIPS 2020).
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
from torch import Tensor

from bitfx.errors import BitfxError
from bitfx.ir.binary.sign import binary_sign
from bitfx.ir.distributed import is_distributed


def factor_pair(n: int) -> tuple[int, int]:
    """(a, b) with a·b = n and a the largest divisor of n that is at most √n."""
    if n < 1:
        raise ValueError(f"a filter needs at least one weight, got n={n}")
    a = next(d for d in range(math.isqrt(n), 0, -1) if n % d == 0)
    return a, n // a


def random_orthogonal(size: int, generator: torch.Generator, dtype: torch.dtype = torch.float32) -> Tensor:
    """A size×size orthogonal matrix drawn uniformly (Haar measure): the Q of a Gaussian
    matrix's QR decomposition, its columns' signs fixed by R's diagonal."""
    gaussian = torch.randn(size, size, generator=generator, dtype=torch.float64)
    q, r = torch.linalg.qr(gaussian)
    return (q * torch.where(r.diagonal() < 0, -1.0, 1.0)).to(dtype)


def as_filter_matrices(filters: Tensor, a: int, b: int) -> Tensor:
    """C_out×C_in×kh×kw filters (flattened row-major) as C_out a×b matrices."""
    return filters.reshape(filters.shape[0], a, b)


def rotate_filters(matrices: Tensor, left: Tensor, right: Tensor) -> Tensor:
    """R1ᵀ X_i R2 for every filter matrix X_i (C_out×a×b)."""
    return left.t() @ matrices @ right


def binarization_error(matrices: Tensor, left: Tensor, right: Tensor) -> float:
    """E(R1, R2) = Σ_i ‖sign(R1ᵀ X_i R2) − R1ᵀ X_i R2‖², computed in float64."""
    rotated = rotate_filters(matrices.double(), left.double(), right.double())
    return float(((binary_sign(rotated) - rotated) ** 2).sum())


@torch.no_grad()
def procrustes_update(matrices: Tensor, left: Tensor, right: Tensor, iterations: int = 3) -> tuple[Tensor, Tensor]:
    """R1, R2 after `iterations` alternating Procrustes steps from (left, right) on the
    filter matrices X (C_out×a×b, not modified). Computed in float64, returned in left's dtype."""
    x, r1, r2 = matrices.detach().double(), left.double(), right.double()
    for _ in range(iterations):
        signs = binary_sign(rotate_filters(x, r1, r2))
        u, _, vh = torch.linalg.svd((signs @ r2.t() @ x.transpose(1, 2)).sum(0))
        r1 = vh.t() @ u.t()
        u, _, vh = torch.linalg.svd((x.transpose(1, 2) @ r1 @ signs).sum(0))
        r2 = u @ vh
    return r1.to(left.dtype), r2.to(right.dtype)


def broadcast_from_first_rank(*tensors: Tensor) -> None:
    """Overwrite `tensors` on every torch.distributed rank with rank 0's values, in place
    (nothing without an initialised process group). A collective: every rank must call it.
    Tensors whose shapes or dtypes differ between ranks are an error on every rank."""
    if is_distributed():
        layouts: list[object] = [None] * dist.get_world_size()
        dist.all_gather_object(layouts, [(tuple(t.shape), str(t.dtype)) for t in tensors])
        for rank, layout in enumerate(layouts[1:], start=1):
            if layout != layouts[0]:
                raise BitfxError(
                    f"rotation broadcast: rank {rank} holds rotations {layout} where rank 0 holds {layouts[0]}; "
                    "every rank must train the same model"
                )
        for tensor in tensors:
            dist.broadcast(tensor, src=0)
