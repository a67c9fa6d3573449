r"""Pieces every sampler shares: schedules in, state out, the DDIM step, the guards.

All samplers work in the variance-exploding parameterisation of :mod:`invdiff.priors.base`,
:math:`x = x_0 + \sigma n`. A step from :math:`\sigma` to :math:`\sigma'` with the Tweedie
estimate :math:`\hat x_0 = D(x, \sigma)` and its noise :math:`\hat\epsilon = (x - \hat x_0)/\sigma`
is DDIM's (Song et al. 2021, eq. 12) divided by :math:`\sqrt{\bar\alpha'}`:

.. math::
    x' = \hat x_0 + c_1 z + c_2 \hat\epsilon, \qquad
    c_1 = \eta \sqrt{\sigma'^2 (\sigma^2 - \sigma'^2) / \sigma^2}, \qquad
    c_2 = \sqrt{\sigma'^2 - c_1^2},

with :math:`z \sim \mathcal N(0, I)`. :math:`\eta = 1` is DDPM's ancestral step (the variance
:math:`\tilde\beta` of :math:`q(x_{t-1} \mid x_t, x_0)`), :math:`\eta = 0` the deterministic DDIM
step, which is also the Euler step of the probability-flow ODE
:math:`dx/d\sigma = (x - D(x, \sigma))/\sigma`.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from invdiff.priors.base import Denoiser
from operators.base import LinearOperator, Operator, check_finite, real_dtype

Callback = Callable[[dict], None]


def check_sigmas(sigmas: Tensor | Sequence[float], name: str = "sigmas") -> list[float]:
    """The schedule as a list of Python floats, after checking it.

    A schedule on a device comes to the host in one copy (one synchronisation), not one per value.

    Args:
        sigmas: ``(n + 1,)`` noise levels for ``n`` steps, strictly decreasing, non-negative,
            finite, the first positive (the ``sigmas_*`` functions end with 0).
        name: the argument name used in error messages.
    """
    schedule = sigmas.detach() if isinstance(sigmas, Tensor) else torch.as_tensor(sigmas, dtype=torch.float64)
    schedule = schedule.to(device="cpu", dtype=torch.float64)
    values = schedule.reshape(-1).tolist()
    if schedule.ndim != 1 or len(values) < 2:
        raise ValueError(f"{name}: expected a 1-D schedule with at least 2 values (1 step), got {sigmas!r}")
    if not all(math.isfinite(s) and s >= 0 for s in values) or values[0] <= 0:
        raise ValueError(f"{name}: expected finite, non-negative values starting above 0, got {values}")
    if any(b >= a for a, b in zip(values, values[1:])):
        raise ValueError(f"{name}: expected strictly decreasing values, got {values}")
    return values


def check_measurement(y: Tensor, sampler: str) -> None:
    """Raise a ``ValueError`` naming ``y`` when it is not a non-empty, finite tensor ``(B, ...)``.

    One finiteness reduction (one host synchronisation) per call.
    """
    if not isinstance(y, Tensor):
        raise ValueError(f"{sampler}: y: expected a torch.Tensor, got {type(y).__name__}")
    if y.ndim < 1 or y.numel() == 0:
        raise ValueError(
            f"{sampler}: y: expected a non-empty batch (B, ...) with B >= 1, got shape {tuple(y.shape)}"
        )
    check_finite(y, f"{sampler}: y")


def check_number(
    value: float | int | Tensor | None,
    name: str,
    sampler: str,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    positive: bool = False,
    integer: bool = False,
    optional: bool = False,
) -> None:
    """Raise a ``ValueError`` naming the sampler and ``name`` unless ``value`` is a finite real
    number within the bounds (NaN fails every comparison, so it would pass a bare ``x >= 0`` test).

    Args:
        value: the hyperparameter: a Python or numpy number or a one-element real tensor.
        name: the argument name used in the message.
        sampler: the sampler's (or baseline's) name used in the message.
        minimum: the smallest value allowed.
        maximum: the largest value allowed.
        positive: the value must exceed 0.
        integer: the value must be a whole number.
        optional: ``None`` is allowed.
    """
    if value is None and optional:
        return
    bounds = (["> 0"] if positive else []) + ([f">= {minimum}"] if minimum is not None else [])
    bounds += [f"<= {maximum}"] if maximum is not None else []
    want = f"a finite {'integer' if integer else 'number'} {' and '.join(bounds)}".rstrip()
    if optional:
        want += " or None"
    scalar = isinstance(value, numbers.Real) or (
        isinstance(value, Tensor) and value.numel() == 1 and not value.is_complex()
    )
    if isinstance(value, bool) or not scalar:
        raise ValueError(f"{sampler}: {name}: expected {want}, got {value!r}")
    v = float(value)
    valid = (
        math.isfinite(v)
        and (not integer or v == int(v))
        and (not positive or v > 0)
        and (minimum is None or v >= minimum)
        and (maximum is None or v <= maximum)
    )
    if not valid:
        raise ValueError(f"{sampler}: {name}: expected {want}, got {value!r}")


def check_eta(eta: float, sampler: str) -> None:
    """Raise a ``ValueError`` naming ``eta`` unless ``0 <= eta <= 1`` (NaN fails)."""
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"{sampler}: eta: expected 0 <= eta <= 1, got {eta}")


def check_step_finite(x: Tensor | Sequence[Tensor], sampler: str, i: int, sigma: float) -> None:
    """Raise ``FloatingPointError`` naming the sampler, the step and sigma when ``x`` is not finite.

    ``x`` is a tensor or several (a step's estimates and its new state): one host synchronisation
    per call, so a sampler that checks everything at the end of a step synchronises once per step.
    """
    if isinstance(x, Tensor):
        finite = torch.isfinite(x).all()
    else:
        finite = torch.stack([torch.isfinite(t).all() for t in x]).all()
    if not bool(finite):
        raise FloatingPointError(
            f"{sampler}: non-finite values at step {i} (sigma={sigma:.6g}); "
            f"check the denoiser at this noise level and the step size"
        )


def posterior_shape(op: Operator, y: Tensor, shape: Sequence[int] | None, sampler: str):
    """The shape ``(B, ...)`` of the unknown: ``shape`` if given, else the shape of ``op.AT(y)``.

    The shape comes from the problem, never from the size the prior was trained at: a
    convolutional prior trained on 64 x 64 crops runs on a 320 x 320 image. A nonlinear operator
    has no adjoint to read it from, so its callers pass ``shape``.
    """
    if shape is not None:
        shape = tuple(int(s) for s in shape)
        if shape[0] != y.shape[0]:
            raise ValueError(
                f"{sampler}: shape: expected the batch size of y ({y.shape[0]}) first, got {shape}"
            )
        return shape
    if isinstance(op, LinearOperator):
        return tuple(op.AT(y).shape)
    raise ValueError(
        f"{sampler}: shape: cannot infer the shape of x from the nonlinear operator {op!r}; "
        f"pass shape=(B, C, H, W)"
    )


def infer_device_dtype(denoiser: Denoiser) -> tuple[torch.device, torch.dtype]:
    """Device and floating dtype of the denoiser's first floating parameter or buffer, else the defaults."""
    for t in list(denoiser.parameters()) + list(denoiser.buffers()):
        if t.is_floating_point():
            return t.device, t.dtype
    return torch.device("cpu"), torch.get_default_dtype()


def initial_noise(
    sigma_max: float,
    shape: Sequence[int],
    *,
    generator: torch.Generator | None,
    device: torch.device,
    dtype: torch.dtype,
) -> Tensor:
    r""":math:`x_T = \sigma_{max} z`, :math:`z \sim \mathcal N(0, I)`, drawn from ``generator``."""
    return sigma_max * torch.randn(tuple(shape), generator=generator, device=device, dtype=dtype)


def measurement_device_dtype(y: Tensor) -> tuple[torch.device, torch.dtype]:
    """Where the unknown lives and its real dtype, from the measurement."""
    dtype = real_dtype(y.dtype) if (y.is_floating_point() or y.is_complex()) else torch.get_default_dtype()
    return y.device, dtype


def real_adjoint(op: LinearOperator, y: Tensor, shape: Sequence[int], sampler: str) -> Tensor:
    """``op.AT(y)``, after checking it has the unknown's ``shape`` and is real like the prior's ``x``."""
    ATy = op.AT(y)
    if tuple(ATy.shape) != tuple(shape):
        raise ValueError(f"{sampler}: shape: op.AT(y) has shape {tuple(ATy.shape)}, x has {tuple(shape)}")
    if ATy.is_complex():
        raise ValueError(
            f"{sampler}: op: op.AT(y) is complex but the prior's x is real; compose the operator with "
            f"RealToComplex() (and a 2-channel prior) or use a real operator"
        )
    return ATy


def ddim_coefficients(sigma: float, sigma_next: float, eta: float) -> tuple[float, float]:
    r"""``(c1, c2)`` of the VE DDIM step: noise and :math:`\hat\epsilon` weights (module docstring)."""
    c1 = eta * math.sqrt(max(sigma_next**2 * (sigma**2 - sigma_next**2) / sigma**2, 0.0))
    c2 = math.sqrt(max(sigma_next**2 - c1**2, 0.0))
    return c1, c2


def ve_step(
    x0: Tensor,
    eps: Tensor,
    c1: float,
    c2: float,
    *,
    generator: torch.Generator | None,
) -> Tensor:
    r""":math:`x' = x_0 + c_1 z + c_2 \epsilon`; draws :math:`z` only when ``c1 > 0``."""
    out = x0 + c2 * eps
    if c1 > 0:
        out = out + c1 * torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
    return out


def ddim_step(
    x: Tensor,
    x0_hat: Tensor,
    sigma: float,
    sigma_next: float,
    eta: float,
    *,
    generator: torch.Generator | None,
    x0: Tensor | None = None,
) -> Tensor:
    r"""One VE DDIM/ancestral step from ``sigma`` to ``sigma_next``.

    Args:
        x: the state at ``sigma``, ``(B, ...)``.
        x0_hat: the Tweedie estimate :math:`D(x, \sigma)`, defines :math:`\hat\epsilon`.
        sigma, sigma_next: the noise levels, ``sigma > sigma_next >= 0``.
        eta: 0 deterministic DDIM, 1 DDPM ancestral.
        generator: the source of ``z``.
        x0: the clean estimate to step towards, default ``x0_hat`` (DDS passes its refined one).
    """
    c1, c2 = ddim_coefficients(sigma, sigma_next, eta)
    eps = (x - x0_hat) / sigma
    return ve_step(x0_hat if x0 is None else x0, eps, c1, c2, generator=generator)


def emit(callback: Callback | None, **state) -> None:
    """Call ``callback(dict(i=..., sigma=..., x=..., x0_hat=..., ...))`` when one is given."""
    if callback is not None:
        callback(state)


def likelihood_weight(y: Tensor, noise_std: float) -> float:
    r"""The weight :math:`w` of :math:`-\log p(y \mid x) = w \|y - \mathcal A(x)\|^2 + c` for
    Gaussian noise of std :math:`s` (``noise_std``, as :class:`operators.noise.GaussianNoise` adds it).

    Real ``y``: :math:`w = 1/(2 s^2)`. Complex ``y``: the noise is circular with
    :math:`\mathbb E|n|^2 = s^2`, each of the real and imaginary parts of variance :math:`s^2/2`,
    so :math:`w = 1/s^2`: a complex measurement is the real one with both parts stacked and
    std :math:`s/\sqrt 2`. ``inf`` when ``noise_std == 0``.
    """
    if noise_std == 0:
        return math.inf
    return (1.0 if y.is_complex() else 0.5) / noise_std**2


def network_sigma(denoiser: Denoiser, sigma: float) -> float:
    r"""``sigma`` in the network's units, ``denoiser.data_scale * sigma`` (1 for priors that serve
    their own range): formulas of the papers written for the network's :math:`\bar\alpha_t`
    (e.g. :math:`1 + \sigma^2 = 1/\bar\alpha`) take this one."""
    return float(getattr(denoiser, "data_scale", 1.0)) * sigma


def operator_norm(normal: Callable[[Tensor], Tensor], like: Tensor, iterations: int = 20) -> float:
    r""":math:`\|A^H A\|_2` by :func:`operators.linalg.power_iteration` from its fixed random start (its own generator).

    Args:
        normal: :math:`v \mapsto A^H A v`.
        like: a tensor of the unknown's shape, device and dtype.
        iterations: power iterations.
    """
    from operators.linalg import power_iteration

    return float(power_iteration(normal, like, iterations=iterations))
