r"""Closed-form singular value decompositions of the linear operators, for spectral samplers.

A linear operator is written :math:`A = U \operatorname{diag}(s) V^H` with :math:`V` a *square*
orthonormal basis of the unknown's space: :meth:`SVD.Vt` gives all spectral coordinates of an
unknown :math:`x` (its observed and its null-space ones), :meth:`SVD.V` maps them back
(``V(Vt(x)) == x``, ``||Vt(x)|| == ||x||``), and :attr:`SVD.s` holds the singular values in the
same layout (broadcastable against ``Vt(x)``), zero on the coordinates that ``A`` does not see.
DDRM, DDNM (:mod:`invdiff.samplers.ddrm`) and MCGDiff run on these coordinates; every other
operator (multi-coil MRI, CT) gives ``None`` from :func:`svd_of` and those samplers fall back to
conjugate gradient.

The measurement in spectral coordinates. :meth:`SVD.measurement` returns
:math:`\bar y = U^H y / s` on the observed coordinates (zero elsewhere) and its noise standard
deviation there, in the units of :meth:`SVD.Vt` applied to real white noise:
:math:`\bar y = V^H x + \mathrm{std} \odot \xi` with :math:`\xi` distributed as ``Vt(randn_like(x))``
on those coordinates. Samplers therefore draw spectral noise as ``Vt(randn_like(x))``, never as
independent complex normals: a real unknown with a complex basis (the Fourier bases of
super-resolution) has Hermitian-symmetric coordinates, and ``V`` of a combination of such
coordinates with real, per-coordinate weights that respect the symmetry is real (``V`` returns
the real part for a real unknown). With Gaussian measurement noise of std :math:`\sigma_y`
(:class:`operators.noise.GaussianNoise`), ``std`` is :math:`c\,\sigma_y / s_i` with :math:`c = 1`
for a real measurement (or a complex unknown) and :math:`c = 1/\sqrt 2` for a complex measurement
of a real unknown (circular noise with :math:`\mathbb E|n|^2 = \sigma_y^2`: each real part has
std :math:`\sigma_y/\sqrt 2`, as in :func:`~invdiff.samplers.common.likelihood_weight`).

Closed forms (:func:`svd_of`), for a real unknown unless noted:

* :class:`~operators.base.Identity`: :math:`V = U = I`, :math:`s = 1`.
* :class:`~operators.inpainting.Inpainting` (0/1 or weighted masks), :class:`~operators.base.Multiply`
  (real or complex weights :math:`w`): :math:`V = I`, :math:`s = |w|`, :math:`U` the phase of
  :math:`w` (for a complex :math:`w` and a real unknown the real twin: ``Ut`` keeps the part in
  phase with :math:`w`, the quadrature part carries noise only).
* :class:`~operators.base.CenterCrop`: :math:`V = I`, :math:`s` the window's indicator, :math:`U^H`
  the zero-padding.
* :class:`~operators.mri.SingleCoilMRI` (complex unknown, i.e. inside ``X @ RealToComplex()``):
  :math:`V = \mathcal F_c^H`, the centred orthonormal FFT with its pre/post phase ramps
  (:func:`operators.mri.fft2c`), :math:`s` the mask (weights allowed), :math:`U = I` on k-space.
* :class:`~operators.superres.SuperResolution` (any separable kernel, periodic): per axis, the fine
  grid's orthonormal DFT splits into :math:`n` groups of :math:`f` aliases
  :math:`j = l + a n` (:math:`a = 0..f-1`) of each coarse frequency :math:`l`, and :math:`A` maps
  group :math:`l` to coarse frequency :math:`l` by the row :math:`\bar{\hat k}_{l+an}/\sqrt f`.
  Its singular value is :math:`s_l = (\sum_a |\hat k_{l+an}|^2/f)^{1/2}` (the square root of
  ``SuperResolution._gram_spectrum``, :math:`A A^T` being circulant on the coarse grid), its right
  singular vector :math:`u_l = \hat k_{l+an}/(\sqrt f\, s_l)`, completed to a unitary basis of the
  group by a Householder reflection; :math:`V` is the Kronecker product of the two axes' bases
  after the 2D DFT, and :math:`U` the coarse grid's orthonormal DFT. Coordinates are laid out as
  an ``(f h) x (f w)`` image per channel, the observed ones in the top-left ``h x w`` block.
* :class:`~operators.base.Matrix`: ``torch.linalg.svd(full_matrices=True)``, singular values below
  :math:`\max(m, n)\,\epsilon\, s_{max}` treated as zero; a complex matrix of a real unknown is
  decomposed as its real twin :math:`[\operatorname{Re} M; \operatorname{Im} M]`.
* :class:`~operators.base.Scaled`: :math:`|c|\, s`, the phase of :math:`c` into :math:`U`.
* ``X @ RealToComplex()`` for any ``X`` above on a complex unknown: :math:`V^H = V_X^H \circ R`
  with :math:`R` the real isometric bijection of :class:`~operators.base.RealToComplex`; identity
  factors in a composition are dropped.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from operators.base import (
    CenterCrop,
    Identity,
    LinearComposition,
    LinearOperator,
    Matrix,
    Multiply,
    RealToComplex,
    Scaled,
    real_dtype,
)
from operators.inpainting import Inpainting
from operators.mri import SingleCoilMRI, fft2c, ifft2c
from operators.superres import SuperResolution

Map = Callable[[Tensor], Tensor]


def _identity(t: Tensor) -> Tensor:
    return t


class SVD:
    r""":math:`A = U \operatorname{diag}(s) V^H` of a linear operator, as maps (module docstring).

    Args:
        s: the singular values, real and non-negative, broadcastable against ``Vt(x)``; or a
            function of the spectral coordinates ``c`` returning them (when they depend on the
            image size, as for super-resolution). Read them with :meth:`s_like`.
        Vt: ``x -> V^H x``, all spectral coordinates, ``(B, ...)``.
        V: ``c -> V c``, back to the unknown's shape (real for a real unknown).
        Ut: ``y -> U^H y`` in the spectral layout (zero on unobserved coordinates).
        U: ``c -> U c`` from the spectral layout to the measurement's (reads observed coordinates).
        real: the unknown is real.
        complex_measurement: the measurement is complex.
        name: for messages.
    """

    def __init__(
        self,
        s: Tensor | Map,
        Vt: Map,
        V: Map,
        Ut: Map,
        U: Map,
        *,
        real: bool,
        complex_measurement: bool,
        name: str,
    ):
        self._s = s
        self._Vt, self._V, self._Ut, self._U = Vt, V, Ut, U
        self.real = real
        self.complex_measurement = complex_measurement
        self.name = name

    @property
    def noise_factor(self) -> float:
        r""":math:`c` of ``std = c * sigma_y / s``: :math:`1/\sqrt 2` for a complex measurement of a
        real unknown (each part of circular noise has half the variance), else 1."""
        return 1 / math.sqrt(2) if (self.real and self.complex_measurement) else 1.0

    @property
    def s(self) -> Tensor | None:
        """The singular values when they do not depend on the image size, else ``None`` (:meth:`s_like`)."""
        return None if callable(self._s) else self._s

    def s_like(self, c: Tensor) -> Tensor:
        """The singular values for the spectral coordinates ``c``, on its device in its real dtype."""
        s = self._s(c) if callable(self._s) else self._s
        return s.to(device=c.device, dtype=real_dtype(c.dtype))

    def observed(self, c: Tensor) -> Tensor:
        """Boolean, broadcastable against ``c``: the coordinates with ``s > 0``."""
        return self.s_like(c) > 0

    def Vt(self, x: Tensor) -> Tensor:
        r""":math:`V^H x`: the spectral coordinates of ``x``."""
        return self._Vt(x)

    def V(self, c: Tensor) -> Tensor:
        r""":math:`V c`: the unknown with spectral coordinates ``c`` (its real part for a real unknown)."""
        x = self._V(c)
        return x.real if (self.real and x.is_complex()) else x

    def Ut(self, y: Tensor) -> Tensor:
        r""":math:`U^H y` in the spectral layout (zero where ``s == 0``)."""
        return self._Ut(y)

    def U(self, c: Tensor) -> Tensor:
        r""":math:`U c`: a measurement from spectral coordinates (only the observed ones count)."""
        return self._U(c)

    def A(self, x: Tensor) -> Tensor:
        r""":math:`U \operatorname{diag}(s) V^H x`, which equals ``op.A(x)``."""
        c = self.Vt(x)
        return self.U(self.s_like(c) * c)

    def measurement(self, y: Tensor, noise_std: float) -> tuple[Tensor, Tensor]:
        r"""``(ybar, std)``: :math:`\bar y = U^H y / s` on the observed coordinates (0 elsewhere) and
        the noise std there in the units of ``Vt(randn_like(x))`` (``inf`` where ``s == 0``).

        Args:
            y: the measurement, ``(B, ...)``.
            noise_std: :math:`\sigma_y` as :class:`operators.noise.GaussianNoise` adds it.
        """
        u = self.Ut(y)
        s = self.s_like(u)
        observed = s > 0
        safe = torch.where(observed, s, torch.ones_like(s))
        ybar = torch.where(observed, u / safe, torch.zeros_like(u))
        std = torch.where(observed, self.noise_factor * noise_std / safe, torch.full_like(s, math.inf))
        return ybar, std

    def pinv(self, y: Tensor) -> Tensor:
        r""":math:`A^+ y = V \bar y`."""
        return self.V(self.measurement(y, 0.0)[0])

    def __repr__(self) -> str:
        return f"SVD({self.name})"


def svd_of(op: LinearOperator, *, real: bool = True) -> SVD | None:
    """The closed-form SVD of ``op`` (module docstring), or ``None`` when it has none here.

    Args:
        op: the operator.
        real: the unknown is real (the samplers' convention: a real prior); ``False`` for a
            complex unknown (the inner operator of ``X @ RealToComplex()``).
    """
    if isinstance(op, LinearComposition):
        ops = [o for o in op.ops if not isinstance(o, Identity)]
        if len(ops) == 1:
            return svd_of(ops[0], real=real)
        if real and isinstance(ops[-1], RealToComplex):
            inner_op = ops[0] if len(ops) == 2 else LinearComposition(*ops[:-1])
            inner = svd_of(inner_op, real=False)
            return None if inner is None else _real_to_complex(inner)
        return None
    if isinstance(op, Identity):
        return SVD(torch.ones(()), _identity, _identity, _identity, _identity, real=real,
                   complex_measurement=not real, name="Identity")
    if isinstance(op, Inpainting):
        return _pointwise(op.mask, real, "Inpainting")
    if isinstance(op, Multiply):
        return _pointwise(op.weights, real, "Multiply")
    if isinstance(op, CenterCrop):
        return _center_crop(op, real)
    if isinstance(op, SingleCoilMRI):
        return None if real else _single_coil(op)
    if isinstance(op, SuperResolution):
        return _super_resolution(op, real)
    if isinstance(op, Matrix):
        return _matrix(op, real)
    if isinstance(op, Scaled):
        inner = svd_of(op.op, real=real)
        return None if inner is None else _scaled(inner, op.scalar)
    return None


def _pointwise(weights: Tensor, real: bool, name: str) -> SVD:
    w = weights
    s = w.abs()
    if not w.is_complex():
        sign = torch.where(w < 0, -torch.ones_like(w), torch.ones_like(w))
        return SVD(s, _identity, _identity,
                   lambda y: sign.to(device=y.device, dtype=real_dtype(y.dtype)) * y,
                   lambda c: sign.to(device=c.device, dtype=real_dtype(c.dtype)) * c,
                   real=real, complex_measurement=not real, name=name)
    phase = torch.where(s > 0, w / torch.where(s > 0, s, torch.ones_like(s)), torch.ones_like(w))

    def Ut(y: Tensor) -> Tensor:
        u = phase.to(device=y.device).conj().to(y.dtype if y.is_complex() else phase.dtype) * y
        # A real unknown: the real twin keeps the part in phase with w.
        return u.real if real else u

    def U(c: Tensor) -> Tensor:
        return phase.to(device=c.device) * c

    return SVD(s, _identity, _identity, Ut, U, real=real, complex_measurement=True, name=name)


def _center_crop(op: CenterCrop, real: bool) -> SVD:
    s = torch.zeros(op.in_size)
    s[op._rows, op._cols] = 1.0
    return SVD(s, _identity, _identity, op.AT, op.A, real=real, complex_measurement=not real, name=repr(op))


def _single_coil(op: SingleCoilMRI) -> SVD:
    s = op.mask[:, None]  # (B or 1, 1, H, W)
    return SVD(s, fft2c, ifft2c, _identity, _identity, real=False, complex_measurement=True, name=repr(op))


def _householder_bases(spectrum: Tensor, f: int) -> tuple[Tensor, Tensor]:
    r"""Per coarse frequency of one axis: the singular value and a unitary ``(f, f)`` basis of its
    aliases whose first column is the right singular vector (module docstring).

    Args:
        spectrum: ``(n f,)``, the DFT of the taps on the fine grid (``SuperResolution._spectrum``).
        f: the factor.

    Returns:
        ``(s, Q)``: ``(n,)`` and ``(n, f, f)``, ``Q[l, a, i]`` the ``a``-th alias of basis vector ``i``.
    """
    n = spectrum.shape[0] // f
    k = spectrum.reshape(f, n).T / math.sqrt(f)  # (n, f): k[l, a] = khat[l + a n] / sqrt(f)
    s = k.abs().square().sum(1).sqrt()
    u = k / torch.where(s > 0, s, torch.ones_like(s))[:, None]
    u[s == 0] = 0
    u[s == 0, 0] = 1
    # Q = phi (I - 2 w w^H / |w|^2), w = e1 - u / phi, phi the phase of u_0: Q e1 = u.
    u0 = u[:, 0]
    phi = torch.where(u0.abs() > 0, u0 / torch.where(u0.abs() > 0, u0.abs(), torch.ones_like(u0.abs())),
                      torch.ones_like(u0))
    e1 = torch.zeros_like(u)
    e1[:, 0] = 1
    w = e1 - u / phi[:, None]
    norm2 = w.abs().square().sum(1)
    eye = torch.eye(f, dtype=u.dtype, device=u.device).expand(n, f, f)
    reflect = 2 * w[:, :, None] * w.conj()[:, None, :] / torch.where(norm2 > 0, norm2, torch.ones_like(norm2))[:, None, None]
    Q = phi[:, None, None] * (eye - torch.where(norm2[:, None, None] > 0, reflect, torch.zeros_like(reflect)))
    return s, Q


def _super_resolution(op: SuperResolution, real: bool) -> SVD:
    f = op.factor
    cache: dict = {}

    def bases(H: int, W: int, like: Tensor):
        key = (H, W, like.device, real_dtype(like.dtype))
        if key not in cache:
            s1, Q1 = _householder_bases(op._spectrum(H, like), f)
            s2, Q2 = _householder_bases(op._spectrum(W, like), f)
            s = torch.zeros(H, W, dtype=real_dtype(like.dtype), device=like.device)
            s[: H // f, : W // f] = s1[:, None] * s2[None, :]
            cache[key] = (s, Q1, Q2)
        return cache[key]

    def Vt(x: Tensor) -> Tensor:
        op._check_x(x)
        H, W = x.shape[-2:]
        _, Q1, Q2 = bases(H, W, x)
        X = torch.fft.fft2(x, norm="ortho").unflatten(-1, (f, W // f)).unflatten(-3, (f, H // f))
        c = torch.einsum("lai,mbk,...albm->...ilkm", Q1.conj(), Q2.conj(), X)
        return c.flatten(-2).flatten(-3, -2)

    def V(c: Tensor) -> Tensor:
        H, W = c.shape[-2:]
        _, Q1, Q2 = bases(H, W, c)
        C = c.unflatten(-1, (f, W // f)).unflatten(-3, (f, H // f))
        X = torch.einsum("lai,mbk,...ilkm->...albm", Q1, Q2, C).flatten(-2).flatten(-3, -2)
        return torch.fft.ifft2(X, norm="ortho")

    def Ut(y: Tensor) -> Tensor:
        h, w = y.shape[-2:]
        Y = torch.fft.fft2(y, norm="ortho")
        out = Y.new_zeros(*Y.shape[:-2], h * f, w * f)
        out[..., :h, :w] = Y
        return out

    def U(c: Tensor) -> Tensor:
        h, w = c.shape[-2] // f, c.shape[-1] // f
        y = torch.fft.ifft2(c[..., :h, :w], norm="ortho")
        return y.real if real else y

    def s(c: Tensor) -> Tensor:
        return bases(c.shape[-2], c.shape[-1], c)[0]

    return SVD(s, Vt, V, Ut, U, real=real, complex_measurement=not real, name=repr(op))


def _matrix(op: Matrix, real: bool) -> SVD:
    M = op.matrix
    in_shape = op.in_shape
    twin = real and M.is_complex()
    if twin:
        M = torch.cat((M.real, M.imag), 0)
    m, n = M.shape
    U_full, S, Vh = torch.linalg.svd(M.to(torch.complex128 if M.is_complex() else torch.float64), full_matrices=True)
    k = min(m, n)
    cutoff = max(m, n) * torch.finfo(torch.float64).eps * float(S.max()) if S.numel() else 0.0
    s = torch.zeros(n, dtype=torch.float64, device=M.device)
    s[:k] = torch.where(S > cutoff, S, torch.zeros_like(S))

    def cast(t: Tensor, like: Tensor) -> Tensor:
        if t.is_complex() or like.is_complex():
            dtype = like.dtype if like.is_complex() else (torch.complex64 if like.dtype == torch.float32 else torch.complex128)
            return t.to(device=like.device, dtype=dtype)
        return t.to(device=like.device, dtype=like.dtype)

    def Vt(x: Tensor) -> Tensor:
        flat = x.reshape(x.shape[0], n)
        V_h = cast(Vh, flat)
        return flat.to(V_h.dtype) @ V_h.T

    def V(c: Tensor) -> Tensor:
        V_h = cast(Vh, c)
        return (c.to(V_h.dtype) @ V_h.conj()).reshape(c.shape[0], *in_shape)

    def Ut(y: Tensor) -> Tensor:
        if twin:
            y = torch.cat((y.real, y.imag), -1)
        Uk = cast(U_full[:, :k], y)
        u = y.to(Uk.dtype) @ Uk.conj()
        return torch.nn.functional.pad(u, (0, n - k))

    def U(c: Tensor) -> Tensor:
        Uk = cast(U_full[:, :k], c)
        y = c[:, :k].to(Uk.dtype) @ Uk.T
        if twin:
            return torch.complex(y[:, : m // 2].real, y[:, m // 2 :].real)
        return y

    return SVD(s, Vt, V, Ut, U, real=real, complex_measurement=op.matrix.is_complex() or not real, name=repr(op))


def _scaled(inner: SVD, scalar) -> SVD | None:
    c = complex(scalar)
    if c.imag != 0 and not inner.complex_measurement:
        return None
    size = abs(c)
    phase = c / size if size > 0 else 1.0
    if c.imag == 0:
        phase = phase.real
    conj = phase.conjugate()
    return SVD(lambda t: size * inner.s_like(t), inner.Vt, inner.V,
               lambda y: inner.Ut(y * conj), lambda t: phase * inner.U(t),
               real=inner.real, complex_measurement=inner.complex_measurement, name=f"{scalar} * {inner.name}")


def _real_to_complex(inner: SVD) -> SVD:
    r2c = RealToComplex()
    return SVD(inner.s_like, lambda x: inner.Vt(r2c.A(x)), lambda c: r2c.AT(inner.V(c)), inner.Ut, inner.U,
               real=True, complex_measurement=True, name=f"{inner.name} @ RealToComplex()")
