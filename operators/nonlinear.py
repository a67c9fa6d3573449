r"""Nonlinear forward models: Fourier phase retrieval and pre-log transmission CT.

Both are differentiable through autograd (the CT projector supplies its matched adjoint as
the gradient), which is all a guidance-based sampler needs.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from operators.base import LinearOperator, Operator, check_tensor, half_in_single_precision


class PhaseRetrieval(Operator):
    r"""Fourier magnitudes of a zero-padded image, :math:`y = |F\,P x|` (or :math:`|F P x|^2`).

    ``P`` places the image at the centre of a grid ``oversampling`` times larger in each
    dimension (oversampling of at least 2 makes the magnitudes generically determine the image
    up to the trivial ambiguities: global phase, shift, conjugate flip); ``F`` is the
    orthonormal 2D DFT, so :math:`\|y\|_2 = \|x\|_2` for magnitudes.

    Args:
        oversampling: padded size over image size per dimension, ``>= 1``.
        intensity: return squared magnitudes instead of magnitudes.

    Shapes:
        ``x``: ``(B, C, H, W)`` real or complex; ``y``: ``(B, C, ceil(s H), ceil(s W))`` real.
    """

    def __init__(self, oversampling: float = 2.0, *, intensity: bool = False):
        if not 1 <= oversampling < math.inf:
            raise ValueError(f"oversampling: expected a finite ratio >= 1, got {oversampling}")
        self.oversampling = float(oversampling)
        self.intensity = intensity

    def padded_shape(self, H: int, W: int) -> tuple[int, int]:
        return math.ceil(self.oversampling * H), math.ceil(self.oversampling * W)

    def pad(self, x: Tensor) -> Tensor:
        """:math:`P x`, the image centred in the oversampled grid."""
        H, W = x.shape[-2:]
        Hp, Wp = self.padded_shape(H, W)
        top, left = (Hp - H) // 2, (Wp - W) // 2
        return torch.nn.functional.pad(x, (left, Wp - W - left, top, Hp - H - top))

    @half_in_single_precision
    def A(self, x: Tensor) -> Tensor:
        check_tensor(x, "x", ndim=4)
        z = torch.fft.fft2(self.pad(x), norm="ortho")
        power = z.real.square() + z.imag.square()
        return power if self.intensity else power.sqrt()

    def __repr__(self) -> str:
        return f"PhaseRetrieval(oversampling={self.oversampling}, intensity={self.intensity})"


class TransmissionCT(Operator):
    r"""Pre-log transmission CT (Beer–Lambert): :math:`I = I_0 \exp(-\mu P x)`.

    ``x`` holds attenuation in image units, ``mu`` converts one image unit to attenuation per
    pixel length (the projector's units), ``P`` is a linear projector such as
    :class:`operators.ct.ParallelBeamCT`, and ``I`` the expected photon counts, to be corrupted
    by :class:`operators.noise.PoissonNoise` (``normalize=False`` with ``I0`` the blank-scan
    count, or ``I0 = 1`` and ``normalize=True`` for transmitted fractions).
    :meth:`postlog` turns counts back into line integrals of ``x``.

    Args:
        projector: the linear projection operator ``P``.
        I0: the blank-scan photon count per detector bin, ``> 0``.
        mu: attenuation per pixel length of one image unit, ``> 0``.
    """

    def __init__(self, projector: LinearOperator, I0: float = 1e4, mu: float = 1.0):
        if not isinstance(projector, LinearOperator):
            raise ValueError(f"projector: expected a LinearOperator, got {type(projector).__name__}")
        if not 0 < I0 < math.inf:
            raise ValueError(f"I0: expected a finite, positive photon count, got {I0}")
        if not 0 < mu < math.inf:
            raise ValueError(f"mu: expected a finite, positive attenuation per pixel length, got {mu}")
        self.projector = projector
        self.I0 = float(I0)
        self.mu = float(mu)

    def A(self, x: Tensor) -> Tensor:
        return self.I0 * torch.exp(-self.mu * self.projector.A(x))

    def postlog(self, counts: Tensor, *, min_count: float = 0.5) -> Tensor:
        r"""Line integrals of ``x``, :math:`-\log(\max(I, I_{min}) / I_0) / \mu`; counts below ``min_count`` are clamped."""
        return -torch.log(counts.clamp_min(min_count) / self.I0) / self.mu

    def __repr__(self) -> str:
        return f"TransmissionCT({self.projector!r}, I0={self.I0}, mu={self.mu})"
