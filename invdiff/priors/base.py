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

import math
import numbers
from collections.abc import Sequence

import torch
from torch import Tensor, nn


def as_sigma(sigma: Tensor | float, x: Tensor) -> Tensor:
    """``sigma`` as a ``(B,)`` tensor on ``x``'s device, in ``x``'s real dtype.

    A Python number is filled in on ``x``'s device: ``torch.as_tensor(0.5, device="cuda")`` would
    copy it from the host, and a blocking copy to the device synchronises with it, once per call.

    Args:
        sigma: a float, a 0-d tensor or a ``(B,)`` tensor of noise levels.
        x: the batch, ``(B, ...)``.
    """
    dtype = x.real.dtype if x.is_complex() else x.dtype
    if isinstance(sigma, numbers.Real):
        return torch.full((x.shape[0],), float(sigma), device=x.device, dtype=dtype)
    sigma = torch.as_tensor(sigma, device=x.device, dtype=dtype)
    if sigma.ndim == 0:
        return sigma.expand(x.shape[0])
    if sigma.shape != (x.shape[0],):
        raise ValueError(f"sigma: expected a scalar or shape ({x.shape[0]},), got {tuple(sigma.shape)}")
    return sigma


class Denoiser(nn.Module):
    r"""Base class: ``forward(x, sigma) -> x0_hat``, :math:`\mathbb E[x_0 \mid x_0 + \sigma n = x]`.

    Attributes:
        shape: ``(C, H, W)`` of the images the prior models (for a network, its training size),
            or ``None`` when it does not say.
        patches: ``shape`` is the size of random windows of larger images the network was trained
            on (patch training, :mod:`invdiff.training`), not of whole images: the prior models
            images of any size at that pixel scale.
        sigma_min: the smallest noise level the prior was trained for.
        sigma_max: the largest noise level the prior was trained for.
        size_multiple: the prior runs at any ``H, W`` that are multiples of this (a UNet with
            ``L`` levels: ``2 ** (L - 1)``); ``None`` when it runs only at exactly ``shape``
            (exact priors of a fixed dimension).
        source: where the prior came from (a checkpoint path, ``"packaged:<name>"``), for error
            messages; ``None`` when unknown.
        data_scale: the network's noise level per unit of the caller's,
            :math:`\sigma_{net} = k \sigma` (adapters that map the caller's data range onto the
            network's set it; 1 otherwise). Discrete schedules of the network are divided by it.
        clip_range: ``(lo, hi)``, the range of the network's training images in the caller's
            units (e.g. ``(0, 1)`` for an ADM checkpoint serving ``[0, 1]`` images), which DPS's
            official code clamps :math:`\hat x_0` to; ``None`` when the prior does not declare one.
    """

    shape: tuple[int, int, int] | None = None
    patches: bool = False
    sigma_min: float = 0.002
    sigma_max: float = 80.0
    size_multiple: int | None = 1
    source: str | None = None
    data_scale: float = 1.0
    clip_range: tuple[float, float] | None = None

    def forward(self, x: Tensor, sigma: Tensor | float) -> Tensor:
        raise NotImplementedError

    def score(self, x: Tensor, sigma: Tensor | float) -> Tensor:
        r""":math:`\nabla_x \log p_\sigma(x) = (D(x, \sigma) - x) / \sigma^2`."""
        s = as_sigma(sigma, x).view(-1, *([1] * (x.ndim - 1)))
        return (self(x, sigma) - x) / s.square()

    def _name(self) -> str:
        return f"prior {self.source}" if self.source else f"prior {type(self).__name__}"

    def input_size(self, x_shape: Sequence[int]) -> tuple[int, int]:
        """The spatial size at which this prior runs on an unknown of shape ``x_shape``.

        Called before any work, so that a mismatch between the problem and the prior fails at
        once. When the result differs from ``(H, W)`` the caller pads the unknown to it (a crop
        operator maps the padded image back).

        Args:
            x_shape: the unknown's shape ``(B, C, H, W)``.

        Returns:
            ``(H', W')``: ``H`` and ``W`` rounded up to multiples of :attr:`size_multiple`, or
            ``(H, W)`` itself for a fixed-size prior.

        Raises:
            ValueError: ``x_shape`` is not 4-d; its channels differ from ``shape[0]`` (skipped
                when ``shape`` is ``None``); or the prior is fixed-size (``size_multiple is None``)
                and ``(H, W)`` differs from ``shape[1:]``.
        """
        x_shape = tuple(int(s) for s in x_shape)
        if len(x_shape) != 4 or min(x_shape) < 1:
            raise ValueError(
                f"x_shape: expected the unknown's (B, C, H, W) with positive sizes, got {x_shape}"
            )
        _, c, h, w = x_shape
        shape = None if self.shape is None else tuple(int(s) for s in self.shape)
        trained = "" if shape is None else f" (trained at {' x '.join(map(str, shape))})"
        if shape is not None and c != shape[0]:
            raise ValueError(
                f"{self._name()}: models {shape[0]}-channel images{trained}; the problem's unknown x is "
                f"{x_shape} with {c} channel{'s' if c != 1 else ''}"
            )
        m = self.size_multiple
        if m is None:
            if shape is None:
                raise ValueError(
                    f"{self._name()}: runs at a fixed size only (size_multiple None) but declares no shape"
                )
            if (h, w) != shape[1:]:
                raise ValueError(
                    f"{self._name()}: runs only at its fixed size {shape[1]} x {shape[2]}{trained}; the "
                    f"problem's unknown x is {x_shape}, of size {h} x {w}"
                )
            return h, w
        m = int(m)
        if m < 1:
            raise ValueError(f"{self._name()}: size_multiple must be a positive integer or None, got {m}")
        return math.ceil(h / m) * m, math.ceil(w / m) * m
