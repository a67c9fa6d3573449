r"""Unconditional samplers, to look at what a prior has learned.

All integrate from :math:`x = \sigma_0 z` down the schedule with the denoiser alone:

* :func:`sample_ddim`: DDIM (Song et al. 2021) in VE form (:mod:`invdiff.samplers.common`);
  ``eta = 0`` is the Euler method on the probability-flow ODE
  :math:`dx/d\sigma = (x - D(x, \sigma))/\sigma` (:func:`sample_euler`), ``eta = 1`` DDPM's
  ancestral sampler. One network evaluation per step.
* :func:`sample_heun`: EDM's deterministic sampler (Karras et al. 2022, Algorithm 1, no churn),
  Heun's method with an Euler step into ``sigma = 0``: ``2n - 1`` evaluations for ``n`` steps
  ending at 0.
* :func:`sample_dpmpp_2m`: DPM-Solver++(2M) (Lu et al. 2022) as in k-diffusion's
  ``sample_dpmpp_2m``: exponential integration in :math:`\lambda = -\log\sigma` with a
  second-order multistep correction of the data prediction. One evaluation per step.
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
    check_sigmas,
    check_step_finite,
    ddim_step,
    emit,
    infer_device_dtype,
    initial_noise,
)


def _start(denoiser, sigmas, shape, generator, device, dtype):
    sigma_list = check_sigmas(sigmas)
    if shape is None:
        raise ValueError("shape: unconditional samplers need shape=(B, C, H, W)")
    default_device, default_dtype = infer_device_dtype(denoiser)
    x = initial_noise(
        sigma_list[0],
        shape,
        generator=generator,
        device=default_device if device is None else device,
        dtype=default_dtype if dtype is None else dtype,
    )
    return sigma_list, x


@torch.no_grad()
def sample_ddim(
    denoiser: Denoiser,
    sigmas: Tensor,
    *,
    shape: Sequence[int],
    generator: torch.Generator | None,
    eta: float = 0.0,
    callback: Callback | None = None,
    device: torch.device | None = None,
    dtype: torch.dtype | None = None,
) -> tuple[Tensor, dict]:
    r"""DDIM with stochasticity ``eta`` (0: probability-flow Euler, 1: DDPM ancestral).

    Args:
        denoiser: the prior, :math:`D(x, \sigma)`.
        sigmas: ``(n + 1,)`` descending noise levels.
        shape: ``(B, C, H, W)`` (any ``(B, ...)`` the denoiser takes).
        generator: the source of all randomness.
        eta: in ``[0, 1]``.
        callback: called each step with ``i``, ``sigma``, ``x`` (at ``sigma``) and ``x0_hat``.
        device, dtype: of the samples; default those of the denoiser's parameters or buffers.

    Returns:
        ``(x, info)``, ``info`` with ``nfe`` (``n``) and ``seconds``.
    """
    start = time.perf_counter()
    check_eta(eta, "sample_ddim")
    sigma_list, x = _start(denoiser, sigmas, shape, generator, device, dtype)
    for i, (sigma, sigma_next) in enumerate(zip(sigma_list, sigma_list[1:])):
        # 1. Tweedie estimate.
        x0_hat = denoiser(x, sigma)
        emit(callback, i=i, sigma=sigma, x=x, x0_hat=x0_hat)
        # 2. DDIM step.
        x = ddim_step(x, x0_hat, sigma, sigma_next, eta, generator=generator)
        check_step_finite(x, "sample_ddim", i, sigma)
    return x, {"nfe": len(sigma_list) - 1, "seconds": time.perf_counter() - start}


def sample_euler(
    denoiser: Denoiser,
    sigmas: Tensor,
    *,
    shape: Sequence[int],
    generator: torch.Generator | None,
    callback: Callback | None = None,
    device: torch.device | None = None,
    dtype: torch.dtype | None = None,
) -> tuple[Tensor, dict]:
    """Euler on the probability-flow ODE: :func:`sample_ddim` with ``eta = 0``; ``n`` evaluations."""
    return sample_ddim(
        denoiser,
        sigmas,
        shape=shape,
        generator=generator,
        eta=0.0,
        callback=callback,
        device=device,
        dtype=dtype,
    )


@torch.no_grad()
def sample_heun(
    denoiser: Denoiser,
    sigmas: Tensor,
    *,
    shape: Sequence[int],
    generator: torch.Generator | None,
    callback: Callback | None = None,
    device: torch.device | None = None,
    dtype: torch.dtype | None = None,
) -> tuple[Tensor, dict]:
    r"""EDM's Heun sampler (Algorithm 1, deterministic); Euler on a last step to ``sigma = 0``.

    Args: as :func:`sample_ddim`, without ``eta``; ``generator`` draws only the start.

    Returns:
        ``(x, info)``, ``info`` with ``nfe`` (``2n - 1`` when the schedule ends at 0, else ``2n``)
        and ``seconds``.
    """
    start = time.perf_counter()
    sigma_list, x = _start(denoiser, sigmas, shape, generator, device, dtype)
    nfe = 0
    for i, (sigma, sigma_next) in enumerate(zip(sigma_list, sigma_list[1:])):
        # 1. Euler step along the probability-flow ODE.
        x0_hat = denoiser(x, sigma)
        nfe += 1
        emit(callback, i=i, sigma=sigma, x=x, x0_hat=x0_hat)
        d = (x - x0_hat) / sigma
        x_next = x + (sigma_next - sigma) * d
        # 2. Trapezoidal correction, except into sigma = 0.
        if sigma_next > 0:
            d_next = (x_next - denoiser(x_next, sigma_next)) / sigma_next
            nfe += 1
            x_next = x + (sigma_next - sigma) * (d + d_next) / 2
        x = x_next
        check_step_finite(x, "sample_heun", i, sigma)
    return x, {"nfe": nfe, "seconds": time.perf_counter() - start}


@torch.no_grad()
def sample_dpmpp_2m(
    denoiser: Denoiser,
    sigmas: Tensor,
    *,
    shape: Sequence[int],
    generator: torch.Generator | None,
    callback: Callback | None = None,
    device: torch.device | None = None,
    dtype: torch.dtype | None = None,
) -> tuple[Tensor, dict]:
    r"""DPM-Solver++(2M), k-diffusion's form.

    With :math:`\lambda = -\log\sigma`, :math:`h = \lambda' - \lambda` and the data prediction
    :math:`\hat x_0`: :math:`x' = (\sigma'/\sigma)\, x + (1 - e^{-h})\, D`, where
    :math:`D = \hat x_0` on the first step and
    :math:`D = (1 + \tfrac{1}{2r})\hat x_0 - \tfrac{1}{2r}\hat x_0^{prev}`,
    :math:`r = h_{prev}/h`, after it; the step into ``sigma = 0`` returns :math:`\hat x_0`.

    Args: as :func:`sample_ddim`, without ``eta``; ``generator`` draws only the start.

    Returns:
        ``(x, info)``, ``info`` with ``nfe`` (``n``) and ``seconds``.
    """
    start = time.perf_counter()
    sigma_list, x = _start(denoiser, sigmas, shape, generator, device, dtype)
    x0_prev, h_prev = None, None
    for i, (sigma, sigma_next) in enumerate(zip(sigma_list, sigma_list[1:])):
        # 1. Data prediction.
        x0_hat = denoiser(x, sigma)
        emit(callback, i=i, sigma=sigma, x=x, x0_hat=x0_hat)
        if sigma_next == 0:
            x = x0_hat
        else:
            # 2. Second-order combination with the previous prediction, first-order at the start.
            h = math.log(sigma) - math.log(sigma_next)
            if x0_prev is None:
                d = x0_hat
            else:
                r = h_prev / h
                d = (1 + 1 / (2 * r)) * x0_hat - (1 / (2 * r)) * x0_prev
            # 3. Exponential-integrator step.
            x = (sigma_next / sigma) * x - math.expm1(-h) * d
            h_prev = h
        x0_prev = x0_hat
        check_step_finite(x, "sample_dpmpp_2m", i, sigma)
    return x, {"nfe": len(sigma_list) - 1, "seconds": time.perf_counter() - start}
