r"""DiffPIR: denoising diffusion models for plug-and-play image restoration (Zhu, Zhang, Liang,
Cao, Wen, Timofte, Van Gool, CVPR Workshops (NTIRE) 2023), written natively.

Each step, at the noise level :math:`\sigma_t`:

1. the Tweedie estimate :math:`x_0^{(t)} = D(x_t, \sigma_t)`;
2. the data proximal step, the exact minimiser

   .. math::
       \hat x_0 = \arg\min_x\ \|y - A x\|^2 + \rho_t \|x - x_0^{(t)}\|^2
       \;=\; (A^H A + \rho_t I)^{-1}(A^H y + \rho_t x_0^{(t)}),
       \qquad \rho_t = \lambda\, \sigma_y^2 / \sigma_{n,t}^2,

   by :meth:`operators.base.LinearOperator.solve_normal` (closed form for inpainting,
   super-resolution, single-coil MRI, dense matrices; conjugate gradient for multi-coil MRI and
   CT; ``info["linear_algebra"]`` says which);
3. the step to :math:`\sigma_{t-1}` with the noise direction of the *corrected* estimate,
   :math:`\hat\epsilon = (x_t - \hat x_0)/\sigma_t`, and a fraction :math:`\zeta` of fresh noise:
   :math:`x_{t-1} = \hat x_0 + \sigma_{t-1}(\sqrt{1-\zeta}\,\hat\epsilon + \sqrt{\zeta}\,z)`.

This is the official update in VE form: the official VP step
``x = sqrt(abar') * x0 + sqrt(1 - abar') * (sqrt(1 - zeta) * eps + sqrt(zeta) * z)`` (at
``eta = 0``) divided by :math:`\sqrt{\bar\alpha_{t-1}}`, with ``eps`` of the corrected ``x0``.

What the official code (``yuanzhi-zhu/DiffPIR`` at ``111d26e``, ``main_ddpir.py``,
``main_ddpir_sisr.py``, ``main_ddpir_inpainting.py``, ``configs/{sisr,deblur,inpaint}.yaml``,
``utils/utils_sisr.data_solution``) does, and what this follows:

* :math:`\rho_t` (``rhos[t_i] = lambda_ * sigma**2 / sigma_ks[t_i]**2``) with ``sigma`` the
  measurement noise std *in the images' [0, 1] units* (floored at 0.001: ``max(0.001,
  noise_level_img)``) and ``sigma_ks`` the network's :math:`\sqrt{1-\bar\alpha_t}/\sqrt{\bar\alpha_t}`
  (its [-1, 1] units); the data step runs on [0, 1] images. Here :math:`\sigma_y` is
  ``max(noise_std, 0.001)`` in the caller's units and :math:`\sigma_{n,t} = k\sigma_t` the
  network's (:func:`~invdiff.samplers.common.network_sigma`), which is the official mixture of
  units exactly when the caller's images are the official [0, 1] ones (``data_scale`` :math:`k = 2`),
  and the paper's formula for priors in their own units (:math:`k = 1`, the shipped ones). For
  complex measurements :math:`\sigma_y^2` is the variance per real component, :math:`s^2/2`
  (:func:`~invdiff.samplers.common.likelihood_weight`: the data term is :math:`w\|y - Ax\|^2`
  with :math:`\sigma_y^2 = 1/(2w)`).
* Schedules: ``skip_type="quad"`` (all three official configs): the network's timesteps
  :math:`t_i = 999 - \lfloor\sqrt{i/(n-1)}\cdot 1000\rfloor` (the last one 0), i.e. dense near
  :math:`t = 0`; ``"uniform"``: ``range(0, 1000, 1000 // n)`` reversed (with 999 first when that
  skip exceeds 1). With ``skip_type`` set, the values of ``sigmas`` are ignored (only their count
  ``n + 1`` is used); ``None`` steps through ``sigmas`` as given.
* Settings by task (``configs/*.yaml``): super-resolution ``lambda_ = 1``, ``zeta = 0.25``, 100
  iterations; deblurring ``lambda_ = 1``, ``zeta = 0.1``, 100; inpainting (noiseless)
  ``lambda_ = 1``, ``zeta = 1``, 20; all ``eta = 0``, ``skip_type: quad``, ``guidance_scale: 1``,
  ``iter_num_U: 1``. ``sampler=diffpir`` runs the super-resolution ones.

Deliberate differences from the official code:

* The end of the loop. The official loop evaluates the network at its last level (``t = 0``),
  discards that estimate and returns the state there (noise std 0.01 in the network's units).
  Here a schedule ending at 0 (ours; with ``skip_type`` the official levels followed by 0) makes
  the last step go to :math:`\sigma = 0`, which returns the data-consistent :math:`\hat x_0` of
  that evaluation; a schedule ending at a positive level returns the state there, as the
  official loop does (``tests/samplers/test_diffpir.py`` compares the two that way).
* The start: pure noise :math:`\sigma_0 z` (the official loop starts from
  :math:`\sqrt{\bar\alpha_T} x_{init} + \sqrt{1-\bar\alpha_T} z` with :math:`x_{init}` the
  bicubic upsampling or the masked image: a shift of :math:`x_{init}` in VE units under noise of
  std 157, forgotten by the first steps).
* ``eta`` (the official DDIM noise inside the :math:`1-\zeta` part, 0 in every official config)
  and ``guidance_scale`` (1), ``iter_num_U`` (1) are not offered; the official inpainting script's
  extra re-noising of the measurement (``x = (sqrt(abar) y + ...) * mask + (1 - mask) * x``, off
  in its configs' ``DiffPIR`` mode) is not done.

deepinv's ``DiffPIR`` (:func:`~invdiff.samplers.deepinv_samplers.sample_deepinv_diffpir`) runs
the same iteration with three differences: its prox is that of :math:`\tfrac{1}{2}\|Ax-y\|^2` with
``gamma = 1 / (2 rho)``, i.e. our step with :math:`2\rho_t` (deepinv's ``lambda_`` is twice
ours), computed by conjugate gradient in its [0, 1] units (:math:`\sigma_y` halved for a
``(-1, 1)`` data range); it clamps :math:`x_0^{(t)}` to :math:`[-1, 1]`; it starts from
:math:`A^H y` plus noise and returns the state at its last level. With deepinv's ``lambda_``
twice ours, its levels as ``sigmas`` and the same noise, the two agree to about
:math:`10^{-3}` (``tests/samplers/test_diffpir.py``).

Checks: the network's estimate is tested for finiteness before the solve (which refuses a
non-finite right-hand side) and the new state after it: two host synchronisations per step.
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
    posterior_shape,
    real_adjoint,
)
from invdiff.samplers.linear import linear_algebra
from invdiff.schedules import vp_alphas_cumprod, vp_sigmas
from operators.base import LinearOperator

NAME = "sample_diffpir"
SKIP_TYPES = ("quad", "uniform")
NOISE_FLOOR = 1e-3
"""The official ``max(0.001, noise_level_img)``: the noise std used for :math:`\\rho_t` on noiseless data."""


def diffpir_sigmas(
    n: int, skip_type: str = "quad", *, num_timesteps: int = 1000, data_scale: float = 1.0
) -> Tensor:
    r"""The official iteration's ``n`` noise levels on DDPM's linear-:math:`\beta` grid, then 0.

    Args:
        n: the number of iterations (``iter_num``), at least 2 for ``"quad"``.
        skip_type: ``"quad"``: timesteps ``999 - int(sqrt(linspace(0, T**2, n)))`` (the last 0);
            ``"uniform"``: ``range(0, T, T // n)`` reversed, with ``T - 1`` first when the skip
            exceeds 1 (as the official ``seq``).
        num_timesteps: :math:`T`.
        data_scale: the prior's :math:`k`; the levels are the network's divided by :math:`k`.

    Returns:
        ``(n' + 1,)`` float64 descending sigmas ending with 0 (``n' = n`` for ``"quad"``).
    """
    if skip_type not in SKIP_TYPES:
        raise ValueError(f"{NAME}: skip_type: expected one of {SKIP_TYPES} or None, got {skip_type!r}")
    if int(n) != n or n < 2:
        raise ValueError(f"{NAME}: skip_type: needs at least 2 iterations (3 sigmas), got {n}")
    T = int(num_timesteps)
    if skip_type == "quad":
        seq = [int(s) for s in torch.linspace(0, T**2, n, dtype=torch.float64).sqrt().tolist()]
        seq[-1] -= 1
    else:
        skip = T // n
        seq = [i * skip for i in range(n)] + ([T - 1] if skip > 1 else [])
    grid = vp_sigmas(vp_alphas_cumprod(T))
    # The official sigmas list runs from the last timestep down: sigmas[j] is timestep T - 1 - j.
    levels = grid[[T - 1 - j for j in seq]] / data_scale
    return torch.cat([levels, levels.new_zeros(1)])


def sample_diffpir(
    denoiser: Denoiser,
    op: LinearOperator,
    y: Tensor,
    sigmas: Tensor,
    *,
    noise_std: float,
    generator: torch.Generator | None,
    lambda_: float = 1.0,
    zeta: float = 0.25,
    skip_type: str | None = None,
    max_iter: int = 100,
    tol: float = 1e-6,
    shape: Sequence[int] | None = None,
    callback: Callback | None = None,
) -> tuple[Tensor, dict]:
    r"""DiffPIR written natively (module docstring: the official settings and the differences).

    Args:
        denoiser: the prior, :math:`D(x, \sigma)`.
        op: a :class:`~operators.base.LinearOperator` (the data step is its regularised normal
            equations).
        y: the measurements, ``(B, ...)``; each sample is its own problem.
        sigmas: ``(n + 1,)`` descending noise levels; with ``skip_type`` only ``n`` is used.
        noise_std: the measurement noise std :math:`s` (``>= 0``); :math:`\rho_t` takes
            ``max(noise_std, 0.001)``, as the official code.
        generator: the source of all randomness.
        lambda_: the paper's :math:`\lambda > 0` (official configs: 1).
        zeta: the fraction :math:`\zeta \in [0, 1]` of fresh noise per step (official: 0.25
            super-resolution, 0.1 deblurring, 1 inpainting).
        skip_type: ``"quad"`` or ``"uniform"``: the official ``n`` timesteps of the network's
            1000 (:func:`diffpir_sigmas`, with the prior's ``data_scale``); ``None``: ``sigmas``.
        max_iter, tol: conjugate gradient's, for operators without a closed-form solve.
        shape: the shape of ``x``, ``(B, ...)``; default ``op.AT(y).shape``.
        callback: called each step with ``i``, ``sigma``, ``x`` (the state at ``sigma``),
            ``x0_hat`` (the network's estimate), ``x0`` (after the data step) and ``rho``.

    Returns:
        ``(x, info)``: samples and ``info`` with ``nfe``, ``seconds``, ``rho`` (the last step's),
        ``lambda_``, ``zeta``, ``skip_type``, ``noise_std`` and ``linear_algebra``
        (``"closed form"`` or ``"conjugate gradient"``).
    """
    start = time.perf_counter()
    if not isinstance(op, LinearOperator):
        raise ValueError(f"{NAME}: op: DiffPIR's data step needs a LinearOperator, got {op!r}")
    check_measurement(y, NAME)
    check_number(noise_std, "noise_std", NAME, minimum=0)
    check_number(lambda_, "lambda_", NAME, positive=True)
    check_number(zeta, "zeta", NAME, minimum=0, maximum=1)
    check_number(max_iter, "max_iter", NAME, integer=True, minimum=1)
    check_number(tol, "tol", NAME, positive=True)
    sigma_list = check_sigmas(sigmas)
    k = network_sigma(denoiser, 1.0)
    if skip_type is not None:
        if skip_type not in SKIP_TYPES:
            raise ValueError(f"{NAME}: skip_type: expected one of {SKIP_TYPES} or None, got {skip_type!r}")
        sigma_list = diffpir_sigmas(len(sigma_list) - 1, skip_type, data_scale=k).tolist()
    shape = posterior_shape(op, y, shape, NAME)
    device, dtype = measurement_device_dtype(y)
    # sigma_y^2 = 1 / (2 w): the variance per real component of the measurement noise.
    noise_var = 0.5 / likelihood_weight(y, max(float(noise_std), NOISE_FLOOR))
    x = initial_noise(sigma_list[0], shape, generator=generator, device=device, dtype=dtype)
    rho = None
    with torch.no_grad():
        ATy = real_adjoint(op, y, shape, NAME)
        for i, (sigma, sigma_next) in enumerate(zip(sigma_list, sigma_list[1:])):
            # 1. Tweedie estimate, checked before the solve (which refuses a non-finite right-hand side).
            x0_hat = denoiser(x, sigma)
            check_step_finite(x0_hat, NAME, i, sigma)
            # 2. Data proximal step: (A^H A + rho I) x0 = A^H y + rho x0_hat.
            rho = lambda_ * noise_var / network_sigma(denoiser, sigma) ** 2
            x0 = op.solve_normal(ATy + rho * x0_hat, rho, max_iter=int(max_iter), tol=float(tol))
            emit(callback, i=i, sigma=sigma, x=x, x0_hat=x0_hat, x0=x0, rho=rho)
            # 3. Step to sigma_next with the corrected estimate's noise and a fraction zeta of fresh noise.
            eps = (x - x0) / sigma
            x = x0 + sigma_next * math.sqrt(1 - zeta) * eps
            if zeta > 0 and sigma_next > 0:
                z = torch.randn(shape, generator=generator, device=device, dtype=dtype)
                x = x + sigma_next * math.sqrt(zeta) * z
            check_step_finite(x, NAME, i, sigma)
    info = {
        "nfe": len(sigma_list) - 1,
        "seconds": time.perf_counter() - start,
        "rho": rho,
        "lambda_": lambda_,
        "zeta": zeta,
        "skip_type": skip_type,
        "noise_std": noise_std,
        "linear_algebra": linear_algebra(op),
    }
    return x, info
