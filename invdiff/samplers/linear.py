r"""Gaussian linear algebra the linear-inverse-problem samplers share, on any linear operator.

Everything goes through :meth:`operators.base.LinearOperator.solve_normal`, which solves
:math:`(A^H A + \lambda I) x = b` in closed form where the normal operator is diagonal in a known
basis (inpainting, super-resolution, single-coil Cartesian MRI, dense matrices, and these behind
``RealToComplex``) and by conjugate gradient otherwise (multi-coil MRI, CT):
:func:`linear_algebra` names which.

Noise convention (:func:`invdiff.samplers.common.likelihood_weight`): real measurements have noise
of variance :math:`s^2` per entry; complex ones circular noise with :math:`\mathbb E|n|^2 = s^2`,
i.e. :math:`s^2/2` per real component, so that :math:`-\log p(y \mid x) = w \|y - A x\|^2` with
:math:`w = 1/(2 s^2)` (real) or :math:`1/s^2` (complex). The precision that the likelihood adds
to a real unknown is :math:`\kappa A^H A` with :math:`\kappa = 2 w`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from invdiff.samplers.common import likelihood_weight
from operators.base import LinearOperator, regulariser


def linear_algebra(op: LinearOperator) -> str:
    """``"closed form"`` or ``"conjugate gradient"``: how ``op.solve_normal`` solves."""
    return "closed form" if op.has_closed_form_solve else "conjugate gradient"


def likelihood_precision(y: Tensor, noise_var: float) -> float:
    r""":math:`\kappa = 2 w`: the likelihood's precision along :math:`A^H A` for a real unknown
    (:math:`1/s^2` for real ``y``, :math:`2/s^2` for complex ``y``); ``inf`` for ``noise_var = 0``."""
    return 2.0 * likelihood_weight(y, math.sqrt(noise_var))


def measurement_noise(y: Tensor, noise_var: float, generator: torch.Generator | None) -> Tensor:
    """Noise of the convention above: real of variance ``noise_var`` per entry, or circular complex
    with :math:`\\mathbb E|n|^2` = ``noise_var``."""
    n = torch.randn(y.shape, generator=generator, device=y.device, dtype=y.dtype)
    return math.sqrt(noise_var) * n


def _adjoint(op: LinearOperator, y: Tensor, like: Tensor) -> Tensor:
    """``op.AT(y)``, its real part for a real unknown (a complex matrix on real ``x`` is linear
    over the reals, and its adjoint under the real inner product is the real part)."""
    ATy = op.AT(y)
    return ATy.real if ATy.is_complex() and not like.is_complex() else ATy


def solve_gram(
    op: LinearOperator,
    r: Tensor,
    signal_var: float | Tensor,
    noise_var: float | Tensor,
    *,
    max_iter: int = 100,
    tol: float = 1e-6,
) -> Tensor:
    r""":math:`(a A A^H + b I)^{-1} r` in measurement space, by Woodbury:
    :math:`\frac1b\big(r - A (A^H A + \tfrac{b}{a} I)^{-1} A^H r\big)`.

    The covariance of :math:`A x` plus noise when :math:`x` has covariance :math:`a I`: ΠGDM's
    guidance and the SMC samplers' predictive likelihoods take it.

    Args:
        op: the linear operator.
        r: a measurement-shaped tensor ``(B, ...)``.
        signal_var: :math:`a > 0`, a number or ``(B,)``.
        noise_var: :math:`b > 0`, a number or ``(B,)``.
        max_iter, tol: conjugate gradient's, where ``op`` has no closed form.
    """
    a, b = regulariser(signal_var, r, "signal_var"), regulariser(noise_var, r, "noise_var")
    ATr = op.AT(r)
    ratio = b / a
    ratio = ratio.reshape(-1) if isinstance(ratio, Tensor) else ratio
    return (r - op.A(op.solve_normal(ATr, ratio, max_iter=max_iter, tol=tol))) / b


def sample_gaussian_posterior(
    op: LinearOperator,
    y: Tensor,
    mean: Tensor,
    prior_var: float | Tensor,
    noise_var: float,
    *,
    generator: torch.Generator | None,
    max_iter: int = 100,
    tol: float = 1e-6,
    with_mean: bool = True,
) -> tuple[Tensor, Tensor | None]:
    r"""An exact draw from :math:`\mathcal N(x;\ m, v I)\, p(y \mid x)` by perturb-and-solve.

    With :math:`\kappa` of :func:`likelihood_precision`, the posterior has precision
    :math:`I/v + \kappa A^H A` and mean
    :math:`\mu = (A^H A + \tfrac{1}{\kappa v} I)^{-1}\big(\tfrac{m}{\kappa v} + A^H y\big)`; the same
    solve with :math:`m + \sqrt v z` and :math:`y + n` in place of :math:`m` and :math:`y`
    (:math:`z` white, :math:`n` the measurement noise) is a sample (Papandreou & Yuille 2010). With
    ``noise_var = 0`` the sample is the prior draw projected onto :math:`A x = y`,
    :math:`m + \sqrt v z + A^+(y - A(m + \sqrt v z))`.

    Args:
        op: the linear operator, real unknown ``(B, ...)``.
        y: the measurements ``(B, ...)``.
        mean: :math:`m`, the unknown's shape.
        prior_var: :math:`v > 0`, a number or ``(B,)``.
        noise_var: :math:`s^2 \ge 0` in the convention of the module docstring.
        generator: draws :math:`z` (first) and :math:`n`.
        max_iter, tol: conjugate gradient's, where ``op`` has no closed form.
        with_mean: also solve for the posterior mean (a second solve); ``False`` returns ``None`` for it.

    Returns:
        ``(sample, posterior_mean)``, each the shape of ``mean``.
    """
    v = regulariser(prior_var, mean, "prior_var")
    if not (math.isfinite(noise_var) and noise_var >= 0):
        raise ValueError(f"noise_var: expected a finite number >= 0, got {noise_var!r}")
    z = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
    perturbed = mean + z * (v**0.5)
    if noise_var == 0:
        posterior_mean = mean + op.pinv(y - op.A(mean), max_iter=max_iter, tol=tol) if with_mean else None
        return perturbed + op.pinv(y - op.A(perturbed), max_iter=max_iter, tol=tol), posterior_mean
    kv = likelihood_precision(y, noise_var) * v
    lam = kv.reshape(-1) if isinstance(kv, Tensor) else kv
    y_perturbed = y + measurement_noise(y, noise_var, generator)
    shift = 1 / lam
    sample = op.solve_normal(perturbed / kv + _adjoint(op, y_perturbed, mean), shift, max_iter=max_iter, tol=tol)
    if not with_mean:
        return sample, None
    posterior_mean = op.solve_normal(mean / kv + _adjoint(op, y, mean), shift, max_iter=max_iter, tol=tol)
    return sample, posterior_mean
