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

Three samplers, all with the ADMM iteration above (``rho``, ``lam`` relative to :math:`L`):

* :func:`sample_diffusion_mbir_paper` (registered ``diffusion_mbir_paper``): the paper's
  Algorithm 1 as the official code runs it, VE reverse-diffusion predictor + Langevin corrector
  (2 NFE per step, 2000 steps, ``snr = 0.16``), circular :math:`D_z`, final data-consistency
  step; its docstring gives the commit read and the update order.
* :func:`sample_diffusion_mbir` (``diffusion_mbir``): the same ADMM-TV after a one-NFE
  DDIM/ancestral step with the Tweedie estimate :math:`\hat x_0 = D(x, \sigma)` to
  :math:`\sigma'`, for 50-200 steps instead of 2000.
* :func:`sample_dds3d` (``dds3d``; DDS's 3D form, Chung, Lee, Ye, ICLR 2024): ADMM-TV started
  from :math:`\hat x_0`, then DDS's step to :math:`\sigma'` towards the refined estimate with the
  noise direction of the unrefined one (:mod:`invdiff.samplers.dds`; its ``eta``).
  ``sample_diffusion_mbir(..., decomposed=True)`` still runs it, for older configs.

What the official code (``HJ-harry/DiffusionMBIR`` at 592ea29c7bc129fd9b007a88fd4dcdb4e9f617a2,
``controllable_generation_TV.py`` ``get_pc_radon_ADMM_TV_vol`` / ``_mri``,
``inverse_problem_solver_*_3d_total.py``; the 3D DDS solver ``HJ-harry/DDS`` at
509b140ee8ba76772ab7d98929270033d4306f2f, ``solver_3d.py``, ``eval_*_3d.sh``) does, and what
``diffusion_mbir`` and ``dds3d`` follow or change:

* One ADMM iteration per diffusion step with persistent ``del_z``/``udel_z``, one CG iteration
  per x-update (``n_inner=1``; DDS: ``--CG_iter 5``), soft threshold ``lamb / rho``.
  Followed: ``admm_cg`` defaults to 1 (``dds3d``: 5).
* Sparse-view CT: ``rho = 10``, ``lamb = 0.04`` (8 views, 256 x 256, images in ``[0, 1]``); DDS
  limited angle (120 one-degree views): ``lamb = 0.4``; MRI (orthonormal FFT and mask, 2x):
  ``rho = 0.01``, ``lamb = 0.005``. Their CT back-projection is scaled by :math:`\pi/(2n)`, so
  their :math:`\|A^T A\|` is about 390 whatever the number of views (estimated with our
  projector at 256 x 256), and their MRI one is 1. Here the data term is divided by
  :math:`L = \|A^H A\|_2` (estimated by :func:`operators.linalg.power_iteration`,
  ``info["op_norm"]``), so ``rho`` and ``lam`` do not change meaning with the operator's scale
  or number of views; the official CT values become ``rho = 10/390 = 0.026``,
  ``lam = 0.04/390 = 1e-4``. Pass ``op_norm=1.0`` for the paper's unnormalised data term.
* 2000 VE-SDE steps of a reverse-diffusion predictor and a Langevin corrector (2 NFE per step;
  DDS: 50 DDIM steps). ``diffusion_mbir``: one network evaluation per step, a DDIM step with
  ``eta`` (default 1, DDPM's ancestral step, the analogue of the reverse-diffusion
  predictor), so far fewer steps; no corrector.
* :math:`D_z` in the official code (both repositories) is circular (the last slice's difference
  wraps to the first). ``diffusion_mbir`` and ``dds3d`` default to ``D - 1`` differences, so the
  first and last slices are not tied (``circular=True`` for the official one).
* The official sampler ends with a full data-consistency step
  :math:`x + A^T(y - Ax) / A^T A \mathbf 1` (noiseless data); ``diffusion_mbir``'s last step is
  the ADMM iteration at ``sigma' = 0``, nothing else.
* Slices go through the network in chunks (``batchfy(x, 12)``, 20 for MRI); here
  ``slice_batch`` (default 8). ``diffusion_mbir`` and ``dds3d`` draw the noise of each step
  for the whole volume at once, so their output does not depend on ``slice_batch``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence

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
    measurement_device_dtype,
    operator_norm,
    posterior_shape,
    real_adjoint,
    ve_step,
)
from invdiff.samplers.dds import dds_coefficients
from operators.base import LinearOperator
from operators.cg import conjugate_gradient
from operators.linalg import FiniteDifference

NAME = "sample_diffusion_mbir"


def soft_threshold(v: Tensor, tau: float) -> Tensor:
    r""":math:`\mathcal S_\tau(v) = \operatorname{sign}(v) \max(|v| - \tau, 0)`, the prox of :math:`\tau\|\cdot\|_1`."""
    return torch.sign(v) * (v.abs() - tau).clamp_min(0)


def tv_z(x: Tensor) -> float:
    r""":math:`\|D_z x\|_1` per voxel: the mean absolute difference between neighbouring slices."""
    return float(FiniteDifference(0).A(x).abs().mean())


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
    dz: FiniteDifference | None = None,
    check_finite: bool = True,
) -> tuple[Tensor, Tensor, Tensor, dict]:
    r"""One ADMM iteration for :math:`\tfrac12\|Ax - y\|^2 + \lambda\|D_z x\|_1` (module docstring).

    Args:
        normal: :math:`v \mapsto A^H A v` on volumes ``(D, C, H, W)`` (already scaled by ``1/L``).
        ATy: :math:`A^H y`, ``(D, C, H, W)`` (same scaling).
        x: where CG starts, ``(D, C, H, W)``.
        z, u: the split variable and scaled dual, ``(D - 1, C, H, W)`` (``(D, C, H, W)`` circular).
        rho: the ADMM penalty.
        lam: the TV-z weight.
        cg_steps: CG iterations on the x-update; the volume is one system.
        dz: :math:`D_z`, a :class:`~operators.linalg.FiniteDifference` along axis 0; default plain.
        check_finite: CG checks its input and result (one host synchronisation); the samplers
            pass ``False`` and check their state once per step instead.

    Returns:
        ``(x, z, u, info)`` with ``info["residual"]``, the relative CG residual, and
        ``info["primal"]``, :math:`\|D_z x - z\| / \sqrt{n}` after the update, both 0-d tensors
        on ``x``'s device (reading them is a host synchronisation, left to the caller).
    """
    dz = FiniteDifference(0) if dz is None else dz
    # 1. x-update: CG on (A^H A + rho D_z^T D_z) x = A^H y + rho D_z^T (z - u), the volume as one sample.
    rhs = ATy + rho * dz.AT(z - u)
    system = lambda v: (normal(v[0]) + rho * dz.normal(v[0]))[None]  # noqa: E731
    x, cg_info = conjugate_gradient(system, rhs[None], x[None], max_iter=cg_steps, check_finite=check_finite)
    x = x[0]
    # 2. z-update: soft threshold of D_z x + u at lam / rho.
    dx = dz.A(x)
    z = soft_threshold(dx + u, lam / rho)
    # 3. Dual update.
    u = u + dx - z
    primal = (dx - z).norm() / max(dx.numel(), 1) ** 0.5
    return x, z, u, {"residual": cg_info["residual"][0], "primal": primal}


def _prepare(op, y, shape, slice_batch, rho, lam, noise_std, op_norm, sigmas, name):
    """Checks shared by the three samplers; returns ``(sigma_list, shape, device, dtype, ATy, L)``."""
    if not isinstance(op, LinearOperator):
        raise ValueError(
            f"{name}: op: DiffusionMBIR needs a LinearOperator (CG on its normal equations), got {op!r}; "
            f"use dps or reddiff for nonlinear operators"
        )
    check_measurement(y, name)
    if y.shape[0] < 2:
        raise ValueError(
            f"{name}: y: DiffusionMBIR needs a volume, slices in the batch dimension (D, ...) with D >= 2, "
            f"got {y.shape[0]} slice; use a volume task (e.g. task=ct3d or task=mri3d), or dds/dps for 2D tasks"
        )
    check_number(slice_batch, "slice_batch", name, integer=True, minimum=1)
    check_number(rho, "rho", name, positive=True)
    check_number(lam, "lam", name, minimum=0)
    check_number(noise_std, "noise_std", name, minimum=0)
    check_number(op_norm, "op_norm", name, positive=True, optional=True)
    sigma_list = check_sigmas(sigmas)
    shape = posterior_shape(op, y, shape, name)
    device, dtype = measurement_device_dtype(y)
    with torch.no_grad():
        ATy = real_adjoint(op, y, shape, name)
        # 0. Normalise the data term by L = ||A^H A||, so rho and lam keep their meaning.
        L = operator_norm(op.normal, ATy) if op_norm is None else float(op_norm)
    if not L > 0:
        raise ValueError(f"{name}: op: A^H A is zero (estimated norm {L}); nothing is measured")
    return sigma_list, shape, device, dtype, ATy, L


def _check_cg(admm_cg, name: str) -> int:
    check_number(admm_cg, "admm_cg", name, integer=True, minimum=0)
    return int(admm_cg)


def _info(start, nfe, admm, x, L, **extra) -> dict:
    return {
        "nfe": nfe,
        "seconds": time.perf_counter() - start,
        "cg_residual": float(admm["residual"]),
        "admm_primal": float(admm["primal"]),
        "tv_z": tv_z(x),
        "op_norm": L,
        **extra,
    }


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
    eta: float | None = None,
    circular: bool = False,
    decomposed: bool = False,
    op_norm: float | None = None,
    shape: Sequence[int] | None = None,
    callback: Callback | None = None,
) -> tuple[Tensor, dict]:
    r"""DiffusionMBIR, one network evaluation per step: a DDIM/ancestral step, then ADMM-TV (module docstring).

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
        admm_cg: CG iterations per x-update; default 1 (the paper).
        eta: DDIM's :math:`\eta` (default 1, the ancestral step).
        circular: circular :math:`D_z` (the official code's) instead of ``D - 1`` differences.
        decomposed: kept for configs written before :func:`sample_dds3d` existed: ``True`` runs
            :func:`sample_dds3d` (``admm_cg`` default 5, ``eta`` default 0.85).
        op_norm: :math:`L`; ``None`` estimates it (20 power iterations); ``1.0`` gives the
            paper's unnormalised data term.
        shape: the volume's shape ``(D, C, H, W)``; default that of ``op.AT(y)``.
        callback: called each step with ``i``, ``sigma``, ``x`` (the state at ``sigma``),
            ``x0_hat`` (the Tweedie estimate) and ``x0`` (the new state after ADMM).

    Returns:
        ``(x, info)``: the volume and ``info`` with ``nfe`` (one per step, whatever the chunking),
        ``seconds``, ``cg_residual`` (relative, of the last x-update), ``admm_primal`` (RMS of
        :math:`D_z x - z` at the end), ``tv_z`` (mean :math:`|D_z x|` of the output),
        ``op_norm``, ``rho``, ``lam``, ``admm_cg``, ``eta``, ``circular``, ``decomposed``,
        ``slice_batch``.
    """
    if decomposed:
        x, info = sample_dds3d(
            denoiser, op, y, sigmas, noise_std=noise_std, generator=generator, slice_batch=slice_batch,
            rho=rho, lam=lam, admm_cg=5 if admm_cg is None else admm_cg, eta=0.85 if eta is None else eta,
            circular=circular, op_norm=op_norm, shape=shape, callback=callback,
        )
        return x, {**info, "decomposed": True}
    start = time.perf_counter()
    admm_cg = _check_cg(1 if admm_cg is None else admm_cg, NAME)
    eta = 1.0 if eta is None else eta
    check_eta(eta, NAME)
    sigma_list, shape, device, dtype, ATy, L = _prepare(
        op, y, shape, slice_batch, rho, lam, noise_std, op_norm, sigmas, NAME
    )
    dz = FiniteDifference(0, circular=circular)
    x = initial_noise(sigma_list[0], shape, generator=generator, device=device, dtype=dtype)
    with torch.no_grad():
        ATy_n = ATy / L
        normal = lambda v: op.normal(v) / L  # noqa: E731
        z = torch.zeros_like(dz.A(ATy))
        u = torch.zeros_like(z)
        admm = {"residual": float("nan"), "primal": float("nan")}
        for i, (sigma, sigma_next) in enumerate(zip(sigma_list, sigma_list[1:])):
            # 1. Tweedie estimate, chunk by chunk through the 2D prior.
            x0_hat = denoise_in_chunks(denoiser, x, sigma, int(slice_batch))
            # 2. Diffusion step with the Tweedie estimate, then ADMM-TV on the new state.
            x_next = ddim_step(x, x0_hat, sigma, sigma_next, eta, generator=generator)
            x_next, z, u, admm = admm_tv_z_step(
                normal, ATy_n, x_next, z, u, rho=rho, lam=lam, cg_steps=admm_cg, dz=dz, check_finite=False
            )
            emit(callback, i=i, sigma=sigma, x=x, x0_hat=x0_hat, x0=x_next)
            x = x_next
            check_step_finite((x0_hat, x), NAME, i, sigma)
    info = _info(start, len(sigma_list) - 1, admm, x, L, rho=rho, lam=lam, admm_cg=admm_cg, eta=eta,
                 circular=circular, decomposed=False, slice_batch=int(slice_batch))
    return x, info


def sample_dds3d(
    denoiser: Denoiser,
    op: LinearOperator,
    y: Tensor,
    sigmas: Tensor,
    *,
    noise_std: float,
    generator: torch.Generator | None,
    slice_batch: int = 8,
    rho: float = 0.025,
    lam: float = 1e-3,
    admm_cg: int = 5,
    eta: float = 0.85,
    circular: bool = False,
    op_norm: float | None = None,
    shape: Sequence[int] | None = None,
    callback: Callback | None = None,
) -> tuple[Tensor, dict]:
    r"""DDS's 3D form (Chung, Lee, Ye, ICLR 2024): ADMM-TV from the Tweedie estimate, then DDS's step.

    Official code read: ``HJ-harry/DDS`` at 509b140ee8ba76772ab7d98929270033d4306f2f,
    ``solver_3d.py`` (``ADMM``: ``n_ADMM = 1``, ``CG(Acg_TV, bcg_TV, x, n_inner=n_CG)`` with
    ``--CG_iter 5``, ``shrink(_Dz(x) + udel_z, lamb / rho)``, persistent ``del_z``/``udel_z``;
    the step ``x = sqrt(at_next) x0_hat + c1 z + c2 et``), ``eval_SVCT_3d.sh`` (8 views,
    ``--rho 10 --lamb 0.04``, ``--eta 0.85``, 50 steps), ``eval_LACT_3d.sh`` (``--lamb 0.4``).
    Each step: :math:`\hat x_0 = D(x, \sigma)` chunk by chunk, one ADMM iteration (module
    docstring) started at :math:`\hat x_0` with ``admm_cg`` CG steps, then
    :math:`x' = \hat x_0' + \sigma'(\eta z + \sqrt{1 - \eta^2}\,\hat\epsilon)` with the noise
    direction :math:`\hat\epsilon = (x - \hat x_0)/\sigma` of the unrefined estimate
    (:mod:`invdiff.samplers.dds`, which documents the VP-to-VE mapping of ``c1``, ``c2``).

    Deliberate differences: the data term is divided by :math:`L = \|A^H A\|_2` (``rho``,
    ``lam`` relative to it; ``op_norm=1.0`` for the official, unnormalised one); :math:`D_z` is
    not circular by default (``circular=True`` for the official ``_Dz``); the network sees
    ``slice_batch`` slices at a time (official ``batchfy(xt, 20)``) and the noise is drawn for
    the whole volume, so the output does not depend on ``slice_batch``; the schedule is the
    caller's (``sigmas_vp(50, spacing="uniform")`` is the official grid), whose last step to
    ``sigma = 0`` returns the refined estimate as the official final step does.

    Args: as :func:`sample_diffusion_mbir`; ``eta`` is DDS's share of fresh noise, ``lam``
    defaults to the value tuned on ``ct3d``/``mri3d`` held-out volumes (configs/benchmark/mbir.yaml).

    Returns:
        ``(x, info)`` as :func:`sample_diffusion_mbir`.
    """
    name = "sample_dds3d"
    start = time.perf_counter()
    admm_cg = _check_cg(admm_cg, name)
    check_eta(eta, name)
    sigma_list, shape, device, dtype, ATy, L = _prepare(
        op, y, shape, slice_batch, rho, lam, noise_std, op_norm, sigmas, name
    )
    dz = FiniteDifference(0, circular=circular)
    x = initial_noise(sigma_list[0], shape, generator=generator, device=device, dtype=dtype)
    with torch.no_grad():
        ATy_n = ATy / L
        normal = lambda v: op.normal(v) / L  # noqa: E731
        z = torch.zeros_like(dz.A(ATy))
        u = torch.zeros_like(z)
        admm = {"residual": float("nan"), "primal": float("nan")}
        for i, (sigma, sigma_next) in enumerate(zip(sigma_list, sigma_list[1:])):
            # 1. Tweedie estimate, chunk by chunk through the 2D prior.
            x0_hat = denoise_in_chunks(denoiser, x, sigma, int(slice_batch))
            eps = (x - x0_hat) / sigma
            # 2. ADMM-TV from the Tweedie estimate.
            x0, z, u, admm = admm_tv_z_step(
                normal, ATy_n, x0_hat, z, u, rho=rho, lam=lam, cg_steps=admm_cg, dz=dz, check_finite=False
            )
            emit(callback, i=i, sigma=sigma, x=x, x0_hat=x0_hat, x0=x0)
            # 3. DDS's step towards the refined estimate.
            c1, c2 = dds_coefficients(sigma_next, eta)
            x = ve_step(x0, eps, c1, c2, generator=generator)
            check_step_finite((x0_hat, x), name, i, sigma)
    info = _info(start, len(sigma_list) - 1, admm, x, L, rho=rho, lam=lam, admm_cg=admm_cg, eta=eta,
                 circular=circular, slice_batch=int(slice_batch))
    return x, info


def _score(denoiser: Denoiser, x: Tensor, sigma: float) -> Tensor:
    r""":math:`\nabla \log p_\sigma(x) = (D(x, \sigma) - x)/\sigma^2`."""
    return (denoiser(x, sigma) - x) / sigma**2


def sample_diffusion_mbir_paper(
    denoiser: Denoiser,
    op: LinearOperator,
    y: Tensor,
    sigmas: Tensor,
    *,
    noise_std: float,
    generator: torch.Generator | None,
    snr: float = 0.16,
    slice_batch: int = 12,
    rho: float = 0.025,
    lam: float = 1e-4,
    admm_cg: int = 1,
    circular: bool = True,
    final_consistency: bool = True,
    op_norm: float | None = None,
    shape: Sequence[int] | None = None,
    callback: Callback | None = None,
) -> tuple[Tensor, dict]:
    r"""DiffusionMBIR as published (Chung, Lee, Ye, CVPR 2023, Algorithm 1): VE predictor-corrector, then ADMM-TV.

    Official code read: ``HJ-harry/DiffusionMBIR`` at 592ea29c7bc129fd9b007a88fd4dcdb4e9f617a2,
    ``controllable_generation_TV.py`` ``get_pc_radon_ADMM_TV_vol`` (CT; ``_mri`` for MRI),
    ``sampling.py`` (``ReverseDiffusionPredictor``, ``LangevinCorrector``), ``sde_lib.py``
    (``VESDE``), ``utils.batchfy``, ``inverse_problem_solver_AAPM_3d_total.py`` (``N = 2000``,
    ``snr = 0.16``, ``n_steps = 1``, ``lamb = 0.04``, ``rho = 10``, ``final_consistency=True``,
    ``sampling_eps = 1e-5``). Update order of step :math:`i`, :math:`\sigma = \sigma_i`,
    :math:`\sigma' = \sigma_{i+1}`, followed exactly:

    1. the volume is split as ``batchfy(x, slice_batch)`` does: ``x.chunk(D // slice_batch + 1)``;
    2. on each chunk in turn, the reverse-diffusion predictor
       :math:`x \leftarrow x + G^2 s(x, \sigma) + G z`, :math:`G = \sqrt{\sigma^2 - \sigma'^2}`,
       then one Langevin corrector step at the *same* :math:`\sigma`:
       :math:`\epsilon = 2 (r \|z'\| / \|s(x, \sigma)\|)^2`,
       :math:`x \leftarrow x + \epsilon s(x, \sigma) + \sqrt{2\epsilon}\, z'`, the norms per
       slice averaged over the chunk (``.mean()`` over the batch), :math:`r` = ``snr``; the score
       is :math:`s(x, \sigma) = (D(x, \sigma) - x)/\sigma^2`; random numbers drawn predictor then
       corrector, chunk after chunk;
    3. one ADMM iteration (module docstring) on the concatenated volume, ``admm_cg`` = 1 CG step
       from the current state, circular :math:`D_z`, persistent ``z``, ``u``; the new state is
       the ADMM output (the predictor's mean is not used: ``x_mean`` is overwritten by ADMM);
    4. after the last step (:math:`\sigma' = 0`, whose predictor noise :math:`G = \sigma_{min}`
       stays in the output), :math:`x \leftarrow x + A^T(y - Ax) / A^T A \mathbf 1`
       (``kaczmarz`` with ``norm_const = _AT(_A(ones))``), where :math:`A^T A\mathbf 1 > 0`.

    The official VE-SDE grid maps onto ``sigmas``: ``sigmas_loglinear(N, sigma_min, sigma_max)``
    (the prior's range, caller's units) is ``VESDE.discrete_sigmas`` reversed with 0 appended,
    the predictor's :math:`(\sigma, \sigma')` pairs exactly (for ``N = 2000``,
    ``floor(t_i (N - 1)) = N - 1 - i`` at every step). Deliberate differences: the network is
    evaluated at the grid's :math:`\sigma_i`, where the continuous-time official model sees
    :math:`\sigma(t_i) = \sigma_{min}(\sigma_{max}/\sigma_{min})^{t_i}`, ``t = linspace(1,
    1e-5, N)`` (relative difference below ``1e-4`` for their range); the data term is divided by
    :math:`L = \|A^H A\|_2` as in :func:`sample_diffusion_mbir` (official CT values ``rho = 10``,
    ``lamb = 0.04`` with :math:`L \approx 390` become ``rho = 0.025``, ``lam = 1e-4``;
    ``op_norm=1.0`` for the unnormalised term); the final step skips voxels where
    :math:`A^T A \mathbf 1 \le 0` instead of dividing by zero; the official MRI variant has no
    final step (``final_consistency=False``) and ``batchfy(x, 20)``; the prior draw and all noise
    come from ``generator``.

    Args:
        denoiser, op, y, sigmas, noise_std, generator, rho, lam, op_norm, shape: as
            :func:`sample_diffusion_mbir`; ``sigmas`` ends with 0.
        snr: the corrector's signal-to-noise ratio :math:`r`.
        slice_batch: the ``batchfy`` size (the chunks, and so the corrector's step sizes, follow it).
        admm_cg: CG iterations per x-update (official ``n_inner=1``).
        circular: circular :math:`D_z` (official).
        final_consistency: the final data-consistency step.
        callback: called each step with ``i``, ``sigma``, ``x`` (the state at ``sigma``),
            ``x0_hat`` (the predictor's Tweedie estimate) and ``x0`` (the state after ADMM).

    Returns:
        ``(x, info)``: ``nfe`` (2 per step), ``seconds``, ``cg_residual``, ``admm_primal``,
        ``tv_z``, ``op_norm``, and the settings.
    """
    name = "sample_diffusion_mbir_paper"
    start = time.perf_counter()
    admm_cg = _check_cg(admm_cg, name)
    check_number(snr, "snr", name, positive=True)
    sigma_list, shape, device, dtype, ATy, L = _prepare(
        op, y, shape, slice_batch, rho, lam, noise_std, op_norm, sigmas, name
    )
    dz = FiniteDifference(0, circular=circular)
    draw = lambda t: torch.randn(t.shape, generator=generator, device=device, dtype=dtype)  # noqa: E731
    x = initial_noise(sigma_list[0], shape, generator=generator, device=device, dtype=dtype)
    chunks = x.shape[0] // int(slice_batch) + 1
    per_slice = lambda t: t.flatten(1).norm(dim=1).mean()  # noqa: E731
    with torch.no_grad():
        ATy_n = ATy / L
        normal = lambda v: op.normal(v) / L  # noqa: E731
        z = torch.zeros_like(dz.A(ATy))
        u = torch.zeros_like(z)
        admm = {"residual": float("nan"), "primal": float("nan")}
        for i, (sigma, sigma_next) in enumerate(zip(sigma_list, sigma_list[1:])):
            G = math.sqrt(sigma**2 - sigma_next**2)
            parts, estimates = [], []
            for part in x.chunk(chunks):
                # 1. Reverse-diffusion predictor from sigma to sigma'.
                x0_hat = denoiser(part, sigma)
                estimates.append(x0_hat)
                part = part + G**2 * ((x0_hat - part) / sigma**2) + G * draw(part)
                # 2. Langevin corrector at sigma, step size from the chunk's mean norms.
                grad = _score(denoiser, part, sigma)
                noise = draw(part)
                step = (snr * per_slice(noise) / per_slice(grad)) ** 2 * 2
                part = part + step * grad + torch.sqrt(step * 2) * noise
                parts.append(part)
            x_pc = torch.cat(parts)
            # 3. One ADMM-TV iteration on the volume.
            x_next, z, u, admm = admm_tv_z_step(
                normal, ATy_n, x_pc, z, u, rho=rho, lam=lam, cg_steps=admm_cg, dz=dz, check_finite=False
            )
            emit(callback, i=i, sigma=sigma, x=x, x0_hat=torch.cat(estimates), x0=x_next)
            x = x_next
            check_step_finite((x_pc, x), name, i, sigma)
        if final_consistency:
            # 4. x + A^T (y - A x) / A^T A 1, where A^T A 1 > 0.
            norm_const = op.normal(torch.ones_like(x))
            safe = torch.where(norm_const > 0, norm_const, torch.ones_like(norm_const))
            update = real_adjoint(op, y - op.A(x), shape, name) / safe
            x = x + torch.where(norm_const > 0, update, torch.zeros_like(update))
    info = _info(start, 2 * (len(sigma_list) - 1), admm, x, L, rho=rho, lam=lam, admm_cg=admm_cg, snr=snr,
                 circular=circular, final_consistency=final_consistency, slice_batch=int(slice_batch))
    return x, info
