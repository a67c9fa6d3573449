r"""Sequential Monte Carlo posterior samplers: weighted particles in the batch dimension.

Both samplers here move ``N`` particles per problem through the diffusion's noise levels,
re-weight them so that the weighted ensemble tracks a path of distributions that ends at the
exact posterior :math:`p(x_0 \mid y)`, and resample a problem's particles when their effective
sample size falls below ``ess_threshold * N``. With enough particles and fine steps the
ensemble's error goes to zero; the only approximations are the time discretisation and the
finite ensemble. ``y`` holds ``B`` independent problems; the state holds ``B * N`` particles,
problem-major, and no operation mixes particles of different problems.

**Ensemble sampler** (:func:`sample_smc_ensemble`), after the approximation-free ensemble
sampler of Chen, Ren, Min, Ying and Izzo (2025). In the variance-exploding parameterisation
with :math:`u = \sigma^2` as time, the prior marginals :math:`p_u` solve the heat equation
:math:`\partial_u p_u = \tfrac12 \Delta p_u`. Take the path of tilted marginals

.. math::
    q_u(x) \propto p_u(x)\, L_u(x), \qquad
    L_u(x) = \mathcal N\big(y;\ A x,\ v_u I\big), \qquad v_u = s^2 + \kappa u,

which is the posterior at :math:`u = 0` and, since :math:`L_u` flattens as :math:`u` grows, the
prior at the top of the schedule. Substituting :math:`p_u = q_u Z_u / L_u` into the heat
equation gives, in reverse time, a Fokker-Planck equation with a reaction term: particles follow
the reverse SDE of the prior *plus a likelihood drift*,

.. math::
    dX = \big(\nabla \log p_u(X) + \nabla \log L_u(X)\big)\, d\bar u + d\bar W,

while their log-weights integrate

.. math::
    d \log w = \Big(\nabla \log p_u \cdot \nabla \log L_u
        + \tfrac12 \|\nabla \log L_u\|^2 + \tfrac12 \Delta \log L_u\Big)\, d\bar u
        - \partial_u \log L_u\, d\bar u .

Nothing in this uses the intractable likelihood of a noisy image, :math:`p(y \mid x_u)`: the
prior score comes from the denoiser, :math:`\nabla \log p_u(x) = (D(x, \sigma) - x)/\sigma^2`,
and :math:`L_u` is explicit. For a linear operator :math:`\Delta \log L_u = -\operatorname{tr}(A^T A)/v_u`
is the same for every particle and drops out of the normalised weights. A step from
:math:`u` to :math:`u' < u` (:math:`\Delta = u - u'`) is the Euler-Maruyama step of the SDE; the
weights take the trapezoidal rule along the move, the rate at both ends and, for the last term,
:math:`\log L_{u'} - \log L_u` at fixed :math:`x` averaged over both ends (a left-point rule
biased the mode masses of a two-mode test by 0.3 at 200 steps). ``kappa`` defaults to :math:`\|A\|^2` (power iteration), which
bounds the data-space variance of :math:`A x_u` given :math:`x_0`, keeps the likelihood drift
stable (:math:`\Delta \|A\|^2 / v_u < 1`) and makes the path start at the prior. With
``data_std`` :math:`\sigma_d` the tilt becomes :math:`L_u(x) = \mathcal N(y;\ c_u A x,\ (s^2 + \kappa u c_u) I)`,
:math:`c_u = \sigma_d^2/(\sigma_d^2 + u)`: the exact :math:`p(y \mid x_u)` of a Gaussian prior of that
spread, closer to the true one, so the weights vary less (about half the resampling steps on the
Gaussian-mixture benchmark); it starts flat too and stays stable. One network evaluation per
step, no gradient through the network. Linear operators with Gaussian noise.

The weights' variance is this sampler's cost: the tilt sees the noisy state :math:`A x_u`, not a
denoised estimate, so on multimodal posteriors the mode masses converge slowly with the number of
particles (``BENCHMARKS.md``, ``benchmark=gmm``), where the twisted sampler below, whose twists use
:math:`A \hat x_0(x_u)` at the price of a gradient through the network, reaches the exact-sample floor.

How this follows the paper: particles follow the reverse SDE with a likelihood drift and carry
weights from a Feynman-Kac correction, resampled on low ESS. The intermediate likelihood with
the inflated variance :math:`v_u` and the step rules above are written out here from the
derivation; where the paper's published path or discretisation differs, this one is what runs.

**Twisted diffusion sampler** (:func:`sample_tds`; Wu, Trippe, Naesseth, Blei, Cunningham,
NeurIPS 2023), the established SMC sampler it is compared with. Twisting functions
:math:`\tilde p_k(y \mid x_k) = \mathcal N(y;\ \mathcal A(\hat x_0(x_k)),\ (s^2 + \kappa r_k^2) I)`
with :math:`r_k^2 = \sigma_k^2 \sigma_d^2 / (\sigma_k^2 + \sigma_d^2)`, the spread of :math:`x_0`
given :math:`x_k` for data of standard deviation :math:`\sigma_d` (``data_std``, 1 by default),
and the exact likelihood at :math:`\sigma = 0`; proposals are the ancestral step shifted by its
variance times :math:`\nabla_{x_k} \log \tilde p_k` (through the network, as in DPS); weights
:math:`w_{k+1} = p(x_{k+1} \mid x_k)\, \tilde p_{k+1}(y \mid x_{k+1}) / \big(q(x_{k+1} \mid x_k)\, \tilde p_k(y \mid x_k)\big)`.
The paper's twisting variance is the measurement's alone; the :math:`\kappa r_k^2` term is added
here so that the early twists are not sharper than the information in a noisy :math:`x_k`
(the final target is unchanged). ``data_std`` matters: on the 25-mode Gaussian mixture of
``benchmark=gmm`` (per-coordinate std about 11) the default of 1 makes the twists far too sharp
(ESS collapses, mode weights drift) and the prior's std brings TDS to the exact-sample floor.
Works with nonlinear operators.

Resampling is systematic, one uniform per problem drawn at every step (whether or not a
problem resamples), so a problem's particles depend only on its own measurement and the seed.
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
    check_finite,
    check_measurement,
    check_sigmas,
    emit,
    initial_noise,
    measurement_device_dtype,
    operator_norm,
    posterior_shape,
)
from operators.base import LinearOperator, Operator


def check_particles(num_particles: int, ess_threshold: float, sampler: str) -> None:
    """Raise a ``ValueError`` for fewer than 2 particles or a threshold outside ``[0, 1]``."""
    if int(num_particles) != num_particles or num_particles < 2:
        raise ValueError(
            f"{sampler}: num_particles: expected an integer >= 2 (an ensemble), got {num_particles}; "
            f"for one chain per problem use dds, dps or reddiff"
        )
    if not 0.0 <= ess_threshold <= 1.0:
        raise ValueError(f"{sampler}: ess_threshold: expected 0 <= ess_threshold <= 1, got {ess_threshold}")


def check_noise(noise_std: float, sampler: str) -> None:
    if not noise_std > 0:
        raise ValueError(
            f"{sampler}: noise_std: expected > 0 (the weights use the Gaussian likelihood of y), got {noise_std}"
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
) -> tuple[list[float], tuple[int, ...], torch.device, torch.dtype, float, Ensemble]:
    r"""Check the inputs; the schedule, shape, device, dtype, ``kappa`` (default :math:`\|A\|^2`
    for linear operators, else 1) and the particle layout."""
    check_measurement(y, name)
    check_particles(num_particles, ess_threshold, name)
    check_noise(noise_std, name)
    sigma_list = check_sigmas(sigmas)
    shape = posterior_shape(denoiser, op, y, shape, name)
    device, dtype = measurement_device_dtype(y)
    if kappa is None:
        like = torch.zeros((1, *shape[1:]), device=device, dtype=dtype)
        kappa = operator_norm(op.normal, like) if isinstance(op, LinearOperator) else 1.0
    if not kappa >= 0:
        raise ValueError(f"{name}: kappa: expected >= 0 or None, got {kappa}")
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
    kappa: float | None = None,
    data_std: float | None = None,
    shape: Sequence[int] | None = None,
    callback: Callback | None = None,
) -> tuple[Tensor, dict]:
    r"""Weighted ensemble on the tilted path :math:`p_u L_u` (module docstring).

    Args:
        denoiser: the prior, :math:`D(x, \sigma)`.
        op: a :class:`~operators.base.LinearOperator`.
        y: ``B`` independent measurements, ``(B, ...)``.
        sigmas: ``(n + 1,)`` descending noise levels ending at 0; finer steps, smaller bias
            (e.g. ``sigmas_vp(500)``).
        noise_std: the Gaussian measurement noise std ``s > 0``.
        generator: the source of all randomness.
        num_particles: particles per problem, ``N >= 2``.
        ess_threshold: resample a problem when its ESS drops below this fraction of ``N``.
        kappa: the variance inflation of :math:`L_u`; default :math:`\|A\|^2`.
        data_std: the prior's standard deviation per pixel :math:`\sigma_d`; with it
            :math:`L_u(x) = \mathcal N(y;\ c_u A x,\ (s^2 + \kappa u c_u) I)`, :math:`c_u = \sigma_d^2 / (\sigma_d^2 + u)`
            (module docstring), else the plain path :math:`c_u = 1`.
        shape: the shape of ``x`` per problem, ``(B, ...)``; default ``(B, *denoiser.shape)``.
        callback: called each step with ``i``, ``sigma``, ``x`` (all particles), ``x0_hat``,
            ``log_weights`` ``(B, N)`` and ``ess`` ``(B,)``.

    Returns:
        ``(x, info)``: one particle per problem after resampling by the final weights, ``(B, ...)``,
        and ``info`` with ``nfe``, ``seconds``, ``particles`` ``(B, N, ...)`` (equally weighted after
        the final resampling), ``log_weights`` ``(B, N)`` (before it), ``ess`` (a ``(B,)`` tensor
        per step, before resampling), ``resampled`` (steps that resampled, per problem) and ``kappa``.
    """
    start = time.perf_counter()
    name = NAME_ENSEMBLE
    if not isinstance(op, LinearOperator):
        raise ValueError(
            f"{name}: op: the ensemble sampler needs a LinearOperator (its weights use the Gaussian "
            f"likelihood of A x), got {op!r}; use tds, dps or reddiff for nonlinear operators"
        )
    sigma_list, shape, device, dtype, kappa, ensemble = _prepare(
        name, denoiser, op, y, sigmas, shape, noise_std, num_particles, ess_threshold, kappa
    )
    B, N = ensemble.B, ensemble.N
    ys = ensemble.repeat(y)

    def tilt(u: float) -> tuple[float, float]:
        """``(c_u, v_u)``: the scale of ``A x`` and the variance in ``L_u``."""
        c = 1.0 if data_std is None else data_std**2 / (data_std**2 + u)
        return c, noise_std**2 + kappa * u * c

    def log_lik(Ax: Tensor, u: float) -> Tensor:
        """``log L_u(x)`` up to a constant, ``(B * N,)``, from ``A x``."""
        c, v = tilt(u)
        return -_sq_norm(ys - c * Ax) / (2 * v)

    def integrand(x: Tensor, Ax: Tensor, x0_hat: Tensor, sigma: float) -> tuple[Tensor, Tensor]:
        """The weight rate at ``(x, u)``, ``(B * N,)``, and the drift ``score + grad log L_u``."""
        u = sigma**2
        c, v = tilt(u)
        score = (x0_hat - x) / u
        grad_ll = c * op.AT(ys - c * Ax) / v
        return _dot(score, grad_ll) + 0.5 * _sq_norm(grad_ll), score + grad_ll

    x = initial_noise(sigma_list[0], (B * N, *shape[1:]), generator=generator, device=device, dtype=dtype)
    log_w = torch.zeros(B, N, device=device, dtype=torch.float64)
    ess_history, resampled_count = [], torch.zeros(B, dtype=torch.long, device=device)
    with torch.no_grad():
        # 1. Importance weights of the prior draws for q_T = p_T L_T.
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
            noise = torch.randn(x.shape, generator=generator, device=device, dtype=dtype)
            x_next = x + delta * drift + math.sqrt(delta) * noise
            check_finite(x_next, name, i, sigma)
            # 4. Feynman-Kac weight over [u', u], trapezoidal along the move: the rate term at
            # both ends, and the change of L_u at fixed x averaged over both ends.
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
    return _finish(
        ensemble, x, log_w, generator, nfe=len(sigma_list) - 1, seconds=time.perf_counter() - start,
        ess=ess_history, resampled=resampled_count, kappa=kappa,
    )


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
    data_std: float = 1.0,
    shape: Sequence[int] | None = None,
    callback: Callback | None = None,
) -> tuple[Tensor, dict]:
    r"""Twisted diffusion sampler (module docstring): twisted ancestral proposals, SMC weights.

    Args:
        denoiser: the prior, :math:`D(x, \sigma)`; differentiable in ``x``.
        op: the forward model, linear or not (differentiated by autograd).
        y: ``B`` independent measurements, ``(B, ...)``.
        sigmas: ``(n + 1,)`` descending noise levels ending at 0, e.g. ``sigmas_vp(200)``.
        noise_std: the Gaussian measurement noise std ``s > 0``.
        generator: the source of all randomness.
        num_particles: particles per problem, ``N >= 2``.
        ess_threshold: resample a problem when its ESS drops below this fraction of ``N``.
        kappa: the weight of :math:`r_k^2` in the twisting variance; default :math:`\|A\|^2` for
            linear operators and 1 otherwise.
        data_std: the prior's standard deviation per pixel :math:`\sigma_d` in the spread of
            :math:`x_0` given :math:`x_k`, :math:`r_k^2 = \sigma_k^2 \sigma_d^2 / (\sigma_k^2 + \sigma_d^2)`.
        shape: the shape of ``x`` per problem, ``(B, ...)``.
        callback: called each step with ``i``, ``sigma``, ``x``, ``x0_hat``, ``log_weights``, ``ess``.

    Returns:
        ``(x, info)`` as :func:`sample_smc_ensemble`.
    """
    start = time.perf_counter()
    name = NAME_TDS
    sigma_list, shape, device, dtype, kappa, ensemble = _prepare(
        name, denoiser, op, y, sigmas, shape, noise_std, num_particles, ess_threshold, kappa
    )
    B, N = ensemble.B, ensemble.N
    ys = ensemble.repeat(y)

    def twist(x: Tensor, sigma: float) -> tuple[Tensor, Tensor, Tensor]:
        """``D(x, sigma)``, ``log p~(y | x)`` ``(B * N,)`` and its gradient in ``x``."""
        v = noise_std**2 + kappa * sigma**2 * data_std**2 / (sigma**2 + data_std**2)
        with torch.enable_grad():
            x_in = x.detach().requires_grad_(True)
            x0_hat = denoiser(x_in, sigma)
            log_twist = -_sq_norm(ys - op.A(x0_hat)) / (2 * v)
            (grad,) = torch.autograd.grad(log_twist.sum(), x_in)
        return x0_hat.detach(), log_twist.detach(), grad

    x = initial_noise(sigma_list[0], (B * N, *shape[1:]), generator=generator, device=device, dtype=dtype)
    log_w = torch.zeros(B, N, device=device, dtype=torch.float64)
    ess_history, resampled_count = [], torch.zeros(B, dtype=torch.long, device=device)
    # 1. Twist at the top: importance weights of the prior draws.
    x0_hat, log_twist, grad = twist(x, sigma_list[0])
    log_w = log_w + ensemble.grouped(log_twist).double()
    for i, (sigma, sigma_next) in enumerate(zip(sigma_list, sigma_list[1:])):
        u, u_next = sigma**2, sigma_next**2
        ess = effective_sample_size(log_w)
        ess_history.append(ess)
        emit(callback, i=i, sigma=sigma, x=x, x0_hat=x0_hat, log_weights=log_w, ess=ess)
        # 2. Resample (with everything computed at the particles) when the ESS is low.
        log_w, resampled, (x, x0_hat, log_twist, grad) = ensemble.maybe_resample(
            log_w, ess_threshold, generator, x, x0_hat, log_twist, grad
        )
        resampled_count += resampled.long()
        # 3. Twisted ancestral proposal.
        mean = x + (1 - u_next / u) * (x0_hat - x)
        var = (u - u_next) * u_next / u
        noise = torch.randn(x.shape, generator=generator, device=device, dtype=dtype)
        x_next = mean + var * grad + math.sqrt(var) * noise
        # 4. Next twist (the exact likelihood at sigma = 0) and the weight update.
        if sigma_next > 0:
            x0_next, log_twist_next, grad_next = twist(x_next, sigma_next)
        else:
            x0_next, grad_next = x_next, torch.zeros_like(x_next)
            with torch.no_grad():
                log_twist_next = -_sq_norm(ys - op.A(x_next)) / (2 * noise_std**2)
        # log p(x'|x) - log q(x'|x) for N(mean, var) against N(mean + var grad, var)
        if var > 0:
            shift = x_next - mean
            log_ratio = (_sq_norm(shift - var * grad) - _sq_norm(shift)) / (2 * var)
        else:
            log_ratio = torch.zeros_like(log_twist)
        log_w = log_w + ensemble.grouped(log_ratio + log_twist_next - log_twist).double()
        x, x0_hat, log_twist, grad = x_next.detach(), x0_next, log_twist_next, grad_next
        check_finite(x, name, i, sigma)
    return _finish(
        ensemble, x, log_w, generator, nfe=len(sigma_list) - 1, seconds=time.perf_counter() - start,
        ess=ess_history, resampled=resampled_count, kappa=kappa,
    )
