r"""Filtering posterior sampling (FPS and FPS-SMC; Dou & Song, ICLR 2024, "Diffusion posterior
sampling for linear inverse problem solving: a filtering perspective").

Official code: ``ZehaoDou-official/FPS-SMC-2023`` read at 008e7f73ea6804eddca894e997aacb990c758916
(``guided_diffusion/gaussian_diffusion.py``: ``p_sample_loop``, ``p_mean_variance``, ``DDIM.p_sample``;
``guided_diffusion/posterior_mean_variance.py``: ``EpsilonXMeanProcessor``;
``guided_diffusion/svd_replacement.py``: ``get_mean``, ``get_noise``).

The measurement is diffused along with the image. In VE form (:math:`x_\sigma = x_0 + \sigma\epsilon`,
the paper's VP :math:`y_t` divided by :math:`\sqrt{\bar\alpha_t}`) the paper's
:math:`y_t = A x_t + \sqrt{\bar\alpha_t}\, n` is :math:`y_\sigma = A x_\sigma + n` with the same noise
at every level, and the sequence is drawn *backwards* from :math:`y_{\sigma_0} = y + \sigma_0 A
\epsilon` by the prior's own step with :math:`y` in the place of :math:`x_0` (the official
``# Backward DDIM Generation of y-sequence``):

.. math::
    y_{\sigma'} = y + \frac{c_2}{\sigma}\,(y_\sigma - y) + c_1 A z, \qquad z \sim \mathcal N(0, I),

where the prior's step is :math:`x' = \hat x_0 + c_2 \hat\epsilon + c_1 z`,
:math:`\hat\epsilon = (x - \hat x_0)/\sigma`, i.e. the transition
:math:`p(x' \mid x) = \mathcal N(m, \tau I)`, :math:`m = \hat x_0 + c_2 \hat\epsilon`, :math:`\tau = c_1^2`.
FPS-SMC is then a particle filter on the chain with observations :math:`y_\sigma`:

1. the weights of the particles at :math:`\sigma` are multiplied by the predictive likelihood
   :math:`p(y_{\sigma'} \mid x) = \mathcal N(y_{\sigma'};\ A m,\ \tau A A^H + s^2 I)`; its quadratic
   form is computed by Woodbury through ``op.solve_normal``
   (:func:`invdiff.samplers.linear.solve_gram`), and its log-determinant is the same for all
   particles of a problem and dropped;
2. a problem's particles are resampled (systematic, :class:`invdiff.samplers.smc.Ensemble`) when
   their ESS falls below ``ess_threshold * N``;
3. each particle moves by an exact draw from
   :math:`p(x' \mid x, y_{\sigma'}) \propto \mathcal N(x'; m, \tau I)\, \mathcal N(y_{\sigma'}; A x', s^2 I)`
   (perturb-and-solve, :func:`invdiff.samplers.linear.sample_gaussian_posterior`: closed form on
   inpainting, super-resolution, single-coil MRI and matrices, conjugate gradient on multi-coil MRI
   and CT; ``info["linear_algebra"]``).

The first state is drawn from :math:`\mathcal N(0, \sigma_0^2 I)` conditioned on
:math:`y_{\sigma_0}`; the last step (to :math:`\sigma = 0`, :math:`\tau = 0`) moves to
:math:`\hat x_0` with the weight :math:`\mathcal N(y; A \hat x_0, s^2 I)`. ``num_particles=1`` is the
paper's FPS without SMC (the same chain, no weights).

What the particles sample. The filter treats :math:`y_\sigma` as independent observations of the
levels, whereas the construction's :math:`y_\sigma - A x_\sigma` is one noise shared by all levels;
the paper's guarantee is for :math:`x_0` drawn given a *random* path :math:`y_{\sigma > 0}`. The
particles of one run share one path: on the 6-dimensional Gaussian test
(``tests/samplers/test_fps.py``) their mean sits 0.2 to 1 posterior standard deviations off in the
measured directions, by an amount that changes with the path and does not shrink with more
particles or steps, while particles pooled over independent runs (paths) match the posterior. Use
``x`` of independent runs (problems of a batch) as posterior samples; ``info["particles"]`` of
one run are draws given its path.

The prior's step. ``c_rate=None`` (ours) is DDPM's ancestral step (:math:`\eta = 1` of
:func:`~invdiff.samplers.common.ddim_coefficients`), whose weight on :math:`\hat x_0` vanishes for
fine steps, so the chain's marginals match the prior's. ``c_rate=c`` is the official DDIM step with
the constant noise fraction :math:`c` (``--c_rate``, default 0.95): :math:`c_1 = \sqrt c\,\sigma'`,
:math:`c_2 = \sqrt{1-c}\,\sigma'` (the official ``posterior_variance = c (1 - \bar\alpha_{t-1})``
and ``mean = sqrt(abar_prev) x0 + sqrt(1 - abar_prev) sqrt(1 - c) eps``, divided by
:math:`\sqrt{\bar\alpha_{t-1}}`). It keeps a fixed weight on the point estimate :math:`\hat x_0` at
every step and so drops part of the spread of :math:`x_0` given :math:`x_t` however fine the steps
(as DDS, :mod:`invdiff.samplers.dds`): with an exact prior the particles' covariance is too small.
``configs/sampler/fps_paper.yaml`` is not provided; ``sampler.params.c_rate=0.95`` runs it.

Deliberate differences from the official code:

* Order of the SMC step. The official code draws every particle's move first and then weights it
  by :math:`p(y \mid x') p(x' \mid x) / q(x' \mid x)` and resamples multinomially at every step.
  With the proposal the exact conditional, that ratio does not depend on :math:`x'` (it *is* the
  predictive likelihood), so weighting and resampling before the move (the fully adapted particle
  filter) targets the same distributions, and resampling before the move keeps more distinct
  particles. Resampling is systematic and on low ESS.
* The official weight uses the measurement variance :math:`\sigma_y^2 \bar\alpha_{t-1}` and ``ys[t]``
  (the sequence one level above the particle's new level) while the proposal uses
  :math:`\sigma_y^2 \bar\alpha_t`; here the observation and its variance belong to the new level
  (:math:`s^2` in VE units at every level), so the weight is exactly the predictive likelihood.
* The official first state of super-resolution and deblurring conditions on :math:`A^T y_T`
  instead of :math:`A^T y_T / v` (``get_mean(tmp, variance_diff)``), which puts the observed
  components near 0; here the first state is the exact Gaussian posterior. ``y_T`` is the official
  :math:`A z` plus :math:`y` (in VE form the signal does not vanish at :math:`\sigma_0`).
* No clamping of :math:`\hat x_0` to the network's range (the official ``clip_denoised: True``);
  the unknown's range is the problem's. The official code returns the first particle; here the
  particles are resampled by their final weights and ``x`` is one of them.
* The official measurement noise :math:`\sigma_y = 0.05` is hard-coded; here it is ``noise_std``
  (complex measurements: circular noise with :math:`\mathbb E|n|^2 = s^2`, i.e. the real twin
  with :math:`s^2/2` per component).
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
    check_measurement,
    check_number,
    check_sigmas,
    check_step_finite,
    ddim_coefficients,
    emit,
    measurement_device_dtype,
    posterior_shape,
)
from invdiff.samplers.linear import linear_algebra, sample_gaussian_posterior, solve_gram
from invdiff.samplers.smc import Ensemble, _finish, _noise_var, check_noise, effective_sample_size
from operators.base import LinearOperator
from operators.cg import batch_dot

NAME = "sample_fps"


def prior_step(sigma: float, sigma_next: float, c_rate: float | None) -> tuple[float, float]:
    r"""``(c1, c2)``: the noise std and the :math:`\hat\epsilon` weight of the prior's step from
    ``sigma`` to ``sigma_next``: DDPM's ancestral step for ``c_rate=None``, else the official
    :math:`(\sqrt c\,\sigma', \sqrt{1-c}\,\sigma')`."""
    if c_rate is None:
        return ddim_coefficients(sigma, sigma_next, 1.0)
    return math.sqrt(c_rate) * sigma_next, math.sqrt(1.0 - c_rate) * sigma_next


def prior_transition(
    denoiser: Denoiser, x: Tensor, sigma: float, sigma_next: float, c_rate: float | None
) -> tuple[Tensor, Tensor, float]:
    r"""``(x0_hat, m, tau)``: the prior's step from ``sigma`` to ``sigma_next`` as the Gaussian
    :math:`\mathcal N(m, \tau I)`, :math:`m = \hat x_0 + c_2 \hat\epsilon`, :math:`\tau = c_1^2`
    (:func:`prior_step`)."""
    c1, c2 = prior_step(sigma, sigma_next, c_rate)
    x0_hat = denoiser(x, sigma)
    return x0_hat, x0_hat + (c2 / sigma) * (x - x0_hat), c1 * c1


def resample_step(
    ensemble: Ensemble,
    log_w: Tensor,
    carried: Tensor,
    history: list[Tensor],
    resampled: Tensor,
    *,
    ess_threshold: float,
    generator: torch.Generator | None,
    callback: Callback | None,
    **state,
) -> tuple[Tensor, Tensor, Tensor]:
    """Record the ESS, call ``callback`` with ``state``, the weights and the ESS, and resample the
    problems whose ESS is low, ``carried`` with them.

    Returns:
        ``(log_w, carried, resampled)``, ``resampled`` counting the steps that resampled per problem.
    """
    ess = effective_sample_size(log_w)
    history.append(ess)
    emit(callback, log_weights=log_w, ess=ess, **state)
    log_w, did, (carried,) = ensemble.maybe_resample(log_w, ess_threshold, generator, carried)
    return log_w, carried, resampled + did.long()


def next_measurement(
    y: Tensor, y_sigma: Tensor, sigma: float, c1: float, c2: float, Az: Tensor | None
) -> Tensor:
    r""":math:`y_{\sigma'} = y + (c_2/\sigma)(y_\sigma - y) + c_1 A z`: the backward measurement sequence's
    step (the prior's step with :math:`y` as :math:`x_0`); ``Az`` is ``A z`` for white ``z``, unused when
    ``c1 == 0``."""
    y_next = y + (c2 / sigma) * (y_sigma - y)
    return y_next + c1 * Az if c1 > 0 else y_next


def check_inputs(
    y: Tensor, op, num_particles: int, ess_threshold: float, max_iter: int, tol: float, sampler: str
) -> None:
    """Raise a ``ValueError`` naming the argument unless ``y`` is a finite batch, ``op`` a
    :class:`~operators.base.LinearOperator`, ``num_particles`` a whole number >= 1,
    ``0 <= ess_threshold <= 1`` and ``max_iter``, ``tol`` valid for conjugate gradient."""
    check_measurement(y, sampler)
    if not isinstance(op, LinearOperator):
        raise ValueError(
            f"{sampler}: op: expected a LinearOperator (Gaussian conditioning needs A and its adjoint), "
            f"got {op!r}"
        )
    check_number(num_particles, "num_particles", sampler, integer=True, minimum=1)
    check_number(ess_threshold, "ess_threshold", sampler, minimum=0, maximum=1)
    check_number(max_iter, "max_iter", sampler, integer=True, minimum=1)
    check_number(tol, "tol", sampler, positive=True)


def predictive_log_likelihood(
    op: LinearOperator, r: Tensor, signal_var: float, noise_var: float, *, max_iter: int, tol: float
) -> Tensor:
    r""":math:`-\tfrac12 r^T (v A A^H + b I)^{-1} r` per sample, ``(B,)``, for the residual
    :math:`r = y - A m` of :math:`y = A x + n`, :math:`x \sim \mathcal N(m, v I)`, :math:`n` of variance
    :math:`b` per real component (the log-determinant left out); ``signal_var = 0`` gives
    :math:`-\|r\|^2 / (2b)`."""
    if signal_var == 0:
        w = r
    else:
        w = solve_gram(op, r, signal_var, noise_var, max_iter=max_iter, tol=tol) * noise_var
    return -0.5 * batch_dot(r, w) / noise_var


def sample_fps(
    denoiser: Denoiser,
    op: LinearOperator,
    y: Tensor,
    sigmas: Tensor,
    *,
    noise_std: float,
    generator: torch.Generator | None,
    num_particles: int = 16,
    ess_threshold: float = 0.5,
    c_rate: float | None = None,
    max_iter: int = 100,
    tol: float = 1e-6,
    shape: Sequence[int] | None = None,
    callback: Callback | None = None,
) -> tuple[Tensor, dict]:
    r"""FPS-SMC (module docstring): a particle filter on the diffused measurements.

    Args:
        denoiser: the prior, :math:`D(x, \sigma)`.
        op: a :class:`~operators.base.LinearOperator`.
        y: ``B`` independent measurements, ``(B, ...)``.
        sigmas: ``(n + 1,)`` descending noise levels ending at 0, e.g. ``sigmas_vp(100)``.
        noise_std: the Gaussian measurement noise std ``s > 0``.
        generator: the source of all randomness.
        num_particles: particles per problem; 1 is FPS without SMC.
        ess_threshold: resample a problem when its ESS drops below this fraction of ``N``.
        c_rate: ``None`` for DDPM's ancestral step, or the official constant noise fraction
            :math:`c \in [0, 1)` (0.95 in the paper).
        max_iter, tol: conjugate gradient's, for operators without a closed-form ``solve_normal``.
        shape: the shape of ``x`` per problem, ``(B, ...)``.
        callback: called each step with ``i``, ``sigma``, ``x`` (all particles), ``x0_hat``,
            ``log_weights`` ``(B, N)``, ``ess`` ``(B,)`` and ``y_sigma`` (the diffused measurement).

    Returns:
        ``(x, info)``: one particle per problem after resampling by the final weights, ``(B, ...)``;
        ``info`` with ``nfe``, ``seconds``, ``particles`` ``(B, N, ...)`` (equally weighted),
        ``log_weights`` ``(B, N)`` (before the final resampling), ``ess`` (per step), ``resampled``
        (steps that resampled, per problem), ``c_rate``, ``linear_algebra``.
    """
    start = time.perf_counter()
    check_inputs(y, op, num_particles, ess_threshold, max_iter, tol, NAME)
    check_noise(noise_std, NAME)
    check_number(c_rate, "c_rate", NAME, minimum=0, maximum=1 - 1e-12, optional=True)
    sigma_list = check_sigmas(sigmas)
    shape = posterior_shape(op, y, shape, NAME)
    device, dtype = measurement_device_dtype(y)
    ensemble = Ensemble(y.shape[0], int(num_particles), device)
    noise_var = _noise_var(y, noise_std)
    solve = {"max_iter": int(max_iter), "tol": float(tol)}

    def diffuse() -> Tensor:
        """``A z`` for white ``z`` of the unknown's shape, one per problem."""
        return op.A(torch.randn(shape, generator=generator, device=device, dtype=dtype))

    with torch.no_grad():
        # 1. The top of the measurement sequence and the first state, N(0, sigma_0^2) given it.
        y_sigma = y + sigma_list[0] * diffuse()
        zeros = torch.zeros((ensemble.B * ensemble.N, *shape[1:]), device=device, dtype=dtype)
        x, _ = sample_gaussian_posterior(op, ensemble.repeat(y_sigma), zeros, sigma_list[0] ** 2,
                                         noise_std**2,
                                         generator=generator, with_mean=False, **solve)
        check_step_finite(x, NAME, 0, sigma_list[0])
        log_w = torch.zeros(ensemble.B, ensemble.N, device=device, dtype=torch.float64)
        ess_history, resampled_count = [], torch.zeros(ensemble.B, dtype=torch.long, device=device)
        for i, (sigma, sigma_next) in enumerate(zip(sigma_list, sigma_list[1:])):
            c1, c2 = prior_step(sigma, sigma_next, c_rate)
            # 2. The next measurement of the backward sequence.
            y_next = next_measurement(y, y_sigma, sigma, c1, c2, diffuse() if c1 > 0 else None)
            # 3. The prior's transition N(m, tau I) and the predictive likelihood of y_next.
            x0_hat, m, tau = prior_transition(denoiser, x, sigma, sigma_next, c_rate)
            check_step_finite(m, NAME, i, sigma)  # before the solves, which refuse non-finite input
            ys_next = ensemble.repeat(y_next)
            log_w = log_w + ensemble.grouped(
                predictive_log_likelihood(op, ys_next - op.A(m), tau, noise_var, **solve)
            ).double()
            # 4. Resample on low ESS (the weights do not depend on the move), then move exactly.
            log_w, m, resampled_count = resample_step(
                ensemble, log_w, m, ess_history, resampled_count, ess_threshold=ess_threshold,
                generator=generator, callback=callback, i=i, sigma=sigma, x=x, x0_hat=x0_hat, y_sigma=y_sigma,
            )
            if tau > 0:
                x, _ = sample_gaussian_posterior(op, ys_next, m, tau, noise_std**2, generator=generator,
                                                 with_mean=False, **solve)
            else:
                x = m
            y_sigma = y_next
    return _finish(
        ensemble, x, log_w, generator, nfe=len(sigma_list) - 1, seconds=time.perf_counter() - start,
        ess=ess_history, resampled=resampled_count, c_rate=c_rate, linear_algebra=linear_algebra(op),
    )
