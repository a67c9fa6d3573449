r"""DiffusionMBIR (Chung, Lee, Ye, CVPR 2023): a 2D diffusion prior per slice, total variation along z.

A volume is a batch of slices ``(D, C, H, W)``. Each step runs the 2D prior on every slice (in
chunks of ``slice_batch`` slices, so the network's memory is bounded by the chunk) and takes a
diffusion step; then one iteration of ADMM on the volume for

.. math::
    \min_x \tfrac{1}{2L}\|A x - y\|^2 + \lambda \|D_z x\|_1,

with :math:`D_z` the forward differences between neighbouring slices (the paper's "TV-z") and
:math:`L = \|A^H A\|_2`. With the split :math:`z = D_z x` and scaled dual :math:`u`:

.. math::
    x &\leftarrow \text{CG on } (A^H A / L + \rho D_z^T D_z)\, x = A^H y / L + \rho D_z^T (z - u)
        \text{ from the current } x, \\
    z &\leftarrow \mathcal S_{\lambda/\rho}(D_z x + u), \qquad u \leftarrow u + D_z x - z,

where :math:`\mathcal S_\tau(v) = \operatorname{sign}(v)\max(|v| - \tau, 0)`. ``z`` and ``u``
persist across diffusion steps: one ADMM iteration per step, as in the paper. CG solves the
whole volume as one system (the slices are coupled); it is stopped after ``admm_cg`` iterations,
so it stays near the diffusion iterate, which is where the prior enters.

Two forms:

* ``decomposed=False`` (DiffusionMBIR, Algorithm 1): ancestral/DDIM step with the Tweedie
  estimate :math:`\hat x_0 = D(x, \sigma)` to :math:`\sigma'`, then ADMM-TV on the new, noisy
  state.
* ``decomposed=True`` (DDS's 3D form, Chung, Lee, Ye, ICLR 2024): ADMM-TV started from
  :math:`\hat x_0`, then DDS's step to :math:`\sigma'` towards the refined estimate with the noise
  direction of the unrefined one (:mod:`invdiff.samplers.dds`; its ``eta``).

What the official code (``HJ-harry/DiffusionMBIR``, ``controllable_generation_TV.py``
``get_pc_radon_ADMM_TV_vol`` / ``_mri``, ``inverse_problem_solver_*_3d_total.py``; the 3D DDS
solver ``HJ-harry/DDS`` ``solver_3d.py``, ``eval_*_3d.sh``) does, and what this follows:

* One ADMM iteration per diffusion step with persistent ``del_z``/``udel_z``, one CG iteration
  per x-update (``n_inner=1``; DDS: ``--CG_iter 5``), soft threshold ``lamb / rho``.
  Followed: ``admm_cg`` defaults to 1, and 5 when ``decomposed``.
* Sparse-view CT: ``rho = 10``, ``lamb = 0.04`` (8 views, 256 x 256, images in ``[0, 1]``); DDS
  limited angle (120 one-degree views): ``lamb = 0.4``; MRI (orthonormal FFT and mask, 2x):
  ``rho = 0.01``, ``lamb = 0.005``. Their CT back-projection is scaled by :math:`\pi/(2n)`, so
  their :math:`\|A^T A\|` is about 390 whatever the number of views (estimated with our
  projector at 256 x 256), and their MRI one is 1. Here the data term is divided by
  :math:`L = \|A^H A\|_2` (estimated by power iteration, ``info["op_norm"]``), so ``rho`` and
  ``lam`` do not change meaning with the operator's scale or number of views; the official CT
  values become ``rho = 10/390 = 0.026``, ``lam = 0.04/390 = 1e-4``. Defaults here: ``rho = 0.025``,
  ``lam = 1e-4`` (threshold ``lam / rho = 0.004``, in image units as the official one). Pass
  ``op_norm=1.0`` for the paper's unnormalised data term.
* 2000 VE-SDE steps of a reverse-diffusion predictor and a Langevin corrector (2 NFE per step;
  DDS: 50 DDIM steps). Here one network evaluation per step: a DDIM step with ``eta``
  (default 1, DDPM's ancestral step, the analogue of the reverse-diffusion predictor), so
  far fewer steps; no corrector.
* :math:`D_z` in the official code is circular (the last slice's difference wraps to the
  first). Here it is not: ``D - 1`` differences, so the first and last slices are not tied.
* The official sampler ends with a full data-consistency step
  :math:`x + A^T(y - Ax) / A^T A \mathbf 1` (noiseless data); here the last step is the ADMM
  iteration on :math:`\hat x_0` (``sigma' = 0``), nothing else.
* Slices go through the network in chunks (``batchfy(x, 12)``, 20 for MRI); here
  ``slice_batch`` (default 8). The noise of each step is drawn for the whole volume at once, so
  the output does not depend on ``slice_batch``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from invdiff.priors.base import Denoiser
from invdiff.samplers.common import (
    Callback,
    check_eta,
    check_finite,
    check_measurement,
    check_sigmas,
    ddim_step,
    emit,
    initial_noise,
    measurement_device_dtype,
    operator_norm,
    posterior_shape,
    real_adjoint,
    ve_step,
)
from invdiff.samplers.dds import dds_coefficients
from operators.base import LinearOperator
from operators.cg import conjugate_gradient

NAME = "sample_diffusion_mbir"


def diff_z(x: Tensor) -> Tensor:
    r""":math:`D_z x`: differences between neighbouring slices, ``(D, ...) -> (D - 1, ...)``."""
    return x[1:] - x[:-1]


def diff_z_adjoint(v: Tensor) -> Tensor:
    r""":math:`D_z^T v`, ``(D - 1, ...) -> (D, ...)``: :math:`(D_z^T v)_k = v_{k-1} - v_k`, zero outside."""
    zero = torch.zeros_like(v[:1])
    return torch.cat([zero, v]) - torch.cat([v, zero])


def soft_threshold(v: Tensor, tau: float) -> Tensor:
    r""":math:`\mathcal S_\tau(v) = \operatorname{sign}(v) \max(|v| - \tau, 0)`, the prox of :math:`\tau\|\cdot\|_1`."""
    return torch.sign(v) * (v.abs() - tau).clamp_min(0)


def tv_z(x: Tensor) -> float:
    r""":math:`\|D_z x\|_1` per voxel: the mean absolute difference between neighbouring slices."""
    return float(diff_z(x).abs().mean())


def denoise_in_chunks(denoiser: Denoiser, x: Tensor, sigma: float, slice_batch: int) -> Tensor:
    r""":math:`D(x, \sigma)` over ``slice_batch`` slices at a time, ``(D, C, H, W)``."""
    return torch.cat([denoiser(chunk, sigma) for chunk in x.split(slice_batch)])


def admm_tv_z_step(
    normal: Callable[[Tensor], Tensor],
    ATy: Tensor,
    x: Tensor,
    z: Tensor,
    u: Tensor,
    *,
    rho: float,
    lam: float,
    cg_steps: int,
) -> tuple[Tensor, Tensor, Tensor, dict]:
    r"""One ADMM iteration for :math:`\tfrac12\|Ax - y\|^2 + \lambda\|D_z x\|_1` (module docstring).

    Args:
        normal: :math:`v \mapsto A^H A v` on volumes ``(D, C, H, W)`` (already scaled by ``1/L``).
        ATy: :math:`A^H y`, ``(D, C, H, W)`` (same scaling).
        x: where CG starts, ``(D, C, H, W)``.
        z, u: the split variable and scaled dual, ``(D - 1, C, H, W)``.
        rho: the ADMM penalty.
        lam: the TV-z weight.
        cg_steps: CG iterations on the x-update; the volume is one system.

    Returns:
        ``(x, z, u, info)`` with ``info["residual"]``, the relative CG residual (float), and
        ``info["primal"]``, :math:`\|D_z x - z\| / \sqrt{n}` after the update.
    """
    # 1. x-update: CG on (A^H A + rho D_z^T D_z) x = A^H y + rho D_z^T (z - u), the volume as one sample.
    rhs = ATy + rho * diff_z_adjoint(z - u)
    system = lambda v: (normal(v[0]) + rho * diff_z_adjoint(diff_z(v[0])))[None]  # noqa: E731
    x, cg_info = conjugate_gradient(system, rhs[None], x[None], max_iter=cg_steps)
    x = x[0]
    # 2. z-update: soft threshold of D_z x + u at lam / rho.
    dx = diff_z(x)
    z = soft_threshold(dx + u, lam / rho)
    # 3. Dual update.
    u = u + dx - z
    primal = float((dx - z).norm() / max(dx.numel(), 1) ** 0.5)
    return x, z, u, {"residual": float(cg_info["residual"][0]), "primal": primal}


def sample_diffusion_mbir(
    denoiser: Denoiser,
    op: LinearOperator,
    y: Tensor,
    sigmas: Tensor,
    *,
    noise_std: float,
    generator: torch.Generator | None,
    slice_batch: int = 8,
    rho: float = 0.025,
    lam: float = 1e-4,
    admm_cg: int | None = None,
    decomposed: bool = False,
    eta: float | None = None,
    op_norm: float | None = None,
    shape: Sequence[int] | None = None,
    callback: Callback | None = None,
) -> tuple[Tensor, dict]:
    r"""DiffusionMBIR: a 2D prior slice by slice, ADMM with TV along z on the volume (module docstring).

    Args:
        denoiser: the 2D prior, :math:`D(x, \sigma)` on ``(B, C, H, W)`` slices.
        op: a :class:`~operators.base.LinearOperator` applied slice by slice.
        y: the measurements of the volume's slices, ``(D, ...)``, ``D >= 2``.
        sigmas: ``(n + 1,)`` descending noise levels.
        noise_std: the measurement noise std (recorded; the data term is unweighted, as in the
            paper, and early-stopped CG keeps it from fitting the noise).
        generator: the source of all randomness.
        slice_batch: slices per network call.
        rho: the ADMM penalty, relative to :math:`L = \|A^H A\|_2`.
        lam: the TV-z weight, relative to :math:`L`; ``lam / rho`` is the threshold in image units.
        admm_cg: CG iterations per x-update; default 1 (the paper), 5 when ``decomposed`` (DDS).
        decomposed: DDS's form (ADMM from the Tweedie estimate, then DDS's step).
        eta: the step's noise: DDIM's :math:`\eta` (default 1, ancestral), or DDS's share of
            fresh noise when ``decomposed`` (default 0.85).
        op_norm: :math:`L`; ``None`` estimates it (20 power iterations); ``1.0`` gives the
            paper's unnormalised data term.
        shape: the volume's shape ``(D, C, H, W)``; default ``(D, *denoiser.shape)``.
        callback: called each step with ``i``, ``sigma``, ``x`` (the state at ``sigma``),
            ``x0_hat`` (the Tweedie estimate) and ``x0`` (after ADMM: the new state, or the
            refined estimate when ``decomposed``).

    Returns:
        ``(x, info)``: the volume and ``info`` with ``nfe`` (one per step, whatever the chunking),
        ``seconds``, ``cg_residual`` (relative, of the last x-update), ``admm_primal`` (RMS of
        :math:`D_z x - z` at the end), ``tv_z`` (mean :math:`|D_z x|` of the output),
        ``op_norm``, ``rho``, ``lam``, ``admm_cg``, ``eta``, ``decomposed``, ``slice_batch``.
    """
    start = time.perf_counter()
    if not isinstance(op, LinearOperator):
        raise ValueError(
            f"{NAME}: op: DiffusionMBIR needs a LinearOperator (CG on its normal equations), got {op!r}; "
            f"use dps or reddiff for nonlinear operators"
        )
    check_measurement(y, NAME)
    if y.shape[0] < 2:
        raise ValueError(
            f"{NAME}: y: DiffusionMBIR needs a volume, slices in the batch dimension (D, ...) with D >= 2, "
            f"got {y.shape[0]} slice; use a volume task (e.g. task=ct3d or task=mri3d), or dds/dps for 2D tasks"
        )
    if isinstance(slice_batch, bool) or int(slice_batch) != slice_batch or slice_batch < 1:
        raise ValueError(f"{NAME}: slice_batch: expected a positive integer (slices per network call), got {slice_batch!r}")
    admm_cg = (5 if decomposed else 1) if admm_cg is None else admm_cg
    if isinstance(admm_cg, bool) or int(admm_cg) != admm_cg or admm_cg < 0:
        raise ValueError(f"{NAME}: admm_cg: expected a non-negative integer, got {admm_cg!r}")
    eta = (0.85 if decomposed else 1.0) if eta is None else eta
    check_eta(eta, NAME)
    if not rho > 0 or not lam >= 0:
        raise ValueError(f"{NAME}: rho, lam: expected rho > 0 and lam >= 0, got {rho}, {lam}")
    if not noise_std >= 0:
        raise ValueError(f"{NAME}: noise_std: expected >= 0, got {noise_std}")
    if op_norm is not None and not op_norm > 0:
        raise ValueError(f"{NAME}: op_norm: expected > 0 or None, got {op_norm}")
    sigma_list = check_sigmas(sigmas)
    shape = posterior_shape(op, y, shape, NAME)
    device, dtype = measurement_device_dtype(y)
    x = initial_noise(sigma_list[0], shape, generator=generator, device=device, dtype=dtype)
    with torch.no_grad():
        ATy = real_adjoint(op, y, shape, NAME)
        # 0. Normalise the data term by L = ||A^H A||, so rho and lam keep their meaning.
        L = operator_norm(op.normal, ATy) if op_norm is None else float(op_norm)
        if not L > 0:
            raise ValueError(f"{NAME}: op: A^H A is zero (estimated norm {L}); nothing is measured")
        ATy_n = ATy / L
        normal = lambda v: op.normal(v) / L  # noqa: E731
        z = torch.zeros_like(ATy[1:])
        u = torch.zeros_like(z)
        admm = {"residual": float("nan"), "primal": float("nan")}
        for i, (sigma, sigma_next) in enumerate(zip(sigma_list, sigma_list[1:])):
            # 1. Tweedie estimate, chunk by chunk through the 2D prior.
            x0_hat = denoise_in_chunks(denoiser, x, sigma, int(slice_batch))
            if decomposed:
                # 2. ADMM-TV from the Tweedie estimate, then DDS's step towards the refined one.
                eps = (x - x0_hat) / sigma
                x0, z, u, admm = admm_tv_z_step(normal, ATy_n, x0_hat, z, u, rho=rho, lam=lam, cg_steps=admm_cg)
                emit(callback, i=i, sigma=sigma, x=x, x0_hat=x0_hat, x0=x0)
                c1, c2 = dds_coefficients(sigma_next, eta)
                x = ve_step(x0, eps, c1, c2, generator=generator)
            else:
                # 2. Diffusion step with the Tweedie estimate, then ADMM-TV on the new state.
                x_next = ddim_step(x, x0_hat, sigma, sigma_next, eta, generator=generator)
                x_next, z, u, admm = admm_tv_z_step(normal, ATy_n, x_next, z, u, rho=rho, lam=lam, cg_steps=admm_cg)
                emit(callback, i=i, sigma=sigma, x=x, x0_hat=x0_hat, x0=x_next)
                x = x_next
            check_finite(x, NAME, i, sigma)
    info = {
        "nfe": len(sigma_list) - 1,
        "seconds": time.perf_counter() - start,
        "cg_residual": admm["residual"],
        "admm_primal": admm["primal"],
        "tv_z": tv_z(x),
        "op_norm": L,
        "rho": rho,
        "lam": lam,
        "admm_cg": admm_cg,
        "eta": eta,
        "decomposed": decomposed,
        "slice_batch": int(slice_batch),
    }
    return x, info
