"""Measurement noise models, and the noise level of measured k-space.

Noise is separate from the operator and always takes a generator.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from operators.base import check_finite


class GaussianNoise:
    r"""Additive white Gaussian noise, :math:`y = z + \sigma n`.

    For complex ``z`` the noise is circular, :math:`\mathbb E|n|^2 = 1` (real and imaginary
    parts each of variance 1/2), the convention of ``torch.randn`` for complex dtypes.

    Args:
        sigma: the standard deviation, ``>= 0``.
    """

    def __init__(self, sigma: float):
        if not 0 <= sigma < math.inf:
            raise ValueError(f"sigma: expected a finite, non-negative standard deviation, got {sigma}")
        self.sigma = float(sigma)

    def __call__(self, z: Tensor, *, generator: torch.Generator | None) -> Tensor:
        n = torch.randn(z.shape, dtype=z.dtype, device=z.device, generator=generator)
        return z + self.sigma * n

    def __repr__(self) -> str:
        return f"GaussianNoise(sigma={self.sigma})"


class PoissonNoise:
    r"""Poisson (photon-counting) noise.

    With ``normalize=True`` (default) returns :math:`y = \mathrm{Poisson}(N z) / N`, an unbiased
    estimate of ``z`` whose variance ``z / N`` shrinks as the photon count ``N`` grows; with
    ``normalize=False`` returns the counts :math:`\mathrm{Poisson}(N z)`.

    Args:
        photons: the photon count (gain) ``N > 0``.
        normalize: divide the counts by ``N``.
    """

    def __init__(self, photons: float, *, normalize: bool = True):
        if not 0 < photons < math.inf:
            raise ValueError(f"photons: expected a finite, positive photon count, got {photons}")
        self.photons = float(photons)
        self.normalize = normalize

    def __call__(self, z: Tensor, *, generator: torch.Generator | None) -> Tensor:
        if z.is_complex():
            raise ValueError(f"z: Poisson noise needs a real, non-negative tensor, got dtype {z.dtype}")
        if bool((z < 0).any()):
            raise ValueError("z: Poisson noise needs non-negative rates, got negative values")
        counts = torch.poisson(self.photons * z, generator=generator)
        return counts / self.photons if self.normalize else counts

    def __repr__(self) -> str:
        return f"PoissonNoise(photons={self.photons}, normalize={self.normalize})"


def estimate_kspace_noise_std(kspace: Tensor, mask: Tensor | None = None, *, band: float = 0.125) -> float:
    r"""The noise level :math:`s` of measured k-space, from its high readout frequencies.

    For complex circular Gaussian noise with :math:`\mathbb E|n|^2 = s^2` (the convention of
    :class:`GaussianNoise`), :math:`|n|` is Rayleigh with median :math:`s \sqrt{\ln 2}`. The
    outer ``band`` fraction of readout rows at each end (rows are dim -2; the highest readout
    frequencies carry little signal) of the sampled samples gives

    .. math:: \hat s = \operatorname{median}|y| / \sqrt{\ln 2},

    pooled over coils and any leading dimensions (slices). The median shrugs off the few samples
    where signal remains; what signal is left biases the estimate upwards. Scaling ``kspace`` by
    ``c`` scales the estimate by ``|c|``.

    Args:
        kspace: centred k-space, ``(..., C, H, W)`` complex, zero-filled where not sampled.
        mask: real sampling mask broadcastable against ``kspace``, e.g. ``(W,)``, ``(H, W)`` or
            ``(B, 1, H, W)``; only samples where it is positive count. With ``None``, samples
            that are exactly zero (unsampled) are left out instead.
        band: the fraction of the ``H`` readout rows taken at each end, in ``(0, 0.5]``; at
            least one row and at most ``H // 2`` per end.

    Returns:
        :math:`\hat s`, in ``kspace``'s units.

    Raises:
        ValueError: ``kspace`` is not complex with at least 3 dimensions, ``mask`` does not
            broadcast against it, ``band`` is out of range, no sample is left in the band, or a
            sample in it is NaN or infinite (the median would be NaN).
    """
    if not isinstance(kspace, Tensor):
        raise ValueError(f"kspace: expected a torch.Tensor, got {type(kspace).__name__}")
    if not kspace.is_complex() or kspace.ndim < 3:
        raise ValueError(
            f"kspace: expected complex (..., C, H, W), got dtype {kspace.dtype} "
            f"and shape {tuple(kspace.shape)}"
        )
    if not 0 < band <= 0.5:
        raise ValueError(f"band: expected a fraction of the readout rows in (0, 0.5], got {band}")
    H = kspace.shape[-2]
    rows = max(1, min(round(band * H), H // 2))
    # 1. Which samples count: sampled (mask > 0) or, without a mask, non-zero.
    if mask is None:
        keep = kspace != 0
    else:
        if not isinstance(mask, Tensor) or mask.is_complex():
            got = mask.dtype if isinstance(mask, Tensor) else type(mask).__name__
            raise ValueError(f"mask: expected a real tensor, got {got}")
        try:
            keep = torch.broadcast_to(mask.to(kspace.device) > 0, kspace.shape)
        except RuntimeError as err:
            raise ValueError(
                f"mask: expected a shape broadcastable against kspace {tuple(kspace.shape)}, "
                f"got {tuple(mask.shape)}"
            ) from err
    # 2. The outer rows at both ends.
    outer = torch.cat([kspace[..., :rows, :], kspace[..., H - rows :, :]], dim=-2)
    keep = torch.cat([keep[..., :rows, :], keep[..., H - rows :, :]], dim=-2)
    magnitudes = outer.detach().abs()[keep]
    if magnitudes.numel() == 0:
        raise ValueError(
            f"kspace: no sampled, non-zero sample in the outer {rows} readout rows at each end "
            f"(band={band}), nothing to estimate the noise from"
        )
    check_finite(magnitudes, f"kspace (the {magnitudes.numel()} samples of the outer readout rows)")
    return float(magnitudes.double().median()) / math.sqrt(math.log(2))
