"""Measurement noise models. Noise is separate from the operator and always takes a generator."""

from __future__ import annotations

import torch
from torch import Tensor


class GaussianNoise:
    r"""Additive white Gaussian noise, :math:`y = z + \sigma n`.

    For complex ``z`` the noise is circular, :math:`\mathbb E|n|^2 = 1` (real and imaginary
    parts each of variance 1/2), the convention of ``torch.randn`` for complex dtypes.

    Args:
        sigma: the standard deviation, ``>= 0``.
    """

    def __init__(self, sigma: float):
        if not sigma >= 0:
            raise ValueError(f"sigma: expected a non-negative standard deviation, got {sigma}")
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
        if not photons > 0:
            raise ValueError(f"photons: expected a positive photon count, got {photons}")
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
