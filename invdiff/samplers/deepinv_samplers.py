r"""deepinv's own posterior samplers (``deepinv.sampling.DPS`` and ``deepinv.sampling.DiffPIR``,
deepinv 0.5.0) run with this project's priors and operators, as a cross-check of our samplers.

Conventions, read from deepinv's source (``deepinv/sampling/diffusion.py``,
``diffusion_sde.py``, ``noisy_datafidelity.py``):

* A deepinv denoiser takes images "in :math:`[0, 1]`" with Gaussian noise of std ``sigma`` in
  the same units and returns the clean estimate; both samplers carry their state in
  :math:`[-1, 1]`, map it to :math:`[0, 1]` with the noise level halved before each call,
  and compare ``physics.A`` of the :math:`[0, 1]` estimate with ``y``. DiffPIR clamps the
  denoised estimate to :math:`[-1, 1]` in its state (:math:`[0, 1]` for the denoiser);
  DPS clips it to :math:`[-1, 1]` in the denoiser's units (:math:`[lo - s, hi]` in ours
  below, :math:`[-3, 1]` by default), in its data term and in the score, which reuses it.
* Our denoiser is variance-exploding like deepinv's, :math:`x = x_0 + \sigma n`, in the
  prior's own representation. :class:`DeepinvDenoiser` maps a ``data_range`` ``(lo, hi)``
  of that representation onto :math:`[0, 1]`:
  :math:`x = lo + s\,x_{01}`, :math:`\sigma = s\,\sigma_{01}`, :math:`s = hi - lo`. The
  measurement follows: :math:`y_{01} = (y - lo\,A\mathbf 1) / s = A x_{01} + n / s`, so the
  operator stays linear and the noise std is ``noise_std / s``. The default
  ``data_range = (-1, 1)`` makes deepinv's :math:`[-1, 1]` state *equal* to our
  representation (no rescaling at all): right for the complex MRI prior (real and imaginary
  parts in :math:`[-1, 1]`) and harmless for real priors on :math:`[0, 1]` (CT), where
  ``(0, 1)`` would add DiffPIR's clamp at 0.
* deepinv casts the denoiser's input to float32; the adapter casts it to the measurement's
  precision (the GMM test priors work in float64).

Randomness: DPS draws only from the ``rng`` of its solver, which is given our ``generator``
(no global state touched). DiffPIR draws with ``torch.randn_like`` from the global generator
(and its own ``seed`` argument calls ``torch.manual_seed``); it runs inside
``torch.random.fork_rng``, with the forked CPU (and, for CUDA tensors, that device's)
generator seeded from a number drawn from ``generator``: runs are reproducible from
``generator`` and the caller's global RNG state is left as it was. With ``generator=None``
both draw from the global generator.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from invdiff.priors.base import Denoiser
from invdiff.samplers.common import (
    Callback,
    check_measurement,
    check_number,
    check_sigmas,
    emit,
    measurement_device_dtype,
    posterior_shape,
    real_adjoint,
)
from operators.base import LinearOperator, Operator

VP_BETA_MIN, VP_BETA_MAX = 0.1, 20.0
"""deepinv's ``VariancePreservingDiffusion`` defaults, the continuous form of DDPM's linear betas."""


class DeepinvDenoiser(nn.Module):
    r"""Our denoiser as a deepinv denoiser: ``forward(x01, sigma01)`` on images in ``[0, 1]``.

    :math:`D_{01}(x_{01}, \sigma_{01}) = (D(lo + s\,x_{01}, s\,\sigma_{01}) - lo) / s` with
    ``(lo, hi) = data_range`` and ``s = hi - lo``. Each call is one network evaluation: it is
    counted in ``calls``, reported to ``callback`` as step ``i`` (with ``sigma``, the state
    ``x`` and ``x0_hat`` in our units), and a non-finite input or output raises
    ``FloatingPointError`` naming the sampler, the step and sigma.

    Args:
        denoiser: the prior, :math:`D(x, \sigma)`.
        data_range: ``(lo, hi)`` of the prior's representation mapped onto ``[0, 1]``.
        dtype: the precision the prior is called in.
        sampler: the sampler's name, for error messages.
        callback: called after every evaluation.
    """

    def __init__(
        self,
        denoiser: Denoiser,
        data_range: tuple[float, float],
        dtype: torch.dtype,
        sampler: str,
        callback: Callback | None = None,
    ):
        super().__init__()
        self.denoiser = denoiser
        self.lo, self.scale = float(data_range[0]), float(data_range[1] - data_range[0])
        self.dtype = dtype
        self.sampler = sampler
        self.callback = callback
        self.calls = 0

    def forward(self, x: Tensor, sigma: Tensor | float, *args, **kwargs) -> Tensor:
        i = self.calls
        self.calls += 1
        sigma = torch.as_tensor(sigma, device=x.device).to(self.dtype) * self.scale
        x = self.lo + self.scale * x.to(self.dtype)
        x0_hat = self.denoiser(x, sigma)
        # One host synchronisation per call; sigma is read back only for an error or a callback.
        finite = bool(torch.isfinite(x).all() & torch.isfinite(x0_hat).all())
        if not finite or self.callback is not None:
            sigma_value = float(sigma.reshape(-1)[0])
        if not finite:
            raise FloatingPointError(
                f"{self.sampler}: non-finite values at step {i} (sigma={sigma_value:.6g}); "
                f"check the denoiser at this noise level and the step size"
            )
        if self.callback is not None:
            emit(self.callback, i=i, sigma=sigma_value, x=x.detach(), x0_hat=x0_hat.detach())
        return (x0_hat - self.lo) / self.scale


def _check_data_range(data_range: Sequence[float], sampler: str) -> tuple[float, float]:
    values = tuple(float(v) for v in data_range)
    if len(values) != 2 or not all(math.isfinite(v) for v in values) or not values[1] > values[0]:
        raise ValueError(f"{sampler}: data_range: expected finite (lo, hi) with lo < hi, got {data_range!r}")
    return values


def _to_unit_range(op: Operator, y: Tensor, shape: Sequence[int], data_range: tuple[float, float]) -> Tensor:
    r""":math:`y_{01} = (y - lo\,A\mathbf 1) / s`: the measurement of :math:`x_{01} = (x - lo) / s`."""
    lo, hi = data_range
    ones = torch.ones(tuple(shape), device=y.device, dtype=y.real.dtype if y.is_complex() else y.dtype)
    offset = op.A(lo * ones) if lo != 0 else 0
    return (y - offset) / (hi - lo)


def vp_time(sigmas: Sequence[float], beta_min: float = VP_BETA_MIN, beta_max: float = VP_BETA_MAX) -> Tensor:
    r"""The times :math:`t` of deepinv's VP SDE at which its noise level is ``sigmas``.

    The SDE has :math:`\sigma(t)^2 = e^{B(t)} - 1` with
    :math:`B(t) = \beta_{min} t + \tfrac12 (\beta_{max} - \beta_{min}) t^2`, so
    :math:`t = \big(-\beta_{min} + \sqrt{\beta_{min}^2 + 2 \Delta\beta \log(1 + \sigma^2)}\big) / \Delta\beta`
    with :math:`\Delta\beta = \beta_{max} - \beta_{min}`.
    Noise levels above the SDE's :math:`\sigma(1) \approx 152` give :math:`t > 1`, where the
    formulas extend smoothly.

    Args:
        sigmas: ``(n + 1,)`` noise levels in the state's units.

    Returns:
        ``(n + 1,)`` float64 times.
    """
    s = torch.as_tensor(sigmas, dtype=torch.float64)
    log_var = torch.log1p(s.square())
    slope = beta_max - beta_min
    return (-beta_min + torch.sqrt(beta_min**2 + 2 * slope * log_var)) / slope


def sample_deepinv_dps(
    denoiser: Denoiser,
    op: Operator,
    y: Tensor,
    sigmas: Tensor,
    *,
    noise_std: float,
    generator: torch.Generator | None,
    weight: float = 3000.0,
    guidance: str = "norm",
    data_range: Sequence[float] = (-1.0, 1.0),
    shape: Sequence[int] | None = None,
    callback: Callback | None = None,
) -> tuple[Tensor, dict]:
    r"""deepinv's ``DPS`` (``schedule="vp"``, ``solver="ddpm"``) with our prior and operator.

    Our ``sigmas`` are used as they are: deepinv's VP SDE is solved at the times
    :func:`vp_time` where its noise level equals them (in deepinv's :math:`[-1, 1]` state, which
    is our representation for the default ``data_range``), passed as ``timesteps``; a schedule
    ending with 0 ends on the denoised estimate, with no extra evaluation. One network
    evaluation (with its gradient) per step.

    Step size. deepinv's ``"norm"`` guidance adds
    :math:`-\tfrac12 w \nabla_{x_{01}} \|A \hat x_{01} - y_{01}\|` (divided by the VP scale) to
    the *score*, which its DDPM step multiplies by :math:`s_t s_{t'} (\sigma_t^2 - \sigma_{t'}^2)`.
    In our units (default ``data_range``) the step moves :math:`x` by
    :math:`-\tfrac12 w (\sigma^2 - \sigma'^2) \nabla_x \|A \hat x_0 - y\|`, which is the step of
    :func:`~invdiff.samplers.dps.sample_dps` with
    :math:`\zeta = \tfrac12 w (\sigma^2 - \sigma'^2) / \sqrt{(1+\sigma^2)(1+\sigma'^2)}`, about
    :math:`\tfrac12 w \beta_t` at 1000 steps (:math:`\beta_t` from 0.02 at the start to 1e-4 at
    the end), where the official code keeps :math:`\zeta` constant. So ``weight`` is not
    ``zeta``: the guidance fades along the schedule, ``weight`` is in the hundreds or thousands
    (deepinv's note says so), and its best value changes with the number of steps and with the
    operator's gain. ``guidance="annealed"`` uses
    :math:`w\,\|A\hat x_0 - y\|^2 / (2(\sigma_y^2 + \sigma_t^2))` instead, with :math:`\sigma_y`
    from the physics' noise model, which is given ``GaussianNoise(noise_std / (hi - lo))`` for
    that (the physics is never applied with noise).

    Default ``weight`` from a sweep on ``invdiff.problems.mri(image="mri_brain")`` with the
    ``mri_brain_64`` prior, ``sigmas_vp(steps)``, seed 0 (seeds 1, 2 in brackets), PSNR (dB) /
    SSIM of the magnitude:

    ==========  ============  ==========================  ==========  ============
    weight      200 steps     1000 steps                  annealed    1000 steps
    ==========  ============  ==========================  ==========  ============
    50          19.43 / .568                              0.3         15.27 / .276
    200         21.63 / .604                              1           23.45 / .779
    500                       23.61 / .782                3           27.28 / .849
    1000        25.05 / .879  25.42 / .865                10          12.34 / .393
    2000                      27.43 / .905
    **3000**    20.20 / .772  28.65 / .919
    4000                      29.49 / .925 (28.72, 29.31)
    8000                      23.92 / .805
    10000       14.76 / .335
    ==========  ============  ==========================  ==========  ============

    The guidance is sharp: too weak and the sample ignores the data, too strong and it breaks
    up (8000 at 1000 steps, 3000 at 200 steps); 3000 keeps a margin below the break. It does not
    carry over between images: on ``benchmark=mri``'s second volume ``"norm"`` at 1000 to 3000
    broke up at 8x (15.7 to 17.8 dB, L1-wavelet 22.6), and ``"annealed"`` with weight 5 was the
    most stable of both forms across its volumes (BENCHMARKS.md, "Batch benchmarks"). On the
    same slice: zero-filled 17.53 / .401, CG-SENSE 23.11 / .545,
    :func:`~invdiff.samplers.dps.sample_dps` (``zeta = 1``, 1000 steps) 29.02 / .919 in 98 s;
    deepinv's DPS takes 91 to 106 s for 1000 steps on one CPU thread of a quiet machine (220 to
    380 s on a busy one). On ``invdiff.problems.ct(image="ct")`` (30 views, ``ct_64`` prior, 1000
    steps) the weight must shrink with the operator's gain (:math:`\|A\| \approx 43` there, 1
    for MRI): 3000 gives 6.76 / .136, 100 gives 26.92 / .891 (FBP 26.17 / .697; DDS, 100 steps,
    28.97 / .848; ``sample_dps`` 9.44 / .030 with ``zeta = 1``, 26.78 / .804 with ``zeta = 0.03``).

    Args:
        denoiser: the prior, :math:`D(x, \sigma)`; must be differentiable in ``x``.
        op: the forward model, linear or not (wrapped by :func:`operators.interop.to_deepinv`).
        y: the measurements, ``(B, ...)``.
        sigmas: ``(n + 1,)`` descending noise levels, e.g. ``sigmas_vp(1000)``.
        noise_std: the measurement noise std in our units; only ``guidance="annealed"`` uses it.
        generator: the solver's ``rng``: the initial noise and every ancestral draw.
        weight: deepinv's ``weight`` :math:`w` of the guidance.
        guidance: ``"norm"`` (the DPS paper's) or ``"annealed"``.
        data_range: ``(lo, hi)`` of the prior's representation that maps to deepinv's ``[0, 1]``.
        shape: the shape of ``x``, ``(B, ...)``; default ``(B, *denoiser.shape)``, else
            ``op.AT(y).shape`` for linear operators.
        callback: called every step with ``i``, ``sigma``, ``x`` and ``x0_hat`` (our units).

    Returns:
        ``(x, info)``: samples of the shape above, in ``y``'s real precision, and ``info`` with
        ``nfe``, ``seconds``, ``weight``, ``guidance`` and ``noise_std``.
    """
    import deepinv

    from operators.interop import to_deepinv

    name = "sample_deepinv_dps"
    start = time.perf_counter()
    check_measurement(y, name)
    sigma_list = check_sigmas(sigmas)
    if guidance not in ("norm", "annealed"):
        raise ValueError(f"{name}: guidance: expected 'norm' or 'annealed', got {guidance!r}")
    check_number(weight, "weight", name, minimum=0)
    check_number(noise_std, "noise_std", name, minimum=0)
    data_range = _check_data_range(data_range, name)
    shape = posterior_shape(op, y, shape, name)
    device, dtype = measurement_device_dtype(y)
    model = DeepinvDenoiser(denoiser, data_range, dtype, name, callback)
    sampler = deepinv.sampling.DPS(
        model, schedule="vp", solver="ddpm", num_steps=len(sigma_list), weight=weight, guidance=guidance,
        device=device, dtype=torch.float64, rng=generator,
    )
    # 1. Our schedule as the VP SDE's times, in deepinv's [-1, 1] state (2 / s times ours).
    scale = data_range[1] - data_range[0]
    timesteps = vp_time([2.0 * s / scale for s in sigma_list]).to(device)
    # 2. The measurement of the [0, 1] image, and deepinv's sampler on it.
    y01 = _to_unit_range(op, y, shape, data_range)
    physics = to_deepinv(op, noise_model=deepinv.physics.GaussianNoise(sigma=noise_std / scale))
    x01 = sampler(y01, physics, x_init=tuple(shape), timesteps=timesteps)
    x = (data_range[0] + scale * x01).to(dtype)
    info = {
        "nfe": model.calls,
        "seconds": time.perf_counter() - start,
        "weight": weight,
        "guidance": guidance,
        "noise_std": noise_std,
    }
    return x, info


def sample_deepinv_diffpir(
    denoiser: Denoiser,
    op: LinearOperator,
    y: Tensor,
    sigmas: Tensor,
    *,
    noise_std: float,
    generator: torch.Generator | None,
    lambda_: float = 1.0,
    zeta: float = 1.0,
    data_range: Sequence[float] = (-1.0, 1.0),
    shape: Sequence[int] | None = None,
    callback: Callback | None = None,
) -> tuple[Tensor, dict]:
    r"""deepinv's ``DiffPIR`` (Zhu et al., CVPRW 2023) with our prior and operator.

    DiffPIR runs its own schedule and ignores the values of ``sigmas``: ``max_iter`` of DDPM's
    1000 linear-:math:`\beta` levels (:math:`\beta` from 1e-4 to 0.02), spaced quadratically in
    the index, with ``max_iter = len(sigmas) - 1``. Each iteration evaluates the network once
    (``nfe = max_iter``); the data step is the prox of :math:`\tfrac12\|A x - y\|^2`
    (``deepinv.optim.L2()``, conjugate gradient in ``physics.prox_l2``) with
    :math:`\rho_t = \lambda \sigma_y^2 / \bar\sigma_t^2`, then a DDIM-like step with noise
    fraction :math:`\zeta`. The last evaluation's estimate is discarded by deepinv, which returns
    the state at its smallest level (0.01 in its :math:`[-1, 1]` units). Linear operators only.

    ``lambda_`` and ``zeta`` from a sweep on ``invdiff.problems.mri(image="mri_brain")`` with the
    ``mri_brain_64`` prior, 100 steps, seed 0 (seeds 1 and 2 in brackets), PSNR (dB) / SSIM of
    the magnitude:

    ========  ===========================  ===========================  ============
    lambda_   zeta 0.3                     zeta 1                       other zeta
    ========  ===========================  ===========================  ============
    0.3                                    29.42 / .661
    **1**     27.32 / .634                 29.42 / .675 (29.63, 29.65)  0.5: 27.68 / .643
    3                                      28.96 / .683                 0.7: 27.68 / .658
    7         26.49 / .637 (27.16, 26.63)  28.42 / .685 (28.65, 28.64)  0.1: 26.04 / .625
    20                                     27.48 / .682
    25        25.58 / .629
    ========  ===========================  ===========================  ============

    (deepinv's defaults are ``lambda_ = 7``, ``zeta = 0.1``.) On the same slice: zero-filled
    17.53 / .401, CG-SENSE 23.11 / .545, :func:`~invdiff.samplers.dds.sample_dds` (its config:
    ``cg_steps`` 5, ``eta`` 0.85) 29.21 / .736 at 100 steps and 27.30 / .699 at 50. About 6 s
    for 100 steps on one CPU thread (DDS: 5.4 s). On ``invdiff.problems.ct(image="ct")`` (30
    views, ``ct_64`` prior, same defaults): 29.49 / .831 in 18 s (FBP 26.17 / .697, DDS at 100
    steps 28.97 / .848).

    Args:
        denoiser: the prior, :math:`D(x, \sigma)`.
        op: a linear forward model (wrapped by :func:`operators.interop.to_deepinv`).
        y: the measurements, ``(B, ...)``.
        sigmas: ``(n + 1,)`` noise levels; only ``n`` is used (see above).
        noise_std: the measurement noise std :math:`\sigma_y` in our units (DiffPIR's ``sigma``
            is ``noise_std / (hi - lo)``).
        generator: seeds the global RNG that DiffPIR draws from, inside ``fork_rng``.
        lambda_: DiffPIR's :math:`\lambda`.
        zeta: DiffPIR's :math:`\zeta \in [0, 1]`, the fraction of fresh noise in each step.
        data_range: ``(lo, hi)`` of the prior's representation that maps to deepinv's ``[0, 1]``.
        shape: the shape of ``x``, ``(B, ...)``; default ``(B, *denoiser.shape)``, else
            ``op.AT(y).shape``.
        callback: called every evaluation with ``i``, ``sigma``, ``x`` and ``x0_hat`` (our units;
            DiffPIR's own noise levels).

    Returns:
        ``(x, info)``: samples of the shape above and ``info`` with ``nfe``, ``seconds``,
        ``lambda_``, ``zeta``, ``noise_std`` and ``seed`` (drawn from ``generator``, or ``None``).
    """
    import deepinv

    from operators.interop import to_deepinv

    name = "sample_deepinv_diffpir"
    start = time.perf_counter()
    check_measurement(y, name)
    steps = len(check_sigmas(sigmas)) - 1
    if not isinstance(op, LinearOperator):
        raise ValueError(f"{name}: op: expected a LinearOperator (DiffPIR's data step is a prox), got {op!r}")
    if not 0 <= zeta <= 1:
        raise ValueError(f"{name}: zeta: expected 0 <= zeta <= 1, got {zeta}")
    check_number(lambda_, "lambda_", name, positive=True)
    if not 0 < noise_std < math.inf:
        raise ValueError(
            f"{name}: noise_std: expected finite > 0 (DiffPIR's rho_t grows with it), got {noise_std}"
        )
    data_range = _check_data_range(data_range, name)
    shape = posterior_shape(op, y, shape, name)
    real_adjoint(op, y, shape, name)  # DiffPIR starts from 2 A^H y - 1: it must be a real x
    device, dtype = measurement_device_dtype(y)
    scale = data_range[1] - data_range[0]
    model = DeepinvDenoiser(denoiser, data_range, dtype, name, callback)
    sampler = deepinv.sampling.DiffPIR(
        model, deepinv.optim.L2(), sigma=noise_std / scale, max_iter=steps, zeta=zeta, lambda_=lambda_,
        device=device,
    )
    y01 = _to_unit_range(op, y, shape, data_range)
    physics = to_deepinv(op)
    seed = None
    if generator is None:
        x01 = sampler(y01, physics)
    else:
        # 1. A seed from our generator for the global generator DiffPIR draws from, in a fork.
        seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device))
        cuda = []
        if device.type == "cuda":
            cuda = [device.index if device.index is not None else torch.cuda.current_device()]
        with torch.random.fork_rng(devices=cuda):
            torch.random.default_generator.manual_seed(seed)
            for index in cuda:
                torch.cuda.default_generators[index].manual_seed(seed)
            x01 = sampler(y01, physics)
    # 2. Back to our units.
    x = (data_range[0] + scale * x01).to(dtype)
    info = {
        "nfe": model.calls,
        "seconds": time.perf_counter() - start,
        "lambda_": lambda_,
        "zeta": zeta,
        "noise_std": noise_std,
        "seed": seed,
    }
    return x, info
