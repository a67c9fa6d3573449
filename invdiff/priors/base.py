r"""The denoiser convention every prior is adapted to.

A denoiser maps a noisy image and its noise level to the posterior mean of the clean image,

.. math:: D(x, \sigma) = \mathbb E[x_0 \mid x], \qquad x = x_0 + \sigma n,\ n \sim \mathcal N(0, I),

the variance-exploding form of EDM (Karras et al. 2022). Its score is
:math:`\nabla \log p_\sigma(x) = (D(x, \sigma) - x) / \sigma^2`. Samplers see nothing else: no
timestep indices, no ``t * 999``, no ``[-1, 1]`` range conversions; adapters for networks
trained otherwise (variance-preserving ε/x0/v prediction on discrete timesteps) live in
:mod:`invdiff.priors.adapters`.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def as_sigma(sigma: Tensor | float, x: Tensor) -> Tensor:
    """``sigma`` as a ``(B,)`` tensor on ``x``'s device, in ``x``'s real dtype.

    Args:
        sigma: a float, a 0-d tensor or a ``(B,)`` tensor of noise levels.
        x: the batch, ``(B, ...)``.
    """
    sigma = torch.as_tensor(sigma, device=x.device, dtype=x.real.dtype if x.is_complex() else x.dtype)
    if sigma.ndim == 0:
        return sigma.expand(x.shape[0])
    if sigma.shape != (x.shape[0],):
        raise ValueError(f"sigma: expected a scalar or shape ({x.shape[0]},), got {tuple(sigma.shape)}")
    return sigma


class Denoiser(nn.Module):
    r"""Base class: ``forward(x, sigma) -> x0_hat``, :math:`\mathbb E[x_0 \mid x_0 + \sigma n = x]`.

    Attributes:
        shape: ``(C, H, W)`` of the images the prior models, or ``None`` when it takes any size.
        sigma_min: the smallest noise level the prior was trained for.
        sigma_max: the largest noise level the prior was trained for.
    """

    shape: tuple[int, int, int] | None = None
    sigma_min: float = 0.002
    sigma_max: float = 80.0

    def forward(self, x: Tensor, sigma: Tensor | float) -> Tensor:
        raise NotImplementedError

    def score(self, x: Tensor, sigma: Tensor | float) -> Tensor:
        r""":math:`\nabla_x \log p_\sigma(x) = (D(x, \sigma) - x) / \sigma^2`."""
        s = as_sigma(sigma, x).view(-1, *([1] * (x.ndim - 1)))
        return (self(x, sigma) - x) / s.square()
