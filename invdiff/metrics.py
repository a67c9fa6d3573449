r"""Image-quality metrics in fastMRI's conventions (``fastmri/evaluate.py``).

* NMSE :math:`\|x - \hat x\|^2 / \|x\|^2`;
* PSNR with the data range set to the reference's maximum, :math:`10 \log_{10}(\max(x)^2 / \mathrm{MSE})`;
* SSIM with the same data range, a 7 × 7 uniform window, :math:`K_1 = 0.01`, :math:`K_2 = 0.03`
  and sample covariances (``skimage.metrics.structural_similarity`` with ``data_range=max(x)``),
  computed per 2D slice and averaged.

All take ``(..., H, W)`` real arrays (magnitude images for complex data) and reduce over every
sample; pass one volume at a time to get fastMRI's per-volume values.

For distributions, :func:`sliced_wasserstein` compares two sample sets (exact-posterior benchmark).
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.ndimage import uniform_filter


def _np(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    x = np.asarray(x)
    if np.iscomplexobj(x):
        raise ValueError("metrics: expected real (magnitude) images, got complex values")
    return x.astype(np.float64)


def _check(gt: np.ndarray, pred: np.ndarray) -> None:
    if gt.shape != pred.shape:
        raise ValueError(f"pred: expected the shape of gt {gt.shape}, got {pred.shape}")


def nmse(gt, pred) -> float:
    """Normalised mean squared error, :math:`\\|gt - pred\\|^2 / \\|gt\\|^2`."""
    gt, pred = _np(gt), _np(pred)
    _check(gt, pred)
    return float(np.linalg.norm(gt - pred) ** 2 / np.linalg.norm(gt) ** 2)


def psnr(gt, pred, data_range: float | None = None) -> float:
    """Peak signal-to-noise ratio in dB with ``data_range`` defaulting to ``gt.max()``."""
    gt, pred = _np(gt), _np(pred)
    _check(gt, pred)
    data_range = float(gt.max()) if data_range is None else data_range
    mse = float(np.mean((gt - pred) ** 2))
    return float("inf") if mse == 0 else float(10 * np.log10(data_range**2 / mse))


def ssim(gt, pred, data_range: float | None = None, win_size: int = 7) -> float:
    """Mean structural similarity over the 2D slices, ``data_range`` defaulting to ``gt.max()``."""
    gt, pred = _np(gt), _np(pred)
    _check(gt, pred)
    if gt.ndim < 2 or min(gt.shape[-2:]) < win_size:
        raise ValueError(f"gt: expected images of at least {win_size}x{win_size}, got shape {gt.shape}")
    data_range = float(gt.max()) if data_range is None else data_range
    gt2, pred2 = gt.reshape(-1, *gt.shape[-2:]), pred.reshape(-1, *pred.shape[-2:])
    return float(np.mean([_ssim2d(a, b, data_range, win_size) for a, b in zip(gt2, pred2)]))


def _ssim2d(x: np.ndarray, y: np.ndarray, data_range: float, win_size: int) -> float:
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    n = win_size**2
    cov_norm = n / (n - 1)

    def mean(a):
        return uniform_filter(a, size=win_size, mode="reflect")

    # 1. Local means, variances and covariance (sample statistics).
    ux, uy = mean(x), mean(y)
    vx = cov_norm * (mean(x * x) - ux * ux)
    vy = cov_norm * (mean(y * y) - uy * uy)
    vxy = cov_norm * (mean(x * y) - ux * uy)
    # 2. The SSIM map, averaged away from the borders the window cannot cover.
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux**2 + uy**2 + c1) * (vx + vy + c2))
    pad = (win_size - 1) // 2
    return float(s[pad:-pad, pad:-pad].mean())


def sliced_wasserstein(
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    projections: int,
    generator: torch.Generator | None,
    p: int = 2,
) -> float:
    r"""Sliced Wasserstein distance between the empirical distributions of two sample sets.

    .. math::
        SW_p(\mu, \nu) = \Big(\frac1P \sum_{l=1}^P W_p^p(\theta_l \# \mu,\ \theta_l \# \nu)\Big)^{1/p},

    with ``P`` directions :math:`\theta_l` uniform on the unit sphere, drawn from ``generator``
    (the same generator state gives the same directions, so distances to a common reference
    share their Monte Carlo error). Each 1D :math:`W_p^p` is exact for uniform weights and any
    two sample sizes: :math:`\int_0^1 |F^{-1}(t) - G^{-1}(t)|^p\,dt` over the merged quantile
    breakpoints :math:`\{i/N\} \cup \{j/M\}`. In one dimension the directions are
    :math:`\pm 1` and the result is :math:`W_p` itself.

    Args:
        x: ``(N, ...)`` samples, flattened per sample.
        y: ``(M, ...)`` samples with the same number of elements per sample.
        projections: the number of directions ``P``.
        generator: the source of the directions.
        p: the order, ``>= 1``.

    Returns:
        :math:`SW_p`, in float64.
    """
    x, y = x.reshape(x.shape[0], -1).double(), y.reshape(y.shape[0], -1).double()
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"y: expected {x.shape[1]} elements per sample like x, got {y.shape[1]}")
    if x.shape[0] < 1 or y.shape[0] < 1:
        raise ValueError(f"x, y: expected non-empty sample sets, got {x.shape[0]} and {y.shape[0]} samples")
    if int(projections) != projections or projections < 1:
        raise ValueError(f"projections: expected a positive integer, got {projections}")
    if not p >= 1:
        raise ValueError(f"p: expected p >= 1, got {p}")
    n, m = x.shape[0], y.shape[0]
    # 1. Directions uniform on the sphere; sorted projections are the 1D quantile functions.
    theta = torch.randn(x.shape[1], int(projections), generator=generator, dtype=torch.float64)
    theta = (theta / theta.norm(dim=0, keepdim=True)).to(x.device)
    px, _ = torch.sort(x @ theta, dim=0)
    py, _ = torch.sort(y @ theta, dim=0)
    # 2. Merged breakpoints t = k / (n m) as integers k, so that ties are exact.
    ks = torch.unique(torch.cat([torch.arange(1, n + 1) * m, torch.arange(1, m + 1) * n])).to(x.device)
    widths = torch.diff(ks, prepend=ks.new_zeros(1)).double() / (n * m)
    ix, iy = (ks + m - 1) // m - 1, (ks + n - 1) // n - 1
    # 3. W_p^p per direction, then the mean over directions.
    wpp = (widths[:, None] * (px[ix] - py[iy]).abs().pow(p)).sum(0)
    return float(wpp.mean() ** (1 / p))


METRICS = {"psnr": psnr, "ssim": ssim, "nmse": nmse}
