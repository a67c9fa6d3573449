r"""Array operations on fastMRI k-space and images: centre crops, centred 1D FFTs, RSS targets,
readout oversampling and normalisation.

k-space is in the centred layout of :mod:`operators.mri` (DC at ``(H // 2, W // 2)``), ``H`` the
readout direction (fastMRI's 640 rows, oversampled twice) and ``W`` the phase encodes.

Targets follow fastMRI's order of operations (:func:`reconstruct_rss`): the centred orthonormal
inverse FFT of each coil (:func:`operators.mri.ifft2c`), a centre crop of the complex coil images
to the reconstruction size, then the root sum of squares over the coils. The crop comes before the
RSS and after the FFT, so it also removes the readout oversampling of fastMRI's 640-sample
readouts (:func:`remove_readout_oversampling` does the same in k-space).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from operators.mri import ifft2c, rss


def _crop_starts(size: tuple[int, int], shape, name: str) -> tuple[int, int, int, int]:
    """``(top, h, left, w)`` of the centre ``shape`` of an array of ``size``, fastMRI's convention."""
    if len(shape) < 2:
        raise ValueError(f"{name}: expected (h, w), got {tuple(shape)!r}")
    h, w = int(shape[0]), int(shape[1])
    H, W = size
    if not (0 < h <= H and 0 < w <= W):
        raise ValueError(f"{name}: expected a crop (h, w) with 0 < h <= {H} and 0 < w <= {W}, got {(h, w)}")
    return (H - h) // 2, h, (W - w) // 2, w


def center_crop(x: Tensor, shape: tuple[int, int]) -> Tensor:
    """The centre ``(h, w)`` of the last two dimensions, fastMRI's ``center_crop``.

    The crop starts at ``((H - h) // 2, (W - w) // 2)``, so the centre pixel ``(H // 2, W // 2)``
    of an even-sized array stays the centre pixel ``(h // 2, w // 2)`` of an even-sized crop.

    Args:
        x: ``(..., H, W)``, real or complex.
        shape: ``(h, w)`` with ``0 < h <= H`` and ``0 < w <= W``; a third entry (the ``z`` of a
            header's matrix size) is ignored.

    Returns:
        ``(..., h, w)``, a view of ``x``.

    Raises:
        ValueError: ``x`` has fewer than two dimensions or ``shape`` does not fit in it.
    """
    if x.ndim < 2:
        raise ValueError(f"x: expected (..., H, W), got shape {tuple(x.shape)}")
    top, h, left, w = _crop_starts(tuple(x.shape[-2:]), shape, "shape")
    return x[..., top : top + h, left : left + w]


def complex_center_crop(x: Tensor, shape: tuple[int, int]) -> Tensor:
    """The centre ``(h, w)`` of a complex image, native or in fastMRI's real-pair layout.

    Args:
        x: a complex tensor ``(..., H, W)``, or a real one ``(..., H, W, 2)`` (real and imaginary
            parts last, fastMRI's ``complex_center_crop`` layout).
        shape: ``(h, w)``.

    Returns:
        ``(..., h, w)`` or ``(..., h, w, 2)``, a view of ``x``.

    Raises:
        ValueError: ``x`` is real without a last dimension of 2, or ``shape`` does not fit.
    """
    if x.is_complex():
        return center_crop(x, shape)
    if x.ndim < 3 or x.shape[-1] != 2:
        raise ValueError(
            f"x: expected a complex tensor (..., H, W) or a real one (..., H, W, 2), "
            f"got dtype {x.dtype} and shape {tuple(x.shape)}"
        )
    return center_crop(x.movedim(-1, 0), shape).movedim(0, -1)


def fft1c(x: Tensor, dim: int) -> Tensor:
    """Centred orthonormal 1D FFT along ``dim``."""
    return torch.fft.fftshift(torch.fft.fft(torch.fft.ifftshift(x, dim=dim), dim=dim, norm="ortho"), dim=dim)


def ifft1c(x: Tensor, dim: int) -> Tensor:
    """Centred orthonormal 1D inverse FFT along ``dim``."""
    return torch.fft.fftshift(torch.fft.ifft(torch.fft.ifftshift(x, dim=dim), dim=dim, norm="ortho"), dim=dim)


def reconstruct_rss(kspace: Tensor, recon_size: tuple[int, ...] | None = None) -> Tensor:
    r"""The root-sum-of-squares image of fully sampled k-space, in fastMRI's order.

    .. math:: \hat x = \sqrt{\textstyle\sum_c |\operatorname{crop}(\mathcal F_c^{-1} y_c)|^2}

    1. the centred orthonormal inverse FFT of each coil (:func:`operators.mri.ifft2c`);
    2. the centre crop of the complex coil images to ``recon_size`` (:func:`center_crop`);
    3. the RSS over the coils (:func:`operators.mri.rss`).

    The crop commutes with the RSS (both are pointwise in space), so the order matters only in
    that the crop acts on images, never on k-space. For zero-filled undersampled k-space this is
    the zero-filled RSS image; for a single coil (``C = 1``) it is the magnitude of the cropped
    image, fastMRI's single-coil ``reconstruction_esc``.

    Args:
        kspace: ``(..., C, H, W)`` complex; a single coil needs ``C = 1``.
        recon_size: ``(h, w)`` or a header's ``(x, y, z)``; ``None`` keeps ``(H, W)``.

    Returns:
        ``(..., h, w)`` real, the real dtype matching ``kspace``'s precision.

    Raises:
        ValueError: ``kspace`` is not a complex tensor of at least three dimensions.
    """
    if not isinstance(kspace, Tensor) or not kspace.is_complex() or kspace.ndim < 3:
        got = (
            f"dtype {kspace.dtype}, shape {tuple(kspace.shape)}"
            if isinstance(kspace, Tensor)
            else type(kspace).__name__
        )
        raise ValueError(f"kspace: expected a complex tensor (..., C, H, W), got {got}")
    images = ifft2c(kspace)
    if recon_size is not None:
        images = center_crop(images, recon_size)
    return rss(images, dim=-3)


def remove_readout_oversampling(kspace: Tensor, dim: int = -2) -> Tensor:
    r"""Halve the field of view along a twice-oversampled readout, in k-space.

    1. the centred orthonormal inverse FFT along ``dim`` (hybrid space: image along the readout);
    2. the centre half along ``dim``, from ``N // 4`` (:func:`center_crop`'s convention);
    3. the centred orthonormal FFT back.

    The steps are unitary up to the crop, so an object inside the centre half comes back exactly:
    for an image ``x`` of ``N / 2`` rows zero-padded to ``N`` rows, ``fft2c`` of the padded image
    becomes ``fft2c(x)``.

    Args:
        kspace: ``(..., H, W)`` complex, ``H`` (the size along ``dim``) even.
        dim: the readout dimension; fastMRI's is ``-2`` (the 640 rows of its files).

    Returns:
        ``(..., H // 2, W)`` complex (with the halving along ``dim``).

    Raises:
        ValueError: ``kspace`` is not complex, or its length along ``dim`` is odd.
    """
    if not isinstance(kspace, Tensor) or not kspace.is_complex():
        got = kspace.dtype if isinstance(kspace, Tensor) else type(kspace).__name__
        raise ValueError(f"kspace: expected a complex tensor, got {got}")
    n = kspace.shape[dim]
    if n % 2:
        raise ValueError(f"kspace: expected an even readout length along dim {dim}, got {n}")
    hybrid = ifft1c(kspace, dim)
    start = (n - n // 2) // 2
    return fft1c(hybrid.narrow(dim, start, n // 2), dim)


def normalise(
    kspace: Tensor,
    *,
    percentile: float = 100.0,
    recon_size: tuple[int, ...] | None = None,
    per_slice: bool = False,
) -> tuple[Tensor, Tensor]:
    r"""Scale k-space so that its RSS (zero-filled) image peaks at 1.

    The reference value is the ``percentile`` of :func:`reconstruct_rss` of ``kspace`` (the
    maximum by default; e.g. 99.5 is robust to a few bright pixels), over the whole volume or per
    slice; ``kspace`` is multiplied by ``scale = 1 / value``. The FFTs are linear, so the
    image of the scaled k-space is the image times ``scale``.

    Args:
        kspace: ``(..., C, H, W)`` complex, e.g. ``(slices, coils, H, W)``.
        percentile: in ``(0, 100]``.
        recon_size: crop the images to this size first (:func:`reconstruct_rss`).
        per_slice: one scale per leading index (``(...)``) instead of one for all.

    Returns:
        ``(scaled kspace, scale)``: ``scale`` is a real tensor, ``()`` or ``kspace.shape[:-3]``.

    Raises:
        ValueError: ``percentile`` is outside ``(0, 100]``, or the image is zero at it.
    """
    if not 0 < percentile <= 100:
        raise ValueError(f"percentile: expected a value in (0, 100], got {percentile}")
    image = reconstruct_rss(kspace, recon_size).detach()
    lead = tuple(image.shape[:-2])
    flat = image.reshape(-1, image.shape[-2] * image.shape[-1]) if per_slice else image.reshape(1, -1)
    values = np.percentile(flat.cpu().double().numpy(), percentile, axis=1)
    if not np.all(values > 0):
        raise ValueError("kspace: the RSS image is zero (at that percentile); nothing to normalise")
    scale = torch.as_tensor(1.0 / values, dtype=image.dtype, device=kspace.device)
    scale = scale.reshape(lead) if per_slice else scale.reshape(())
    return kspace * scale[(...,) + (None,) * 3], scale
