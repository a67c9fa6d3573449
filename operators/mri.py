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
import numbers

import torch
from torch import Tensor

from operators.base import (
    HALF_PRECISION,
    LinearOperator,
    cast_like,
    check_finite,
    check_tensor,
    check_weights,
    in_single_precision,
    half_in_single_precision,
    regulariser,
)


def fft2c(x: Tensor) -> Tensor:
    """Centred orthonormal 2D FFT over the last two dimensions.

    Equals ``np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(x, axes), norm="ortho"), axes)`` with
    ``axes = (-2, -1)``, for even and odd sizes.

    Args:
        x: image, ``(..., H, W)``, real or complex; half precision is computed in single
            precision (:func:`~operators.base.half_in_single_precision`).

    Returns:
        k-space, ``(..., H, W)`` complex.
    """
    if x.dtype in HALF_PRECISION:
        return in_single_precision(fft2c, x)
    dims = (-2, -1)
    return torch.fft.fftshift(torch.fft.fft2(torch.fft.ifftshift(x, dim=dims), norm="ortho"), dim=dims)


def ifft2c(k: Tensor) -> Tensor:
    """Centred orthonormal 2D inverse FFT over the last two dimensions; the inverse of :func:`fft2c`.

    Args:
        k: k-space, ``(..., H, W)``; half precision is computed in single precision.

    Returns:
        image, ``(..., H, W)`` complex.
    """
    if k.dtype in HALF_PRECISION:
        return in_single_precision(ifft2c, k)
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
    """A real floating mask, ``(H, W)`` or ``(B, H, W)``, finite and non-negative (0/1 or density
    weights, which may exceed 1); boolean masks become float32."""
    check_tensor(mask, "mask")
    if mask.dtype == torch.bool:
        mask = mask.float()
    if not mask.is_floating_point():
        raise ValueError(f"mask: expected a real floating-point or boolean tensor, got dtype {mask.dtype}")
    if mask.ndim not in (2, 3):
        raise ValueError(f"mask: expected (H, W) or (B, H, W), got shape {tuple(mask.shape)}")
    check_weights(mask, "mask")
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

    def solve_normal(self, z: Tensor, lam: float | Tensor, **kwargs) -> Tensor:
        r""":math:`(A^H A + \lambda)^{-1} z = \mathcal F^{-1}(\mathcal F z / (m^2 + \lambda))` (``post`` has unit modulus)."""
        power = cast_like(self.mask, z).square()
        return torch.fft.ifft2(torch.fft.fft2(z) / (power + regulariser(lam, z)))

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
        mask: real sampling mask (0/1 or non-negative weights), finite, ``(H, W)`` or
            ``(B, H, W)`` (``B`` may be 1); boolean masks are accepted.

    Shapes:
        ``x``: ``(B, C, H, W)`` complex; ``y``: ``(B, C, H, W)`` complex, zero where not sampled.

    Raises:
        ValueError: ``mask`` has the wrong shape or dtype, or holds NaN, infinite or negative values.
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

    @half_in_single_precision
    def A(self, x: Tensor) -> Tensor:
        self._check(x, "x")
        return self._sampling.A(cast_like(self._pre, x) * x)

    @half_in_single_precision
    def AT(self, y: Tensor) -> Tensor:
        self._check(y, "y")
        return self._sampling.AT(y).mul_(cast_like(self._pre, y).conj())

    @half_in_single_precision
    def normal(self, x: Tensor) -> Tensor:
        self._check(x, "x")
        pre = cast_like(self._pre, x)
        return self._sampling.normal(pre * x).mul_(pre.conj())

    @half_in_single_precision
    def pinv(self, y: Tensor, **kwargs) -> Tensor:
        r""":math:`\mathcal F_c^{-1}(y / m)` where :math:`m \ne 0` and zero elsewhere (closed form)."""
        self._check(y, "y")
        check_finite(y, "y")
        v = self._sampling.pinv_weights()
        return self._sampling._adjoint(y, v).mul_(cast_like(self._pre, y).conj())

    has_closed_form_solve = True

    @half_in_single_precision
    def solve_normal(self, b: Tensor, lam: float | Tensor, **kwargs) -> Tensor:
        r""":math:`\mathcal F_c^{-1}\big(\mathcal F_c b / (m^2 + \lambda)\big)`: the centred FFT's ramps have unit modulus."""
        self._check(b, "b")
        check_finite(b, "b")
        pre = cast_like(self._pre, b)
        return self._sampling.solve_normal(pre * b, lam).mul_(pre.conj())

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
        coil_maps: complex sensitivities, finite, ``(C, H, W)`` or ``(B, C, H, W)`` (``B`` may be
            1), ``C >= 1``.
        mask: real sampling mask (0/1 or non-negative weights), finite, ``(H, W)`` or
            ``(B, H, W)`` (``B`` may be 1); boolean masks are accepted.

    Shapes:
        ``x``: ``(B, 1, H, W)`` complex; ``y``: ``(B, C, H, W)`` complex, the full zero-filled
        k-space of each coil.

    Raises:
        ValueError: ``coil_maps`` or ``mask`` has the wrong shape or dtype, is empty (no coils), or
            holds NaN or infinite values, or ``mask`` negative ones.
    """

    def __init__(self, coil_maps: Tensor, mask: Tensor):
        check_tensor(coil_maps, "coil_maps", complex_=True)
        if coil_maps.ndim not in (3, 4):
            raise ValueError(
                f"coil_maps: expected (C, H, W) or (B, C, H, W), got shape {tuple(coil_maps.shape)}"
            )
        check_finite(coil_maps, "coil_maps")
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

    @half_in_single_precision
    def A(self, x: Tensor) -> Tensor:
        self._check(x, "x", 1)
        return self._sampling.A(cast_like(self._maps, x) * x)

    @half_in_single_precision
    def AT(self, y: Tensor) -> Tensor:
        self._check(y, "y", self.num_coils)
        return self._sampling.AT(y).mul_(cast_like(self._maps_conj, y)).sum(1, keepdim=True)

    @half_in_single_precision
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


_EIGH_CHUNK_BYTES = 1 << 26
"""The most memory the per-pixel ESPIRiT matrices of one chunk of rows take (64 MiB)."""


def _centred(n: int, m: int) -> slice:
    """The central ``m`` of ``n`` indices, in sigpy's ``resize`` convention (from ``n // 2 - m // 2``)."""
    start = n // 2 - m // 2
    return slice(start, start + m)


def _fourier_phases(n: int, taps: int, device: torch.device) -> Tensor:
    r"""``(n, 2 taps - 1)`` complex128: :math:`e^{2\pi i d (x - n//2) / n}` for pixel ``x`` and lag ``d``.

    Lags are in the FFT order of a length ``2 taps - 1`` axis: ``0, 1, ..., taps - 1, -(taps - 1),
    ..., -1``. Integer phases modulo ``n`` keep the angles exact before the one rounding.
    """
    m = 2 * taps - 1
    lags = torch.arange(m, device=device)
    lags = torch.where(lags < taps, lags, lags - m)
    x = torch.arange(n, device=device) - n // 2
    turns = torch.remainder(x[:, None] * lags[None, :], n).double()
    return torch.polar(torch.ones_like(turns), (2 * math.pi / n) * turns)


def _phase_to_first_coil(maps: Tensor) -> Tensor:
    """``maps`` times the conjugate phase of its first coil (dim -3), left as is where that coil is 0."""
    first = maps[..., :1, :, :]
    mag = first.abs()
    nonzero = mag > 0
    unit = first.conj() / torch.where(nonzero, mag, torch.ones_like(mag))
    return maps * torch.where(nonzero, unit, torch.ones_like(unit))


def _espirit_one(
    kspace: Tensor, calib: tuple[int, int], kernel: tuple[int, int], thresh: float, crop: float
) -> Tensor:
    r"""ESPIRiT maps of one volume, ``(C, H, W)`` complex128 in and out; see :func:`espirit_maps`."""
    C, H, W = kspace.shape
    (h, w), (kh, kw) = calib, kernel
    # 1. The calibration (Hankel) matrix: one row per kernel position in the calibration region,
    # columns (coil, kernel row, kernel column).
    region = kspace[:, _centred(H, h), _centred(W, w)]
    blocks = region.unfold(1, kh, 1).unfold(2, kw, 1)  # (C, h - kh + 1, w - kw + 1, kh, kw)
    mat = blocks.permute(1, 2, 0, 3, 4).reshape(-1, C * kh * kw)
    # 2. The kernels: the rows of V^H whose singular values exceed thresh times the largest.
    _, S, Vh = torch.linalg.svd(mat, full_matrices=False)
    kernels = Vh[S > thresh * S.max()].reshape(-1, C, kh, kw)
    # 3. Each kernel zero-padded to (H, W) and inverse-FFT'd is a trigonometric polynomial K_k(x),
    # and the per-pixel matrix sum_k K_k K_k^H * HW / (kh kw) depends only on the lags between
    # kernel taps: G_ij[d] = sum_k sum_{p - q = d} v_k[i, p] conj(v_k[j, q]), a correlation
    # computed by FFT on a (2 kh - 1, 2 kw - 1) grid, where it does not wrap around.
    lags = (2 * kh - 1, 2 * kw - 1)
    spectra = torch.fft.fft2(kernels, s=lags)
    G = torch.fft.ifft2(torch.einsum("kiab,kjab->ijab", spectra, spectra.conj()))
    G = G / (kh * kw)
    # 4. The lag sums along W once; along H one chunk of rows at a time, then the exact top
    # eigenvector of every pixel's Hermitian C x C matrix.
    Gw = torch.einsum("ijmn,yn->ijmy", G, _fourier_phases(W, kw, kspace.device))
    Eh = _fourier_phases(H, kh, kspace.device)
    rows = max(1, _EIGH_CHUNK_BYTES // (W * C * C * kspace.element_size()))
    maps = torch.empty_like(kspace)
    for start in range(0, H, rows):
        stop = min(start + rows, H)
        AHA = torch.einsum("rm,ijmy->ryij", Eh[start:stop], Gw)
        eigenvalues, eigenvectors = torch.linalg.eigh(AHA)
        top = eigenvectors[..., -1].permute(2, 0, 1)  # (C, rows, W)
        # 5. Phase relative to the first coil, zero where the top eigenvalue is at most crop.
        kept = eigenvalues[..., -1] > crop
        maps[:, start:stop] = torch.where(kept, _phase_to_first_coil(top), torch.zeros_like(top))
    return maps


def espirit_maps(
    kspace: Tensor,
    calib_width: int = 24,
    thresh: float = 0.02,
    crop: float = 0.95,
    *,
    kernel_width: int = 6,
    max_iter: int = 100,
    calib_shape: tuple[int, int] | None = None,
) -> Tensor:
    r"""ESPIRiT coil maps (one set) from a fully sampled calibration region at the centre of k-space.

    A torch transcription of ``sigpy.mri.app.EspiritCalib`` (sigpy 0.1.27) that also takes a
    rectangular calibration region, so that the few fully sampled centre columns (ACS lines) of
    undersampled fastMRI data suffice: ``calib_shape=(24, w)`` with ``w`` the widest centred
    region inside the run of :func:`operators.masks.acs_lines` (given there). The steps are
    sigpy's:

    1. the calibration matrix of all ``kh x kw`` k-space patches (all coils) of the central
       ``calib_shape`` region (sigpy's ``resize`` centring: rows from ``H // 2 - h // 2``,
       columns from ``W // 2 - w // 2``), with ``kh = min(kernel_width, h)`` and
       ``kw = min(kernel_width, w)``;
    2. its SVD, keeping the rows of :math:`V^H` whose singular value exceeds ``thresh`` times the
       largest;
    3. each kernel zero-padded (centred) to ``(H, W)`` and inverse FFT'd (centred, orthonormal),
       giving :math:`K_k(x) \in \mathbb C^C`, and at every pixel the Hermitian matrix
       :math:`\frac{HW}{k_h k_w} \sum_k K_k(x) K_k(x)^H`;
    4. its top eigenvector, with phase relative to the first coil, zeroed where the top
       eigenvalue is at most ``crop``.

    Differences from sigpy, none of which changes the result beyond rounding: the eigenvectors
    come from ``torch.linalg.eigh`` (exact) instead of ``max_iter`` power iterations; the
    per-pixel matrices are built from the lag correlations of the kernels (step 3 needs only
    differences of kernel taps) and decomposed a chunk of rows at a time (at most
    ``_EIGH_CHUNK_BYTES`` of them at once), so memory stays bounded for 15 coils at 320 x 372;
    the work runs in complex128 on ``kspace``'s device. Where power iteration has not converged
    (nearly equal top eigenvalues, typically at the edges of the field of view) sigpy's maps
    differ from these exact ones.

    A region only a little wider than the kernel (8 columns for the 6-wide kernel) leaves the
    eigenvalue under ``crop`` over much of the object; fastMRI's 30 (4x) or 15 (8x) ACS columns
    are enough. For fewer, lower ``crop`` or ``kernel_width``, or use :func:`lowres_coil_maps`.

    The maps have :math:`\sum_c |S_c|^2 = 1` where the eigenvalue exceeds ``crop`` and are zero
    elsewhere. They do not change when ``kspace`` is scaled by a constant (the kernels are
    singular vectors and the threshold is relative).

    Args:
        kspace: centred multi-coil k-space, ``(C, H, W)`` or ``(B, C, H, W)`` complex. Only the
            calibration region is read, so undersampled k-space works when that region is fully
            sampled.
        calib_width: side of the square calibration region (sigpy's ``calib_width``); ignored
            when ``calib_shape`` is given.
        thresh: singular values of the calibration matrix at most ``thresh`` times the largest
            are discarded.
        crop: eigenvalue threshold, in ``[0, 1]``, at or under which maps are set to zero.
        kernel_width: side of the ESPIRiT kernel (shrunk to the calibration region along an axis
            where that is narrower).
        max_iter: sigpy's number of power iterations; accepted for compatibility and unused,
            as the eigenvectors are exact.
        calib_shape: ``(h, w)``, a rectangular calibration region (readout rows, phase-encode
            columns), each between 1 and the k-space size; overrides ``calib_width``.

    Returns:
        maps, the shape, dtype and device of ``kspace``.

    Raises:
        ValueError: ``kspace`` is not complex ``(C, H, W)`` or ``(B, C, H, W)``, or the
            calibration region, kernel width, ``thresh`` or ``crop`` is out of range.
    """
    check_tensor(kspace, "kspace", complex_=True)
    if kspace.ndim not in (3, 4):
        raise ValueError(f"kspace: expected (C, H, W) or (B, C, H, W), got shape {tuple(kspace.shape)}")
    H, W = kspace.shape[-2:]
    if isinstance(kernel_width, bool) or not isinstance(kernel_width, numbers.Integral) or kernel_width < 1:
        raise ValueError(f"kernel_width: expected a positive integer, got {kernel_width!r}")
    if calib_shape is None:
        if not kernel_width <= calib_width <= min(H, W):
            raise ValueError(
                f"calib_width: expected between kernel_width={kernel_width} and the k-space size "
                f"min(H, W) = {min(H, W)}, got {calib_width}"
            )
        calib = (int(calib_width), int(calib_width))
    else:
        valid = isinstance(calib_shape, (tuple, list, torch.Size)) and len(calib_shape) == 2
        if not valid or any(
            isinstance(s, bool) or not isinstance(s, numbers.Integral) or not 1 <= s <= n
            for s, n in zip(calib_shape, (H, W))
        ):
            raise ValueError(
                f"calib_shape: expected (h, w), two integers between 1 and the k-space size ({H}, {W}), "
                f"got {calib_shape!r}"
            )
        calib = (int(calib_shape[0]), int(calib_shape[1]))
    if not 0 <= thresh < 1:
        raise ValueError(f"thresh: expected a relative singular-value threshold in [0, 1), got {thresh}")
    if not 0 <= crop <= 1:
        raise ValueError(f"crop: expected an eigenvalue threshold in [0, 1], got {crop}")
    kernel = (min(kernel_width, calib[0]), min(kernel_width, calib[1]))
    batch = kspace.detach().reshape(-1, *kspace.shape[-3:]).to(torch.complex128)
    maps = torch.stack([_espirit_one(ksp, calib, kernel, thresh, crop) for ksp in batch])
    return maps.reshape(kspace.shape).to(kspace.dtype)


def _hann(n: int, device: torch.device) -> Tensor:
    r"""``(n,)`` float64, :math:`\sin^2(\pi (k + 1/2) / n)`: a Hann taper without zero taps."""
    k = torch.arange(n, dtype=torch.float64, device=device)
    return torch.sin(math.pi * (k + 0.5) / n).square()


def _boxcar(n: int, device: torch.device) -> Tensor:
    """``(n,)`` float64 ones: no taper."""
    return torch.ones(n, dtype=torch.float64, device=device)


_WINDOWS = {"hann": _hann, "boxcar": _boxcar}
"""Tapers of the ACS columns in :func:`lowres_coil_maps`, by name."""


def lowres_coil_maps(
    kspace: Tensor,
    acs: tuple[int, int],
    *,
    window: str = "hann",
    eps_fraction: float = 0.05,
) -> Tensor:
    r"""Coil maps from the ACS lines alone: low-resolution coil images over their root sum of squares.

    The classic estimate: per coil, the ACS columns ``acs[0], ..., acs[1] - 1``
    tapered by ``window`` along the phase-encode direction (all readout rows kept), everything
    else zeroed, then

    .. math:: S_c = \frac{x_c}{\sqrt{\sum_{c'} |x_{c'}|^2}}, \qquad x_c = \mathcal F_c^{-1}(w \odot y_c),

    with the phase of the first coil removed, as in :func:`espirit_maps`, so that
    :math:`\sum_c |S_c|^2 = 1` on the support and the first coil is real non-negative. The
    support is where the root sum of squares exceeds ``eps_fraction`` times its maximum (per
    volume); the maps are zero elsewhere. Works for ACS widths down to one column, where the
    maps can only vary along the readout direction.

    Args:
        kspace: centred multi-coil k-space, ``(C, H, W)`` or ``(B, C, H, W)`` complex; only the
            ACS columns are read.
        acs: ``(start, stop)``, the fully sampled centre columns, e.g. from
            :func:`operators.masks.acs_lines`; ``0 <= start < stop <= W``.
        window: the taper along the ACS columns, ``"hann"`` (:math:`\sin^2(\pi (k + 1/2) / n)`,
            no zero taps, so 1, 2 or 3 columns still count) or ``"boxcar"`` (none).
        eps_fraction: the support threshold relative to the largest root sum of squares, in
            ``[0, 1)``.

    Returns:
        maps, the shape, dtype and device of ``kspace``.

    Raises:
        ValueError: ``kspace`` is not complex ``(C, H, W)`` or ``(B, C, H, W)``, or ``acs``,
            ``window`` or ``eps_fraction`` is out of range.
    """
    check_tensor(kspace, "kspace", complex_=True)
    if kspace.ndim not in (3, 4):
        raise ValueError(f"kspace: expected (C, H, W) or (B, C, H, W), got shape {tuple(kspace.shape)}")
    W = kspace.shape[-1]
    valid = isinstance(acs, (tuple, list)) and len(acs) == 2
    if not valid or any(isinstance(a, bool) or not isinstance(a, numbers.Integral) for a in acs):
        raise ValueError(f"acs: expected (start, stop), two integers, got {acs!r}")
    start, stop = int(acs[0]), int(acs[1])
    if not 0 <= start < stop <= W:
        raise ValueError(f"acs: expected 0 <= start < stop <= W = {W}, got {acs!r}")
    if window not in _WINDOWS:
        raise ValueError(f"window: expected one of {sorted(_WINDOWS)}, got {window!r}")
    if not 0 <= eps_fraction < 1:
        raise ValueError(f"eps_fraction: expected a fraction in [0, 1), got {eps_fraction}")
    # 1. The tapered ACS columns, zero elsewhere.
    taper = torch.zeros(W, dtype=torch.float64, device=kspace.device)
    taper[start:stop] = _WINDOWS[window](stop - start, kspace.device)
    images = ifft2c(kspace.detach() * cast_like(taper, kspace))
    # 2. Divide by the root sum of squares on its support; the first coil's phase removed.
    root = rss(images, dim=-3, keepdim=True)
    peak = root.amax(dim=(-2, -1), keepdim=True)
    support = root > eps_fraction * peak
    maps = images / torch.where(support, root, torch.ones_like(root))
    maps = _phase_to_first_coil(maps)
    return torch.where(support, maps, torch.zeros_like(maps))
