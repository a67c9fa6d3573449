r"""Decomposed diffusion sampling (DDS; Chung, Lee, Ye, ICLR 2024).

Each step: the Tweedie estimate :math:`\hat x_0 = D(x_t, \sigma_t)`; a few conjugate-gradient
steps on the data term *started at* :math:`\hat x_0`, which keep the update in the Krylov
subspace around it (the paper's "tangent space" argument); then a DDIM step to
:math:`\sigma_{t-1}` towards the refined estimate, with the noise direction
:math:`\hat\epsilon = (x_t - \hat x_0)/\sigma_t` of the *unrefined* one. No gradient through the
network, so it needs about 50 network evaluations and little memory, and linear operators only.

What the official code (``HJ-harry/DDS`` at ``509b140``, ``solver_2d.py``, ``main.py``,
``utils.CG``) does, and what this follows:

* 50 steps (``--T_sampling 50``): DDIM's uniform skip, timesteps ``range(0, 1000, 20)`` reversed,
  ``980, 960, ..., 0`` (``sigmas_vp(50, spacing="uniform")``), ``--CG_iter 5`` CG steps,
  ``--eta 0.85``.
* Data term: with ``sigma_y == 0`` CG on :math:`A^H A x = A^H y`; otherwise CG on
  :math:`(I + \gamma A^H A) x = \hat x_0 + \gamma A^H y` with a fixed ``--gamma`` (default 1.0),
  both from :math:`x = \hat x_0`. :math:`\gamma` is the same number in the caller's units as in
  the network's (for a linear map of the data range without shift, as for complex MRI images).
* The step: ``c1 = sqrt(1 - abar_next) * eta``, ``c2 = sqrt(1 - abar_next) * sqrt(1 - eta**2)``,
  ``x_next = sqrt(abar_next) * x0_refined + c1 * z + c2 * eps``. This is *not* DDIM's
  :math:`\eta` (whose noise is :math:`\eta` times DDPM's): ``eta`` mixes fresh noise and
  :math:`\hat\epsilon` at the next level's full noise std. In VE form,
  :math:`x_{t-1} = x_0' + \sigma_{t-1}(\eta z + \sqrt{1-\eta^2}\,\hat\epsilon)`, which is what
  runs here, so the published ``eta = 0.85`` means the same thing.
* The end: the step to ``t = 0`` returns the refined estimate without noise
  (``xt_next = x0_t_hat`` when ``j == 0``), and one more step from ``t = 0`` to ``t = -1``
  (:math:`\bar\alpha = 1`) evaluates the network there and refines once more.
  ``denoise_last=True`` does this: the step to the schedule's last positive level puts the state
  at the refined estimate (in VE units; the official VP state differs from it by the factor
  :math:`\sqrt{\bar\alpha_0} = 1 - 5\cdot 10^{-5}`), and the step from there to 0 is the last.

``sampler=dds_paper`` runs these settings. Our default differs in two ways, each justified by the
batch benchmark in ``BENCHMARKS.md`` ("The papers' settings against ours"):

* ``gamma=None``: noiseless data (``noise_std == 0``) get the normal equations as in the
  official code, and noisy data a per-step :math:`\gamma_t = 2 w\, r_t^2` with
  :math:`w` the likelihood weight (:func:`~invdiff.samplers.common.likelihood_weight`:
  :math:`1/(2s^2)` for real, :math:`1/s^2` for complex measurements) and
  :math:`r_t^2 = \sigma_t^2/(1 + \sigma_{n,t}^2)`, the variance of :math:`x_0` given :math:`x_t`
  for data of unit variance in the network's units (:math:`\sigma_n = k \sigma`), as in ΠGDM. The
  refined estimate is then the posterior mean for a prior :math:`\mathcal N(\hat x_0, r_t^2 I)` and
  the Gaussian likelihood. An explicit ``gamma`` is always used (also for ``noise_std == 0``).
* ``denoise_last=False``: the schedule's last step to ``sigma = 0`` has :math:`c_1 = c_2 = 0` and
  plays the part of the final denoising step.

Bias. DDS is not an exact posterior sampler, even with an exact denoiser and exact CG: the
official step puts fresh noise around the *mean* estimate, and its weight on that estimate,
:math:`1 - \sqrt{1-\eta^2}\,\sigma_{t-1}/\sigma_t`, does not vanish as steps get finer, so each
step drops part of the spread of :math:`x_0` given :math:`x_t`. On linear-Gaussian problems
(``tests/samplers/test_posterior.py``) the samples' covariance has about 0.7 of the posterior's
trace at ``eta = 0.85`` and about 0.9-0.95 at ``eta = 0``; the mean is off by a fraction of a
posterior standard deviation.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

import torch
from torch import Tensor

from invdiff.priors.base import Denoiser
from invdiff.samplers.common import (
    Callback,
    check_eta,
    check_measurement,
    check_number,
    check_sigmas,
    check_step_finite,
    emit,
    initial_noise,
    likelihood_weight,
    measurement_device_dtype,
    network_sigma,
    posterior_shape,
    real_adjoint,
    ve_step,
)
from operators.base import LinearOperator
from operators.cg import conjugate_gradient

NAME = "sample_dds"


def dds_coefficients(sigma_next: float, eta: float) -> tuple[float, float]:
    r"""``(c1, c2) = (eta * sigma_next, sqrt(1 - eta^2) * sigma_next)``: the official step in VE form."""
    return eta * sigma_next, math.sqrt(1 - eta**2) * sigma_next


def data_gamma(sigma: float, weight: float, data_scale: float = 1.0) -> float:
    r""":math:`\gamma_t = 2 w \sigma_t^2 / (1 + k^2 \sigma_t^2)`, the default weight for noisy data.

    Args:
        sigma: the noise level in the caller's units.
        weight: the likelihood weight :math:`w` (:func:`~invdiff.samplers.common.likelihood_weight`).
        data_scale: the prior's :math:`k` (network noise level per caller unit).
    """
    return 2 * weight * sigma**2 / (1 + (data_scale * sigma) ** 2)


def refine(
    op: LinearOperator,
    ATy: Tensor,
    x0_hat: Tensor,
    sigma: float,
    *,
    noise_std: float,
    gamma: float | None,
    weight: float,
    data_scale: float,
    cg_steps: int,
) -> tuple[Tensor, dict, float | None]:
    r"""DDS's data step: ``cg_steps`` CG iterations from ``x0_hat`` on the normal equations
    (``gamma is None`` and noiseless data) or on :math:`(I + \gamma A^H A) x = \hat x_0 + \gamma A^H y`.

    Returns:
        ``(x0, cg_info, gamma_t)``: the refined estimate, CG's info and the weight used (``None``
        for the normal equations).
    """
    if gamma is None and noise_std == 0:
        x0, cg_info = conjugate_gradient(op.normal, ATy, x0_hat, max_iter=int(cg_steps), check_finite=False)
        return x0, cg_info, None
    gamma_t = gamma if gamma is not None else data_gamma(sigma, weight, data_scale)
    x0, cg_info = conjugate_gradient(
        lambda v: v + gamma_t * op.normal(v), x0_hat + gamma_t * ATy, x0_hat, max_iter=int(cg_steps),
        check_finite=False,
    )
    return x0, cg_info, gamma_t


def sample_dds(
    denoiser: Denoiser,
    op: LinearOperator,
    y: Tensor,
    sigmas: Tensor,
    *,
    noise_std: float,
    generator: torch.Generator | None,
    cg_steps: int = 5,
    eta: float = 0.85,
    gamma: float | None = None,
    denoise_last: bool = False,
    shape: Sequence[int] | None = None,
    callback: Callback | None = None,
) -> tuple[Tensor, dict]:
    r"""Decomposed diffusion sampling (module docstring for the official settings and our choices).

    Args:
        denoiser: the prior, :math:`D(x, \sigma)`.
        op: a :class:`~operators.base.LinearOperator`; nonlinear ones need :func:`sample_dps`.
        y: the measurements, ``(B, ...)``; each sample is its own problem.
        sigmas: ``(n + 1,)`` descending noise levels; the paper's are ``sigmas_vp(50)``.
        noise_std: the measurement noise std :math:`s`; 0 selects the normal equations.
        generator: the source of all randomness.
        cg_steps: CG iterations per step (the paper's M).
        eta: the share of fresh noise at each step (official form), in ``[0, 1]``.
        gamma: the data weight in :math:`(I + \gamma A^H A) x = \hat x_0 + \gamma A^H y`; ``None``
            picks the normal equations for ``noise_std == 0`` and :func:`data_gamma` otherwise.
        denoise_last: the step to the last positive noise level returns the refined estimate
            without noise, as the official loop (module docstring).
        shape: the shape of ``x``, ``(B, ...)``; default ``(B, *denoiser.shape)``, else
            ``op.AT(y).shape``.
        callback: called each step with ``i``, ``sigma``, ``x`` (the state at ``sigma``),
            ``x0_hat`` (the Tweedie estimate) and ``x0`` (after CG).

    Returns:
        ``(x, info)``: samples and ``info`` with ``nfe``, ``seconds``, ``cg_residual`` (``(B,)``,
        the relative CG residual of the last step), ``gamma`` (the last one used, ``None`` for
        the normal equations), ``eta`` and ``cg_steps``.
    """
    start = time.perf_counter()
    if not isinstance(op, LinearOperator):
        raise ValueError(
            f"{NAME}: op: DDS needs a LinearOperator (CG on its normal equations), got {op!r}; "
            f"use sample_dps for nonlinear operators"
        )
    check_measurement(y, NAME)
    check_eta(eta, NAME)
    check_number(cg_steps, "cg_steps", NAME, integer=True, minimum=0)
    check_number(noise_std, "noise_std", NAME, minimum=0)
    check_number(gamma, "gamma", NAME, positive=True, optional=True)
    sigma_list = check_sigmas(sigmas)
    shape = posterior_shape(op, y, shape, NAME)
    device, dtype = measurement_device_dtype(y)
    x = initial_noise(sigma_list[0], shape, generator=generator, device=device, dtype=dtype)
    weight, k = likelihood_weight(y, noise_std), network_sigma(denoiser, 1.0)
    last_positive = len(sigma_list) - 2 if sigma_list[-1] == 0 else len(sigma_list) - 1
    cg_residual, gamma_t = None, None
    with torch.no_grad():
        ATy = real_adjoint(op, y, shape, NAME)
        for i, (sigma, sigma_next) in enumerate(zip(sigma_list, sigma_list[1:])):
            # 1. Tweedie estimate and the noise it implies.
            x0_hat = denoiser(x, sigma)
            eps = (x - x0_hat) / sigma
            # 2. CG on the data term, from x0_hat (its finiteness is checked with the step's).
            x0, cg_info, gamma_t = refine(op, ATy, x0_hat, sigma, noise_std=noise_std, gamma=gamma, weight=weight,
                                          data_scale=k, cg_steps=cg_steps)
            cg_residual = cg_info["residual"]
            emit(callback, i=i, sigma=sigma, x=x, x0_hat=x0_hat, x0=x0)
            # 3. DDIM step to sigma_next towards the refined estimate (the estimate itself on the
            # official last step to t = 0).
            if denoise_last and i + 1 == last_positive:
                x = x0
            else:
                c1, c2 = dds_coefficients(sigma_next, eta)
                x = ve_step(x0, eps, c1, c2, generator=generator)
            # 4. One host synchronisation per step: the estimate and the new state finite.
            check_step_finite((x0_hat, x), NAME, i, sigma)
    info = {
        "nfe": len(sigma_list) - 1,
        "seconds": time.perf_counter() - start,
        "cg_residual": cg_residual,
        "gamma": gamma_t,
        "eta": eta,
        "cg_steps": cg_steps,
        "denoise_last": denoise_last,
    }
    return x, info
