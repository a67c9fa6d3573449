r"""RED-Diff: variational posterior sampling (Mardani, Song, Kautz, Vahdat, ICLR 2024).

RED-Diff fits the mean :math:`\mu` of a (degenerate) Gaussian variational posterior by
stochastic optimisation over descending noise levels. At each level it draws
:math:`\epsilon \sim \mathcal N(0, I)`, forms :math:`x_t = \alpha_t \mu + \sigma_t \epsilon`,
predicts the noise :math:`\hat\epsilon(x_t)` and takes one Adam step on

.. math::
    \ell(\mu) = \lambda\, w(t)\, \big\langle \operatorname{sg}(\hat\epsilon(x_t) - \epsilon),\ \mu \big\rangle
        + \frac{\|y - \mathcal A(\mu)\|^2}{2 s^2},
    \qquad w(t) = \sigma_t / \alpha_t,

with no backpropagation through the network (``sg`` stops the gradient), so a step costs one
forward pass and any differentiable operator works. In the variance-exploding form used here
:math:`x = \mu + \sigma \epsilon` (the VP state divided by :math:`\alpha_t`),
:math:`\hat\epsilon = (x - D(x, \sigma))/\sigma` and :math:`w(t) = \sigma`. The regulariser's
gradient :math:`\lambda \sigma (\hat\epsilon - \epsilon)` is a denoising residual: it pulls
:math:`\mu` towards images the prior explains at every scale.

What the official code (``NVlabs/RED-diff`` at ``66482f2``, ``algos/reddiff.py``,
``_configs/algo/reddiff.yaml``) does, and what this follows: Adam with betas (0.9, 0.99); the noise
levels swept once from high to low (1000 steps; the paper also reports 100); :math:`\mu`
initialised from the measurement (``H.H_pinv(y)``); no noise on :math:`\mu` (``sigma_x0 = 0``).

Two weightings, by ``weighting``:

* ``"paper"`` (``sampler=reddiff_paper``), the official loss: *means* over the image's pixels
  and the measurement's entries,
  ``loss = lam * snr_inv * mean((eps_hat - eps) * mu) + obs_weight * mean(r**2) / 2``, with
  ``snr_inv`` :math:`= \sigma_n` (the network's noise level), ``grad_term_weight`` ``lam = 0.25``,
  ``obs_weight = 1`` and the paper's learning rates of 0.25-0.5, all in the network's units. Here
  the loss is that one written for the caller's :math:`\mu` (with :math:`\mu_n = k\mu + b`, a
  residual :math:`k` times ours and :math:`\sigma_n = k\sigma`, both gradients are :math:`k^2`
  times the official ones, so the same formula holds in our units), and the learning rate is
  divided by :math:`k` so that Adam moves :math:`\mu_n` by the official ``lr`` (Adam ignores the
  loss's scale). Complex residuals count
  their real and imaginary parts as entries. The balance of the two terms then ignores the noise
  level.
* ``"likelihood"`` (the default): the data term is the Gaussian negative log-likelihood
  :math:`w \|r\|^2` (:func:`~invdiff.samplers.common.likelihood_weight`: :math:`w = 1/(2s^2)` for
  real, :math:`1/s^2` for complex measurements) summed per sample, as the paper's derivation writes
  it, and the regulariser is summed too. The regulariser's expected gradient is about
  :math:`\lambda \sigma^2 \nabla(-\log p_\sigma(\mu))` (since
  :math:`\hat\epsilon \approx -\sigma \nabla \log p_\sigma`), so a prior as strong as Bayes' rule
  asks for at the scale :math:`\sigma_{ref}` that settles the details needs
  :math:`\lambda \approx 1 / \sigma_{ref}^2`. The default ``lam = 400``
  (:math:`\sigma_{ref} = 0.05`) was chosen on the default tasks from a scan (the best
  :math:`\lambda` was 300-1000 on ``mri``, whose noise std is 0.005, and 150-400 on ``ct``, 0.2):
  one value serves noise levels 40 times apart. Matching the ratio of the two gradients, the
  official weight corresponds to :math:`\lambda = \lambda_{official}\, n_y / (n_x s^2)` here
  (real measurements; :math:`n_x`, :math:`n_y` the numbers of unknowns and measurements), which
  moves with the noise level and the sampling rate: 0.25 becomes about 2000 on ``mri`` and 0.4
  on ``ct``. ``data_weight`` replaces :math:`w`; ``lr = 0.1``, the official code's default.

Each sample of the batch is its own problem (per-sample sums; Adam's statistics are per
coordinate, so samples never couple). RED-Diff returns an optimised estimate, close to a
regularised MAP point, not a sample: its spread across seeds is far below the posterior's.
"""

from __future__ import annotations

import math
import numbers
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
    likelihood_weight,
    measurement_device_dtype,
    network_sigma,
    posterior_shape,
)
from operators.base import LinearOperator, Operator

NAME = "sample_reddiff"
INITS = ("pinv", "adjoint", "prior_mean")
WEIGHTINGS = ("likelihood", "paper")


def initial_estimate(
    init: str, denoiser: Denoiser, op: Operator, y: Tensor, shape: Sequence[int], sigma_max: float, *, device, dtype
) -> Tensor:
    """The starting ``mu``: ``op.pinv(y)``, ``op.AT(y)`` or the prior mean ``D(0, sigma_max)``."""
    if init in ("pinv", "adjoint") and not isinstance(op, LinearOperator):
        raise ValueError(
            f"{NAME}: init: {init!r} needs a LinearOperator, got {op!r}; use init='prior_mean' for nonlinear operators"
        )
    if init == "pinv":
        return op.pinv(y, max_iter=30)
    if init == "adjoint":
        return op.AT(y)
    if init == "prior_mean":
        return denoiser(torch.zeros(tuple(shape), device=device, dtype=dtype), sigma_max)
    raise ValueError(f"{NAME}: init: expected one of {INITS} or None, got {init!r}")


def sample_reddiff(
    denoiser: Denoiser,
    op: Operator,
    y: Tensor,
    sigmas: Tensor,
    *,
    noise_std: float,
    generator: torch.Generator | None,
    lam: float = 400.0,
    lr: float = 0.1,
    betas: tuple[float, float] = (0.9, 0.99),
    data_weight: float | None = None,
    weighting: str = "likelihood",
    obs_weight: float = 1.0,
    init: str | None = None,
    shape: Sequence[int] | None = None,
    callback: Callback | None = None,
) -> tuple[Tensor, dict]:
    r"""RED-Diff (module docstring): Adam on :math:`\mu` over the descending noise levels.

    Args:
        denoiser: the prior, :math:`D(x, \sigma)`; used without gradients.
        op: the forward model, linear or not (differentiated by autograd).
        y: the measurements, ``(B, ...)``; each sample is its own problem.
        sigmas: ``(n + 1,)`` descending noise levels; the positive ones are visited in order
            (one network evaluation each), e.g. ``sigmas_vp(1000)`` or ``sigmas_vp(100)``.
        noise_std: the measurement noise std ``s``; the data term is :math:`w \|r\|^2` with the
            likelihood weight :math:`w` (``weighting="likelihood"``).
        generator: the source of all randomness (the :math:`\epsilon` draws).
        lam: the regulariser weight :math:`\lambda` (module docstring: about :math:`1/\sigma_{ref}^2`
            with the likelihood weighting, the official ``grad_term_weight`` with ``"paper"``).
        lr: Adam's learning rate (in the network's units with ``"paper"``).
        betas: Adam's moment decay rates.
        data_weight: the data term's weight with ``"likelihood"``; default the likelihood weight
            :math:`w` (needed when ``s = 0``).
        weighting: ``"likelihood"`` or ``"paper"`` (the official means, module docstring).
        obs_weight: the official ``obs_weight`` (``"paper"`` only).
        init: ``"pinv"`` (default for linear operators), ``"adjoint"`` or ``"prior_mean"``
            (default for nonlinear ones).
        shape: the shape of ``x``, ``(B, ...)``.
        callback: called each step with ``i``, ``sigma``, ``x`` (the noisy :math:`x_t`),
            ``x0_hat`` (:math:`D(x_t, \sigma)`), ``mu`` and ``residual_norm``.

    Returns:
        ``(mu, info)``: the estimate and ``info`` with ``nfe``, ``seconds``, ``residual_norm``
        (``(B,)``, :math:`\|y - \mathcal A(\mu)\|` at the end), ``lam``, ``lr``, ``data_weight`` and ``weighting``.
    """
    start = time.perf_counter()
    check_measurement(y, NAME)
    sigma_list = check_sigmas(sigmas)
    check_number(noise_std, "noise_std", NAME, minimum=0)
    check_number(obs_weight, "obs_weight", NAME, positive=True)
    if not (
        isinstance(betas, (tuple, list))
        and len(betas) == 2
        and all(isinstance(b, numbers.Real) and 0 <= b < 1 for b in betas)
    ):
        raise ValueError(f"{NAME}: betas: expected two numbers in [0, 1) (Adam's decay rates), got {betas!r}")
    if weighting not in WEIGHTINGS:
        raise ValueError(f"{NAME}: weighting: expected one of {WEIGHTINGS}, got {weighting!r}")
    k = network_sigma(denoiser, 1.0)
    if weighting == "paper":
        # the official mean losses: in the caller's mu both terms are k^2 times the network's
        data_weight = obs_weight / 2
    elif data_weight is None:
        if noise_std == 0:
            raise ValueError(f"{NAME}: data_weight: noise_std is 0, so give the data term's weight explicitly")
        data_weight = likelihood_weight(y, noise_std)
    if not 0 < data_weight < math.inf or not 0 <= lam < math.inf or not 0 < lr < math.inf:
        raise ValueError(
            f"{NAME}: expected finite data_weight > 0, lam >= 0 and lr > 0, got {data_weight}, {lam}, {lr}"
        )
    shape = posterior_shape(op, y, shape, NAME)
    device, dtype = measurement_device_dtype(y)
    if init is None:
        init = "pinv" if isinstance(op, LinearOperator) else "prior_mean"
    with torch.no_grad():
        mu0 = initial_estimate(init, denoiser, op, y, shape, sigma_list[0], device=device, dtype=dtype)
    if tuple(mu0.shape) != tuple(shape) or mu0.is_complex():
        raise ValueError(
            f"{NAME}: init: the {init!r} estimate has shape {tuple(mu0.shape)} and dtype {mu0.dtype}, x needs a "
            f"real {tuple(shape)}; compose a complex operator with RealToComplex()"
        )
    mu = mu0.detach().clone().requires_grad_(True)
    optimizer = torch.optim.Adam([mu], lr=lr / k if weighting == "paper" else lr, betas=betas)
    positive = [s for s in sigma_list if s > 0]
    residual_norm = None
    for i, sigma in enumerate(positive):
        # 1. Noisy sample around mu and the network's noise prediction, without gradients.
        eps = torch.randn(mu.shape, generator=generator, device=device, dtype=dtype)
        with torch.no_grad():
            x_t = mu + sigma * eps
            x0_hat = denoiser(x_t, sigma)
            eps_hat = (x_t - x0_hat) / sigma
        # 2. Loss: SNR-weighted denoising residual against mu, plus the data term.
        with torch.enable_grad():
            residual = (y - op.A(mu)).flatten(1)
            data = data_weight * residual.abs().square().sum(1)
            regulariser = lam * sigma * ((eps_hat - eps) * mu).flatten(1).sum(1)
            if weighting == "paper":
                n_y = residual.shape[1] * (2 if residual.is_complex() else 1)
                data = data / n_y
                regulariser = regulariser / mu[0].numel()
            optimizer.zero_grad(set_to_none=True)
            (data + regulariser).sum().backward()
        # 3. One Adam step on mu.
        optimizer.step()
        residual_norm = torch.linalg.vector_norm(residual.detach(), dim=1)
        emit(callback, i=i, sigma=sigma, x=x_t, x0_hat=x0_hat, mu=mu.detach(), residual_norm=residual_norm)
        check_step_finite(mu.detach(), NAME, i, sigma)
    with torch.no_grad():
        residual_norm = torch.linalg.vector_norm((y - op.A(mu)).flatten(1), dim=1)
    info = {
        "nfe": len(positive),
        "seconds": time.perf_counter() - start,
        "residual_norm": residual_norm,
        "lam": lam,
        "lr": lr,
        "data_weight": data_weight,
        "weighting": weighting,
        "init": init,
    }
    return mu.detach(), info
