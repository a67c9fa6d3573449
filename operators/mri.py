r"""Cartesian MRI: centred FFTs, single-coil and multi-coil (SENSE) sampling, coil combination and
ESPIRiT coil maps.

Conventions are those of fastMRI and sigpy. Images and k-space are centred (the DC sample sits at
index ``N // 2``) and the FFT is orthonormal, so

.. math::
    \mathcal F_c = \operatorname{fftshift} \circ \mathcal F_{\text{ortho}} \circ \operatorname{ifftshift}

is unitary and :math:`\mathcal F_c^{-1} = \mathcal F_c^H`. Data are complex (``complex64`` or
``complex128``) and batch-first: images ``(B, C, H, W)``, k-space ``(B, C, H, W)`` in the full,
zero-filled layout. Sampling masks are real, ``(H, W)`` shared by the batch or ``(B, H, W)`` per
sample (``B`` may also be 1), 0/1 or density weights; coil maps are complex, ``(C, H, W)`` shared
or ``(B, C, H, W)`` per sample.

The operators never shift arrays. The shifts of a centred DFT of length :math:`N` with
:math:`c = \lfloor N/2 \rfloor` are phase ramps,

.. math:: Y[k] = e^{2\pi i c (k - c)/N} \sum_n x[n]\, e^{2\pi i c n/N}\, e^{-2\pi i k n/N}

(:math:`\pm 1` checkerboards for even :math:`N`), folded once at construction into the coil maps
(the ramp before the FFT) and into the mask (the ramp after it, with the :math:`1/\sqrt{HW}`
scale). A call is then one pointwise product, one 2D FFT and one pointwise product (plus the
coil sum in the adjoint). A mask constant along one axis (fastMRI's phase-encode line masks) gives
a normal operator :math:`A^H A` whose FFTs along that axis cancel, so it runs on 1D FFTs.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from operators.base import LinearOperator, cast_like, check_tensor


def fft2c(x: Tensor) -> Tensor:
    """Centred orthonormal 2D FFT over the last two dimensions.

    Equals ``np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(x, axes), norm="ortho"), axes)`` with
    ``axes = (-2, -1)``, for even and odd sizes.

    Args:
        x: image, ``(..., H, W)``, real or complex.

    Returns:
        k-space, ``(..., H, W)`` complex.
    """
    dims = (-2, -1)
    return torch.fft.fftshift(torch.fft.fft2(torch.fft.ifftshift(x, dim=dims), norm="ortho"), dim=dims)


def ifft2c(k: Tensor) -> Tensor:
    """Centred orthonormal 2D inverse FFT over the last two dimensions; the inverse of :func:`fft2c`.

    Args:
        k: k-space, ``(..., H, W)``.

    Returns:
        image, ``(..., H, W)`` complex.
    """
    dims = (-2, -1)
    return torch.fft.fftshift(torch.fft.ifft2(torch.fft.ifftshift(k, dim=dims), norm="ortho"), dim=dims)


def _ramps(n: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """``(pre, post)``, ``(n,)`` complex128: ``fftshift(fft(ifftshift(x))) = post * fft(pre * x)``."""
    c = n // 2
    k = torch.arange(n, dtype=torch.int64, device=device)
    one = torch.ones(n, dtype=torch.float64, device=device)
    # Integer phases modulo n keep the angles exact before the one rounding in cos/sin.
    pre = torch.polar(one, (2 * math.pi / n) * ((c * k) % n).double())
    post = torch.polar(one, (2 * math.pi / n) * ((c * (k - c)) % n).double())
    return pre, post


def _ramps_2d(H: int, W: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """``(pre, post)``, ``(H, W)`` complex128: ``fft2c(x) = post * fft2(pre * x) / sqrt(H W)``."""
    pre_h, post_h = _ramps(H, device)
    pre_w, post_w = _ramps(W, device)
    return torch.outer(pre_h, pre_w), torch.outer(post_h, post_w)


def _check_mask(mask: Tensor) -> Tensor:
    """A real floating mask, ``(H, W)`` or ``(B, H, W)``; boolean masks become float32."""
    check_tensor(mask, "mask")
    if mask.dtype == torch.bool:
        mask = mask.float()
    if not mask.is_floating_point():
        raise ValueError(f"mask: expected a real floating-point or boolean tensor, got dtype {mask.dtype}")
    if mask.ndim not in (2, 3):
        raise ValueError(f"mask: expected (H, W) or (B, H, W), got shape {tuple(mask.shape)}")
    return mask


class _Sampling(LinearOperator):
    r"""The masked centred FFT of an image whose pre-FFT ramp is already applied.

    ``A(z) = w * fft2(z)`` with ``w = mask * post / sqrt(H W)``, so that for ``z = pre * x``,
    ``A(z) = mask * fft2c(x)``; ``AT(y) = ifft2_unnormalised(conj(w) * y)``. Input and output
    ``(B, C, H, W)``; the mask is stored ``(B or 1, 1, H, W)``.
    """

    def __init__(self, mask: Tensor):
        H, W = mask.shape[-2:]
        self.shape = (H, W)
        self.mask = mask.reshape(-1, 1, H, W)
        _, post = _ramps_2d(H, W, mask.device)
        cdtype = torch.complex128 if mask.dtype == torch.float64 else torch.complex64
        self.weights = (self.mask * post / math.sqrt(H * W)).to(cdtype)
        # A mask constant along H (along W) makes A^H A a 1D filter along W (along H).
        self.filter_dim, self.filter = None, None
        if bool((self.mask == self.mask[..., :1, :]).all()):
            self.filter_dim, self.filter = -1, self.mask[..., :1, :].square()
        elif bool((self.mask == self.mask[..., :, :1]).all()):
            self.filter_dim, self.filter = -2, self.mask[..., :, :1].square()

    def _forward(self, z: Tensor, weights: Tensor) -> Tensor:
        return torch.fft.fft2(z).mul_(cast_like(weights, z))

    def _adjoint(self, y: Tensor, weights: Tensor) -> Tensor:
        return torch.fft.ifft2(y * cast_like(weights, y), norm="forward")

    def A(self, z: Tensor) -> Tensor:
        return self._forward(z, self.weights)

    def AT(self, y: Tensor) -> Tensor:
        return self._adjoint(y, self.weights.conj())

    def normal(self, z: Tensor) -> Tensor:
        if self.filter_dim is None:
            power = cast_like(self.weights, z).abs().square()
            return torch.fft.ifft2(torch.fft.fft2(z).mul_(power), norm="forward")
        # F^H diag(m^2) F, m constant along one axis: the FFTs along that axis cancel.
        dim = self.filter_dim
        return torch.fft.ifft(torch.fft.fft(z, dim=dim).mul_(cast_like(self.filter, z)), dim=dim)

    def pinv_weights(self) -> Tensor:
        """``v`` with ``pinv(y) = conj(pre) * F^H(v * y)``: ``conj(w) / mask^2`` where sampled."""
        sampled = self.mask != 0
        safe = torch.where(sampled, self.mask, torch.ones_like(self.mask))
        return torch.where(sampled, self.weights.conj() / safe.square(), torch.zeros_like(self.weights))


def _check_batch(x: Tensor, name: str, *buffers: Tensor) -> None:
    for buf in buffers:
        if buf.shape[0] not in (1, x.shape[0]):
            raise ValueError(
                f"{name}: expected a batch of {buf.shape[0]} to match the per-sample mask or coil maps, "
                f"got shape {tuple(x.shape)}"
            )


class SingleCoilMRI(LinearOperator):
    r"""Single-coil Cartesian MRI, :math:`y = m \odot \mathcal F_c x`, channel by channel.

    Args:
        mask: real sampling mask (0/1 or weights), ``(H, W)`` or ``(B, H, W)`` (``B`` may be 1);
            boolean masks are accepted.

    Shapes:
        ``x``: ``(B, C, H, W)`` complex; ``y``: ``(B, C, H, W)`` complex, zero where not sampled.
    """

    def __init__(self, mask: Tensor):
        mask = _check_mask(mask)
        self._sampling = _Sampling(mask)
        pre, _ = _ramps_2d(*mask.shape[-2:], mask.device)
        self._pre = pre.to(self._sampling.weights.dtype)

    @property
    def mask(self) -> Tensor:
        """The sampling mask, ``(B, H, W)`` with ``B`` 1 for a shared mask."""
        return self._sampling.mask[:, 0]

    def _check(self, x: Tensor, name: str) -> None:
        check_tensor(x, name, ndim=4, shape=(None, *self._sampling.shape), complex_=True)
        _check_batch(x, name, self._sampling.mask)

    def A(self, x: Tensor) -> Tensor:
        self._check(x, "x")
        return self._sampling.A(cast_like(self._pre, x) * x)

    def AT(self, y: Tensor) -> Tensor:
        self._check(y, "y")
        return self._sampling.AT(y).mul_(cast_like(self._pre, y).conj())

    def normal(self, x: Tensor) -> Tensor:
        self._check(x, "x")
        pre = cast_like(self._pre, x)
        return self._sampling.normal(pre * x).mul_(pre.conj())

    def pinv(self, y: Tensor, **kwargs) -> Tensor:
        r""":math:`\mathcal F_c^{-1}(y / m)` where :math:`m \ne 0` and zero elsewhere (closed form)."""
        self._check(y, "y")
        v = self._sampling.pinv_weights()
        return self._sampling._adjoint(y, v).mul_(cast_like(self._pre, y).conj())

    def __repr__(self) -> str:
        return f"SingleCoilMRI(mask={tuple(self.mask.shape)}, acceleration={_acceleration(self.mask):.2f})"


class MultiCoilMRI(LinearOperator):
    r"""Multi-coil Cartesian MRI (SENSE): :math:`y_c = m \odot \mathcal F_c (S_c x)`.

    The adjoint is :math:`A^H y = \sum_c \bar S_c \odot \mathcal F_c^{-1}(m \odot y_c)` and the normal
    operator :math:`\sum_c \bar S_c \odot \mathcal F_c^{-1}(m^2 \odot \mathcal F_c(S_c x))` runs in one
    pass, with 1D FFTs only when the mask is constant along one axis (line masks). ``pinv`` is
    CG-SENSE (conjugate gradient on the normal equations). Gradients with respect to the input
    flow through every method by autograd; the coil maps and the mask are fixed buffers, and
    the operator keeps the ramped maps and their conjugate (twice the maps' memory) so that no
    call conjugates them. Buffers are cast to the input's precision on each call when they
    differ; ``op.to(dtype=...)`` casts them once.

    Args:
        coil_maps: complex sensitivities, ``(C, H, W)`` or ``(B, C, H, W)`` (``B`` may be 1).
        mask: real sampling mask (0/1 or weights), ``(H, W)`` or ``(B, H, W)`` (``B`` may be 1);
            boolean masks are accepted.

    Shapes:
        ``x``: ``(B, 1, H, W)`` complex; ``y``: ``(B, C, H, W)`` complex, the full zero-filled
        k-space of each coil.
    """

    def __init__(self, coil_maps: Tensor, mask: Tensor):
        check_tensor(coil_maps, "coil_maps", complex_=True)
        if coil_maps.ndim not in (3, 4):
            raise ValueError(
                f"coil_maps: expected (C, H, W) or (B, C, H, W), got shape {tuple(coil_maps.shape)}"
            )
        mask = _check_mask(mask)
        if coil_maps.shape[-2:] != mask.shape[-2:]:
            raise ValueError(
                f"mask: expected spatial size {tuple(coil_maps.shape[-2:])} to match coil_maps, "
                f"got shape {tuple(mask.shape)}"
            )
        maps = coil_maps.reshape(-1, *coil_maps.shape[-3:])
        if mask.ndim == 3 and 1 not in (mask.shape[0], maps.shape[0]) and mask.shape[0] != maps.shape[0]:
            raise ValueError(
                f"mask: expected a batch of {maps.shape[0]} (that of coil_maps) or 1, "
                f"got shape {tuple(mask.shape)}"
            )
        self._sampling = _Sampling(mask.to(coil_maps.device))
        pre, _ = _ramps_2d(*maps.shape[-2:], maps.device)
        self._maps = (maps * pre).to(maps.dtype)
        self._maps_conj = self._maps.conj().resolve_conj()

    @property
    def coil_maps(self) -> Tensor:
        """The coil maps, ``(B, C, H, W)`` with ``B`` 1 for shared maps."""
        pre, _ = _ramps_2d(*self._maps.shape[-2:], self._maps.device)
        return (self._maps * pre.conj()).to(self._maps.dtype)

    @property
    def mask(self) -> Tensor:
        """The sampling mask, ``(B, H, W)`` with ``B`` 1 for a shared mask."""
        return self._sampling.mask[:, 0]

    @property
    def num_coils(self) -> int:
        return self._maps.shape[1]

    def _check(self, t: Tensor, name: str, channels: int) -> None:
        check_tensor(t, name, ndim=4, shape=(channels, *self._sampling.shape), complex_=True)
        _check_batch(t, name, self._maps, self._sampling.mask)

    def A(self, x: Tensor) -> Tensor:
        self._check(x, "x", 1)
        return self._sampling.A(cast_like(self._maps, x) * x)

    def AT(self, y: Tensor) -> Tensor:
        self._check(y, "y", self.num_coils)
        return self._sampling.AT(y).mul_(cast_like(self._maps_conj, y)).sum(1, keepdim=True)

    def normal(self, x: Tensor) -> Tensor:
        self._check(x, "x", 1)
        z = self._sampling.normal(cast_like(self._maps, x) * x)
        return z.mul_(cast_like(self._maps_conj, x)).sum(1, keepdim=True)

    def __repr__(self) -> str:
        H, W = self._sampling.shape
        return (
            f"MultiCoilMRI(coils={self.num_coils}, size=({H}, {W}), "
            f"acceleration={_acceleration(self.mask):.2f})"
        )


def _acceleration(mask: Tensor) -> float:
    return mask[0].numel() / max(int((mask[0] != 0).sum()), 1)


def rss(x: Tensor, dim: int = 1, keepdim: bool = False) -> Tensor:
    r"""Root sum of squares, :math:`\sqrt{\sum_c |x_c|^2}`, over ``dim`` (the coils).

    Args:
        x: coil images, e.g. ``(B, C, H, W)``, real or complex.
        dim: the coil dimension.
        keepdim: keep ``dim`` with size 1.

    Returns:
        real, ``x``'s shape without ``dim`` (or with size 1 there).
    """
    return torch.linalg.vector_norm(x, dim=dim, keepdim=keepdim)


def coil_combine(coil_images: Tensor, coil_maps: Tensor) -> Tensor:
    r"""SENSE coil combination, :math:`\sum_c \bar S_c x_c / \sum_c |S_c|^2` (zero where the denominator is).

    Args:
        coil_images: ``(B, C, H, W)`` complex.
        coil_maps: ``(C, H, W)`` or ``(B, C, H, W)`` complex.

    Returns:
        ``(B, 1, H, W)`` complex.
    """
    check_tensor(coil_images, "coil_images", ndim=4, complex_=True)
    check_tensor(coil_maps, "coil_maps", complex_=True)
    if coil_maps.ndim not in (3, 4) or coil_maps.shape[-3:] != coil_images.shape[-3:]:
        raise ValueError(
            f"coil_maps: expected (C, H, W) or (B, C, H, W) with (C, H, W) = "
            f"{tuple(coil_images.shape[-3:])}, "
            f"got shape {tuple(coil_maps.shape)}"
        )
    maps = cast_like(coil_maps, coil_images).reshape(-1, *coil_maps.shape[-3:])
    _check_batch(coil_images, "coil_images", maps)
    num = (maps.conj() * coil_images).sum(1, keepdim=True)
    den = maps.abs().square().sum(1, keepdim=True)
    covered = den > 0
    return torch.where(covered, num / torch.where(covered, den, torch.ones_like(den)), torch.zeros_like(num))


def espirit_maps(
    kspace: Tensor,
    calib_width: int = 24,
    thresh: float = 0.02,
    crop: float = 0.95,
    *,
    kernel_width: int = 6,
    max_iter: int = 100,
) -> Tensor:
    r"""ESPIRiT coil maps from the centre of k-space (``sigpy.mri.app.EspiritCalib``).

    The maps have :math:`\sum_c |S_c|^2 = 1` where the ESPIRiT eigenvalue exceeds ``crop`` and
    are zero elsewhere; their phase is relative to the first coil.

    Args:
        kspace: centred multi-coil k-space, ``(C, H, W)`` or ``(B, C, H, W)`` complex; only the
            central ``calib_width`` square is used, so undersampled k-space with a fully sampled
            centre works.
        calib_width: side of the calibration square.
        thresh: singular values of the calibration matrix below ``thresh`` times the largest
            are discarded.
        crop: eigenvalue threshold under which maps are set to zero.
        kernel_width: side of the ESPIRiT kernel.
        max_iter: power iterations.

    Returns:
        maps, the shape, dtype and device of ``kspace``.
    """
    from sigpy.mri.app import EspiritCalib

    check_tensor(kspace, "kspace", complex_=True)
    if kspace.ndim not in (3, 4):
        raise ValueError(f"kspace: expected (C, H, W) or (B, C, H, W), got shape {tuple(kspace.shape)}")
    H, W = kspace.shape[-2:]
    if not kernel_width <= calib_width <= min(H, W):
        raise ValueError(
            f"calib_width: expected between kernel_width={kernel_width} and the k-space size "
            f"min(H, W) = {min(H, W)}, got {calib_width}"
        )
    if not 0 <= crop <= 1:
        raise ValueError(f"crop: expected an eigenvalue threshold in [0, 1], got {crop}")
    batch = kspace.reshape(-1, *kspace.shape[-3:]).detach().cpu().numpy().astype(np.complex128)
    maps = [
        EspiritCalib(
            ksp,
            calib_width=calib_width,
            thresh=thresh,
            kernel_width=kernel_width,
            crop=crop,
            max_iter=max_iter,
            show_pbar=False,
        ).run()
        for ksp in batch
    ]
    return torch.from_numpy(np.stack(maps)).reshape(kspace.shape).to(device=kspace.device, dtype=kspace.dtype)
