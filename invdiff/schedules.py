r"""Noise schedules: plain functions returning descending sigma sequences that end with 0.

Every schedule is in the variance-exploding parameterisation of :mod:`invdiff.priors.base`
(:math:`x = x_0 + \sigma n`); a variance-preserving model with
:math:`\bar\alpha_t` has :math:`\sigma_t = \sqrt{(1 - \bar\alpha_t) / \bar\alpha_t}`.
A sampler with ``n`` steps takes ``n + 1`` sigmas: ``sigmas[i] -> sigmas[i + 1]``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def _check(n: int, sigma_min: float, sigma_max: float) -> None:
    if int(n) != n or n < 1:
        raise ValueError(f"n: expected a positive number of steps, got {n}")
    if not 0 < sigma_min < sigma_max:
        raise ValueError(f"sigma_min, sigma_max: expected 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")


def _append_zero(sigmas: Tensor) -> Tensor:
    return torch.cat([sigmas, sigmas.new_zeros(1)])


def sigmas_karras(n: int, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0) -> Tensor:
    r"""EDM's schedule (Karras et al. 2022, eq. 5): :math:`\sigma_i = (\sigma_{max}^{1/\rho} +
    \tfrac{i}{n-1}(\sigma_{min}^{1/\rho} - \sigma_{max}^{1/\rho}))^\rho`, then 0. Shape ``(n + 1,)``, float64."""
    _check(n, sigma_min, sigma_max)
    ramp = torch.linspace(0, 1, n, dtype=torch.float64)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return _append_zero((hi + ramp * (lo - hi)) ** rho)


def sigmas_loglinear(n: int, sigma_min: float = 0.002, sigma_max: float = 80.0) -> Tensor:
    """Geometrically spaced sigmas from ``sigma_max`` to ``sigma_min``, then 0. ``(n + 1,)``, float64."""
    _check(n, sigma_min, sigma_max)
    return _append_zero(torch.exp(torch.linspace(math.log(sigma_max), math.log(sigma_min), n, dtype=torch.float64)))


def vp_alphas_cumprod(
    num_timesteps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02
) -> Tensor:
    r""":math:`\bar\alpha_t = \prod_{s \le t}(1 - \beta_s)` of DDPM's linear-β schedule, ``(T,)`` float64."""
    betas = torch.linspace(beta_start, beta_end, num_timesteps, dtype=torch.float64)
    return torch.cumprod(1 - betas, 0)


def vp_sigmas(alphas_cumprod: Tensor) -> Tensor:
    r""":math:`\sigma_t = \sqrt{(1 - \bar\alpha_t)/\bar\alpha_t}` for every discrete timestep."""
    return ((1 - alphas_cumprod) / alphas_cumprod).sqrt()


SPACINGS = ("linspace", "uniform")


def sigmas_vp(
    n: int,
    num_timesteps: int = 1000,
    beta_start: float = 1e-4,
    beta_end: float = 0.02,
    *,
    spacing: str = "linspace",
    data_scale: float = 1.0,
) -> Tensor:
    r"""``n`` of DDPM's linear-β discrete timesteps as sigmas, then 0. ``(n + 1,)``, float64.

    Args:
        n: the number of steps.
        num_timesteps, beta_start, beta_end: the training schedule (DDPM's defaults).
        spacing: ``"linspace"``: ``n`` timesteps evenly spaced from the last to the first,
            rounded (``T - 1 ... 0``; every timestep for ``n = T``, as DPS's 1000-step DDPM
            loop); ``"uniform"``: DDIM's uniform skip ``range(0, T, T // n)`` reversed, as DDS
            and RED-Diff's official code (50 steps: ``980, 960, ..., 0``); when ``n`` does not
            divide ``T`` that range has more than ``n`` entries (30: 31 steps), as there.
        data_scale: the prior's :attr:`~invdiff.priors.base.Denoiser.data_scale` :math:`k`. The
            grid is the *network's*; the caller's noise levels are it divided by :math:`k`, so
            that the network is evaluated exactly on its timesteps (a prior mapping images in
            ``[0, 1]`` onto ``[-1, 1]`` has :math:`k = 2`).
    """
    if int(n) != n or not 1 <= n <= num_timesteps:
        raise ValueError(f"n: expected 1 <= n <= num_timesteps={num_timesteps}, got {n}")
    if spacing not in SPACINGS:
        raise ValueError(f"spacing: expected one of {SPACINGS}, got {spacing!r}")
    if not data_scale > 0:
        raise ValueError(f"data_scale: expected a positive number, got {data_scale}")
    sigmas = vp_sigmas(vp_alphas_cumprod(num_timesteps, beta_start, beta_end))
    if spacing == "linspace":
        steps = torch.linspace(num_timesteps - 1, 0, n, dtype=torch.float64).round().long()
    else:
        steps = torch.arange(0, num_timesteps, num_timesteps // n).flip(0)
    return _append_zero(sigmas[steps] / data_scale)


SCHEDULES = {"karras": sigmas_karras, "loglinear": sigmas_loglinear, "vp": sigmas_vp}


def make_sigmas(
    name: str, steps: int, *, sigma_min: float, sigma_max: float, data_scale: float = 1.0, **params
) -> Tensor:
    """The schedule ``name`` with ``steps`` steps; ``sigma_min``/``sigma_max`` (usually the
    prior's range) apply to the schedules that take a range, ``data_scale`` (the prior's) to the
    network's discrete grid of ``"vp"``.

    Args:
        name: a key of :data:`SCHEDULES`.
        steps: the number of sampler steps.
        sigma_min: the smallest nonzero sigma of range-based schedules.
        sigma_max: the largest sigma of range-based schedules.
        data_scale: the prior's :attr:`~invdiff.priors.base.Denoiser.data_scale` (``"vp"`` only).
        **params: further arguments of the schedule function.
    """
    if name not in SCHEDULES:
        raise ValueError(f"schedule: expected one of {sorted(SCHEDULES)}, got {name!r}")
    if name == "vp":
        return sigmas_vp(steps, data_scale=data_scale, **params)
    return SCHEDULES[name](steps, sigma_min=sigma_min, sigma_max=sigma_max, **params)
