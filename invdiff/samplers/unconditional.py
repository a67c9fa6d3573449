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
* :func:`sample_unipc`: UniPC (Zhao et al., NeurIPS 2023), the data-prediction multistep
  predictor UniP with the corrector UniC, orders 1 to 3. One evaluation per step.
* :func:`sample_deis`: tAB-DEIS (Zhang & Chen, ICLR 2023), Adams-Bashforth on the noise
  prediction with exactly integrated Lagrange polynomials in the time :math:`t = \sigma`, orders
  1 to 4. One evaluation per step.

UniPC: official repository ``wl-zhao/UniPC``, commit ``cf9de85bf2ed68137e6fba5f165f451677b174c4``
(``uni_pc.py``: ``UniPC.multistep_uni_pc_bh_update`` and ``UniPC.sample``, ``method='multistep'``),
and diffusers' port (``UniPCMultistepScheduler``) for the step into :math:`\sigma = 0`. The official
code is VP, :math:`x_{vp} = \alpha x`, :math:`\sigma_{vp} = \alpha\sigma`,
:math:`\alpha = 1/\sqrt{1 + \sigma^2}`, so :math:`\lambda = \log(\alpha/\sigma_{vp}) = -\log\sigma`
and the data prediction is our :math:`D(x, \sigma)`. Its step from :math:`s` to :math:`t`,
:math:`x_{vp,t} = (\sigma_{vp,t}/\sigma_{vp,s}) x_{vp,s} - \alpha_t (e^{-h} - 1) m_0
- \alpha_t B(h) \sum_k \rho_k D_k`, divided by :math:`\alpha_t` is
:math:`x_t = (\sigma_t/\sigma_s) x_s - (e^{-h} - 1) m_0 - B(h) \sum_k \rho_k D_k`: every
coefficient (:math:`h`, :math:`r_k`, :math:`B(h)`, :math:`\rho`) depends on :math:`\lambda` only,
and the :math:`D_k` are differences of data predictions, so the VE update below is the official
one exactly (``tests/samplers/test_unconditional.py`` runs a transcription in VP coordinates).
Defaults are the official unconditional setting (``example/score_sde_pytorch``: ``variant='bh1'``,
``order=3``, ``lower_order_final=True``, data prediction). Differences from the official code:

* the schedule is ours (``sigmas``) instead of the official ``skip_type`` time grids;
* a step into :math:`\sigma = 0` (our schedules end there; :math:`\lambda = \infty`) is taken at
  order 1, which returns the last data prediction: this is diffusers' ``final_sigmas_type='zero'``
  and what the official first-order step gives in the limit, and the official code's final
  ``denoise_to_zero`` (one more evaluation at the last state) is not used;
* ``corrector=False`` runs the predictor UniP alone (the official ``use_corrector`` flag for every
  step); UniP of order 1 is DDIM, UniP of order 2 with ``bh2`` and without ``lower_order_final``
  is DPM-Solver++(2M).

As in the official code, the stored data prediction of a step is taken at the predicted state (the
same evaluation corrects it), so the step into 0 returns :math:`D(x^{pred}, \sigma_{n-1})`. With
few Karras steps the late steps in :math:`\lambda` are long (:math:`h` from 1.5 to 4.4 at 5
steps over 80 to 0.002) and ``bh1`` (:math:`|B(h)| = h`) overshoots where ``bh2``
(:math:`|B(h)| < 1`) does not: ``benchmark=solvers`` shows it on a 25-mode Gaussian mixture.

DEIS: official repository ``qsh-zh/deis``, commit ``a30709f434ddddefaf2201d014ce4158e62c2a33``
(``th_deis/sampler.py``: ``get_sampler_t_ab`` and ``get_sampler_rho_ab``; ``th_deis/multistep.py``:
``get_ab_eps_coef``, ``ab_step``). With :math:`y = x_{vp}/\alpha` (our VE state) the
probability-flow ODE is :math:`dx/dt = (d\sigma/dt)\, \epsilon(x, t)` with
:math:`\epsilon = (x - D(x, \sigma))/\sigma` (the official ``eps_integrand`` times ``psi``,
divided by :math:`\alpha_{t'}`, is :math:`d\sigma/dt`). tAB-DEIS replaces :math:`\epsilon` on
:math:`[t_i, t_{i+1}]` by the Lagrange polynomial in :math:`t` through the last ``order`` values
and integrates it exactly. We take EDM's time :math:`t = \sigma` (our denoisers carry no VP time),
for which :math:`d\sigma/dt = 1` and tAB-DEIS is the official :math:`\rho`AB-DEIS
(:math:`\rho = \sigma_{vp}/\alpha = \sigma`, ``psi = 1``, ``eps_integrand = 1``):

.. math::
    x_{i+1} = x_i + \sum_{j=0}^{r} C_{ij}\, \hat\epsilon_{i-j}, \qquad
    C_{ij} = \int_{\sigma_i}^{\sigma_{i+1}} \prod_{k \ne j} \frac{\sigma - \sigma_{i-k}}{\sigma_{i-j} - \sigma_{i-k}}\, d\sigma,

with :math:`r = \min(\text{order}, i + 1) - 1` (lower orders at the start, as the official
``get_ab_eps_coef``; no lower order at the end). ``order`` is the number of noise predictions
combined, the convergence order: the official ``ab_order`` is the polynomial degree
:math:`r = \text{order} - 1`, so its README's ``ab_order=3`` is our default ``order=4`` (as
``max_order=4`` of the EDM-based port in ``zju-pi/diff-sampler``, commit ``68d5ce4``,
``gits-main/solver_utils.py``). Differences from the official
code: the coefficients are integrated exactly (Gauss-Legendre, exact for these polynomials)
instead of by a left Riemann sum of 10,000 points (the samples differ by about ``5e-6``
relative); the time is :math:`\sigma`, not a VP model's :math:`t` (tAB-DEIS proper in a VP
time, e.g. diff-sampler's ``deis_mode='tab'`` with a linear-beta time fitted to the sigma range,
puts the polynomial in that :math:`t` and is not implemented). Order 1 is DDIM (Euler in
:math:`\sigma`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from invdiff.priors.base import Denoiser
from invdiff.samplers.common import (
    Callback,
    check_eta,
    check_number,
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


UNIPC_VARIANTS = ("bh1", "bh2")


def _unipc_rhos(h: float, rks: list[float], order: int, variant: str) -> tuple[float, list[float], list[float]]:
    r"""``(B(h), rhos_p, rhos_c)`` of one UniPC step of ``order`` (``multistep_uni_pc_bh_update``).

    ``rks``: :math:`r_k = (\lambda_{k} - \lambda_0)/h` of the ``order - 1`` earlier predictions,
    then 1. With :math:`\varphi_k` the exponential-integrator functions at :math:`-h`,
    :math:`b_i = i!\, h\varphi_{i+1}(-h) / B(h)` and :math:`R_{ik} = r_k^{i-1}`: the predictor solves
    the leading ``order - 1`` equations (0.5 at order 2), the corrector all ``order`` (0.5 at order 1).
    """
    hh = -h
    h_phi_k = math.expm1(hh) / hh - 1
    B_h = hh if variant == "bh1" else math.expm1(hh)
    R, b, factorial = [], [], 1
    for i in range(1, order + 1):
        R.append([rk ** (i - 1) for rk in rks])
        b.append(h_phi_k * factorial / B_h)
        factorial *= i + 1
        h_phi_k = h_phi_k / hh - 1 / factorial
    R, b = np.array(R), np.array(b)
    if order == 1:
        rhos_p = []
    elif order == 2:
        rhos_p = [0.5]
    else:
        rhos_p = np.linalg.solve(R[:-1, :-1], b[:-1]).tolist()
    rhos_c = [0.5] if order == 1 else np.linalg.solve(R, b).tolist()
    return B_h, rhos_p, rhos_c


@torch.no_grad()
def sample_unipc(
    denoiser: Denoiser,
    sigmas: Tensor,
    *,
    shape: Sequence[int],
    generator: torch.Generator | None,
    order: int = 3,
    variant: str = "bh1",
    corrector: bool = True,
    lower_order_final: bool = True,
    callback: Callback | None = None,
    device: torch.device | None = None,
    dtype: torch.dtype | None = None,
) -> tuple[Tensor, dict]:
    r"""UniPC: the multistep predictor UniP with the corrector UniC, on the data prediction.

    With :math:`\lambda = -\log\sigma`, :math:`h = \lambda_{i+1} - \lambda_i`, the last data
    predictions :math:`m_0 = D(\cdot, \sigma_i)`, :math:`m_k` at :math:`\sigma_{i-k}` and
    :math:`D_k = (m_k - m_0)/r_k`, :math:`r_k = (\lambda_{i-k} - \lambda_i)/h`:

    .. math::
        \tilde x = \frac{\sigma_{i+1}}{\sigma_i} x_i - (e^{-h} - 1)\, m_0, \qquad
        x^{pred}_{i+1} = \tilde x - B(h) \sum_{k < p} \rho^p_k D_k, \qquad
        x_{i+1} = \tilde x - B(h) \Big(\sum_{k < p} \rho^c_k D_k + \rho^c_p\, (m_{i+1} - m_0)\Big),

    where :math:`m_{i+1} = D(x^{pred}_{i+1}, \sigma_{i+1})` is the next step's prediction (so the
    corrector costs no evaluation) and :math:`B(h) = -h` (``bh1``) or :math:`e^{-h} - 1` (``bh2``).
    Step ``i`` has order :math:`p = \min(\text{order}, i + 1, n - i)` (the last term only with
    ``lower_order_final``); the last step is not corrected, and a step into ``sigma = 0`` has order 1
    and returns :math:`m_0` (module docstring).

    Args:
        denoiser: the prior, :math:`D(x, \sigma)`.
        sigmas: ``(n + 1,)`` descending noise levels.
        shape: ``(B, C, H, W)`` (any ``(B, ...)`` the denoiser takes).
        generator: draws only the start.
        order: the predictor's order, 1, 2 or 3 (UniC adds one).
        variant: ``"bh1"`` (the official default for unconditional sampling) or ``"bh2"``.
        corrector: apply UniC; ``False`` runs UniP alone.
        lower_order_final: lower the order over the last steps, as the official default.
        callback: called each step with ``i``, ``sigma``, ``x`` (at ``sigma``, corrected) and ``x0_hat``.
        device, dtype: of the samples; default those of the denoiser's parameters or buffers.

    Returns:
        ``(x, info)``, ``info`` with ``nfe`` (``n``) and ``seconds``.
    """
    start = time.perf_counter()
    check_number(order, "order", "sample_unipc", minimum=1, maximum=3, integer=True)
    order = int(order)
    if variant not in UNIPC_VARIANTS:
        raise ValueError(f"sample_unipc: variant: expected one of {UNIPC_VARIANTS}, got {variant!r}")
    sigma_list, x_pred = _start(denoiser, sigmas, shape, generator, device, dtype)
    n = len(sigma_list) - 1
    models: list[Tensor] = []  # the last `order` data predictions, oldest first
    lambdas: list[float] = []
    pending = None  # the corrector's terms from the previous predictor step
    x = x_pred
    for i, (sigma, sigma_next) in enumerate(zip(sigma_list, sigma_list[1:])):
        # 1. Data prediction at the predicted state.
        model = denoiser(x_pred, sigma)
        # 2. UniC: correct the previous step with it.
        if pending is not None and corrector:
            x_base, B_h, rhos_c, D1s, m0 = pending
            res = rhos_c[-1] * (model - m0)
            for rho, D1 in zip(rhos_c, D1s):
                res = res + rho * D1
            x = x_base - B_h * res
        else:
            x = x_pred
        emit(callback, i=i, sigma=sigma, x=x, x0_hat=model)
        models = [*models, model][-order:]
        lambdas = [*lambdas, -math.log(sigma)][-order:]
        # 3. UniP: the multistep predictor of this step's order.
        p = min(order, len(models), n - i if lower_order_final else order)
        if sigma_next == 0:
            x_pred, pending = model, None
        else:
            h = math.log(sigma) - math.log(sigma_next)
            m0 = models[-1]
            rks = [(lambdas[-(k + 1)] - lambdas[-1]) / h for k in range(1, p)]
            D1s = [(models[-(k + 1)] - m0) / rk for k, rk in zip(range(1, p), rks)]
            B_h, rhos_p, rhos_c = _unipc_rhos(h, [*rks, 1.0], p, variant)
            x_base = (sigma_next / sigma) * x - math.expm1(-h) * m0
            x_pred = x_base
            for rho, D1 in zip(rhos_p, D1s):
                x_pred = x_pred - B_h * rho * D1
            pending = (x_base, B_h, rhos_c, D1s, m0)
        check_step_finite(x_pred, "sample_unipc", i, sigma)
    return x_pred, {"nfe": n, "seconds": time.perf_counter() - start}


def _deis_coefficients(nodes: Sequence[float], sigma: float, sigma_next: float) -> list[float]:
    r""":math:`C_j = \int_\sigma^{\sigma'} \ell_j(s)\, ds` for the Lagrange basis :math:`\ell_j` on
    ``nodes`` (current first), by Gauss-Legendre quadrature, exact for these degrees."""
    u, w = np.polynomial.legendre.leggauss(len(nodes) + 1)
    half = (sigma_next - sigma) / 2
    s = (sigma + sigma_next) / 2 + half * u
    nodes = np.asarray(nodes, dtype=np.float64)
    coefs = []
    for j, node in enumerate(nodes):
        others = np.delete(nodes, j)
        basis = np.prod((s[:, None] - others[None]) / (node - others[None]), axis=1)
        coefs.append(float(half * np.sum(w * basis)))
    return coefs


@torch.no_grad()
def sample_deis(
    denoiser: Denoiser,
    sigmas: Tensor,
    *,
    shape: Sequence[int],
    generator: torch.Generator | None,
    order: int = 4,
    callback: Callback | None = None,
    device: torch.device | None = None,
    dtype: torch.dtype | None = None,
) -> tuple[Tensor, dict]:
    r"""tAB-DEIS in the time :math:`t = \sigma`: Adams-Bashforth on :math:`\hat\epsilon`.

    :math:`x_{i+1} = x_i + \sum_{j=0}^{r} C_{ij}\, \hat\epsilon_{i-j}` with
    :math:`\hat\epsilon_i = (x_i - D(x_i, \sigma_i))/\sigma_i` and the exactly integrated Lagrange
    weights :math:`C_{ij}` of the module docstring; :math:`r + 1 = \min(\text{order}, i + 1)`.

    Args: as :func:`sample_ddim`, without ``eta``; ``generator`` draws only the start;
        ``order``: 1 (DDIM) to 4 (the official default, ``ab_order=3``; module docstring).

    Returns:
        ``(x, info)``, ``info`` with ``nfe`` (``n``) and ``seconds``.
    """
    start = time.perf_counter()
    check_number(order, "order", "sample_deis", minimum=1, maximum=4, integer=True)
    order = int(order)
    sigma_list, x = _start(denoiser, sigmas, shape, generator, device, dtype)
    eps_list: list[Tensor] = []  # the last `order` noise predictions, newest first
    nodes: list[float] = []
    for i, (sigma, sigma_next) in enumerate(zip(sigma_list, sigma_list[1:])):
        # 1. Noise prediction.
        x0_hat = denoiser(x, sigma)
        emit(callback, i=i, sigma=sigma, x=x, x0_hat=x0_hat)
        eps_list = [(x - x0_hat) / sigma, *eps_list][:order]
        nodes = [sigma, *nodes][:order]
        # 2. Adams-Bashforth step with the integrated Lagrange polynomial.
        for coef, eps in zip(_deis_coefficients(nodes, sigma, sigma_next), eps_list):
            x = x + coef * eps
        check_step_finite(x, "sample_deis", i, sigma)
    return x, {"nfe": len(sigma_list) - 1, "seconds": time.perf_counter() - start}
