r"""Super-resolution: anti-aliasing filter, then keep every ``factor``-th pixel.

:math:`A x = S_f (h \star x)`, with a separable kernel ``h`` aligned on the ``factor × factor``
blocks (output pixel ``k`` sits at the centre of input block ``k``) and periodic boundaries, so
the filter is diagonal in Fourier and everything has a closed form: the adjoint (zero-insertion,
then the flipped filter) and the pseudo-inverse :math:`A^T (A A^T)^{-1}`, where
:math:`A A^T` is a convolution on the low-resolution grid with the aliased power spectrum of
``h``. With the box kernel, ``A`` is block averaging and ``pinv`` is pixel replication.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from operators.base import (
    LinearOperator,
    check_finite,
    check_tensor,
    half_in_single_precision,
    real_dtype,
    regulariser,
)

KERNELS = ("box", "bicubic", "gaussian")


def _cubic(t: Tensor, a: float = -0.5) -> Tensor:
    """Keys' cubic convolution kernel (``a = -0.5``, as in MATLAB's ``imresize``)."""
    t = t.abs()
    inner = (a + 2) * t**3 - (a + 3) * t**2 + 1
    outer = a * t**3 - 5 * a * t**2 + 8 * a * t - 4 * a
    return torch.where(t <= 1, inner, torch.where(t < 2, outer, torch.zeros_like(t)))


def downsampling_kernel(factor: int, kernel: str = "bicubic", sigma: float | None = None) -> tuple[Tensor, int]:
    """The 1D anti-aliasing kernel of a block-aligned down-sampler.

    Args:
        factor: the integer down-sampling factor.
        kernel: ``"box"`` (block average), ``"bicubic"`` (Keys' cubic stretched by ``factor``,
            support ``4 factor``) or ``"gaussian"`` (std ``sigma``, default ``factor / 2``,
            truncated at 3 std).
        sigma: the Gaussian's standard deviation in high-resolution pixels.

    Returns:
        ``(taps, first)``: float64 taps summing to one, and the offset of the first tap from
        the start of a block; output ``k`` is ``sum_j taps[j] * x[k * factor + first + j]``.
    """
    centre = (factor - 1) / 2
    if kernel == "box":
        return torch.full((factor,), 1.0 / factor, dtype=torch.float64), 0
    if kernel == "bicubic":
        radius = 2 * factor
    elif kernel == "gaussian":
        sigma = factor / 2 if sigma is None else sigma
        if not 0 < sigma < math.inf:
            raise ValueError(f"sigma: expected a finite, positive standard deviation, got {sigma}")
        radius = 3 * sigma
    else:
        raise ValueError(f"kernel: expected one of {KERNELS}, got {kernel!r}")
    first = math.floor(centre - radius) + 1
    last = math.ceil(centre + radius) - 1
    offsets = torch.arange(first, last + 1, dtype=torch.float64) - centre
    taps = _cubic(offsets / factor) if kernel == "bicubic" else torch.exp(-0.5 * (offsets / sigma) ** 2)
    return taps / taps.sum(), first


class SuperResolution(LinearOperator):
    r"""Filter with a separable anti-aliasing kernel, then down-sample by an integer factor.

    Args:
        factor: the integer down-sampling factor, ``>= 1``; ``H`` and ``W`` of the input must be
            multiples of it.
        kernel: ``"box"``, ``"bicubic"`` or ``"gaussian"`` (see :func:`downsampling_kernel`).
        sigma: the Gaussian kernel's standard deviation (high-resolution pixels).
        rcond: in :meth:`pinv`, spectral values of :math:`A A^T` below ``rcond`` times the
            largest are treated as zero.

    Shapes:
        ``x``: ``(B, C, H, W)`` real or complex; ``y``: ``(B, C, H / factor, W / factor)``.
    """

    def __init__(self, factor: int, kernel: str = "bicubic", *, sigma: float | None = None, rcond: float = 1e-6):
        if isinstance(factor, bool) or int(factor) != factor or factor < 1:
            raise ValueError(f"factor: expected an integer >= 1, got {factor!r}")
        self.factor = int(factor)
        self.kernel = kernel
        self.taps, self.first = downsampling_kernel(self.factor, kernel, sigma)
        if not 0 <= rcond < 1:
            raise ValueError(f"rcond: expected a relative threshold in [0, 1), got {rcond}")
        self.rcond = rcond

    def _spectrum(self, n: int, like: Tensor) -> Tensor:
        """DFT of the taps placed periodically on a grid of ``n`` (tap ``j`` at ``first + j``)."""
        taps = self.taps.to(device=like.device, dtype=real_dtype(like.dtype))
        placed = torch.zeros(n, dtype=taps.dtype, device=taps.device)
        positions = torch.arange(len(taps), device=taps.device) + self.first
        placed.index_add_(0, positions % n, taps)
        return torch.fft.fft(placed)

    def _kernel_hat(self, H: int, W: int, like: Tensor) -> Tensor:
        return self._spectrum(H, like)[:, None] * self._spectrum(W, like)[None, :]

    def _check_x(self, x: Tensor) -> None:
        check_tensor(x, "x", ndim=4)
        H, W = x.shape[-2:]
        if H % self.factor or W % self.factor:
            raise ValueError(f"x: expected H and W to be multiples of factor={self.factor}, got shape {tuple(x.shape)}")

    def _check_y(self, y: Tensor) -> None:
        check_tensor(y, "y", ndim=4)

    def _filter(self, x: Tensor, kernel_hat: Tensor) -> Tensor:
        """Periodic filtering of ``x`` with the spectrum ``kernel_hat`` (real stays real)."""
        H, W = x.shape[-2:]
        if x.is_complex():
            return torch.fft.ifft2(torch.fft.fft2(x) * kernel_hat)
        half = kernel_hat[:, : W // 2 + 1]
        return torch.fft.irfft2(torch.fft.rfft2(x) * half, s=(H, W))

    @half_in_single_precision
    def A(self, x: Tensor) -> Tensor:
        self._check_x(x)
        # Correlation with the taps: multiply by the conjugate spectrum.
        k_hat = self._kernel_hat(*x.shape[-2:], x).conj()
        f = self.factor
        return self._filter(x, k_hat)[..., ::f, ::f]

    @half_in_single_precision
    def AT(self, y: Tensor) -> Tensor:
        self._check_y(y)
        f = self.factor
        h, w = y.shape[-2:]
        z = y.new_zeros(*y.shape[:-2], h * f, w * f)
        z[..., ::f, ::f] = y
        return self._filter(z, self._kernel_hat(h * f, w * f, y))

    def _gram_spectrum(self, h: int, w: int, like: Tensor) -> Tensor:
        r"""Spectrum of :math:`A A^T` on the ``h × w`` grid: the aliased :math:`|\hat k|^2 / f` per axis."""
        f = self.factor

        def axis(n: int) -> Tensor:
            power = self._spectrum(n * f, like).abs().square()
            return power.view(f, n).sum(0) / f

        return axis(h)[:, None] * axis(w)[None, :]

    @half_in_single_precision
    def pinv(self, y: Tensor, **kwargs) -> Tensor:
        r""":math:`A^T (A A^T)^{+} y` in closed form (replication for the box kernel)."""
        self._check_y(y)
        check_finite(y, "y")
        q = self._gram_spectrum(*y.shape[-2:], y)
        keep = q > self.rcond * q.max()
        q_inv = torch.where(keep, 1.0 / torch.where(keep, q, torch.ones_like(q)), torch.zeros_like(q))
        z = torch.fft.ifft2(torch.fft.fft2(y) * q_inv)
        return self.AT(z if y.is_complex() else z.real)

    has_closed_form_solve = True

    @half_in_single_precision
    def solve_normal(self, b: Tensor, lam: float | Tensor, **kwargs) -> Tensor:
        r"""By Woodbury, :math:`(A^T A + \lambda)^{-1} b = \big(b - A^T (A A^T + \lambda)^{-1} A b\big) / \lambda`,
        with :math:`A A^T` diagonal in the Fourier basis of the low-resolution grid."""
        self._check_x(b)
        check_finite(b, "b")
        shift = regulariser(lam, b)
        Ab = self.A(b)
        q = self._gram_spectrum(*Ab.shape[-2:], Ab)
        z = torch.fft.ifft2(torch.fft.fft2(Ab) / (q + shift))
        return (b - self.AT(z if Ab.is_complex() else z.real)) / shift

    def __repr__(self) -> str:
        return f"SuperResolution(factor={self.factor}, kernel={self.kernel!r})"
