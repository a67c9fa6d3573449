r"""Sequential Monte Carlo posterior samplers: weighted particles in the batch dimension.

The samplers here move ``N`` particles per problem through the diffusion's noise levels,
re-weight them so that the weighted ensemble tracks a path of distributions that ends at the
exact posterior :math:`p(x_0 \mid y)`, and resample a problem's particles when their effective
sample size falls below ``ess_threshold * N``. With enough particles and fine steps the
ensemble's error goes to zero; the only approximations are the time discretisation and the
finite ensemble. ``y`` holds ``B`` independent problems; the state holds ``B * N`` particles,
problem-major, and no operation mixes particles of different problems. Registered names:
``smc_ensemble`` and ``twisted_ensemble`` (:func:`sample_smc_ensemble`), ``tds``
(:func:`sample_tds`, ``paper=True`` for the official update, ``configs/sampler/tds_paper.yaml``),
``afdps`` (:func:`sample_afdps`, the paper's approximation-free ensemble sampler).

**Twisted ensemble sampler** (:func:`sample_smc_ensemble`): a TDS-style twisted SMC without the
network gradient, not the method of Chen, Ren, Min, Ying and Izzo (2025), which is
:func:`sample_afdps`; it borrows that paper's idea of a gradient-free ensemble. Particles follow
the reverse SDE of the prior plus a likelihood drift, carry weights that correct for the drift, and are resampled on low
ESS; one network evaluation per step and no gradient through the network. The path is tilted
marginals :math:`q_u(x) \propto p_u(x)\, h_u(x)` with :math:`u = \sigma^2` (variance-exploding
time), :math:`c_u = \sigma_d^2 / (\sigma_d^2 + u)` and :math:`v_u = s^2 + \kappa\, u\, c_u`, the
exact :math:`p(y \mid x_u)` of a Gaussian prior of per-pixel spread :math:`\sigma_d` (``data_std``;
``None`` is the flat limit :math:`c_u = 1`). ``kappa`` defaults to :math:`\|A\|^2` (power
iteration). Two tilts, by ``tilt``:

* ``"denoised"`` (default): :math:`h_u(x) = \mathcal N\big(y;\ A D(x, \sigma),\ v_u I\big)`, the
  likelihood of the denoised estimate, close to the true :math:`p(y \mid x_u)` on multimodal
  priors. A step from :math:`\sigma` to :math:`\sigma'` draws from the ancestral kernel of the
  prior, :math:`\mathcal N(m, \tau I)` with :math:`m = x + (1 - u'/u)(D(x, \sigma) - x)`,
  :math:`\tau = (u - u') u'/u`, shifted by the likelihood drift :math:`\tau g`,
  :math:`g = c_u A^T (y - A D(x, \sigma)) / v_u`: the gradient of :math:`\log h_u` with the
  denoiser's Jacobian replaced by its Gaussian-prior value :math:`c_u I`, so nothing is
  differentiated. The weights are the exact importance ratio of the move,
  :math:`w' = w\, p(x' \mid x)\, h_{u'}(x') / (q(x' \mid x)\, h_u(x))`, so the Jacobian
  approximation costs variance, not bias; the last step uses the exact likelihood, with the last
  kernel :math:`\mathcal N(D(x, \sigma_{min}), c_u u I)` conditioned on it (``last_step``: the particle
  moves to the conditioned mean), so that a likelihood sharper than the last noise level does not
  collapse the weights.
* ``"state"``: :math:`h_u(x) = \mathcal N(y;\ c_u A x,\ v_u I)`, the tilt on the noisy state, in
  continuous time. Substituting :math:`p_u = q_u Z_u / h_u` into the heat equation
  :math:`\partial_u p_u = \tfrac12 \Delta p_u` gives a Fokker-Planck equation with a reaction
  term: particles follow :math:`dX = (\nabla \log p_u + \nabla \log h_u)\, d\bar u + d\bar W`
  (Euler-Maruyama) while their log-weights integrate

  .. math::
      d \log w = \Big(\nabla \log p_u \cdot \nabla \log h_u + \tfrac12 \|\nabla \log h_u\|^2
          + \tfrac12 \Delta \log h_u\Big)\, d\bar u - \partial_u \log h_u\, d\bar u

  (the Laplacian is the same for every particle and drops out), by the trapezoidal rule along
  the move; the last term is :math:`\log h_{u'} - \log h_u` at fixed :math:`x` averaged over both
  ends (a left-point rule biased the mode masses of a two-mode test by 0.3 at 200 steps).
  Everything is explicit, but the tilt sees :math:`A x_u`, not a denoised estimate, so the
  weights vary far more: on the Gaussian-mixture benchmark (``BENCHMARKS.md``,
  ``benchmark=gmm``) it stays 2-3x above the exact-sample floor where ``"denoised"`` reaches it.

How this differs from Chen et al.: their tilt is the fixed :math:`e^{-\mu_y(x)}` on the noisy
state, started by an exact draw from :math:`\mathcal N(0, \rho^2 I) e^{-\mu_y}`, with Euler
Feynman-Kac weights (:func:`sample_afdps`); here the tilts change with :math:`u` (the Gaussian
:math:`p(y \mid x_u)`), which keeps the explicit steps stable at small noise and the weights far
less variable. The tilts, the Gaussian-Jacobian drift and the step rules above are written out
here from the derivation.

**Twisted diffusion sampler** (:func:`sample_tds`; Wu, Trippe, Naesseth, Blei, Cunningham,
NeurIPS 2023; official code ``blt2114/twisted_diffusion_sampler`` read at
5b6af53a6588c1bdd83d8604a8352fefdcad7d69, ``image_exp/image_diffusion/feynman_kac_image_ddpm.py``),
the established SMC sampler: the same twisting functions as the denoised tilt, :math:`\tilde p_k(y \mid x_k) = \mathcal N(y;\ \mathcal A(\hat x_0(x_k)),\ v_k I)`,
but the proposal's shift is the exact gradient :math:`\nabla_{x_k} \log \tilde p_k`, through the
network as in DPS (about three times the cost of a step and the memory of a backward pass); works
with nonlinear operators. The default differs from the official code in three places (``paper=True``
restores them, see :func:`sample_tds`): the twisting variance is :math:`s^2 + \kappa u c_u` (the
official :math:`\sigma_t^2 \tau^2 / (\sigma_t^2 + \tau^2)`, :math:`\tau^2 = 0.12`, is tuned to MNIST in
:math:`[-1, 1]`), the proposal's shift is :math:`\tau g` (the ancestral posterior of the Gaussian
twist; the official one moves the mean by :math:`(u - u') g`) and resampling is on low ESS (the
official code resamples every step). ``data_std`` matters for both
samplers: on the 25-mode Gaussian mixture of ``benchmark=gmm`` (per-coordinate std about 11) the
default of 1 makes the twists far too sharp (ESS collapses, mode weights drift) and the prior's
std brings both near the exact-sample floor on most problems; a nearly noiseless one (noise std
3e-4) stays about 11-16x above it even at 1000 steps, as the final weights mis-weight its narrow modes.

Complex measurements: the noise is circular with :math:`\mathbb E|n|^2 = s^2`, so the exact
likelihood is :math:`\|y - A x\|^2 / s^2` and every tilt variance :math:`v_u` is per real component,
with :math:`s^2/2` in place of :math:`s^2`: a complex problem and its real twin (real and imaginary
parts stacked, noise std :math:`s/\sqrt 2`) define the same tilts and the same target.

Resampling is systematic, one uniform per problem drawn at every step (whether or not a
problem resamples), so a problem's particles depend only on its own measurement and the seed.
"""

from __future__ import annotations

import math
import numbers
import time
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from invdiff.priors.base import Denoiser
from invdiff.samplers.common import (
    Callback,
    check_measurement,
    check_number,
    check_sigmas,
    check_step_finite,
    emit,
    initial_noise,
    measurement_device_dtype,
    likelihood_weight,
    network_sigma,
    operator_norm,
    posterior_shape,
)
from operators.base import LinearOperator, Operator
from operators.cg import conjugate_gradient


def check_particles(num_particles: int, ess_threshold: float, sampler: str) -> None:
    """Raise a ``ValueError`` for fewer than 2 particles or a threshold outside ``[0, 1]``."""
    whole = (
        not isinstance(num_particles, bool)
        and isinstance(num_particles, numbers.Real)
        and float(num_particles).is_integer()
    )
    if not whole or num_particles < 2:
        raise ValueError(
            f"{sampler}: num_particles: expected an integer >= 2 (an ensemble), got {num_particles}; "
            f"for one chain per problem use dds, dps or reddiff"
        )
    if not 0.0 <= ess_threshold <= 1.0:
        raise ValueError(f"{sampler}: ess_threshold: expected 0 <= ess_threshold <= 1, got {ess_threshold}")


def check_noise(noise_std: float, sampler: str) -> None:
    """Raise a ``ValueError`` unless ``noise_std`` is finite and positive (NaN and infinity fail)."""
    if not 0 < noise_std < math.inf:
        raise ValueError(
            f"{sampler}: noise_std: expected > 0 and finite (the weights use the Gaussian likelihood of y), "
            f"got {noise_std}"
        )


def effective_sample_size(log_w: Tensor) -> Tensor:
    r""":math:`(\sum w)^2 / \sum w^2` per problem; ``log_w`` is ``(B, N)``, the result ``(B,)``."""
    w = torch.softmax(log_w, dim=1)
    return 1.0 / w.square().sum(1)


def systematic_resample(log_w: Tensor, u: Tensor) -> Tensor:
    """Systematic resampling indices ``(B, N)`` into each problem's particles.

    Args:
        log_w: ``(B, N)`` unnormalised log-weights.
        u: ``(B,)`` uniforms in ``[0, 1)``, one per problem.
    """
    B, N = log_w.shape
    cdf = torch.softmax(log_w, dim=1).cumsum(1)
    cdf[:, -1] = 1.0
    points = (u[:, None] + torch.arange(N, device=log_w.device, dtype=cdf.dtype)) / N
    return torch.searchsorted(cdf, points.to(cdf.dtype)).clamp_max(N - 1)


class Ensemble:
    """``B`` problems of ``N`` particles each, stored problem-major as ``(B * N, ...)`` tensors."""

    def __init__(self, B: int, N: int, device: torch.device):
        self.B, self.N = B, N
        self.offsets = (torch.arange(B, device=device) * N)[:, None]

    def repeat(self, t: Tensor) -> Tensor:
        """Each problem's row repeated for its ``N`` particles: ``(B, ...) -> (B * N, ...)``."""
        return t.repeat_interleave(self.N, dim=0)

    def grouped(self, t: Tensor) -> Tensor:
        return t.reshape(self.B, self.N, *t.shape[1:])

    def maybe_resample(
        self, log_w: Tensor, threshold: float, generator: torch.Generator | None, *tensors: Tensor
    ) -> tuple[Tensor, Tensor, list[Tensor]]:
        """Resample the problems whose ESS is below ``threshold * N``; reset their weights.

        Returns:
            ``(log_w, resampled, tensors)``: the new ``(B, N)`` log-weights, the ``(B,)`` mask of
            problems that resampled and the tensors, gathered.
        """
        u = torch.rand(self.B, generator=generator, device=log_w.device, dtype=torch.float64)
        resampled = effective_sample_size(log_w) < threshold * self.N
        if not bool(resampled.any()):
            return log_w, resampled, list(tensors)
        keep = torch.arange(self.N, device=log_w.device).expand(self.B, self.N)
        index = torch.where(resampled[:, None], systematic_resample(log_w.double(), u), keep)
        flat = (index + self.offsets).reshape(-1)
        log_w = torch.where(resampled[:, None], torch.zeros_like(log_w), log_w)
        return log_w, resampled, [t[flat] for t in tensors]


def _prepare(
    name: str,
    denoiser: Denoiser,
    op: Operator,
    y: Tensor,
    sigmas: Tensor,
    shape: Sequence[int] | None,
    noise_std: float,
    num_particles: int,
    ess_threshold: float,
    kappa: float | None,
    data_std: float | None,
) -> tuple[list[float], tuple[int, ...], torch.device, torch.dtype, float, Ensemble]:
    r"""Check the inputs; the schedule, shape, device, dtype, ``kappa`` (default :math:`\|A\|^2`
    for linear operators, else 1) and the particle layout."""
    check_measurement(y, name)
    check_number(data_std, "data_std", name, positive=True, optional=True)
    check_particles(num_particles, ess_threshold, name)
    check_noise(noise_std, name)
    sigma_list = check_sigmas(sigmas)
    shape = posterior_shape(op, y, shape, name)
    device, dtype = measurement_device_dtype(y)
    if kappa is None:
        like = torch.zeros((1, *shape[1:]), device=device, dtype=dtype)
        kappa = operator_norm(op.normal, like) if isinstance(op, LinearOperator) else 1.0
    check_number(kappa, "kappa", name, minimum=0)
    return sigma_list, shape, device, dtype, kappa, Ensemble(y.shape[0], int(num_particles), device)


def _finish(
    ensemble: Ensemble, x: Tensor, log_w: Tensor, generator: torch.Generator | None, **info
) -> tuple[Tensor, dict]:
    """Resample all problems by their final weights: ``(x (B, ...), info)`` with the particles
    ``(B, N, ...)``, the final log-weights (before resampling) and ``info``."""
    _, _, (x,) = ensemble.maybe_resample(log_w, 1.0 + 1e-9, generator, x)
    particles = ensemble.grouped(x)
    return particles[:, 0], {**info, "particles": particles, "log_weights": log_w, "num_particles": ensemble.N}


def _sq_norm(t: Tensor) -> Tensor:
    """Per-sample squared norm, ``(B,)``, real or complex."""
    t = torch.view_as_real(t) if t.is_complex() else t
    return t.reshape(t.shape[0], -1).square().sum(1)


def _dot(a: Tensor, b: Tensor) -> Tensor:
    return (a * b).reshape(a.shape[0], -1).sum(1)


TILTS = ("denoised", "state")


def _noise_var(y: Tensor, noise_std: float) -> float:
    r"""The noise variance per real component, :math:`1 / (2 w)` with :math:`w` from
    :func:`~invdiff.samplers.common.likelihood_weight`: :math:`s^2` for real ``y``, :math:`s^2/2` for
    complex ``y`` (circular noise, :math:`\mathbb E|n|^2 = s^2`). A complex problem is then the real
    one with real and imaginary parts stacked, and defines the same tilts."""
    return 0.5 / likelihood_weight(y, noise_std)


def _shrink(u: float, data_std: float | None) -> float:
    r""":math:`c_u = \sigma_d^2 / (\sigma_d^2 + u)`, the posterior mean's shrinkage of a Gaussian prior of
    spread ``data_std`` seen at noise variance :math:`u`; 1 for ``data_std=None``."""
    return 1.0 if data_std is None else data_std**2 / (data_std**2 + u)


def _gaussian_tilt(u: float, noise_var: float, kappa: float, data_std: float | None) -> tuple[float, float]:
    r""":math:`(c_u, v_u)`: the scale of the mean and the variance per real component of the tilts
    (module docstring); ``noise_var`` from :func:`_noise_var`."""
    c = _shrink(u, data_std)
    return c, noise_var + kappa * u * c


def _tilted_solve(op: LinearOperator, c: float, rhs: Tensor, start: Tensor, cg_steps: int) -> tuple[Tensor, dict]:
    r"""CG on :math:`(I + c A^T A)\, x = ` ``rhs`` from ``start``, to a relative residual of 1e-10; the
    callers check the finiteness of what they make of it with their step."""
    return conjugate_gradient(
        lambda v: v + c * op.normal(v), rhs, start, max_iter=cg_steps, tol=1e-10, check_finite=False
    )


def _tilted_draw(
    op: LinearOperator, ys: Tensor, weight: float, center: Tensor, var: float, *,
    generator: torch.Generator | None, cg_steps: int,
) -> tuple[Tensor, dict]:
    r"""A draw from :math:`\mathcal N(x; c, v I)\, e^{-w \|y - A x\|^2}` by perturb-and-solve:
    :math:`z \sim \mathcal N(c, v I)` and :math:`\epsilon` of variance :math:`1/(2w)` per real
    component, then CG on :math:`(I + 2 w v A^T A)\, x = z + 2 w v A^T (y + \epsilon)`.

    Returns:
        ``(x, cg)``: the draw and its CG ``info``.
    """
    z = center + math.sqrt(var) * torch.randn(center.shape, generator=generator, device=center.device,
                                              dtype=center.dtype)
    eps_shape = torch.view_as_real(ys).shape if ys.is_complex() else ys.shape
    eps = torch.randn(eps_shape, generator=generator, device=center.device, dtype=center.dtype)
    eps = eps * math.sqrt(0.5 / weight)
    eps = torch.view_as_complex(eps) if ys.is_complex() else eps
    c = 2 * weight * var
    return _tilted_solve(op, c, z + c * op.AT(ys + eps), z, cg_steps)


def _tilted_mean(
    op: LinearOperator, ys: Tensor, weight: float, center: Tensor, var: float, *, cg_steps: int
) -> tuple[Tensor, Tensor]:
    r"""The mean :math:`\bar x` of :math:`\mathcal N(x; c, v I)\, e^{-w \|y - A x\|^2}` (the draw's
    system without the perturbations) and the log of its normaliser up to a constant shared by all
    particles, :math:`\log Z = -\|\bar x - c\|^2 / (2v) - w \|y - A \bar x\|^2` (the Gaussian
    integral's determinant does not depend on :math:`c`).

    Returns:
        ``(mean, log_z)``: ``log_z`` ``(B,)``.
    """
    c = 2 * weight * var
    mean, _ = _tilted_solve(op, c, center + c * op.AT(ys), center, cg_steps)
    return mean, -_sq_norm(mean - center) / (2 * var) - weight * _sq_norm(ys - op.A(mean))


LAST_STEPS = ("conditioned", "denoised")


def _last_var(name: str, last_step: str, op: Operator, sigma_list: list[float], data_std: float | None) -> float | None:
    r"""The variance :math:`r^2 = c_u u` of :math:`x_0` given :math:`x_u` at the last positive level
    (a Gaussian prior of spread ``data_std``) for ``last_step="conditioned"``; ``None`` for
    ``"denoised"`` or a nonlinear operator."""
    if last_step not in LAST_STEPS:
        raise ValueError(f"{name}: last_step: expected one of {', '.join(LAST_STEPS)}, got {last_step!r}")
    if last_step == "denoised" or not isinstance(op, LinearOperator) or sigma_list[-1] != 0:
        return None
    u = sigma_list[-2] ** 2
    return u * _shrink(u, data_std)


Twist = Callable[[Tensor, float], tuple[Tensor, Tensor, Tensor]]


def _twisted_smc(
    name: str,
    twist: Twist,
    op: Operator,
    ys: Tensor,
    noise_std: float,
    x: Tensor,
    ensemble: Ensemble,
    sigma_list: list[float],
    *,
    ess_threshold: float,
    generator: torch.Generator | None,
    callback: Callback | None,
    official_shift: bool = False,
    last_var: float | None = None,
    cg_steps: int = 100,
) -> tuple[Tensor, Tensor, list[Tensor], Tensor]:
    r"""Twisted ancestral proposals with exact importance weights, from ``x`` at ``sigma_list[0]``.

    The proposal is the ancestral kernel :math:`\mathcal N(m, \tau I)` shifted by :math:`\tau g`, or
    with ``official_shift`` by :math:`(u - u') g` (the ancestral mean from the twisted estimate
    :math:`\hat x_0 + u g`, as TDS's code) and unshifted on the last step to :math:`\sigma = 0`.

    The last step's ancestral kernel is the point :math:`D(x, \sigma_{min})`. With ``last_var``
    (linear operators) it is :math:`\mathcal N(D(x, \sigma_{min}), r^2 I)` with
    :math:`r^2` = ``last_var`` (an upper bound on the spread of :math:`x_0` given
    :math:`x_{\sigma_{min}}`) conditioned on the likelihood: the particle moves to that Gaussian's
    mean (:func:`_tilted_mean`; as the point kernel drops the spread of :math:`x_0` given
    :math:`x_{\sigma_{min}}`, this drops the conditioned one, so no white noise of std
    :math:`\sigma_{min}` lands on an image) and is weighted by the likelihood's integral over it. A
    likelihood sharper than :math:`\|A\| \sigma_{min}` then no longer collapses the final weights
    onto a few particles.

    Args:
        twist: ``(x, sigma) -> (x0_hat, log_h, grad)``: the denoised estimate, the log-twist
            ``(B * N,)`` and the proposal's shift direction (an exact or approximate gradient of
            the log-twist) at ``sigma > 0``; at ``sigma = 0`` the exact likelihood is used.
        ys: the measurements repeated per particle, ``(B * N, ...)``.

    Returns:
        ``(x, log_w, ess_history, resampled_count)``.
    """
    device = x.device
    log_w = torch.zeros(ensemble.B, ensemble.N, device=device, dtype=torch.float64)
    ess_history, resampled_count = [], torch.zeros(ensemble.B, dtype=torch.long, device=device)
    with torch.no_grad():
        # 1. Twist at the top: importance weights of the prior draws.
        x0_hat, log_h, grad = twist(x, sigma_list[0])
        log_w = log_w + ensemble.grouped(log_h).double()
        for i, (sigma, sigma_next) in enumerate(zip(sigma_list, sigma_list[1:])):
            u, u_next = sigma**2, sigma_next**2
            ess = effective_sample_size(log_w)
            ess_history.append(ess)
            emit(callback, i=i, sigma=sigma, x=x, x0_hat=x0_hat, log_weights=log_w, ess=ess)
            # 2. Resample (with everything computed at the particles) when the ESS is low.
            log_w, resampled, (x, x0_hat, log_h, grad) = ensemble.maybe_resample(
                log_w, ess_threshold, generator, x, x0_hat, log_h, grad
            )
            resampled_count += resampled.long()
            # 3. Twisted ancestral proposal.
            mean = x + (1 - u_next / u) * (x0_hat - x)
            var = (u - u_next) * u_next / u
            if sigma_next == 0 and last_var:
                # 3'. The last kernel N(D(x), last_var I), conditioned on the exact likelihood.
                x, log_z = _tilted_mean(op, ys, likelihood_weight(ys, noise_std), mean, last_var, cg_steps=cg_steps)
                check_step_finite(x, name, i, sigma)
                log_w = log_w + ensemble.grouped(log_z - log_h).double()
                break
            noise = torch.randn(x.shape, generator=generator, device=device, dtype=x.dtype)
            step = ((u - u_next) if u_next > 0 else 0.0) if official_shift else var
            x_next = mean + step * grad + math.sqrt(var) * noise
            check_step_finite(x_next, name, i, sigma)
            # 4. Next twist (the exact likelihood at sigma = 0) and the weight update.
            if sigma_next > 0:
                x0_next, log_h_next, grad_next = twist(x_next, sigma_next)
            else:
                x0_next, grad_next = x_next, torch.zeros_like(x_next)
                log_h_next = -likelihood_weight(ys, noise_std) * _sq_norm(ys - op.A(x_next))
            # log p(x'|x) - log q(x'|x) for N(mean, var) against N(mean + var grad, var)
            if var > 0:
                shift = x_next - mean
                log_ratio = (_sq_norm(shift - step * grad) - _sq_norm(shift)) / (2 * var)
            else:
                log_ratio = torch.zeros_like(log_h)
            log_w = log_w + ensemble.grouped(log_ratio + log_h_next - log_h).double()
            x, x0_hat, log_h, grad = x_next, x0_next, log_h_next, grad_next
    return x, log_w, ess_history, resampled_count


NAME_ENSEMBLE = "sample_smc_ensemble"


def sample_smc_ensemble(
    denoiser: Denoiser,
    op: LinearOperator,
    y: Tensor,
    sigmas: Tensor,
    *,
    noise_std: float,
    generator: torch.Generator | None,
    num_particles: int = 16,
    ess_threshold: float = 0.5,
    tilt: str = "denoised",
    kappa: float | None = None,
    data_std: float | None = 1.0,
    last_step: str = "conditioned",
    shape: Sequence[int] | None = None,
    callback: Callback | None = None,
) -> tuple[Tensor, dict]:
    r"""Weighted ensemble on the tilted path :math:`p_u h_u` (module docstring); no network gradient.

    Args:
        denoiser: the prior, :math:`D(x, \sigma)`.
        op: a :class:`~operators.base.LinearOperator`.
        y: ``B`` independent measurements, ``(B, ...)``.
        sigmas: ``(n + 1,)`` descending noise levels ending at 0; finer steps, smaller bias
            (e.g. ``sigmas_vp(200)``).
        noise_std: the Gaussian measurement noise std ``s > 0``.
        generator: the source of all randomness.
        num_particles: particles per problem, ``N >= 2``.
        ess_threshold: resample a problem when its ESS drops below this fraction of ``N``.
        tilt: ``"denoised"`` (the likelihood of :math:`A D(x, \sigma)`, discrete importance weights)
            or ``"state"`` (the likelihood of :math:`c_u A x`, continuous Feynman-Kac weights).
        kappa: the variance inflation of the tilt; default :math:`\|A\|^2`.
        data_std: the prior's standard deviation per pixel :math:`\sigma_d` in :math:`c_u` and
            :math:`v_u`; ``None`` for :math:`c_u = 1`.
        last_step: ``"conditioned"``: :math:`x_0` is the mean of
            :math:`\mathcal N(D(x, \sigma_{min}), c_u u\, I)` conditioned on the likelihood (CG),
            weighted by the likelihood's integral over that Gaussian (a sharp likelihood keeps its
            particles); ``"denoised"``: :math:`x_0 = D(x, \sigma_{min})`, weighted by the
            likelihood (``tilt="denoised"`` only).
        shape: the shape of ``x`` per problem, ``(B, ...)``; default ``(B, *denoiser.shape)``.
        callback: called each step with ``i``, ``sigma``, ``x`` (all particles), ``x0_hat``,
            ``log_weights`` ``(B, N)`` and ``ess`` ``(B,)``.

    Returns:
        ``(x, info)``: one particle per problem after resampling by the final weights, ``(B, ...)``,
        and ``info`` with ``nfe``, ``seconds``, ``particles`` ``(B, N, ...)`` (equally weighted after
        the final resampling), ``log_weights`` ``(B, N)`` (before it), ``ess`` (a ``(B,)`` tensor
        per step, before resampling), ``resampled`` (steps that resampled, per problem), ``kappa``
        and ``tilt``.
    """
    start = time.perf_counter()
    name = NAME_ENSEMBLE
    if not isinstance(op, LinearOperator):
        raise ValueError(
            f"{name}: op: the ensemble sampler needs a LinearOperator (its likelihood drift uses the adjoint), "
            f"got {op!r}; use tds, dps or reddiff for nonlinear operators"
        )
    if tilt not in TILTS:
        raise ValueError(f"{name}: tilt: expected one of {', '.join(TILTS)}, got {tilt!r}")
    sigma_list, shape, device, dtype, kappa, ensemble = _prepare(
        name, denoiser, op, y, sigmas, shape, noise_std, num_particles, ess_threshold, kappa, data_std
    )
    ys = ensemble.repeat(y)
    x = initial_noise(sigma_list[0], (ensemble.B * ensemble.N, *shape[1:]), generator=generator, device=device,
                      dtype=dtype)
    if tilt == "denoised":

        def twist(x: Tensor, sigma: float) -> tuple[Tensor, Tensor, Tensor]:
            c, v = _gaussian_tilt(sigma**2, _noise_var(y, noise_std), kappa, data_std)
            x0_hat = denoiser(x, sigma)
            residual = ys - op.A(x0_hat)
            return x0_hat, -_sq_norm(residual) / (2 * v), c * op.AT(residual) / v

        x, log_w, ess, resampled = _twisted_smc(
            name, twist, op, ys, noise_std, x, ensemble, sigma_list, ess_threshold=ess_threshold,
            generator=generator, callback=callback,
            last_var=_last_var(name, last_step, op, sigma_list, data_std),
        )
    else:
        x, log_w, ess, resampled = _state_tilt_smc(
            denoiser, op, ys, noise_std, x, ensemble, sigma_list, kappa=kappa, data_std=data_std,
            ess_threshold=ess_threshold, generator=generator, callback=callback,
        )
    return _finish(
        ensemble, x, log_w, generator, nfe=len(sigma_list) - 1, seconds=time.perf_counter() - start,
        ess=ess, resampled=resampled, kappa=kappa, tilt=tilt,
    )


def _state_tilt_smc(
    denoiser: Denoiser,
    op: LinearOperator,
    ys: Tensor,
    noise_std: float,
    x: Tensor,
    ensemble: Ensemble,
    sigma_list: list[float],
    *,
    kappa: float,
    data_std: float | None,
    ess_threshold: float,
    generator: torch.Generator | None,
    callback: Callback | None,
) -> tuple[Tensor, Tensor, list[Tensor], Tensor]:
    """The ensemble with the tilt on the noisy state, continuous-time weights (module docstring).

    Returns:
        ``(x, log_w, ess_history, resampled_count)``.
    """
    name = NAME_ENSEMBLE

    def log_lik(Ax: Tensor, u: float) -> Tensor:
        """``log h_u(x)`` up to a constant, ``(B * N,)``, from ``A x``."""
        c, v = _gaussian_tilt(u, _noise_var(ys, noise_std), kappa, data_std)
        return -_sq_norm(ys - c * Ax) / (2 * v)

    def integrand(x: Tensor, Ax: Tensor, x0_hat: Tensor, sigma: float) -> tuple[Tensor, Tensor]:
        """The weight rate at ``(x, u)``, ``(B * N,)``, and the drift ``score + grad log h_u``."""
        u = sigma**2
        c, v = _gaussian_tilt(u, _noise_var(ys, noise_std), kappa, data_std)
        score = (x0_hat - x) / u
        grad_ll = c * op.AT(ys - c * Ax) / v
        return _dot(score, grad_ll) + 0.5 * _sq_norm(grad_ll), score + grad_ll

    device = x.device
    log_w = torch.zeros(ensemble.B, ensemble.N, device=device, dtype=torch.float64)
    ess_history, resampled_count = [], torch.zeros(ensemble.B, dtype=torch.long, device=device)
    with torch.no_grad():
        # 1. Importance weights of the prior draws for q_T = p_T h_T.
        Ax = op.A(x)
        log_w = log_w + ensemble.grouped(log_lik(Ax, sigma_list[0] ** 2)).double()
        x0_hat = denoiser(x, sigma_list[0])
        rate, drift = integrand(x, Ax, x0_hat, sigma_list[0])
        for i, (sigma, sigma_next) in enumerate(zip(sigma_list, sigma_list[1:])):
            u, u_next = sigma**2, sigma_next**2
            delta = u - u_next
            ess = effective_sample_size(log_w)
            ess_history.append(ess)
            emit(callback, i=i, sigma=sigma, x=x, x0_hat=x0_hat, log_weights=log_w, ess=ess)
            # 2. Resample the problems whose ESS fell below the threshold.
            if i > 0:
                log_w, resampled, (x, Ax, x0_hat, rate, drift) = ensemble.maybe_resample(
                    log_w, ess_threshold, generator, x, Ax, x0_hat, rate, drift
                )
                resampled_count += resampled.long()
            # 3. Euler-Maruyama step of the reverse SDE: prior score plus likelihood drift.
            noise = torch.randn(x.shape, generator=generator, device=device, dtype=x.dtype)
            x_next = x + delta * drift + math.sqrt(delta) * noise
            check_step_finite(x_next, name, i, sigma)
            # 4. Feynman-Kac weight over [u', u], trapezoidal along the move: the rate term at
            # both ends, and the change of h_u at fixed x averaged over both ends.
            Ax_next = op.A(x_next)
            if sigma_next > 0:
                x0_next = denoiser(x_next, sigma_next)
                rate_next, drift_next = integrand(x_next, Ax_next, x0_next, sigma_next)
            else:
                x0_next, rate_next, drift_next = x_next, rate, drift
            dlog_l = (log_lik(Ax, u_next) - log_lik(Ax, u) + log_lik(Ax_next, u_next) - log_lik(Ax_next, u)) / 2
            increment = delta * (rate + rate_next) / 2 + dlog_l
            log_w = log_w + ensemble.grouped(increment).double()
            x, Ax, x0_hat, rate, drift = x_next, Ax_next, x0_next, rate_next, drift_next
    return x, log_w, ess_history, resampled_count


NAME_TDS = "sample_tds"


def sample_tds(
    denoiser: Denoiser,
    op: Operator,
    y: Tensor,
    sigmas: Tensor,
    *,
    noise_std: float,
    generator: torch.Generator | None,
    num_particles: int = 16,
    ess_threshold: float = 0.5,
    kappa: float | None = None,
    data_std: float | None = 1.0,
    paper: bool = False,
    tausq: float = 0.12,
    last_step: str = "conditioned",
    shape: Sequence[int] | None = None,
    callback: Callback | None = None,
) -> tuple[Tensor, dict]:
    r"""Twisted diffusion sampler (module docstring): twisted ancestral proposals, SMC weights.

    ``paper=True`` runs TDS as the official code ran it (``blt2114/twisted_diffusion_sampler`` at
    5b6af53a6588c1bdd83d8604a8352fefdcad7d69, ``image_exp``: ``TwistedDDPM`` with ``var_type=6,
    tausq=0.12`` and ``ess_threshold=None``, read in ``feynman_kac_image_ddpm.py`` and
    ``run_image.py``): the twisting variance :math:`s^2 + \tilde\sigma_t^2`,
    :math:`\tilde\sigma_t^2 = \sigma_t^2 \tau^2 / (\sigma_t^2 + \tau^2)` with :math:`\sigma_t^2 =
    (1 - \bar\alpha_t)/\bar\alpha_t` and :math:`\tau^2` (``tausq``) in the network's units
    (:func:`~invdiff.samplers.common.network_sigma`; the variance is converted back by
    ``data_scale**2``); the proposal is the ancestral kernel from the twisted estimate
    :math:`\hat x_0 + \sigma^2 \nabla \log \tilde p` (a shift of :math:`(u - u')\nabla`, none on the
    last step, which takes the mean as ``use_mean_pred``); resampling (systematic) at every step,
    ``ess_threshold`` unused. Deliberate differences: the official code runs noiseless inpainting,
    so its twisting variance has no :math:`s^2` (here :math:`s^2` per real component is added, and
    the last weight is the exact Gaussian likelihood); it clips the twisted estimate to
    :math:`[-1, 1]` (no clipping here: the unknown's range is the problem's); its first state is
    the VP prior :math:`\mathcal N(0, 1)`, ours the VE :math:`\mathcal N(0, \sigma_{max}^2)`.
    ``paper=False`` (the default) is this module's variant: variance :math:`s^2 + \kappa u c_u`,
    shift :math:`\tau \nabla` (the exact ancestral posterior of a Gaussian twist), ESS-triggered
    resampling and, for linear operators, the last kernel conditioned on the likelihood
    (``last_step``).

    Args:
        denoiser: the prior, :math:`D(x, \sigma)`; differentiable in ``x``.
        op: the forward model, linear or not (differentiated by autograd).
        y: ``B`` independent measurements, ``(B, ...)``.
        sigmas: ``(n + 1,)`` descending noise levels ending at 0, e.g. ``sigmas_vp(200)``.
        noise_std: the Gaussian measurement noise std ``s > 0``.
        generator: the source of all randomness.
        num_particles: particles per problem, ``N >= 2``.
        ess_threshold: resample a problem when its ESS drops below this fraction of ``N``.
        kappa: the weight of :math:`u c_u` in the twisting variance; default :math:`\|A\|^2` for
            linear operators and 1 otherwise.
        data_std: the prior's standard deviation per pixel :math:`\sigma_d` in
            :math:`v_u = s^2 + \kappa u \sigma_d^2 / (\sigma_d^2 + u)`; ``None`` for :math:`s^2 + \kappa u`.
        paper: run the official TDS update (above); ``kappa`` and ``data_std`` are then unused.
        tausq: :math:`\tau^2` of the paper's twisting variance, in the network's units.
        last_step: as :func:`sample_smc_ensemble`'s (linear operators; the official last step,
            ``"denoised"``, with ``paper`` or a nonlinear operator).
        shape: the shape of ``x`` per problem, ``(B, ...)``.
        callback: called each step with ``i``, ``sigma``, ``x``, ``x0_hat``, ``log_weights``, ``ess``.

    Returns:
        ``(x, info)`` as :func:`sample_smc_ensemble`.
    """
    start = time.perf_counter()
    name = NAME_TDS
    sigma_list, shape, device, dtype, kappa, ensemble = _prepare(
        name, denoiser, op, y, sigmas, shape, noise_std, num_particles, ess_threshold, kappa, data_std
    )
    ys = ensemble.repeat(y)

    check_number(tausq, "tausq", name, positive=True)
    data_scale = network_sigma(denoiser, 1.0)

    def variance(sigma: float) -> float:
        if not paper:
            return _gaussian_tilt(sigma**2, _noise_var(y, noise_std), kappa, data_std)[1]
        s2 = network_sigma(denoiser, sigma) ** 2
        return _noise_var(y, noise_std) + s2 * tausq / (s2 + tausq) / data_scale**2

    def twist(x: Tensor, sigma: float) -> tuple[Tensor, Tensor, Tensor]:
        """``D(x, sigma)``, ``log p~(y | x)`` ``(B * N,)`` and its gradient in ``x``."""
        v = variance(sigma)
        with torch.enable_grad():
            x_in = x.detach().requires_grad_(True)
            x0_hat = denoiser(x_in, sigma)
            log_twist = -_sq_norm(ys - op.A(x0_hat)) / (2 * v)
            (grad,) = torch.autograd.grad(log_twist.sum(), x_in)
        return x0_hat.detach(), log_twist.detach(), grad

    x = initial_noise(sigma_list[0], (ensemble.B * ensemble.N, *shape[1:]), generator=generator, device=device,
                      dtype=dtype)
    x, log_w, ess, resampled = _twisted_smc(
        name, twist, op, ys, noise_std, x, ensemble, sigma_list,
        ess_threshold=math.inf if paper else ess_threshold, generator=generator, callback=callback,
        official_shift=paper, last_var=None if paper else _last_var(name, last_step, op, sigma_list, data_std),
    )
    return _finish(
        ensemble, x, log_w, generator, nfe=len(sigma_list) - 1, seconds=time.perf_counter() - start,
        ess=ess, resampled=resampled, kappa=kappa, paper=paper,
    )


NAME_AFDPS = "sample_afdps"
AFDPS_INTEGRATORS = ("euler", "conditioned")


def sample_afdps(
    denoiser: Denoiser,
    op: LinearOperator,
    y: Tensor,
    sigmas: Tensor,
    *,
    noise_std: float,
    generator: torch.Generator | None,
    num_particles: int = 16,
    resample: bool = False,
    ess_threshold: float = 0.5,
    integrator: str = "euler",
    cg_steps: int = 100,
    shape: Sequence[int] | None = None,
    callback: Callback | None = None,
) -> tuple[Tensor, dict]:
    r"""Approximation-free ensemble sampler of Chen, Ren, Min, Ying and Izzo (2025, arXiv 2506.03979).

    The released sampler is read in ``erichou1/AFDPS`` at fb6a50356b849bdafdbc0a251e84a8202145bef5,
    ``navier_stokes/algo/afdps_core/ensemble_denoiser_edm.py`` (``Ensemble_Denoiser_EDM``, vendored
    from the paper's code) with ``schedule='linear', scaling='none'`` (:math:`\sigma = t`, our VE
    convention) and ``likelihood_at='noisy'``. The tilt is fixed and on the noisy state,
    :math:`q_t(x) \propto p_t(x)\, e^{-\mu_y(x)}` with :math:`\mu_y(x) = w \|y - A x\|^2`
    (:math:`w` from :func:`~invdiff.samplers.common.likelihood_weight`).

    * Stage I: an exact draw from :math:`\mathcal N(0, \rho^2 I)\, e^{-\mu_y}`, :math:`\rho = \sigma_{max}`
      (the released ``proximal_generator``), by perturb-and-solve: :math:`z \sim \mathcal N(0, \rho^2 I)`,
      :math:`\epsilon` the measurement noise, then CG on
      :math:`(I + 2 w \rho^2 A^T A)\, x = z + 2 w \rho^2 A^T (y + \epsilon)`.
    * Stage II: Euler-Maruyama from :math:`t` to :math:`t'`, :math:`v^2 = 2t`,
      :math:`H = v^2 \nabla \log p_t = 2 (D(x, t) - x)/t`:
      :math:`x' = x + (t - t')(H - v^2 \nabla\mu_y) + \sqrt{v^2 (t - t')}\, z`, and
      :math:`\log w \mathrel{+}= (t - t')\big(\tfrac{v^2}{2}(\|\nabla\mu_y\|^2 - \Delta\mu_y) - H \cdot \nabla\mu_y\big)`
      at the left end (the released ``reweight_func``).

    ``resample=False`` is the released variant (the paper's App. E skips resampling): weights
    accumulate over all steps and ``x`` is the highest-weight particle (``reduce='best'``);
    ``resample=True`` is the paper's Algorithm 1, resampling when the ESS falls below
    ``ess_threshold * N`` (systematic here, multinomial in the released code).

    Deliberate differences: :math:`\Delta\mu_y = 2 w \operatorname{tr}(A^T A)` is the same for every
    particle of a linear operator and is left out of the weights (the released code estimates it by
    Hutchinson probes, which only adds weight noise); no guidance annealing
    (``guidance_gamma`` of the released code, which changes the tilt with :math:`t` and leaves its
    time derivative out of the weights, so it no longer targets the posterior); the stage I tilt
    uses :math:`\mathcal N(0, \rho^2 I)` for :math:`p_T`, as the paper. The explicit step is stable
    only while :math:`2 (t - t') t\, \|\nabla^2 \mu_y\| < 2`: small noise or coarse steps at large
    :math:`\sigma` diverge (``FloatingPointError``).

    ``integrator="conditioned"`` (ours) is a discretisation of the same stage II that is stable at
    any step: the prior's ancestral kernel from :math:`t` to :math:`t'`,
    :math:`\mathcal N(m, \tau I)` with :math:`m = x + (1 - t'^2/t^2)(D(x, t) - x)` and
    :math:`\tau = (t^2 - t'^2)\, t'^2 / t^2`, conditioned on the tilt: :math:`x'` is drawn exactly
    from :math:`\mathcal N(x'; m, \tau I)\, e^{-\mu_y(x')}` (perturb-and-solve, CG as in stage I)
    and the weight is the exact importance ratio of the move,
    :math:`\log w \mathrel{+}= \log Z(m) + \mu_y(x)` with
    :math:`Z(m) = \int \mathcal N(x'; m, \tau I)\, e^{-\mu_y(x')}\, dx'`, evaluated (up to a
    constant shared by all particles) as :math:`-\|\bar x - m\|^2 / (2\tau) - \mu_y(\bar x)` at the
    conditioned mean :math:`\bar x`. To first order in :math:`t - t'` the move's drift is
    :math:`H - v^2 \nabla\mu_y` and the log-weight's rate
    :math:`\tfrac{v^2}{2}(\|\nabla\mu_y\|^2 - \Delta\mu_y) - H \cdot \nabla\mu_y`, the paper's;
    the target path (the fixed tilt on the noisy state) is unchanged. The price is two CG solves per
    step (the draw and the conditioned mean) and weights that still vary a lot while :math:`\tau \|A\|^2 / s^2 \gg 1`, so it wants
    resampling (``resample=True``).

    Args:
        denoiser: the prior, :math:`D(x, \sigma)`.
        op: a :class:`~operators.base.LinearOperator`.
        y: ``B`` independent measurements, ``(B, ...)``.
        sigmas: ``(n + 1,)`` descending noise levels ending at 0; ``sigmas[0]`` is :math:`\rho`.
        noise_std: the Gaussian measurement noise std ``s > 0``.
        generator: the source of all randomness.
        num_particles: particles per problem, ``N >= 2``.
        resample: resample on low ESS (Algorithm 1) instead of the released run without.
        ess_threshold: with ``resample``, the ESS fraction that triggers it.
        integrator: ``"euler"`` (the paper's and the released stage II) or ``"conditioned"``
            (the prior's kernel conditioned on the tilt, exact weights; above).
        cg_steps: CG iterations of the stage I draw and of each conditioned step.
        shape: the shape of ``x`` per problem, ``(B, ...)``.
        callback: called each step with ``i``, ``sigma``, ``x``, ``x0_hat``, ``log_weights``, ``ess``.

    Returns:
        ``(x, info)``: the highest-weight particle per problem (``resample=False``) or one particle
        after resampling by the final weights, ``(B, ...)``; ``info`` with ``nfe``, ``seconds``,
        ``particles`` ``(B, N, ...)`` resampled by the final weights (a posterior sample),
        ``log_weights`` ``(B, N)`` before it, ``ess``, ``resampled`` and ``cg_residual``.
    """
    start = time.perf_counter()
    name = NAME_AFDPS
    if not isinstance(op, LinearOperator):
        raise ValueError(f"{name}: op: expected a LinearOperator (stage I solves with its adjoint), got {op!r}")
    if integrator not in AFDPS_INTEGRATORS:
        raise ValueError(f"{name}: integrator: expected one of {AFDPS_INTEGRATORS}, got {integrator!r}")
    check_number(cg_steps, "cg_steps", name, integer=True, minimum=0)
    cg_steps = int(cg_steps)
    sigma_list, shape, device, dtype, _, ensemble = _prepare(
        name, denoiser, op, y, sigmas, shape, noise_std, num_particles, ess_threshold, 1.0, None
    )
    ys = ensemble.repeat(y)
    w = likelihood_weight(y, noise_std)

    def grad_mu(x: Tensor) -> Tensor:
        return -2 * w * op.AT(ys - op.A(x))

    def mu(x: Tensor) -> Tensor:
        return w * _sq_norm(ys - op.A(x))

    with torch.no_grad():
        # 1. Stage I: exact draw from N(0, rho^2 I) exp(-mu_y) by perturb-and-solve.
        zeros = torch.zeros((ensemble.B * ensemble.N, *shape[1:]), device=device, dtype=dtype)
        x, cg = _tilted_draw(op, ys, w, zeros, sigma_list[0] ** 2, generator=generator, cg_steps=cg_steps)
        check_step_finite(x, name, 0, sigma_list[0])
        log_w = torch.zeros(ensemble.B, ensemble.N, device=device, dtype=torch.float64)
        ess_history, resampled_count = [], torch.zeros(ensemble.B, dtype=torch.long, device=device)
        n = len(sigma_list) - 1
        for i, (t, t_next) in enumerate(zip(sigma_list, sigma_list[1:])):
            dt = t - t_next
            x0_hat = denoiser(x, t)
            ess = effective_sample_size(log_w)
            ess_history.append(ess)
            emit(callback, i=i, sigma=t, x=x, x0_hat=x0_hat, log_weights=log_w, ess=ess)
            if integrator == "euler":
                # 2. Prior drift H = v^2 score and the likelihood gradient at the noisy state.
                H = 2 * (x0_hat - x) / t
                g = grad_mu(x)
                # 3. Feynman-Kac weight at the left end; Euler-Maruyama step with drift H - v^2 grad mu.
                rate = t * _sq_norm(g) - _dot(H, g)
                log_w = log_w + dt * ensemble.grouped(rate).double()
                noise = torch.randn(x.shape, generator=generator, device=device, dtype=x.dtype)
                x = x + dt * (H - 2 * t * g) + math.sqrt(2 * t * dt) * noise
            else:
                # 2'. The prior's ancestral kernel N(m, tau I), conditioned on the tilt; weight Z(m) / h(x).
                u, u_next = t * t, t_next * t_next
                m = x + (1 - u_next / u) * (x0_hat - x)
                tau = (u - u_next) * u_next / u
                mu_x = mu(x)
                if tau > 0:
                    x_next, cg = _tilted_draw(op, ys, w, m, tau, generator=generator, cg_steps=cg_steps)
                    _, log_z = _tilted_mean(op, ys, w, m, tau, cg_steps=cg_steps)
                    x = x_next
                else:  # the last step is deterministic: x' = m
                    x, log_z = m, -mu(m)
                log_w = log_w + ensemble.grouped(log_z + mu_x).double()
            check_step_finite(x, name, i, t)
            # 4. Algorithm 1: resample on low ESS (not after the last step).
            if resample and i < n - 1:
                log_w, did, (x,) = ensemble.maybe_resample(log_w, ess_threshold, generator, x)
                resampled_count += did.long()
        best = ensemble.grouped(x)[torch.arange(ensemble.B, device=device), log_w.argmax(1)]
    x_out, info = _finish(
        ensemble, x, log_w, generator, nfe=n, seconds=time.perf_counter() - start, ess=ess_history,
        resampled=resampled_count, cg_residual=cg["residual"].reshape(ensemble.B, ensemble.N),
    )
    return (x_out if resample else best), info
