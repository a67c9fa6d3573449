r"""Diffusion posterior sampling (DPS; Chung, Kim, McCann, Klasky, Ye, ICLR 2023).

Each step takes the unconditional DDIM/ancestral step with the Tweedie estimate
:math:`\hat x_0 = D(x, \sigma)`, then moves against the gradient, through the denoiser, of the
per-sample residual norm :math:`\|y - \mathcal A(\hat x_0(x))\|`.

Step size. The official code (``DPS2022/diffusion-posterior-sampling`` at ``effbde7``,
``guided_diffusion/condition_methods.py``, ``PosteriorSampling``) works in variance-preserving
coordinates of the network's data and does ``x_{t-1} = DDPM(x_t) - scale * grad_{x_t} ||y - A(x0_hat)||``
(the norm, not its square), with ``scale`` set per task in its ``configs/*_config.yaml``. With the
network's noise level :math:`\sigma_n = k\sigma` (the prior's ``data_scale`` :math:`k`: images of
the caller's range mapped onto the network's, :math:`x_n = k x + b`) and
:math:`x_n = \sqrt{1 + \sigma_n^2}\, x^{vp}`, the chain rule gives
:math:`\nabla_{x^{vp}_t} = \sqrt{1+\sigma_{n,t}^2}/k\;\nabla_{x_t}`; the official residual, of
measurements of the network's images, is :math:`k` times ours (linear operators), and the update,
made at level :math:`t-1`, is rescaled by :math:`\sqrt{1+\sigma_{n,t-1}^2}/k` on the way back:

.. math::
    x' \leftarrow x' - \frac{\zeta}{k} \sqrt{(1+\sigma_n^2)(1+\sigma_n'^2)}\;\nabla_x \|y - \mathcal A(\hat x_0(x))\|,

which tends to :math:`\zeta (1 + \sigma_n^2)/k` for fine steps. With this factor our ``zeta`` *is*
the official ``scale`` (for a nonlinear operator, with measurements of the caller's images), so
its published values carry over (the official configs, at the commit above, use 0.3 for
super-resolution, Gaussian, motion and nonlinear deblurring, 0.5 for inpainting and 1.0 for
phase retrieval, all with Gaussian noise of std 0.05 and 1000 DDPM steps). The schedule is the
network's grid in the caller's units (:func:`invdiff.schedules.sigmas_vp` with the prior's
``data_scale``, which :meth:`invdiff.run.Method.sigmas` passes). The paper writes the step as
:math:`\zeta_i \nabla \|y - \mathcal A(\hat x_0)\|^2` with
:math:`\zeta_i = \zeta' / \|y - \mathcal A(\hat x_0)\|`;
since :math:`\nabla\|r\|^2 = 2\|r\|\nabla\|r\|` that is ``zeta = 2 * zeta'``.

The clamp. The official sampler runs with ``clip_denoised: True``: :math:`\hat x_0` is clamped to
the network's range :math:`[-1, 1]` before both the DDPM posterior mean and the residual (the
gradient flows through the clamp). ``clip="prior"`` does the same with the range the prior
declares (``denoiser.clip_range``, in the caller's units: ``(0, 1)`` for an ADM checkpoint
serving ``[0, 1]`` images); priors that declare none (the shipped ones) are not clamped.
``sampler=dps_paper`` runs the official settings: 1000 steps, ``zeta`` 0.3-1.0 by task, the clamp.
``tests/samplers/test_fidelity.py`` checks this sampler against a transcription of the official
VP loop with the clamp on an ε-network behind ``data_range (0, 1)``, fed the same random numbers
(``tests/samplers/test_reference.py`` does the same without the clamp or the data range).

The normalised step has the same length however small the residual, so it is tuned to the
dimension: on low-dimensional test problems ``zeta = 1`` scatters the samples far beyond the
posterior and ``zeta`` of about 0.1 gives the right spread; the mean stays biased (DPS's
likelihood ignores the spread of :math:`x_0` given :math:`x_t`).

Differences from the official code: the norm is per sample (a batch is independent problems;
the official code takes one norm over the batch, which is the same for a batch of one); the
ancestral variance is DDPM's :math:`\tilde\beta` (``eta = 1``), where the official FFHQ model
uses its learned variance; our default does not clamp (``clip=None``), since the shipped priors
declare no range.
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
    ddim_step,
    emit,
    network_sigma,
    initial_noise,
    measurement_device_dtype,
    posterior_shape,
)
from operators.base import Operator

NAME = "sample_dps"


def clip_range(clip: str | Sequence[float] | None, denoiser: Denoiser) -> tuple[float, float] | None:
    """``clip`` as ``(lo, hi)`` or ``None``: ``"prior"`` reads ``denoiser.clip_range``."""
    if clip is None:
        return None
    if isinstance(clip, str):
        if clip != "prior":
            raise ValueError(f"{NAME}: clip: expected None, 'prior' or (lo, hi), got {clip!r}")
        clip = getattr(denoiser, "clip_range", None)
        return None if clip is None else (float(clip[0]), float(clip[1]))
    lo, hi = (float(v) for v in clip) if len(clip) == 2 else (math.nan, math.nan)
    if not lo < hi:
        raise ValueError(f"{NAME}: clip: expected (lo, hi) with lo < hi, got {clip!r}")
    return lo, hi


def dps_step(
    denoiser: Denoiser,
    op: Operator,
    y: Tensor,
    x: Tensor,
    sigma: float,
    sigma_next: float,
    *,
    zeta: float,
    eta: float,
    data_scale: float,
    clip: tuple[float, float] | None,
    generator: torch.Generator | None,
    group: int = 1,
) -> tuple[Tensor, Tensor, Tensor]:
    r"""One DPS step from ``sigma`` to ``sigma_next`` (module docstring).

    Args:
        group: consecutive samples that share one residual norm (the official code's norm over a
            batch, e.g. the particles of one problem); 1 takes each sample's own norm.

    Returns:
        ``(x_next, x0_hat, residual_norm)``: the new state, the Tweedie estimate at ``sigma`` and
        each sample's residual norm :math:`\|y - \mathcal A(\hat x_0)\|` (``(B,)``).
    """
    with torch.enable_grad():
        x_in = x.detach().requires_grad_(True)
        # 1. Tweedie estimate, keeping the graph back to x.
        x0_hat = denoiser(x_in, sigma)
        if clip is not None:
            x0_hat = x0_hat.clamp(*clip)
        # 2. Residual norm (per sample, or per group) and its gradient through the denoiser.
        r = (y - op.A(x0_hat)).flatten(1)
        residual_norm = torch.linalg.vector_norm(r, dim=1)
        loss = residual_norm if group == 1 else torch.linalg.vector_norm(r.reshape(-1, group * r.shape[1]), dim=1)
        (grad,) = torch.autograd.grad(loss.sum(), x_in)
    # 3. Unconditional DDIM/ancestral step.
    x_next = ddim_step(x, x0_hat.detach(), sigma, sigma_next, eta, generator=generator)
    # 4. Guidance, in VE units of the official VP step on the network's data.
    sn, sn_next = data_scale * sigma, data_scale * sigma_next
    x_next = x_next - zeta / data_scale * math.sqrt((1 + sn**2) * (1 + sn_next**2)) * grad
    return x_next, x0_hat.detach(), residual_norm.detach()


def sample_dps(
    denoiser: Denoiser,
    op: Operator,
    y: Tensor,
    sigmas: Tensor,
    *,
    noise_std: float,
    generator: torch.Generator | None,
    zeta: float = 1.0,
    eta: float = 1.0,
    clip: str | Sequence[float] | None = None,
    shape: Sequence[int] | None = None,
    callback: Callback | None = None,
) -> tuple[Tensor, dict]:
    r"""Diffusion posterior sampling with the official code's step size (module docstring).

    The paper runs 1000 ancestral steps (``sigmas_vp(1000)``); fewer steps need a larger ``zeta``.

    Args:
        denoiser: the prior, :math:`D(x, \sigma)`; must be differentiable in ``x``.
        op: the forward model, linear or not; only ``op.A`` is used, differentiated by autograd.
        y: the measurements, ``(B, ...)``; each sample is its own problem.
        sigmas: ``(n + 1,)`` descending noise levels, e.g. ``sigmas_vp(1000)``.
        noise_std: the measurement noise std; DPS's step does not use it (the normalised
            gradient adapts to the residual), it is checked (finite, ``>= 0``) and recorded in ``info``.
        generator: the source of all randomness.
        zeta: the official code's ``scale``, finite and ``>= 0``.
        eta: 1 ancestral (DDPM, the paper's), 0 deterministic DDIM.
        clip: clamp :math:`\hat x_0` before the step and the residual: ``None`` (no clamp),
            ``"prior"`` (the official ``clip_denoised``: the prior's ``clip_range``, no clamp when
            it declares none) or ``(lo, hi)`` in the caller's units.
        shape: the shape of ``x``, ``(B, ...)``; default ``(B, *denoiser.shape)``, else
            ``op.AT(y).shape`` for linear operators.
        callback: called each step with ``i``, ``sigma``, ``x`` (the state at ``sigma``),
            ``x0_hat`` and ``residual_norm`` (``(B,)``).

    Returns:
        ``(x, info)``: samples of the shape above and ``info`` with ``nfe``, ``seconds``,
        ``residual_norm`` (``(B,)``, :math:`\|y - \mathcal A(\hat x_0)\|` at the last step),
        ``zeta``, ``eta``, ``clip`` (the range used, or ``None``) and ``noise_std``.
    """
    start = time.perf_counter()
    check_measurement(y, NAME)
    check_eta(eta, NAME)
    check_number(noise_std, "noise_std", NAME, minimum=0)
    check_number(zeta, "zeta", NAME, minimum=0)
    sigma_list = check_sigmas(sigmas)
    clip = clip_range(clip, denoiser)
    k = network_sigma(denoiser, 1.0)
    shape = posterior_shape(op, y, shape, NAME)
    device, dtype = measurement_device_dtype(y)
    x = initial_noise(sigma_list[0], shape, generator=generator, device=device, dtype=dtype)
    residual_norm = None
    for i, (sigma, sigma_next) in enumerate(zip(sigma_list, sigma_list[1:])):
        x_next, x0_hat, residual_norm = dps_step(
            denoiser, op, y, x, sigma, sigma_next, zeta=zeta, eta=eta, data_scale=k, clip=clip, generator=generator
        )
        emit(callback, i=i, sigma=sigma, x=x, x0_hat=x0_hat, residual_norm=residual_norm)
        x = x_next
        check_step_finite(x, NAME, i, sigma)
    info = {
        "nfe": len(sigma_list) - 1,
        "seconds": time.perf_counter() - start,
        "residual_norm": residual_norm,
        "zeta": zeta,
        "eta": eta,
        "clip": clip,
        "noise_std": noise_std,
    }
    return x, info
