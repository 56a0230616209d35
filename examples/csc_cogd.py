"""Convolutional sparse coding on scikit-image photographs: alternating gradient descent vs CoGD.

The problem (the one the CoGD authors' released MATLAB solver addresses), for grey images x_n,
kernels d_k (support s×s, ‖d_k‖ ≤ 1, stored zero-padded to the image size) and codes z_nk:

    min_{d, z}  ½ Σ_n ‖x_n − Σ_k d_k ⊛ z_nk‖² + β Σ |z|          (⊛: circular convolution, by FFT)

Each outer iteration takes one ISTA step on z (gradient step of 1/L_z, then soft threshold) and one
gradient step of 1/L_d on d, then projects d (support, unit norm). The two contenders differ only in
the d step: plain SGD (alternating gradient descent) or `bitfx.train.CoGD` pairing d entry by entry
with Σ_n z (`GatedWeight(dim=None)`, the MATLAB `backtracking_d` rule: the α_i share of kernel positions
with the largest Σ_n z have their update drawn back to 1 % of it, α_i = (T − i)/(2T)).

Images: camera, astronaut (grey), coins, moon and text, bundled with scikit-image, resized to
`--size`², scaled to [0, 1], low-pass (9×9 local mean) removed, as CSC is usually run. Reported per
iteration: the objective and the PSNR of the reconstruction of that high-pass signal (peak 1), mean ±
std over seeds (the seed draws the initial kernels; z starts at 0).

    python -m examples.csc_cogd [--quick] [--seeds 3] [--iterations 100] [--kernels 16] [--support 7]
                                [--beta 0.02] [--size 64]
"""

from __future__ import annotations

import argparse
import math
import os
import time

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from bitfx.ir.table import format_table
from bitfx.train import CoGD, GatedWeight
from examples.seeds import mean_std

REPORTED = (1, 2, 5, 10, 20, 50, 100, 200)


def photographs(size: int, count: int) -> Tensor:
    """(count, size, size): bundled grey photographs in [0, 1] minus their 9×9 local mean."""
    import skimage.color
    import skimage.data

    loaders = (
        skimage.data.camera,
        lambda: skimage.color.rgb2gray(skimage.data.astronaut()),
        skimage.data.coins,
        skimage.data.moon,
        skimage.data.text,
    )
    images = []
    for load in loaders[:count]:
        image = torch.as_tensor(load(), dtype=torch.float64)
        image = image / 255 if image.max() > 1 else image
        images.append(F.interpolate(image[None, None], size=(size, size), mode="area")[0, 0])
    batch = torch.stack(images)[:, None]
    low = F.avg_pool2d(F.pad(batch, (4, 4, 4, 4), mode="reflect"), 9, stride=1)
    return (batch - low)[:, 0]


def reconstruct(d: Tensor, z: Tensor) -> Tensor:
    """Σ_k d_k ⊛ z_nk for every image n (circular, by FFT)."""
    size = z.shape[-2:]
    return torch.fft.irfft2((torch.fft.rfft2(d) * torch.fft.rfft2(z)).sum(dim=1), s=size)


def objective(x: Tensor, d: Tensor, z: Tensor, beta: float) -> tuple[float, float]:
    """(objective, PSNR of the reconstruction in dB with peak 1)."""
    residual = x - reconstruct(d, z)
    mse = float(residual.pow(2).mean())
    return float(0.5 * residual.pow(2).sum() + beta * z.abs().sum()), 10 * math.log10(1 / mse)


def project(d: Tensor, support: int) -> None:
    """Zero outside the s×s support, then scale every kernel to norm ≤ 1; in place."""
    with torch.no_grad():
        d[:, support:, :] = 0
        d[:, :, support:] = 0
        d.div_(d.flatten(1).norm(dim=1).clamp(min=1).view(-1, 1, 1))


def solve(x: Tensor, args: argparse.Namespace, seed: int, cogd: bool) -> list[tuple[float, float]]:
    """(objective, PSNR) after each outer iteration."""
    generator = torch.Generator().manual_seed(seed)
    count, size = x.shape[0], x.shape[-2:]
    d = nn.Parameter(torch.zeros(args.kernels, *size, dtype=torch.float64))
    with torch.no_grad():
        d[:, : args.support, : args.support] = torch.randn(
            args.kernels, args.support, args.support, generator=generator, dtype=torch.float64
        )
    project(d, args.support)
    z = nn.Parameter(torch.zeros(count, args.kernels, *size, dtype=torch.float64))
    groups = [{"params": [d]}, {"params": [z]}]
    if cogd:
        optimizer = CoGD(groups, [GatedWeight(d, z, dim=None)], lr=1.0, total_steps=args.iterations)
    else:
        optimizer = torch.optim.SGD(groups, lr=1.0)
    history = []
    for _ in tqdm(range(args.iterations), desc="CoGD" if cogd else "alternating", leave=False):
        spectrum = torch.fft.rfft2(d.detach()).abs().pow(2).sum(dim=0)
        z_step = 1 / float(spectrum.max())
        data_term = 0.5 * (x - reconstruct(d.detach(), z)).pow(2).sum()
        (gradient,) = torch.autograd.grad(data_term, z)
        with torch.no_grad():
            moved = z - z_step * gradient
            z.copy_(moved.sign() * (moved.abs() - z_step * args.beta).clamp(min=0))
        codes = torch.fft.rfft2(z.detach()).abs().pow(2).sum(dim=(0, 1))
        optimizer.param_groups[0]["lr"] = 1 / max(float(codes.max()), 1e-12)
        optimizer.zero_grad()
        (0.5 * (x - reconstruct(d, z.detach())).pow(2).sum()).backward()
        optimizer.step()
        project(d, args.support)
        history.append(objective(x, d.detach(), z.detach(), args.beta))
    return history


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 images of 32², 30 iterations")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--iterations", type=int, default=100)
    parser.add_argument("--images", type=int, default=5)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--kernels", type=int, default=16)
    parser.add_argument("--support", type=int, default=7)
    parser.add_argument("--beta", type=float, default=0.02)
    args = parser.parse_args()
    if args.quick:
        args.images, args.size, args.iterations = 2, 32, 30
    torch.set_num_threads(1)
    start = time.perf_counter()
    x = photographs(args.size, args.images)
    runs = {
        name: [solve(x, args, seed, cogd) for seed in range(args.seeds)]
        for name, cogd in (("alternating GD", False), ("CoGD", True))
    }
    rows = []
    for step in (s for s in REPORTED if s <= args.iterations):
        row = [str(step)]
        for histories in runs.values():
            row.append(mean_std([h[step - 1][0] for h in histories], digits=2))
            row.append(mean_std([h[step - 1][1] for h in histories], digits=2))
        rows.append(tuple(row))
    print(
        f"CSC on {args.images} scikit-image photographs {args.size}², {args.kernels} kernels "
        f"{args.support}×{args.support}, β={args.beta:g}; mean ± std over {args.seeds} seeds"
    )
    print(
        format_table(
            ("iteration", "objective (alt. GD)", "PSNR dB (alt. GD)", "objective (CoGD)", "PSNR dB (CoGD)"),
            rows,
            (True, True, True, True, True),
        )
    )
    print(f"load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}; {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
