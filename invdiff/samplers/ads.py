r"""Active diffusion subsampling (ADS; Nolan, Stevens, van Sloun et al., 2024).

ADS chooses the measurements during reverse diffusion. ``N`` particles run a guided diffusion
sampler on the measurements acquired so far; at the steps of a selection schedule the particles'
Tweedie estimates :math:`\hat x_0^{(i)}` are mapped through the full forward operator, and the
unit (an MRI phase-encode line, a CT view, an inpainting pixel or block;
:mod:`operators.units`) on whose predicted measurements the particles disagree most is acquired
next. The rule is maximum entropy of the predicted measurement; under a Gaussian approximation
the entropy of unit :math:`u` grows with the particles' variance

.. math::
    s_u = \sum_{k \in u} \frac1N \sum_i \big|\mathcal A_k \hat x_0^{(i)} - \overline{\mathcal A_k \hat x_0}\big|^2,

``score="variance"``, our default. ``score="entropy"`` is the official code's particle form,

.. math::
    H_u = \sum_i \log \sum_j \exp\Big(\frac{\|\mathcal A_u \hat x_0^{(i)} - \mathcal A_u \hat x_0^{(j)}\|^2}{2\sigma_H^2}\Big),

which for large :math:`\sigma_H` ranks the units as :math:`s_u` does (to first order
:math:`H_u = N\log N + N s_u / \sigma_H^2`). Acquiring a unit reads its values through
``acquire`` (default: from ``y``, a fully sampled reference, i.e. retrospectively; a scanner
stands behind the callback in a prospective run). Between acquisitions the particles follow
DPS (``guidance="dps"``, the paper's) or DDS (``guidance="dds"``, ours) on the acquired units.
The reconstruction is the particles' mean, made consistent with the acquired data
(``hard_consistency``).

What the official code (``active-diffusion-subsampling/ads`` at ``64f2889``: ``ActiveSampler.py``,
``ddim.py`` ``active_sampling``, ``guidance/pixel_guidance.py``,
``configs/inference/fastmri_lines.yaml``, ``benchmark/benchmark_fastmri.py``) does, and what this
follows:

* 16 particles (``batch_size``), 1000 deterministic DDIM steps (cosine schedule), DPS guidance
  ``x' = DDIM(x) - omega * grad ||y - A(x0_hat)||`` with ``omega = 0.85`` and one norm over all
  particles of the target (``group=N`` in :func:`invdiff.samplers.dps.dps_step`; ``zeta`` is
  ``omega``, converted as in :mod:`invdiff.samplers.dps`).
* Selection in the sampling window ``[50, 500)`` of the 1000 steps, one unit every
  ``(500 - 50) // budget`` steps, from the Tweedie estimates of the current step, excluding
  acquired units; the new unit is used from the next step on. ``window=(0.05, 0.5)`` is that
  window as fractions of the steps; our schedule spreads the acquisitions evenly over it and
  acquires several units at a step when there are more units than steps (the official loop
  would acquire fewer than asked). ``schedule`` names the steps and counts explicitly.
* fastMRI knee (single-coil, 128 x 128): the centre line is acquired first
  (``initial_measurement``), 32 lines in all (4x), ``column_entropy`` with ``sigma = 50``, then
  ``hard_consistency``: the acquired k-space lines replace the reconstruction's. Here
  ``hard_consistency`` adds :math:`A^+(y - A\bar x)` on the acquired units, exactly that
  replacement, for the operators with a closed-form pseudo-inverse (single-coil MRI, inpainting);
  multi-coil MRI and CT keep the particles' mean (their CG-SENSE pseudo-inverse of noisy data
  cost 7 dB on ``task=mri`` with the lines ADS chose and 16 dB with the equispaced mask).

Differences: the reconstruction is the mean of the complex particles (the official benchmark
averages their magnitudes); the official benchmark's fixed-mask baseline has a 10-line centre and
ADS starts from one line, where ``start`` here is the caller's choice (the batch benchmark starts
both from fastMRI's ACS lines, which the coil maps need); several units at one step are the
top-scoring ones of that step (no re-scoring in between); DDS guidance is ours; the steps run on
the prior's own noise grid (``sigmas_vp`` for the shipped priors) rather than the official cosine
schedule; the default score is the variance (the official entropy's large-``sigma`` limit, free
of a scale in measurement units), ``score="entropy"`` the official one.
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
    ve_step,
)
from invdiff.samplers.dds import dds_coefficients, refine
from invdiff.samplers.dps import dps_step
from operators.base import LinearOperator
from operators.units import MeasurementUnits, measurement_units

NAME = "sample_ads"
GUIDANCE = ("dps", "dds")
SCORES = ("variance", "entropy")


def predicted_variance(units: MeasurementUnits, y_hat: Tensor, num_particles: int) -> Tensor:
    r"""Each unit's variance of the particles' predicted measurements, :math:`s_u` of the module
    docstring: ``y_hat`` ``(B * N, ...)`` problem-major, returns ``(B, num_units)``."""
    grouped = y_hat.reshape(-1, num_particles, *y_hat.shape[1:])
    spread = (grouped - grouped.mean(1, keepdim=True)).abs().square().mean(1)
    return units.per_unit(spread)


def particle_entropy(units: MeasurementUnits, y_hat: Tensor, num_particles: int, sigma: float) -> Tensor:
    r"""The official ``column_entropy``, :math:`H_u` of the module docstring, ``(B, num_units)``."""
    grouped = y_hat.reshape(-1, num_particles, *y_hat.shape[1:])
    B = grouped.shape[0]
    pairs = []
    for i in range(num_particles):
        distance = (grouped - grouped[:, i : i + 1]).abs().square()
        pairs.append(units.per_unit(distance.reshape(B * num_particles, *y_hat.shape[1:])).reshape(B, num_particles, -1))
    d = torch.stack(pairs, dim=1)  # (B, i, j, U)
    return torch.logsumexp(d / (2 * sigma**2), dim=2).sum(1)


def unit_scores(units: MeasurementUnits, y_hat: Tensor, num_particles: int, score: str = "variance",
                sigma: float = 50.0) -> Tensor:
    """The selection score of every unit, ``(B, num_units)`` (module docstring)."""
    if score == "variance":
        return predicted_variance(units, y_hat, num_particles)
    return particle_entropy(units, y_hat, num_particles, sigma)


def select_units(scores: Tensor, available: Tensor, count: int) -> tuple[Tensor, Tensor]:
    """The ``count`` available units of highest score per problem: ``(new, chosen)``, the
    ``(B, num_units)`` bool mask and the ``(B, count)`` indices, best first; ties go to the lower
    index."""
    floor = torch.tensor(-torch.inf, dtype=torch.float64, device=scores.device)
    masked = torch.where(available, scores.double(), floor)
    chosen = torch.sort(masked, dim=1, descending=True, stable=True).indices[:, :count]
    return torch.zeros_like(available).scatter_(1, chosen, True), chosen


def start_units(start: int | Sequence[int] | None, units: MeasurementUnits) -> list[int]:
    """``start`` as unit indices: an int is the centred block of that many units of a 1-D unit grid
    (fastMRI's ACS columns for lines), a sequence lists the units, ``None`` is none."""
    if start is None:
        return []
    if isinstance(start, bool):
        raise ValueError(f"{NAME}: start: expected None, a number of centre units or unit indices, got {start!r}")
    if isinstance(start, int):
        if len(units.grid) != 1:
            raise ValueError(f"{NAME}: start: a number of centre units needs a 1-D unit grid (lines, views); "
                             f"give the unit indices of the {units.kind} grid {units.grid}")
        n = units.num_units
        if not 0 <= start <= n:
            raise ValueError(f"{NAME}: start: expected 0 to {n} centre units (the {units.kind} there are), "
                             f"got {start}")
        first = (n - start + 1) // 2
        return list(range(first, first + start))
    indices = [int(i) for i in start]
    if len(set(indices)) != len(indices) or any(not 0 <= i < units.num_units for i in indices):
        raise ValueError(f"{NAME}: start: expected distinct unit indices in [0, {units.num_units}), got {list(start)}")
    return sorted(indices)


def acquisition_plan(steps: int, count: int, window: Sequence[float], schedule: Sequence[Sequence[int]] | None
                     ) -> dict[int, int]:
    """``{step: units acquired there}``: ``schedule``'s ``[step, count]`` pairs, or ``count`` units
    spread evenly over the steps in ``window`` (fractions of ``steps``)."""
    if schedule is not None:
        plan: dict[int, int] = {}
        for entry in schedule:
            if len(entry) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in entry):
                raise ValueError(f"{NAME}: schedule: expected [step, count] pairs of integers, got {entry!r}")
            step, n = entry
            if not 0 <= step < steps or n < 1:
                raise ValueError(f"{NAME}: schedule: step {step} must lie in [0, {steps}) and count {n} be >= 1")
            plan[step] = plan.get(step, 0) + n
        if sum(plan.values()) != count:
            raise ValueError(f"{NAME}: schedule: acquires {sum(plan.values())} units, the budget leaves {count} "
                             f"after the start")
        return plan
    lo, hi = (float(w) for w in window) if len(window) == 2 else (float("nan"),) * 2
    if not 0 <= lo < hi <= 1:
        raise ValueError(f"{NAME}: window: expected (start, stop) fractions with 0 <= start < stop <= 1, "
                         f"got {tuple(window)}")
    first, stop = min(int(lo * steps), steps - 1), max(int(hi * steps), int(lo * steps) + 1)
    stop = min(stop, steps)
    length = stop - first
    plan = {}
    for j in range(count):
        step = first + (j * length) // count
        plan[step] = plan.get(step, 0) + 1
    return plan


def sample_ads(
    denoiser: Denoiser,
    op: LinearOperator,
    y: Tensor,
    sigmas: Tensor,
    *,
    noise_std: float,
    generator: torch.Generator | None,
    budget: int | None = None,
    start: int | Sequence[int] | None = None,
    unit: str = "auto",
    block: int = 8,
    num_particles: int = 16,
    window: Sequence[float] = (0.05, 0.5),
    schedule: Sequence[Sequence[int]] | None = None,
    score: str = "variance",
    entropy_sigma: float = 50.0,
    guidance: str = "dps",
    zeta: float = 0.85,
    eta: float | None = None,
    cg_steps: int = 5,
    gamma: float | None = None,
    hard_consistency: bool = True,
    acquire: Callable[[Tensor], Tensor] | None = None,
    shape: Sequence[int] | None = None,
    callback: Callback | None = None,
) -> tuple[Tensor, dict]:
    r"""Active diffusion subsampling (module docstring).

    Args:
        denoiser: the prior, :math:`D(x, \sigma)`.
        op: the operator measuring every candidate unit (e.g. ``MultiCoilMRI`` with all lines);
            its outermost factor gives the units (:func:`operators.units.measurement_units`).
        y: ``(B, ...)``, the fully sampled reference the default ``acquire`` reads from; with
            ``budget=None`` the measurement itself (a fixed mask, nothing acquired).
        sigmas: ``(n + 1,)`` descending noise levels (``sigmas_vp(1000)`` for DPS as in the paper).
        noise_std: the measurement noise std.
        generator: the source of all randomness.
        budget: units acquired in all, the start included; ``None`` acquires nothing and runs
            the particles on the units ``op`` measures (the fixed-mask comparison).
        start: the units held from the start: a number of centre units (lines, views), unit
            indices, or ``None``.
        unit: ``"auto"``, ``"lines"``, ``"views"``, ``"pixels"``, ``"blocks"`` or ``"elements"``
            (:data:`operators.units.UNIT_KINDS`; ``"auto"`` picks by operator).
        block: the block side for ``unit="blocks"``.
        num_particles: particles per problem, ``N >= 2`` when acquiring.
        window: the selection window as fractions of the steps.
        schedule: explicit ``[step, count]`` pairs instead of ``window``.
        score: ``"variance"`` or ``"entropy"`` (module docstring).
        entropy_sigma: :math:`\sigma_H` of ``score="entropy"``, in measurement units.
        guidance: ``"dps"`` (the paper's) or ``"dds"``.
        zeta: DPS's step (the official ``omega``), on the norm over each problem's particles.
        eta: the step's noise: DDIM's ``eta`` for DPS (default 0, the official deterministic
            DDIM), DDS's ``eta`` (default 0.85).
        cg_steps, gamma: DDS's data step (:func:`invdiff.samplers.dds.sample_dds`).
        hard_consistency: add :math:`A^+(y - A\bar x)` on the acquired units to the mean, where
            the operator has a closed-form pseudo-inverse (single-coil MRI, inpainting: the
            official replacement of the acquired data); others (multi-coil MRI, CT, whose CG
            pseudo-inverse amplifies the noise) keep the particles' mean.
        acquire: called with the newly chosen units ``(B, num_units)`` bool, returns a
            measurement shaped like ``y`` holding their values (others are ignored); default
            reads ``y``.
        shape: the shape of ``x`` per problem, ``(B, ...)``.
        callback: called each step with ``i``, ``sigma``, ``x`` (all particles), ``x0_hat`` and
            ``acquired`` (``(B, num_units)`` bool after the step's acquisition).

    Returns:
        ``(x, info)``: the particles' mean ``(B, ...)``; ``info`` with ``nfe`` (steps; each
        evaluates all particles), ``seconds``, ``mask`` (``(B, *units.grid)`` bool, the acquired
        units), ``order`` (``(B, budget)`` unit indices in acquisition order, the start first),
        ``acquired_at`` (the step of each, -1 for the start), ``particles`` ``(B, N, ...)``,
        ``unit``, ``guidance``, ``num_particles``, ``budget`` and ``hard_consistency`` (whether
        it was applied).

    Raises:
        ValueError: a bad option; a budget larger than the candidate units or smaller than the
            start; a start unit that is not a candidate.
    """
    began = time.perf_counter()
    if not isinstance(op, LinearOperator):
        raise ValueError(f"{NAME}: op: expected a LinearOperator with measurement units, got {op!r}")
    check_measurement(y, NAME)
    check_number(noise_std, "noise_std", NAME, minimum=0)
    check_number(num_particles, "num_particles", NAME, integer=True, minimum=1)
    check_number(budget, "budget", NAME, integer=True, minimum=0, optional=True)
    check_number(zeta, "zeta", NAME, minimum=0)
    check_number(entropy_sigma, "entropy_sigma", NAME, positive=True)
    check_number(cg_steps, "cg_steps", NAME, integer=True, minimum=0)
    check_number(gamma, "gamma", NAME, positive=True, optional=True)
    if guidance not in GUIDANCE:
        raise ValueError(f"{NAME}: guidance: expected one of {', '.join(GUIDANCE)}, got {guidance!r}")
    if score not in SCORES:
        raise ValueError(f"{NAME}: score: expected one of {', '.join(SCORES)}, got {score!r}")
    eta = (0.0 if guidance == "dps" else 0.85) if eta is None else eta
    check_eta(eta, NAME)
    sigma_list = check_sigmas(sigmas)
    steps = len(sigma_list) - 1
    shape = posterior_shape(op, y, shape, NAME)
    device, dtype = measurement_device_dtype(y)
    units = measurement_units(op, unit, block=block, shape=tuple(y.shape))
    B, N = y.shape[0], int(num_particles)
    candidates = units.candidates.to(device).expand(B, units.num_units)

    # 1. The start set, the budget and the plan of acquisitions.
    first = start_units(start, units)
    acquired = torch.zeros(B, units.num_units, dtype=torch.bool, device=device)
    acquired[:, first] = True
    if budget is None:
        acquired, plan = candidates.clone(), {}
    else:
        available = int(candidates.sum(1).min())
        if budget > available:
            raise ValueError(f"{NAME}: budget: {budget} units asked, the operator measures {available} "
                             f"{units.kind} (the candidates)")
        if len(first) > budget:
            raise ValueError(f"{NAME}: start: {len(first)} units exceed the budget of {budget}")
        if not bool(candidates[:, first].all()):
            raise ValueError(f"{NAME}: start: units {first} include some the operator does not measure")
        if budget > len(first) and N < 2:
            raise ValueError(f"{NAME}: num_particles: choosing units needs at least 2 particles, got {N}")
        plan = acquisition_plan(steps, budget - len(first), window, schedule)
    read = acquire if acquire is not None else (lambda new: y)

    def measured(new: Tensor) -> Tensor:
        values = read(new)
        if not isinstance(values, Tensor) or values.shape != y.shape:
            raise ValueError(f"{NAME}: acquire: expected a measurement of shape {tuple(y.shape)}, got "
                             f"{getattr(values, 'shape', type(values).__name__)}")
        return units.element_mask(new).to(dtype=y.real.dtype) * values.to(y.dtype)

    held = first if budget is not None else []
    y_acq = measured(acquired) if held or budget is None else torch.zeros_like(y)
    order = [torch.tensor(held, dtype=torch.long, device=device).expand(B, len(held))]
    acquired_at = [torch.full((B, len(held)), -1, dtype=torch.long, device=device)]
    full = units.operator(candidates, repeat=N)
    op_acq, ys = units.operator(acquired, repeat=N), y_acq.repeat_interleave(N, dim=0)
    weight, k = likelihood_weight(y, noise_std), network_sigma(denoiser, 1.0)
    x = initial_noise(sigma_list[0], (B * N, *shape[1:]), generator=generator, device=device, dtype=dtype)
    ATy = op_acq.AT(ys) if guidance == "dds" else None
    for i, (sigma, sigma_next) in enumerate(zip(sigma_list, sigma_list[1:])):
        # 2. The guided step on the units acquired so far.
        if guidance == "dps":
            x_next, x0_hat, _ = dps_step(denoiser, op_acq, ys, x, sigma, sigma_next, zeta=zeta, eta=eta,
                                         data_scale=k, clip=None, generator=generator, group=N)
        else:
            with torch.no_grad():
                x0_hat = denoiser(x, sigma)
                x0, _, _ = refine(op_acq, ATy, x0_hat, sigma, noise_std=noise_std, gamma=gamma, weight=weight,
                                  data_scale=k, cg_steps=cg_steps)
                c1, c2 = dds_coefficients(sigma_next, eta)
                x_next = ve_step(x0, (x - x0_hat) / sigma, c1, c2, generator=generator)
        # 3. At a planned step: score the units on this step's estimates and acquire the best.
        if i in plan:
            with torch.no_grad():
                scores = unit_scores(units, full.A(x0_hat), N, score, entropy_sigma)
            new, chosen = select_units(scores, candidates & ~acquired, plan[i])
            y_acq = y_acq + measured(new)
            acquired = acquired | new
            order.append(chosen)
            acquired_at.append(torch.full_like(chosen, i))
            op_acq, ys = units.operator(acquired, repeat=N), y_acq.repeat_interleave(N, dim=0)
            ATy = op_acq.AT(ys) if guidance == "dds" else None
        emit(callback, i=i, sigma=sigma, x=x, x0_hat=x0_hat, acquired=acquired)
        x = x_next.detach()
        check_step_finite(x, NAME, i, sigma)
    # 4. The particles' mean, consistent with the acquired data.
    particles = x.reshape(B, N, *x.shape[1:])
    x_mean = particles.mean(1)
    op_b = units.operator(acquired)
    consistent = hard_consistency and op_b.has_closed_form_solve
    if consistent:
        with torch.no_grad():
            x_mean = x_mean + op_b.pinv(y_acq - op_b.A(x_mean))
    info = {
        "nfe": steps,
        "seconds": time.perf_counter() - began,
        "mask": acquired.reshape(B, *units.grid).cpu(),
        "order": torch.cat(order, dim=1).cpu(),
        "acquired_at": torch.cat(acquired_at, dim=1).cpu(),
        "particles": particles,
        "unit": units.kind,
        "guidance": guidance,
        "num_particles": N,
        "budget": budget,
        "hard_consistency": consistent,
    }
    return x_mean, info
