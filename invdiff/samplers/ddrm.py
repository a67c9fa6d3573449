r"""The SVD-based samplers: DDRM and DDNM / DDNM+, in the spectral coordinates of :mod:`invdiff.samplers.svd`.

**DDRM** (:func:`sample_ddrm`; Kawar, Elad, Ermon, Song, "Denoising Diffusion Restoration Models",
NeurIPS 2022; official code ``bahjat-kawar/ddrm`` read at
32b6b3ccfda532ba01c9cc5b6e7456c3a06a6ca2, ``functions/denoising.py``
``efficient_generalized_steps``, ``runners/diffusion.py``, ``main.py``). In the spectral
coordinates :math:`c = V^H x` with singular values :math:`s_i`, the measurement
:math:`\bar y_i = (U^H y)_i / s_i` and its noise std :math:`\sigma_{y,i} = \sigma_y / s_i`
(:meth:`~invdiff.samplers.svd.SVD.measurement`), a step from :math:`\sigma` to :math:`\sigma'`
with :math:`\hat c_0 = V^H D(x, \sigma)`, :math:`\hat\epsilon = V^H (x - D(x, \sigma))/\sigma` and
:math:`z = V^H n`, :math:`n \sim \mathcal N(0, I)`, sets each coordinate by one of three rules:

* :math:`s_i = 0` (or :math:`\sigma' = \sigma_{y,i}`): :math:`\hat c_{0,i} + \sigma'\sqrt{1-\eta^2}\,\hat\epsilon_i + \eta\sigma' z_i`;
* :math:`\sigma' < \sigma_{y,i}` (less noisy than the data): :math:`\hat c_{0,i} + \sigma'\sqrt{1-\eta^2}\,(\bar y_i - \hat c_{0,i})/\sigma_{y,i} + \eta\sigma' z_i`;
* :math:`\sigma' > \sigma_{y,i}` (noisier than the data): :math:`\eta_b \bar y_i + (1-\eta_b)\hat c_{0,i} + \sqrt{\sigma'^2 - \eta_b^2\sigma_{y,i}^2}\, z_i`,

and the start is :math:`c_{T,i} = \bar y_i + \sqrt{\sigma_T^2 - \sigma_{y,i}^2}\, z_i` where
:math:`\sigma_{y,i} < \sigma_T`, else :math:`\sigma_T z_i`. The published settings (``main.py``
defaults and every README command): ``--eta 0.85 --etaB 1 --timesteps 20``, the respaced
timesteps ``range(0, 1000, 50)`` (``sigmas_vp(20, spacing="uniform")``), ``configs/sampler/ddrm.yaml``.

**DDNM / DDNM+** (:func:`sample_ddnm`; Wang, Yu, Zhang, "Zero-Shot Image Restoration Using Denoising
Diffusion Null-Space Model", ICLR 2023; official code ``wyhuai/DDNM`` read at
00b58eac7843a4c99114fd8fa42da7aa2b6808af, ``functions/svd_ddnm.py`` ``ddnm_diffusion`` /
``ddnm_plus_diffusion``, ``functions/svd_operators.py`` ``Lambda`` / ``Lambda_noise``,
``guided_diffusion/diffusion.py``). Noiseless data (DDNM): the range-null decomposition
:math:`\hat x_0 \leftarrow A^+ y + (I - A^+ A) D(x, \sigma)`, then the step
:math:`x' = \hat x_0 + \sigma'(\eta z + \sqrt{1-\eta^2}\,\hat\epsilon)`. Noisy data (DDNM+, the
SVD version): :math:`\hat c_0 \leftarrow \hat c_0 - \Sigma_t (\hat c_0 - \bar y)` on the observed
coordinates with :math:`\Sigma_{t,i} = 1` where :math:`\sigma' \ge \sigma_{y,i}` and
:math:`\sqrt{1-\eta^2}\,\sigma'/\sigma_{y,i}` below (``Lambda``), and the noise
:math:`\Phi_t`: :math:`d_1 z_i + d_2 \hat\epsilon_i` with :math:`(d_1, d_2) = (\eta\sigma', 0)`
where :math:`\sigma' < \sigma_{y,i}`, :math:`(\sqrt{\sigma'^2 - \sigma_{y,i}^2}, 0)` where
:math:`\sigma' > \sigma_{y,i}`, and DDIM's :math:`(\eta\sigma', \sqrt{1-\eta^2}\sigma')` on the null
space and at equality (``Lambda_noise``). Start: :math:`x_T = \sigma_T n`. On noisy data these
rules *are* DDRM's with :math:`\eta_b = 1` (compare the cases above); the two samplers differ only
in the start (whose weight decays as :math:`(\sqrt{1-\eta^2}\,\sigma'/\sigma)` per step, to
round-off after a few dozen steps at :math:`\eta = 0.85`), at the measure-zero equality
:math:`\sigma' = \sigma_{y,i}`, and with time travel. On noiseless data DDNM keeps DDIM's
:math:`\hat\epsilon` on the observed coordinates where DDRM draws fresh noise, and DDNM's last step
projects onto the data where DDRM returns :math:`D(x, \sigma_{min})`. The official configs
run ``T_sampling: 100`` (timesteps ``range(0, 1000, 10)``, ``sigmas_vp(100, spacing="uniform")``),
``--eta 0.85`` and no time travel (``travel_length: 1, travel_repeat: 1``). Time travel
(``time_travel=True``; the paper's section 3.3, RePaint's schedule as in ``get_schedule_jump``):
every ``travel_length`` steps, ``travel_repeat - 1`` times, the sampler goes back
``travel_length`` levels and steps down again; going back re-noises, as the official loop does,
the last step's *unprojected* estimate, :math:`x = D(x_t, \sigma_t) + \sigma_{back} n`. The
switch's defaults ``travel_length=10, travel_repeat=3`` are those of the official
``hq_demo/confs`` (``jump_length: 10, jump_n_sample: 3``).

Conversion to our variance-exploding form. Both official loops are written for an ε-network in
variance-preserving coordinates with :math:`\bar\alpha_t`, but both compute in VE units:
``sigma = sqrt(1 - at) / sqrt(at)``, ``xt_mod = xt / sqrt(at)``, ``x0_t = (xt - et sqrt(1-at)) / sqrt(at)``
and the next state ``sqrt(at_next) * xt_mod_next``. With our state :math:`x = x_{vp}/\sqrt{\bar\alpha}`,
:math:`\hat\epsilon = (x - D(x, \sigma))/\sigma` is the network's ``et`` and every rule above is
the official one verbatim. Data range: the network sees :math:`x_n = k x + b` (the prior's
``data_scale`` :math:`k`, :func:`~invdiff.samplers.common.network_sigma`), the official
``sigma_0`` / ``sigma_y`` is the noise in those units (``main.py`` doubles the user's value
for :math:`[-1, 1]`), and the official schedule is the network's. Every comparison above is
between :math:`\sigma'` and :math:`\sigma_y/s_i`, both scaled by :math:`k`, and every update is
affine-equivariant, so the rules run unchanged in the caller's units on the caller's schedule
(``sigmas_vp(..., data_scale=k)``, as :meth:`invdiff.run.Method.sigmas` passes it). Complex
measurements of a real unknown: :math:`\sigma_{y,i} = \sigma_y/(\sqrt 2 s_i)`
(:attr:`~invdiff.samplers.svd.SVD.noise_factor`).

Deliberate differences from the official code:

* The start is :math:`\sigma_T \cdot` (white noise), where DDNM's is ``randn`` in VP units and
  DDRM's divides its VE start by ``sigma_T`` instead of :math:`\sqrt{1+\sigma_T^2}`; both differ
  from the exact VE start by a factor :math:`\sqrt{1 + 1/\sigma_{n,T}^2}`, :math:`1 + 2\cdot 10^{-5}`
  at the networks' :math:`\sigma_{n,T} \approx 157`; and it is centred at 0 in the caller's units,
  the official one at 0 in the network's, :math:`b/k` apart for a shifted range
  (:math:`x_n = k x + b`), against a spread :math:`\sigma_T`. Both decay over the steps
  (``tests/samplers/test_ddrm.py`` checks the transcriptions and the change of units).
* One spectral noise :math:`z = V^H n` per step serves all three DDRM cases (the official draws
  one ``randn`` per case in the spectral layout): the same law, and for complex bases (Fourier) it
  keeps real images real.
* A batch is independent problems; ``y`` and the noise std are per call. No clamp of the output
  to the data range (the official ``inverse_data_transform`` clamps the saved images).
* DDNM's "simplified" variant (``--simplified``: a scalar :math:`\lambda_t, \gamma_t` of Eq. 19)
  is not implemented: the SVD version above is the paper's Eqs. 17-18 and Appendix I.

Operators without a closed-form SVD (:func:`~invdiff.samplers.svd.svd_of` gives ``None``:
multi-coil MRI, CT; ``info["linear_algebra"] == "cg"``, and ``linear_algebra="cg"`` forces it for
any operator) run in pixel space with conjugate gradient. With :math:`P = A^+ A` and
:math:`A^+` from ``op.pinv`` (CG on the normal equations, ``cg_max_iter``, ``cg_tol``):

* noiseless data: exact up to CG. DDRM: start :math:`A^+ y + \sigma_T n`; step
  :math:`x' = \hat x_0 + \sigma' m + A^+\big(\eta_b (y - A \hat x_0) - \sigma' A(m - n)\big)` with
  :math:`m = \eta n + \sqrt{1-\eta^2}\hat\epsilon` (DDIM on the null space, the data and fresh noise
  :math:`\sigma' n` on the range; one ``pinv`` per step), the estimate itself at :math:`\sigma' = 0`.
  DDNM: :math:`\hat x_0 - A^+(A\hat x_0 - y)` then the step (one ``pinv`` per step).
* noisy data (a documented deviation for both samplers): the per-coordinate switch between the
  regimes needs :math:`s_i`, which CG does not give. It is replaced by the Tikhonov-regularised
  solve :math:`\hat x_0 + w (A^H A + \mu I)^{-1} A^H (y - A \hat x_0)`, ``op.solve_normal`` with
  :math:`\mu = \sigma_{y}^2/\sigma'^2` (:math:`\sigma_y/\sqrt 2` for complex measurements), i.e.
  the spectral weight :math:`\sigma'^2/(\sigma'^2 + \sigma_{y,i}^2)` on :math:`\bar y_i - \hat c_{0,i}`
  (1 far in the noisier regime, 0 at :math:`\sigma' = 0`, as both rules' limits), with
  :math:`w = \eta_b` for DDRM and 1 for DDNM+, followed by DDIM's noise
  :math:`\sigma'(\eta n + \sqrt{1-\eta^2}\hat\epsilon)` on every coordinate (the official rules put
  :math:`\sqrt{\sigma'^2 - \sigma_{y,i}^2}` fresh noise on the noisier observed coordinates and
  :math:`\eta\sigma'` on the less noisy ones). DDRM's start is :math:`(A^H A + \mu_T I)^{-1} A^H y + \sigma_T n`.
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
    measurement_device_dtype,
    posterior_shape,
    real_adjoint,
)
from invdiff.samplers.svd import SVD, svd_of
from operators.base import LinearOperator

LINEAR_ALGEBRA = ("auto", "svd", "cg")


def _check_common(op, y, eta, noise_std, linear_algebra, cg_max_iter, cg_tol, sampler: str) -> None:
    if not isinstance(op, LinearOperator):
        raise ValueError(f"{sampler}: op: expected a LinearOperator, got {op!r}; use sample_dps for nonlinear operators")
    check_measurement(y, sampler)
    check_eta(eta, sampler)
    check_number(noise_std, "noise_std", sampler, minimum=0)
    check_number(cg_max_iter, "cg_max_iter", sampler, integer=True, minimum=1)
    check_number(cg_tol, "cg_tol", sampler, positive=True)
    if linear_algebra not in LINEAR_ALGEBRA:
        raise ValueError(f"{sampler}: linear_algebra: expected one of {LINEAR_ALGEBRA}, got {linear_algebra!r}")


def spectral_basis(op: LinearOperator, linear_algebra: str, sampler: str) -> SVD | None:
    """The operator's SVD for ``"auto"`` / ``"svd"`` (``None`` for ``"cg"`` or when it has none)."""
    if linear_algebra == "cg":
        return None
    svd = svd_of(op)
    if svd is None and linear_algebra == "svd":
        raise ValueError(
            f"{sampler}: linear_algebra: 'svd' needs a closed-form SVD, which {op!r} has not; use 'auto' or 'cg'"
        )
    return svd


def _effective_noise_std(y: Tensor, noise_std: float) -> float:
    """The noise std per real component: ``noise_std / sqrt(2)`` for complex (circular) ``y``."""
    return noise_std / math.sqrt(2) if y.is_complex() else noise_std


def _white(shape, generator, like: Tensor, draw: bool = True) -> Tensor:
    """White noise of ``shape`` on ``like``'s device and dtype; zeros (nothing drawn) unless ``draw``."""
    if not draw:
        return torch.zeros(tuple(shape), device=like.device, dtype=like.dtype)
    return torch.randn(tuple(shape), generator=generator, device=like.device, dtype=like.dtype)


def _tikhonov(op: LinearOperator, r: Tensor, mu: float, shape, sampler: str, max_iter: int, tol: float) -> Tensor:
    r""":math:`(A^H A + \mu I)^{-1} A^H r` (``op.solve_normal``)."""
    return op.solve_normal(real_adjoint(op, r, shape, sampler), mu, max_iter=max_iter, tol=tol)


def _setup(denoiser, op, y, sigmas, noise_std, shape, linear_algebra, sampler):
    sigma_list = check_sigmas(sigmas)
    shape = posterior_shape(op, y, shape, sampler)
    device, dtype = measurement_device_dtype(y)
    real_adjoint(op, y, shape, sampler)
    svd = spectral_basis(op, linear_algebra, sampler)
    like = torch.zeros((), device=device, dtype=dtype)
    return sigma_list, shape, like, svd


def sample_ddrm(
    denoiser: Denoiser,
    op: LinearOperator,
    y: Tensor,
    sigmas: Tensor,
    *,
    noise_std: float,
    generator: torch.Generator | None,
    eta: float = 0.85,
    eta_b: float = 1.0,
    linear_algebra: str = "auto",
    cg_max_iter: int = 100,
    cg_tol: float = 1e-6,
    shape: Sequence[int] | None = None,
    callback: Callback | None = None,
) -> tuple[Tensor, dict]:
    r"""Denoising diffusion restoration models (module docstring: the rule, the official settings,
    the conversion and the conjugate-gradient path).

    Args:
        denoiser: the prior, :math:`D(x, \sigma)`.
        op: a :class:`~operators.base.LinearOperator`.
        y: the measurements, ``(B, ...)``; each sample is its own problem.
        sigmas: ``(n + 1,)`` descending noise levels ending at 0; the paper's are
            ``sigmas_vp(20, spacing="uniform")``.
        noise_std: the measurement noise std :math:`\sigma_y` (complex: circular, :math:`\mathbb E|n|^2 = \sigma_y^2`).
        generator: the source of all randomness.
        eta: :math:`\eta` in ``[0, 1]`` (the official ``--eta``, its ``etaA`` and ``etaC``).
        eta_b: :math:`\eta_b` in ``[0, 1]``, the data weight in the noisier regime (``--etaB``).
        linear_algebra: ``"auto"`` (the SVD where :func:`~invdiff.samplers.svd.svd_of` has one,
            else CG), ``"svd"`` (an error without one) or ``"cg"``.
        cg_max_iter, cg_tol: the CG path's ``op.pinv`` / ``op.solve_normal`` settings.
        shape: the shape of ``x``, ``(B, ...)``; default ``op.AT(y).shape``.
        callback: called each step with ``i``, ``sigma``, ``x`` (the state) and ``x0_hat``.

    Returns:
        ``(x, info)``: samples and ``info`` with ``nfe``, ``seconds``, ``linear_algebra``
        (``"svd"`` or ``"cg"``), ``eta`` and ``eta_b``.
    """
    start = time.perf_counter()
    name = "sample_ddrm"
    _check_common(op, y, eta, noise_std, linear_algebra, cg_max_iter, cg_tol, name)
    check_number(eta_b, "eta_b", name, minimum=0, maximum=1)
    sigma_list, shape, like, svd = _setup(denoiser, op, y, sigmas, noise_std, shape, linear_algebra, name)
    solver = dict(max_iter=int(cg_max_iter), tol=float(cg_tol))
    sigma_eff = _effective_noise_std(y, noise_std)
    sigma_T = sigma_list[0]
    with torch.no_grad():
        # 1. The start: the data on the coordinates it is less noisy than sigma_T, noise elsewhere.
        n = _white(shape, generator, like)
        if svd is not None:
            ybar, std = svd.measurement(y, noise_std)
            observed = svd.observed(ybar).expand(ybar.shape)
            std = std.expand(ybar.shape)
            z = svd.Vt(n)
            large = observed & (std < sigma_T)
            remaining = (sigma_T**2 - torch.where(large, std, torch.zeros_like(std)) ** 2).clamp_min(0).sqrt()
            x = svd.V(torch.where(large, ybar + remaining * z, sigma_T * z))
        elif noise_std == 0:
            x = op.pinv(y, **solver) + sigma_T * n
        else:
            x = _tikhonov(op, y, (sigma_eff / sigma_T) ** 2, shape, name, **solver) + sigma_T * n
        for i, (sigma, sigma_next) in enumerate(zip(sigma_list, sigma_list[1:])):
            # 2. Tweedie estimate and its noise.
            x0_hat = denoiser(x, sigma)
            eps = (x - x0_hat) / sigma
            emit(callback, i=i, sigma=sigma, x=x, x0_hat=x0_hat)
            n = _white(shape, generator, like, draw=sigma_next > 0)
            std_C = eta * sigma_next
            tilde_C = math.sqrt(max(sigma_next**2 - std_C**2, 0.0))
            if svd is not None:
                # 3. The three cases, per spectral coordinate.
                c0, ce, z = svd.Vt(x0_hat), svd.Vt(eps), svd.Vt(n)
                missing = c0 + tilde_C * ce + std_C * z
                after = observed & (std > sigma_next)
                before = observed & (std < sigma_next)
                safe = torch.where(after, std, torch.ones_like(std))
                less_noisy = c0 + tilde_C * (ybar - c0) / safe + std_C * z
                diff_B = (sigma_next**2 - eta_b**2 * torch.where(before, std, torch.zeros_like(std)) ** 2).clamp_min(0).sqrt()
                noisier = eta_b * ybar + (1 - eta_b) * c0 + diff_B * z
                x = svd.V(torch.where(before, noisier, torch.where(after, less_noisy, missing)))
            elif sigma_next == 0:
                x = x0_hat
            else:
                # 3'. Conjugate gradient (module docstring).
                m = eta * n + math.sqrt(1 - eta**2) * eps
                if noise_std == 0:
                    x = x0_hat + sigma_next * m + op.pinv(
                        eta_b * (y - op.A(x0_hat)) - sigma_next * op.A(m - n), **solver
                    )
                else:
                    mu = (sigma_eff / sigma_next) ** 2
                    x = x0_hat + eta_b * _tikhonov(op, y - op.A(x0_hat), mu, shape, name, **solver) + sigma_next * m
            # 4. One host synchronisation per step.
            check_step_finite((x0_hat, x), name, i, sigma)
    info = {
        "nfe": len(sigma_list) - 1,
        "seconds": time.perf_counter() - start,
        "linear_algebra": "svd" if svd is not None else "cg",
        "eta": eta,
        "eta_b": eta_b,
    }
    return x, info


def travel_schedule(n: int, travel_length: int, travel_repeat: int) -> list[int]:
    r"""The indices into the ``n + 1`` noise levels that time travel visits, from 0 to ``n``.

    Steps go down one level at a time (index up); after the step that reaches level
    ``n - 1 - j`` for ``j`` in ``0, L, 2L, ...`` (``j < n - L``, counted as the official
    timesteps from the end), ``travel_repeat - 1`` times, the path climbs back ``L`` levels and
    steps down again (RePaint's jump schedule, DDNM's ``get_schedule_jump``). ``travel_repeat=1``
    is the plain path ``0, 1, ..., n``.
    """
    remaining = {j: travel_repeat - 1 for j in range(0, n - travel_length, travel_length)}
    t, path = n, []
    while t >= 1:
        t -= 1
        path.append(t)
        if remaining.get(t, 0) > 0:
            remaining[t] -= 1
            for _ in range(travel_length):
                t += 1
                path.append(t)
    path.append(-1)
    return [n - 1 - t for t in path]


def sample_ddnm(
    denoiser: Denoiser,
    op: LinearOperator,
    y: Tensor,
    sigmas: Tensor,
    *,
    noise_std: float,
    generator: torch.Generator | None,
    eta: float = 0.85,
    time_travel: bool = False,
    travel_length: int = 10,
    travel_repeat: int = 3,
    linear_algebra: str = "auto",
    cg_max_iter: int = 100,
    cg_tol: float = 1e-6,
    shape: Sequence[int] | None = None,
    callback: Callback | None = None,
) -> tuple[Tensor, dict]:
    r"""DDNM for noiseless data, DDNM+ for noisy data (module docstring: the rules, the official
    settings, the conversion, time travel and the conjugate-gradient path).

    Args:
        denoiser: the prior, :math:`D(x, \sigma)`.
        op: a :class:`~operators.base.LinearOperator`.
        y: the measurements, ``(B, ...)``; each sample is its own problem.
        sigmas: ``(n + 1,)`` descending noise levels ending at 0; the official configs' are
            ``sigmas_vp(100, spacing="uniform")``.
        noise_std: the measurement noise std :math:`\sigma_y`; 0 runs DDNM, otherwise DDNM+.
        generator: the source of all randomness.
        eta: the share of fresh noise in the step (the official ``--eta``), in ``[0, 1]``.
        time_travel: go back and re-sample (module docstring); off in the official configs.
        travel_length: levels to go back (the paper's :math:`l`), an integer ``>= 1``.
        travel_repeat: how often each travel point is passed (the paper's :math:`r`), ``>= 1``.
        linear_algebra: ``"auto"``, ``"svd"`` or ``"cg"`` (as :func:`sample_ddrm`).
        cg_max_iter, cg_tol: the CG path's ``op.pinv`` / ``op.solve_normal`` settings.
        shape: the shape of ``x``, ``(B, ...)``; default ``op.AT(y).shape``.
        callback: called each network evaluation with ``i`` (its count), ``sigma``, ``x``,
            ``x0_hat`` (the network's estimate) and ``x0`` (after the range-null correction).

    Returns:
        ``(x, info)``: samples and ``info`` with ``nfe`` (the number of network evaluations: the
        steps, plus the repeated ones with time travel), ``seconds``, ``linear_algebra``,
        ``eta``, ``time_travel`` and ``plus`` (DDNM+ used).
    """
    start = time.perf_counter()
    name = "sample_ddnm"
    _check_common(op, y, eta, noise_std, linear_algebra, cg_max_iter, cg_tol, name)
    check_number(travel_length, "travel_length", name, integer=True, minimum=1)
    check_number(travel_repeat, "travel_repeat", name, integer=True, minimum=1)
    if not isinstance(time_travel, bool):
        raise ValueError(f"{name}: time_travel: expected True or False, got {time_travel!r}")
    sigma_list, shape, like, svd = _setup(denoiser, op, y, sigmas, noise_std, shape, linear_algebra, name)
    solver = dict(max_iter=int(cg_max_iter), tol=float(cg_tol))
    sigma_eff = _effective_noise_std(y, noise_std)
    n_steps = len(sigma_list) - 1
    path = travel_schedule(n_steps, int(travel_length), int(travel_repeat)) if time_travel else list(range(n_steps + 1))
    root = math.sqrt(1 - eta**2)
    nfe = 0
    with torch.no_grad():
        if svd is not None:
            ybar, std = svd.measurement(y, noise_std)
            observed = svd.observed(ybar).expand(ybar.shape)
            std = std.expand(ybar.shape)
        x = sigma_list[0] * _white(shape, generator, like)
        x0_hat = None
        for k, k_next in zip(path, path[1:]):
            sigma, sigma_next = sigma_list[k], sigma_list[k_next]
            if k_next < k:
                # Time travel back: re-noise the last network estimate to the higher level.
                x = x0_hat + sigma_next * _white(shape, generator, like)
                continue
            i, x_t = nfe, x
            # 1. Tweedie estimate and its noise.
            x0_hat = denoiser(x, sigma)
            eps = (x - x0_hat) / sigma
            nfe += 1
            n = _white(shape, generator, like, draw=sigma_next > 0)
            if svd is not None:
                # 2. Range-null correction Sigma_t and the noise Phi_t, per spectral coordinate.
                c0, ce, z = svd.Vt(x0_hat), svd.Vt(eps), svd.Vt(n)
                lam = torch.ones_like(std)
                d1 = torch.full_like(std, eta * sigma_next)
                d2 = torch.full_like(std, root * sigma_next)
                if noise_std > 0:
                    less = observed & (sigma_next < std)
                    more = observed & (sigma_next > std)
                    safe = torch.where(less, std, torch.ones_like(std))
                    lam = torch.where(less, root * sigma_next / safe, lam)
                    d2 = torch.where(less | more, torch.zeros_like(d2), d2)
                    finite = torch.where(more, std, torch.zeros_like(std))
                    d1 = torch.where(more, (sigma_next**2 - finite**2).clamp_min(0).sqrt(), d1)
                c0_hat = torch.where(observed, c0 - lam * (c0 - ybar), c0)
                x0 = svd.V(c0_hat) if callback is not None else None
                x = svd.V(c0_hat + d1 * z + d2 * ce)
            else:
                # 2'. Conjugate gradient (module docstring).
                if noise_std == 0:
                    x0 = x0_hat - op.pinv(op.A(x0_hat) - y, **solver)
                elif sigma_next > 0:
                    x0 = x0_hat + _tikhonov(op, y - op.A(x0_hat), (sigma_eff / sigma_next) ** 2, shape, name, **solver)
                else:
                    x0 = x0_hat
                x = x0 + sigma_next * (eta * n + root * eps)
            emit(callback, i=i, sigma=sigma, x=x_t, x0_hat=x0_hat, x0=x0)
            # 3. One host synchronisation per step.
            check_step_finite((x0_hat, x), name, i, sigma)
    info = {
        "nfe": nfe,
        "seconds": time.perf_counter() - start,
        "linear_algebra": "svd" if svd is not None else "cg",
        "eta": eta,
        "time_travel": time_travel,
        "plus": noise_std > 0,
    }
    return x, info
