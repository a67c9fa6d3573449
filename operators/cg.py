r"""Batched conjugate gradient for Hermitian positive (semi-)definite systems.

Each sample in the batch is its own system: inner products reduce over all dimensions but the
first, so samples never couple, and a sample stops updating once its relative residual meets
the tolerance. A batch therefore gives the same result as solving its samples one by one.

Non-finite input is an error, never a converged solution: NaN compares false with every
threshold, so a NaN residual would otherwise read as "converged after 0 iterations".

Host synchronisations. Whether every sample has converged is a question the host asks the
device, one synchronisation per test; ``check_every`` sets how often (every iteration on the CPU,
where a test costs nothing, every :data:`CHECK_EVERY_ON_DEVICE` iterations on other devices, or
never). A converged sample takes zero steps, so the answer only decides how many idle iterations
run, never the result. The finiteness of ``b``, ``x0`` and the residuals is tested together, after
the loop, in one more synchronisation, or left to the caller (``check_finite=False``).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable

import torch
from torch import Tensor

from operators.base import check_finite as require_finite
from operators.base import check_tensor

CHECK_EVERY_ON_DEVICE = 10
"""Iterations between convergence tests of :func:`conjugate_gradient` on a device other than the CPU."""


def batch_dot(a: Tensor, b: Tensor) -> Tensor:
    r"""Per-sample real inner product :math:`\operatorname{Re}\sum \bar a b`, shape ``(B,)``."""
    prod = a.conj() * b if a.is_complex() else a * b
    prod = prod.reshape(prod.shape[0], -1).sum(1)
    return prod.real if prod.is_complex() else prod


def conjugate_gradient(
    A: Callable[[Tensor], Tensor],
    b: Tensor,
    x0: Tensor | None = None,
    *,
    max_iter: int = 50,
    tol: float = 1e-6,
    check_every: int | None = None,
    check_finite: bool = True,
) -> tuple[Tensor, dict[str, Tensor]]:
    r"""Solve :math:`A x = b` per sample for Hermitian positive-definite ``A``.

    A sample whose search direction has curvature :math:`p^H A p \le 0` (``A`` not positive
    definite along ``p``: indefinite, or singular with ``b`` outside its range) stops at its
    last iterate and is flagged in ``info["breakdown"]``; its ``residual`` stays above ``tol``.

    Args:
        A: the linear map, batch-first, real or complex (e.g. ``op.normal`` or
            ``lambda x: x + gamma * op.normal(x)``).
        b: right-hand side, ``(B, ...)``, finite.
        x0: initial guess, shape of ``b``, finite; zeros when omitted.
        max_iter: the most iterations (each costs one application of ``A``).
        tol: a sample stops once :math:`\|b - A x\| \le \text{tol}\,\|b\|`.
        check_every: iterations between tests of whether any sample is still active (one host
            synchronisation each; the loop ends at a test that finds none); ``0`` never tests, so
            the loop runs ``max_iter`` iterations without a synchronisation; ``None``: 1 on the
            CPU, :data:`CHECK_EVERY_ON_DEVICE` elsewhere. The result does not depend on it.
        check_finite: test that ``b``, ``x0`` and the residuals are finite (one synchronisation,
            after the loop); ``False`` leaves it to the caller (a sampler that checks its state
            every step), and non-finite values then come out in ``x`` and ``residual``.

    Returns:
        ``(x, info)``: the solution and ``info`` with per-sample ``iterations`` (int, ``(B,)``),
        ``residual`` (relative residual norm, ``(B,)``) and ``breakdown`` (bool, ``(B,)``, the
        samples stopped by non-positive curvature).

    Raises:
        ValueError: ``b`` or ``x0`` is empty or holds NaN or infinite values (with
            ``check_finite``), or ``max_iter``, ``tol`` or ``check_every`` is out of range.
        FloatingPointError: ``A`` returned NaN or infinite values (naming the samples; with
            ``check_finite``).
    """
    if isinstance(max_iter, bool) or not isinstance(max_iter, numbers.Integral) or max_iter < 0:
        raise ValueError(f"max_iter: expected a non-negative integer, got {max_iter!r}")
    if isinstance(tol, bool) or not isinstance(tol, numbers.Real) or not 0 <= tol < math.inf:
        raise ValueError(f"tol: expected a finite number >= 0, got {tol!r}")
    if check_every is None:
        check_every = 1 if b.device.type == "cpu" else CHECK_EVERY_ON_DEVICE
    if isinstance(check_every, bool) or not isinstance(check_every, numbers.Integral) or check_every < 0:
        raise ValueError(f"check_every: expected a non-negative integer or None, got {check_every!r}")
    check_tensor(b, "b")
    if x0 is not None and x0.shape != b.shape:
        raise ValueError(f"x0: expected the shape of b {tuple(b.shape)}, got {tuple(x0.shape)}")
    finite_inputs = [torch.isfinite(b).all()] if check_finite else []
    view = (-1,) + (1,) * (b.ndim - 1)
    if x0 is None:
        x = torch.zeros_like(b)
        r = b
    else:
        if check_finite:
            finite_inputs.append(torch.isfinite(x0).all())
        x = x0
        r = b - A(x0)
    p = r
    rr = batch_dot(r, r)
    b_norm = batch_dot(b, b).sqrt()
    threshold = tol * b_norm
    active = rr.sqrt() > threshold
    breakdown = torch.zeros_like(active)
    iterations = torch.zeros(b.shape[0], dtype=torch.long, device=b.device)
    for k in range(max_iter):
        # Test before the first iteration only when testing every iteration (the CPU's default).
        if check_every and k % check_every == 0 and (k or check_every == 1) and not bool(active.any()):
            break
        Ap = A(p)
        pAp = batch_dot(p, Ap)
        # 1. A sample without positive curvature along p stops here; a NaN curvature goes on
        # and makes its residual NaN, reported after the loop.
        stalled = active & (pAp <= 0)
        breakdown = breakdown | stalled
        active = active & ~stalled
        # 2. Step length along p; frozen samples take a zero step.
        alpha = torch.where(active, rr / torch.where(active, pAp, torch.ones_like(pAp)), torch.zeros_like(rr))
        x = x + alpha.view(view).to(x.dtype) * p
        r = r - alpha.view(view).to(r.dtype) * Ap
        # 3. New conjugate direction.
        rr_new = batch_dot(r, r)
        beta = torch.where(active, rr_new / torch.where(active, rr, torch.ones_like(rr)), torch.zeros_like(rr))
        p = r + beta.view(view).to(p.dtype) * p
        iterations = iterations + active.long()
        rr = torch.where(active, rr_new, rr)
        active = active & (rr.sqrt() > threshold)
    residual = rr.sqrt() / b_norm.clamp_min(torch.finfo(b_norm.dtype).tiny)
    info = {"iterations": iterations, "residual": residual, "breakdown": breakdown}
    if not check_finite:
        return x, info
    # 4. One synchronisation: are b, x0 and the residuals finite?
    finite = torch.stack([*finite_inputs, torch.isfinite(rr).all()]).tolist()
    if not finite[0]:
        require_finite(b, "b")
    if x0 is not None and not finite[1]:
        require_finite(x0, "x0")
    if not finite[-1]:
        bad = (~torch.isfinite(rr)).nonzero().flatten()
        raise FloatingPointError(
            f"conjugate_gradient: A returned NaN or infinite values for samples {bad.tolist()} "
            f"(after {iterations[bad].tolist()} iterations); check the operator and its buffers"
        )
    return x, info
