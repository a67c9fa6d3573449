r"""Image-quality metrics in fastMRI's conventions (``fastmri/evaluate.py``).

* NMSE :math:`\|x - \hat x\|^2 / \|x\|^2`;
* PSNR with the data range set to the reference's maximum, :math:`10 \log_{10}(\max(x)^2 / \mathrm{MSE})`;
* SSIM with the same data range, a 7 × 7 uniform window, :math:`K_1 = 0.01`, :math:`K_2 = 0.03`
  and sample covariances (``skimage.metrics.structural_similarity`` with ``data_range=max(x)``),
  computed per 2D slice and averaged.

All take ``(..., H, W)`` real arrays (magnitude images for complex data) and reduce over every
sample; pass one volume at a time to get fastMRI's per-volume values.
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


METRICS = {"psnr": psnr, "ssim": ssim, "nmse": nmse}
