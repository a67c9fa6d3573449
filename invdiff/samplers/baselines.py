r"""Classical reconstructions to compare samplers against; each returns ``(x, info)`` like a sampler.

* :func:`adjoint_baseline`: :math:`A^H y`, the zero-filled reconstruction for MRI and the
  unfiltered back-projection for CT.
* :func:`least_squares`: CG on the (damped) normal equations
  :math:`(A^H A + \lambda I) x = A^H y` from zero, CG-SENSE for multi-coil MRI; with
  :math:`\lambda = 0` it tends to the minimum-norm least-squares solution.
* :func:`pinv_baseline`: the operator's own minimum-norm least-squares solution ``op.pinv``
  (closed form where the operator has one, e.g. super-resolution).
* :func:`fbp_baseline`: filtered back-projection, for CT operators that provide ``fbp``.
* :func:`postlog_fbp`: logarithm of pre-log transmission data, then FBP.
* :func:`error_reduction`: Fienup's error-reduction (Gerchberg-Saxton) algorithm for Fourier
  phase retrieval.
"""

from __future__ import annotations

import math
import time

import torch
from torch import Tensor

from operators.base import LinearOperator, Operator
from operators.cg import conjugate_gradient
from operators.nonlinear import PhaseRetrieval, TransmissionCT


def _check_linear(op: Operator, name: str) -> None:
    if not isinstance(op, LinearOperator):
        raise ValueError(f"{name}: op: expected a LinearOperator, got {op!r}")


def adjoint_baseline(op: LinearOperator, y: Tensor, **_) -> tuple[Tensor, dict]:
    """``op.AT(y)``: zero-filled (MRI) or back-projected (CT) measurements.

    Args:
        op: a linear operator.
        y: measurements, ``(B, ...)``.
        **_: ignored, so that the call matches the other baselines'.

    Returns:
        ``(x, info)``, ``info`` with ``nfe = 0`` and ``seconds``.
    """
    start = time.perf_counter()
    _check_linear(op, "adjoint_baseline")
    x = op.AT(y)
    return x, {"nfe": 0, "seconds": time.perf_counter() - start}


def least_squares(
    op: LinearOperator,
    y: Tensor,
    *,
    max_iter: int = 30,
    tol: float = 1e-6,
    damping: float = 0.0,
) -> tuple[Tensor, dict]:
    r"""Conjugate gradient on :math:`(A^H A + \lambda I) x = A^H y`, per sample, from zero.

    Args:
        op: a linear operator.
        y: measurements, ``(B, ...)``.
        max_iter: the most CG iterations; early stopping regularises when ``damping = 0``.
        tol: a sample stops at relative residual ``tol``.
        damping: :math:`\lambda \ge 0` (Tikhonov).

    Returns:
        ``(x, info)``, ``info`` with ``nfe = 0``, ``seconds`` and the per-sample ``iterations``
        and relative ``residual`` (``(B,)``) of CG.
    """
    start = time.perf_counter()
    _check_linear(op, "least_squares")
    if not damping >= 0:
        raise ValueError(f"least_squares: damping: expected >= 0, got {damping}")

    def normal(v: Tensor) -> Tensor:
        return op.normal(v) + damping * v if damping > 0 else op.normal(v)

    x, cg_info = conjugate_gradient(normal, op.AT(y), max_iter=max_iter, tol=tol)
    return x, {"nfe": 0, "seconds": time.perf_counter() - start, **cg_info}


def pinv_baseline(op: LinearOperator, y: Tensor, **options) -> tuple[Tensor, dict]:
    """``op.pinv(y, **options)``: the minimum-norm least-squares solution.

    Args:
        op: a linear operator; those with a closed-form pseudo-inverse use it, others run CG.
        y: measurements, ``(B, ...)``.
        **options: passed to ``op.pinv`` (``max_iter``, ``tol`` for the CG fallback).

    Returns:
        ``(x, info)``, ``info`` with ``nfe = 0`` and ``seconds``.
    """
    start = time.perf_counter()
    _check_linear(op, "pinv_baseline")
    x = op.pinv(y, **options)
    return x, {"nfe": 0, "seconds": time.perf_counter() - start}


def fbp_baseline(op: Operator, y: Tensor, filter: str = "ramp") -> tuple[Tensor, dict]:
    """Filtered back-projection ``op.fbp(y, filter)``.

    Only operators with an ``fbp`` method (:class:`~operators.ct.ParallelBeamCT`,
    :class:`~operators.ct.FanBeamCT`) qualify; compositions and other operators raise, since an
    FBP of a composed model is not defined in general (use :func:`least_squares` instead).

    Args:
        op: a CT operator.
        y: sinograms, ``(B, C, n_angles, n_detectors)``.
        filter: the filter name the operator's ``fbp`` accepts (``"ramp"``, ``"shepp-logan"``, ...).

    Returns:
        ``(x, info)``, ``info`` with ``nfe = 0`` and ``seconds``.
    """
    start = time.perf_counter()
    fbp = getattr(op, "fbp", None)
    if not callable(fbp):
        raise ValueError(
            f"fbp_baseline: op: {op!r} has no fbp method (only CT operators such as ParallelBeamCT and "
            f"FanBeamCT do, not compositions); use least_squares"
        )
    x = fbp(y, filter)
    return x, {"nfe": 0, "seconds": time.perf_counter() - start}


def postlog_fbp(op: TransmissionCT, y: Tensor, *, min_count: float = 0.5, filter: str = "ramp") -> tuple[Tensor, dict]:
    r"""Log-transform pre-log transmission data, then filtered back-projection.

    Args:
        op: a :class:`~operators.nonlinear.TransmissionCT` whose projector has ``fbp``.
        y: photon counts (or transmitted fractions with ``I0 = 1``), ``(B, C, n_angles, n_detectors)``.
        min_count: counts below it (photon starvation) are clamped before the logarithm.
        filter: the FBP filter.

    Returns:
        ``(x, info)``, ``info`` with ``nfe = 0`` and ``seconds``.
    """
    start = time.perf_counter()
    if not isinstance(op, TransmissionCT):
        raise ValueError(f"postlog_fbp: op: expected a TransmissionCT, got {op!r}; use fbp_baseline for post-log data")
    x, _ = fbp_baseline(op.projector, op.postlog(y, min_count=min_count), filter)
    return x, {"nfe": 0, "seconds": time.perf_counter() - start}


def error_reduction(
    op: PhaseRetrieval,
    y: Tensor,
    *,
    iterations: int = 200,
    nonnegative: bool = True,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, dict]:
    r"""Fienup's error reduction for :class:`~operators.nonlinear.PhaseRetrieval` measurements.

    From random Fourier phases, alternate between the measured magnitudes
    (:math:`z \leftarrow |y|\, z / |z|` on the oversampled grid) and the object constraints
    (zero outside the image's support, real and, with ``nonnegative``, non-negative). The result
    is determined up to the trivial ambiguities of phase retrieval (shift, flip).

    Args:
        op: the phase-retrieval operator that produced ``y``.
        y: magnitudes (or intensities, for ``op.intensity``), ``(B, C, Hp, Wp)``.
        iterations: the number of projection pairs.
        nonnegative: also project onto non-negative images.
        generator: draws the initial phases; default a generator seeded with 0, so the baseline
            is deterministic.

    Returns:
        ``(x, info)``: ``(B, C, H, W)`` images and ``info`` with ``nfe = 0``, ``seconds`` and the
        per-sample relative magnitude misfit ``residual`` (``(B,)``).
    """
    start = time.perf_counter()
    if not isinstance(op, PhaseRetrieval):
        raise ValueError(f"error_reduction: op: expected a PhaseRetrieval operator, got {op!r}")
    if y.ndim != 4:
        raise ValueError(f"error_reduction: y: expected (B, C, Hp, Wp), got shape {tuple(y.shape)}")
    Hp, Wp = y.shape[-2:]
    H, W = round(Hp / op.oversampling), round(Wp / op.oversampling)
    if op.padded_shape(H, W) != (Hp, Wp):
        raise ValueError(f"error_reduction: y: {Hp}x{Wp} is not an oversampled grid of {op!r}")
    top, left = (Hp - H) // 2, (Wp - W) // 2
    magnitude = y.clamp_min(0).sqrt() if op.intensity else y.clamp_min(0)
    if generator is None:
        generator = torch.Generator(y.device).manual_seed(0)
    phase = 2 * math.pi * torch.rand(y.shape, generator=generator, device=y.device, dtype=y.dtype)
    z = torch.polar(magnitude, phase)

    def to_object(z: Tensor) -> Tensor:
        x = torch.fft.ifft2(z, norm="ortho").real[..., top : top + H, left : left + W]
        return x.clamp_min(0) if nonnegative else x

    x = to_object(z)
    for _ in range(iterations):
        # 1. Measured magnitudes, keeping the current phases.
        z = torch.fft.fft2(op.pad(x), norm="ortho")
        z = torch.polar(magnitude, torch.angle(z))
        # 2. Object constraints: support, real, non-negative.
        x = to_object(z)
    scale = y.flatten(1).norm(dim=1).clamp_min(torch.finfo(y.dtype).tiny)
    misfit = (op.A(x) - y).flatten(1).norm(dim=1) / scale
    return x, {"nfe": 0, "seconds": time.perf_counter() - start, "residual": misfit}
