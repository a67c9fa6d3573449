"""Denoising quality of the shipped priors on held-out data, against classical denoisers.

For each noise level, every held-out image gets Gaussian noise (seeded) and is denoised by
the prior's ``D(x, sigma)``, by total-variation denoising (Chambolle; its weight tuned per noise
level on validation images from a grid) and by the exact Wiener filter of a low-rank Gaussian
fitted to the same training images. PSNR is computed on display images (magnitudes for
complex data) with the clean image's maximum as the data range, and averaged.
"""

from __future__ import annotations

import numpy as np
import torch

from invdiff.benchmarks.common import markdown_table

TV_WEIGHTS = (0.01, 0.02, 0.04, 0.08, 0.15, 0.3, 0.6)


def _display(x: torch.Tensor) -> torch.Tensor:
    return torch.hypot(x[:, 0], x[:, 1]) if x.shape[1] == 2 else x[:, 0]


def _psnr(clean: torch.Tensor, estimate: torch.Tensor) -> float:
    from invdiff.metrics import psnr

    a, b = _display(clean), _display(estimate)
    return float(np.mean([psnr(a[i], b[i]) for i in range(a.shape[0])]))


def _tv(noisy: torch.Tensor, weight: float) -> torch.Tensor:
    from skimage.restoration import denoise_tv_chambolle

    arr = noisy.numpy().astype(np.float64)
    out = np.stack([denoise_tv_chambolle(im, weight=weight, channel_axis=0) for im in arr])
    return torch.from_numpy(out).float()


def _noisy(x: torch.Tensor, sigma: float, seed: int) -> torch.Tensor:
    return x + sigma * torch.randn(x.shape, generator=torch.Generator().manual_seed(seed))


def evaluate_prior(name: str, dataset: str, sigmas: list[float], count: int, rank: int) -> list[dict]:
    from invdiff.data.datasets import load_split
    from invdiff.priors.gaussian import fit_low_rank_gaussian
    from invdiff.priors.packaged import load_packaged

    prior = load_packaged(name)
    test = torch.from_numpy(np.asarray(load_split(dataset, "test")[:count], dtype=np.float32))
    val = torch.from_numpy(np.asarray(load_split(dataset, "val")[: max(8, count // 4)], dtype=np.float32))
    train = load_split(dataset, "train")
    pick = np.linspace(0, train.shape[0] - 1, min(train.shape[0], 3000)).astype(int)
    wiener = fit_low_rank_gaussian(torch.from_numpy(np.asarray(train[pick], dtype=np.float32)), rank)
    rows = []
    for k, sigma in enumerate(sigmas):
        noisy = _noisy(test, sigma, seed=k)
        noisy_val = _noisy(val, sigma, seed=100 + k)
        weight = max(TV_WEIGHTS, key=lambda w: _psnr(val, _tv(noisy_val, w)))
        with torch.no_grad():
            ours = torch.cat([prior(noisy[i : i + 16], sigma) for i in range(0, noisy.shape[0], 16)])
        rows.append({
            "prior": name, "sigma": sigma, "noisy": _psnr(test, noisy), "tv": _psnr(test, _tv(noisy, weight)),
            "tv_weight": weight, "wiener": _psnr(test, wiener(noisy, sigma)), "ours": _psnr(test, ours),
        })
    return rows


COLUMNS = [
    ("prior", "prior", "s"),
    ("sigma", "sigma", ".2f"),
    ("noisy", "noisy input", ".2f"),
    ("tv", "TV (tuned)", ".2f"),
    ("wiener", "Gaussian/Wiener (rank 256)", ".2f"),
    ("ours", "trained prior D(x, sigma)", ".2f"),
]


def denoising_benchmark(*, priors: dict[str, str], sigmas: list[float], count: int, rank: int, threads: int) -> str:
    """PSNR (dB) per noise level for each shipped prior; ``priors`` maps names to dataset folders."""
    torch.set_num_threads(threads)
    rows = [row for name, dataset in priors.items() for row in evaluate_prior(name, dataset, sigmas, count, rank)]
    return "\n".join([
        f"### Denoising PSNR (dB) on held-out test images ({count} per prior), data in [0, 1]",
        "",
        markdown_table(rows, COLUMNS),
    ])
