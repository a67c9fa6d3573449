r"""DAPS: decoupled annealing posterior sampling (Zhang, Chu, Berner, Meng, Anandkumar, Song,
CVPR 2025; arXiv 2407.01521).

DAPS anneals a noise level :math:`\sigma_0 > \sigma_1 > \dots > \sigma_{N-1}` and, at each, draws
:math:`x_0` from an approximation of :math:`p(x_0 \mid x_t, y)` and re-noises it independently:

1. the probability-flow ODE from :math:`x_t` at :math:`\sigma_t` down to 0 in ``ode_steps`` Euler
   steps (EDM's :math:`\rho = 7` grid from :math:`\sigma_t` to ``ode_sigma_min``, then 0; the last
   step is the denoiser at ``ode_sigma_min``): :math:`\hat x_0(x_t)`;
2. ``langevin_steps`` steps of Langevin dynamics on
   :math:`\log p(x_0 \mid \hat x_0, y) = -\frac{\|x_0 - \hat x_0\|^2}{2\sigma_t^2}
   - \frac{\|y - \mathcal A(x_0)\|^2}{2\tau^2}`, started at :math:`\hat x_0`:
   :math:`x \leftarrow x + \eta_t \nabla \log p + \sqrt{2\eta_t}\,\epsilon`, with the step
   :math:`\eta_t` decaying linearly from ``lr`` to ``lr * lr_min_ratio`` over the annealing
   (``lr * (1 + (t/N)(lr_min_ratio - 1))``);
3. :math:`x_{t+1} = x_0 + \sigma_{t+1} z` (:math:`\sigma_N = 0`: the last :math:`x_0` is returned).

``sigmas`` is the annealing schedule (``N + 1`` values ending with 0). Network evaluations:
``N * ode_steps`` (``info["nfe"]``); the Langevin steps use only the operator. For a linear
operator the likelihood gradient is :math:`A^H(A x - y)/\tau^2` (no autograd); a nonlinear one
is differentiated by autograd.

What the official code does (``zhangbingliang2019/DAPS``; the paper's code is the ``legacy``
branch at ``25471a8``, ``sampler.py``, ``config/sampler/edm_daps.yaml``, ``config/task/*.yaml``;
``main`` at ``098df6b`` restructured it into ``cores/``), and what this follows:

* Annealing: ``Scheduler(num_steps=200, sigma_max=100, sigma_min=0.1, timestep='poly-7')``, the
  200 levels of EDM's grid from 100 to 0.1 then 0 (``sigmas_karras(200, 0.1, 100)``, which
  ``configs/sampler/daps.yaml`` requests), start :math:`x = 100 z`.
* ODE: ``Scheduler(num_steps=5, sigma_max=sigma, sigma_min=0.01, sigma_final=0)``, Euler steps
  ``x += sigma_i (sigma_i - sigma_{i+1}) * score`` (the deterministic DDIM step in VE form).
* Langevin (``LangevinDynamics``): SGD on ``error(x, y) / (2 tau^2) + ||x - x0hat||^2 / (2 sigma^2)``
  with ``error = ||A(x) - y||^2`` per sample, then ``+ sqrt(2 lr) * randn``; ``lr`` scheduled by
  ``ratio = step / num_steps``. Per task (pixel space, ``config/task/*.yaml``): 100 steps,
  ``tau = 0.01``, ``lr_min_ratio = 0.01``, ``lr = 1e-4`` (super-resolution, Gaussian and motion
  deblurring, random inpainting, HDR, nonlinear deblurring) or ``5e-5`` (box inpainting, phase
  retrieval); measurement noise std 0.05 (``tau`` is deliberately smaller). The README's
  DAPS-1K is this default, 200 annealing x 5 ODE steps.

Units. The official ``lr`` and ``tau`` are in the network's units ([-1, 1] images). With
:math:`x_n = kx + b` (the prior's ``data_scale`` :math:`k`), measurements of the network's images
are :math:`k` times ours (linear operators) and one official Langevin step on :math:`x_n` is, on
ours, the same step with :math:`\eta_c = \eta / k^2` and :math:`\tau_c = \tau/k`, which is what
runs here: ``lr`` and ``tau`` keep their published values. ``ode_sigma_min`` is the network's
noise level (divided by :math:`k` here). The annealing ``sigmas`` are the caller's (the config's
``sigma_max: 100, sigma_min: 0.1`` are the network's for :math:`k = 1`, the shipped priors).
``tau = None`` uses the measurement's own noise std (``noise_std``, caller's units): the exact
likelihood. For complex measurements the data term is :math:`w\|y - \mathcal A(x)\|^2` with
:math:`w` of :func:`~invdiff.samplers.common.likelihood_weight` at std :math:`\tau` (circular
noise, :math:`1/\tau^2`).

The official ``lr`` suits operators of norm at most 1 (its images' blurs, masks and
downsamplings): the explicit Langevin step is stable for ``lr`` below :math:`2\tau^2/\|A\|^2`.
``lr_normalise=True`` (ours, off by default) divides it by :math:`\max(1, \|A^H A\|_2)`, which CT
(``task=ct``, a Radon transform of norm far above 1) needs.

Deliberate differences: the official loop returns zeros for a chain that turns NaN in the
Langevin steps; here a non-finite step raises ``FloatingPointError`` (once per annealing step).
``main``'s restructured code differs from the paper's in three ways not followed here: its data
term is ``-grad ||A x - y||^2 / tau^2`` (twice the legacy weight), its annealing uses the first
200 of 201 grid levels (never 0.1 itself) and its ODE stops at ``sigma_min`` without the final
denoising step.
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
    emit,
    initial_noise,
    likelihood_weight,
    measurement_device_dtype,
    network_sigma,
    operator_norm,
    posterior_shape,
)
from operators.base import LinearOperator, Operator

NAME = "sample_daps"


def ode_sigmas(sigma: float, steps: int, sigma_min: float, rho: float = 7.0) -> list[float]:
    r"""The inner ODE's levels: ``steps`` points of EDM's :math:`\rho` grid from ``sigma`` to
    ``min(sigma_min, sigma)``, then 0 (the official ``Scheduler(num_steps, sigma_max=sigma,
    sigma_min, sigma_final=0, timestep='poly-7')``)."""
    lo, hi = min(sigma_min, sigma) ** (1 / rho), sigma ** (1 / rho)
    ramp = [j / (steps - 1) for j in range(steps)] if steps > 1 else [0.0]
    levels = [(hi + r * (lo - hi)) ** rho for r in ramp]
    return [sigma] + levels[1:] + [0.0]  # the first exactly sigma, not its round trip through the root


def langevin_lr(lr: float, lr_min_ratio: float, step: int, num_steps: int) -> float:
    """The official ``get_lr``: ``lr * (1 + (step / num_steps) * (lr_min_ratio - 1))``."""
    return lr * (1 + (step / num_steps) * (lr_min_ratio - 1))


def sample_daps(
    denoiser: Denoiser,
    op: Operator,
    y: Tensor,
    sigmas: Tensor,
    *,
    noise_std: float,
    generator: torch.Generator | None,
    ode_steps: int = 5,
    ode_sigma_min: float = 0.01,
    langevin_steps: int = 100,
    lr: float = 1e-4,
    lr_min_ratio: float = 0.01,
    tau: float | None = None,
    lr_normalise: bool = False,
    shape: Sequence[int] | None = None,
    callback: Callback | None = None,
) -> tuple[Tensor, dict]:
    r"""Decoupled annealing posterior sampling (module docstring: the official settings and units).

    Args:
        denoiser: the prior, :math:`D(x, \sigma)`.
        op: the forward model; linear (:math:`A^H` for the gradient) or not (autograd).
        y: the measurements, ``(B, ...)``; each sample is its own problem.
        sigmas: ``(N + 1,)`` descending annealing levels ending with 0, e.g.
            ``sigmas_karras(200, 0.1, 100)``.
        noise_std: the measurement noise std (``>= 0``); used only by ``tau=None``.
        generator: the source of all randomness.
        ode_steps: Euler steps of the inner probability-flow ODE (network evaluations per level).
        ode_sigma_min: the ODE's last positive level, in the network's units.
        langevin_steps: Langevin steps per level.
        lr: the Langevin step at the first level, in the network's units.
        lr_min_ratio: the last level's step as a fraction of ``lr`` (linear decay).
        tau: the likelihood's std :math:`\tau` in the network's units (official 0.01, with
            ``lr`` tuned to it: the explicit step needs ``lr`` below :math:`2\tau^2/\|A\|^2`), or
            ``None`` (the default) for ``noise_std``, the exact likelihood (caller's units, must
            be positive).
        lr_normalise: divide the step by :math:`\max(1, \|A^H A\|_2)` (power iteration; linear
            operators only). The official ``lr`` is tuned for operators of norm at most 1 (the
            explicit step is stable for ``lr`` below :math:`2\tau^2/\|A\|^2`); CT's Radon
            transform has a far larger norm and diverges without this. Not in the official code.
        shape: the shape of ``x``, ``(B, ...)``; default ``op.AT(y).shape`` (linear operators).
        callback: called each annealing step with ``i``, ``sigma``, ``x`` (the state at
            ``sigma``), ``x0_hat`` (the ODE's estimate) and ``x0`` (after Langevin).

    Returns:
        ``(x, info)``: samples and ``info`` with ``nfe`` (``N * ode_steps``), ``seconds``,
        ``langevin_steps_total``, ``residual_norm`` (``(B,)``, :math:`\|y - \mathcal A(x_0)\|` at
        the last level), ``tau`` (in the caller's units), ``lr``, ``lr_divisor`` (the operator
        norm used by ``lr_normalise``, else 1) and ``noise_std``.
    """
    start = time.perf_counter()
    check_measurement(y, NAME)
    check_number(noise_std, "noise_std", NAME, minimum=0)
    check_number(ode_steps, "ode_steps", NAME, integer=True, minimum=1)
    check_number(ode_sigma_min, "ode_sigma_min", NAME, positive=True)
    check_number(langevin_steps, "langevin_steps", NAME, integer=True, minimum=0)
    check_number(lr, "lr", NAME, positive=True)
    check_number(lr_min_ratio, "lr_min_ratio", NAME, positive=True)
    check_number(tau, "tau", NAME, positive=True, optional=True)
    if tau is None and not noise_std > 0:
        raise ValueError(f"{NAME}: tau: None takes the likelihood's std from noise_std, which is {noise_std}")
    sigma_list = check_sigmas(sigmas)
    shape = posterior_shape(op, y, shape, NAME)
    device, dtype = measurement_device_dtype(y)
    k = network_sigma(denoiser, 1.0)
    tau_c = float(noise_std) if tau is None else tau / k
    data_weight = 2 * likelihood_weight(y, tau_c)  # 1/tau^2 for real y: the gradient's weight
    lr_c = lr / k**2
    linear = isinstance(op, LinearOperator)
    norm = 1.0
    if lr_normalise:
        if not linear:
            raise ValueError(f"{NAME}: lr_normalise: needs a LinearOperator (its norm), got {op!r}")
        norm = max(1.0, operator_norm(op.normal, torch.zeros(shape, device=device, dtype=dtype)))
        lr_c = lr_c / norm
    N = len(sigma_list) - 1
    x = initial_noise(sigma_list[0], shape, generator=generator, device=device, dtype=dtype)
    x0 = x
    for i, (sigma, sigma_next) in enumerate(zip(sigma_list, sigma_list[1:])):
        # 1. Probability-flow ODE from sigma to 0 (Euler): the estimate x0_hat(x_t).
        with torch.no_grad():
            x0_hat = x
            levels = ode_sigmas(sigma, int(ode_steps), ode_sigma_min / k)
            for s, s_next in zip(levels, levels[1:]):
                d = denoiser(x0_hat, s)
                x0_hat = d + (s_next / s) * (x0_hat - d)
        # 2. Langevin dynamics on p(x0 | x0_hat, y), started at x0_hat.
        step = langevin_lr(lr_c, lr_min_ratio, i, N)
        noise_scale = math.sqrt(2 * step)
        x0 = x0_hat
        for _ in range(int(langevin_steps)):
            if linear:
                with torch.no_grad():
                    data_grad = data_weight * op.AT(op.A(x0) - y)
            else:
                with torch.enable_grad():
                    x_in = x0.detach().requires_grad_(True)
                    loss = (0.5 * data_weight) * (op.A(x_in) - y).abs().pow(2).sum()
                    (data_grad,) = torch.autograd.grad(loss, x_in)
            with torch.no_grad():
                eps = torch.randn(shape, generator=generator, device=device, dtype=dtype)
                x0 = x0 - step * (data_grad + (x0 - x0_hat) / sigma**2) + noise_scale * eps
        emit(callback, i=i, sigma=sigma, x=x, x0_hat=x0_hat, x0=x0)
        # 3. Forward diffusion to the next annealing level.
        with torch.no_grad():
            if sigma_next > 0:
                x = x0 + sigma_next * torch.randn(shape, generator=generator, device=device, dtype=dtype)
            else:
                x = x0
        check_step_finite((x0_hat, x), NAME, i, sigma)
    with torch.no_grad():
        residual_norm = torch.linalg.vector_norm((y - op.A(x0)).flatten(1), dim=1)
    info = {
        "nfe": N * int(ode_steps),
        "seconds": time.perf_counter() - start,
        "langevin_steps_total": N * int(langevin_steps),
        "residual_norm": residual_norm,
        "tau": tau_c,
        "lr": lr,
        "lr_divisor": norm,
        "noise_std": noise_std,
    }
    return x, info
