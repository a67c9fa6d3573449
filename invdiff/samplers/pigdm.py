r"""ΠGDM: pseudoinverse-guided diffusion models (Song, Vahdat, Mardani, Kautz, ICLR 2023).

ΠGDM approximates :math:`p(x_0 \mid x_t)` by the Gaussian
:math:`\mathcal N(\hat x_0(x_t), r_t^2 I)`, so that for a linear
:math:`y = A x_0 + n`, :math:`n \sim \mathcal N(0, \sigma_y^2 I)`,

.. math::
    p(y \mid x_t) \approx \mathcal N\big(y;\ A\hat x_0,\ r_t^2 A A^H + \sigma_y^2 I\big),
    \qquad
    g = \nabla_{x_t} \log p(y \mid x_t) \approx
    \Big(\frac{\partial \hat x_0}{\partial x_t}\Big)^T A^H
    (r_t^2 A A^H + \sigma_y^2 I)^{-1} (y - A \hat x_0),

a vector-Jacobian product through the denoiser (one backward pass per step). The paper's
:math:`r_t^2 = \sigma_t^2 / (1 + \sigma_t^2)` is the variance of :math:`x_0` given
:math:`x_t = x_0 + \sigma_t n` for data of unit variance in the network's units; for the
caller's units (:math:`\sigma_{n} = k\sigma`, :func:`~invdiff.samplers.common.network_sigma`)
it is :math:`r_t^2 = \sigma_t^2 / (1 + k^2\sigma_t^2)`, the network's :math:`r_t^2/k^2`. Every
term is then covariant under :math:`x_n = kx + b` (the guided shift below is :math:`k` times
ours), so no further conversion is needed. For complex measurements :math:`\sigma_y^2` is the
variance per real component, :math:`s^2/2` (:math:`1/(2w)` with :math:`w` of
:func:`~invdiff.samplers.common.likelihood_weight`).

The step. The guidance is added to the DDIM step with the weight :math:`r_t^2`:

.. math::
    x_{t-1} = \mathrm{DDIM}_\eta(x_t, \hat x_0) + r_t^2\, g
    = \mathrm{DDIM}_\eta(x_t, \hat x_0)
      + \Big(\frac{\partial \hat x_0}{\partial x_t}\Big)^T (A^H A + \tfrac{\sigma_y^2}{r_t^2} I)^{-1} A^H (y - A\hat x_0),

the second form by the push-through (Woodbury) identity
:math:`A^H (r^2 A A^H + \sigma_y^2 I)^{-1} = (r^2 A^H A + \sigma_y^2 I)^{-1} A^H`: one
:meth:`operators.base.LinearOperator.solve_normal` per step, in closed form for inpainting,
super-resolution, single-coil MRI and dense matrices, by conjugate gradient for multi-coil MRI and
CT (``info["linear_algebra"]``). Noiseless data (``noise_std == 0``) take the limit, the paper's
pseudoinverse form :math:`(\partial \hat x_0/\partial x_t)^T A^+(y - A\hat x_0)` (``op.pinv``).

No official code was released. What the two implementations read do, and what this follows:

* ``NVlabs/RED-diff`` at ``66482f2`` (``algos/pgdm.py``, ``_configs/algo/pgdm.yaml``), by the same
  group: noiseless form only, ``grad_term = d/dx_t <sg(H^+ y - H^+ H x0_pred), x0_pred>``, added to
  the VP DDIM step as ``coeff * grad_term`` with ``coeff = sqrt(abar_s) * sqrt(abar_t) *
  grad_term_weight`` (``awd: True``, ``grad_term_weight: 1``, ``eta: 0.0``). Divided by
  :math:`\sqrt{\bar\alpha_s}` to VE units, and with :math:`\partial/\partial x^{vp}_t =
  \bar\alpha_t^{-1/2}\,\partial/\partial x_t`, that is
  :math:`x_{t-1} = \mathrm{DDIM} + (\partial\hat x_0/\partial x_t)^T H^+(y - H\hat x_0)`: the
  limit above. (``awd: False`` would weight it by :math:`1 - c_2/\sigma_t`.) Its start
  :math:`\sqrt{\bar\alpha_T} H^+y + \sqrt{1-\bar\alpha_T} z` is pure noise here.
* ``devzhk/InverseBench`` at ``b113d67`` (``algo/pigdm.py``, ``configs/algorithm/pigdm.yaml``): VE
  form, ``x = DDIM(x) + J^T A^T (A A^T + sigma_y^2 (1 + sigma^2)/sigma^2 I)^{-1} (y - A x0)``,
  i.e. exactly :math:`r_t^2 g` above, with a dense inverse; 100 steps (geometric
  :math:`\sigma` from 100 to 0.01), ``eta = 0.2``; its DDIM step is DDS's
  :math:`\hat x_0 + \sigma'(\sqrt{1-\eta^2}\hat\epsilon + \eta z)`.

``eta`` here is DDIM's (:func:`~invdiff.samplers.common.ddim_step`: 0 deterministic, 1 DDPM),
the :math:`\eta` of the paper's DDIM-based algorithm. ``configs/sampler/pigdm.yaml`` runs 100
steps (InverseBench's count) of DDIM's uniform skip with ``eta = 1``; the paper's own :math:`\eta`
could not be checked against its text here (RED-diff's config has 0, InverseBench 0.2 in its
own form), so ``eta`` is a setting to choose. ``guidance_weight`` multiplies the guided shift
(RED-diff's ``grad_term_weight``, 1).

Checks: the network's estimate is tested for finiteness before the solve (which refuses a
non-finite right-hand side) and the new state after the step: two host synchronisations per step.

Gaussian check. For a Gaussian prior :math:`\mathcal N(m, c^2 I)` and the exact denoiser,
:math:`p(x_0 \mid x_t) = \mathcal N(\hat x_0, \tfrac{c^2\sigma^2}{c^2+\sigma^2} I)` exactly: the
Gaussian approximation is exact when the prior covariance is isotropic, and then ΠGDM's
:math:`g` is the exact :math:`\nabla\log p(y \mid x_t)` when :math:`r_t^2` is that variance (the
paper's formula is it for :math:`c = 1`, in the network's units). For an anisotropic prior
covariance :math:`C` the true :math:`\operatorname{Cov}(x_0 \mid x_t) = \sigma^2 (C+\sigma^2)^{-1}C`
is not a multiple of :math:`I` and ΠGDM's :math:`g` is biased (``tests/samplers/test_pigdm.py``
checks both).
"""

from __future__ import annotations

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
    initial_noise,
    likelihood_weight,
    measurement_device_dtype,
    network_sigma,
    posterior_shape,
    real_adjoint,
)
from invdiff.samplers.linear import linear_algebra
from operators.base import LinearOperator

NAME = "sample_pigdm"


def pigdm_r2(sigma: float, data_scale: float = 1.0) -> float:
    r""":math:`r_t^2 = \sigma^2 / (1 + k^2\sigma^2)`: the paper's :math:`\sigma_n^2/(1+\sigma_n^2)`
    in the caller's units (:math:`\sigma_n = k\sigma`)."""
    return sigma**2 / (1 + (data_scale * sigma) ** 2)


def pigdm_shift(
    op: LinearOperator,
    residual: Tensor,
    r2: float,
    noise_var: float,
    *,
    max_iter: int = 100,
    tol: float = 1e-6,
) -> Tensor:
    r""":math:`r^2 A^H (r^2 A A^H + \sigma_y^2 I)^{-1} u = (A^H A + \tfrac{\sigma_y^2}{r^2} I)^{-1} A^H u`,
    and :math:`A^+ u` for :math:`\sigma_y = 0`: the vector ΠGDM pulls back through the denoiser.

    Args:
        op: the linear operator.
        residual: :math:`u = y - A\hat x_0`, measurement-shaped ``(B, ...)``.
        r2: :math:`r_t^2 > 0`.
        noise_var: :math:`\sigma_y^2 \ge 0` per real component.
        max_iter, tol: conjugate gradient's, where ``op`` has no closed form.
    """
    if noise_var == 0:
        return op.pinv(residual, max_iter=max_iter, tol=tol)
    return op.solve_normal(op.AT(residual), noise_var / r2, max_iter=max_iter, tol=tol)


def sample_pigdm(
    denoiser: Denoiser,
    op: LinearOperator,
    y: Tensor,
    sigmas: Tensor,
    *,
    noise_std: float,
    generator: torch.Generator | None,
    eta: float = 1.0,
    guidance_weight: float = 1.0,
    max_iter: int = 100,
    tol: float = 1e-6,
    shape: Sequence[int] | None = None,
    callback: Callback | None = None,
) -> tuple[Tensor, dict]:
    r"""ΠGDM with DDIM steps (module docstring for the guidance, the units and the sources).

    Args:
        denoiser: the prior, :math:`D(x, \sigma)`; must be differentiable in ``x``.
        op: a :class:`~operators.base.LinearOperator`.
        y: the measurements, ``(B, ...)``; each sample is its own problem.
        sigmas: ``(n + 1,)`` descending noise levels, e.g. ``sigmas_vp(100)``.
        noise_std: the measurement noise std :math:`s` (``>= 0``; 0 takes the pseudoinverse form).
        generator: the source of all randomness.
        eta: DDIM's :math:`\eta \in [0, 1]`.
        guidance_weight: multiplies the guided shift :math:`r_t^2 g` (``>= 0``; 0 is plain DDIM).
        max_iter, tol: conjugate gradient's, for operators without a closed-form solve.
        shape: the shape of ``x``, ``(B, ...)``; default ``op.AT(y).shape``.
        callback: called each step with ``i``, ``sigma``, ``x`` (the state at ``sigma``),
            ``x0_hat``, ``residual_norm`` (``(B,)``) and ``r2``.

    Returns:
        ``(x, info)``: samples and ``info`` with ``nfe``, ``seconds``, ``residual_norm`` (``(B,)``,
        :math:`\|y - A\hat x_0\|` at the last step), ``eta``, ``guidance_weight``, ``noise_std``
        and ``linear_algebra`` (``"closed form"``, ``"conjugate gradient"``; ``"pinv"`` is used
        for noiseless data, by the same means).
    """
    start = time.perf_counter()
    if not isinstance(op, LinearOperator):
        raise ValueError(f"{NAME}: op: ΠGDM's guidance needs a LinearOperator, got {op!r}")
    check_measurement(y, NAME)
    check_eta(eta, NAME)
    check_number(noise_std, "noise_std", NAME, minimum=0)
    check_number(guidance_weight, "guidance_weight", NAME, minimum=0)
    check_number(max_iter, "max_iter", NAME, integer=True, minimum=1)
    check_number(tol, "tol", NAME, positive=True)
    sigma_list = check_sigmas(sigmas)
    shape = posterior_shape(op, y, shape, NAME)
    device, dtype = measurement_device_dtype(y)
    real_adjoint(op, y, shape, NAME)
    k = network_sigma(denoiser, 1.0)
    noise_var = 0.0 if noise_std == 0 else 0.5 / likelihood_weight(y, float(noise_std))
    x = initial_noise(sigma_list[0], shape, generator=generator, device=device, dtype=dtype)
    residual_norm = None
    for i, (sigma, sigma_next) in enumerate(zip(sigma_list, sigma_list[1:])):
        r2 = pigdm_r2(sigma, k)
        with torch.enable_grad():
            x_in = x.detach().requires_grad_(True)
            # 1. Tweedie estimate, keeping the graph back to x.
            x0_hat = denoiser(x_in, sigma)
            check_step_finite(x0_hat.detach(), NAME, i, sigma)
            # 2. r^2 A^H (r^2 A A^H + sigma_y^2)^{-1} (y - A x0_hat), through one regularised solve.
            with torch.no_grad():
                residual = y - op.A(x0_hat)
                v = pigdm_shift(op, residual, r2, noise_var, max_iter=int(max_iter), tol=float(tol))
            # 3. Vector-Jacobian product through the denoiser.
            (shift,) = torch.autograd.grad((v * x0_hat).sum(), x_in)
        x0_hat = x0_hat.detach()
        residual_norm = torch.linalg.vector_norm(residual.flatten(1), dim=1)
        emit(callback, i=i, sigma=sigma, x=x, x0_hat=x0_hat, residual_norm=residual_norm, r2=r2)
        # 4. DDIM step plus the guided shift.
        x = ddim_step(x, x0_hat, sigma, sigma_next, eta, generator=generator) + guidance_weight * shift
        check_step_finite(x, NAME, i, sigma)
    info = {
        "nfe": len(sigma_list) - 1,
        "seconds": time.perf_counter() - start,
        "residual_norm": residual_norm,
        "eta": eta,
        "guidance_weight": guidance_weight,
        "noise_std": noise_std,
        "linear_algebra": linear_algebra(op),
    }
    return x, info
