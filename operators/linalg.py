r"""Linear algebra on operators: the spectral norm by power iteration, finite differences.

:func:`power_iteration` estimates :math:`\|A^H A\|_2` from a fixed random start (its own
generator, seeded with 0 unless one is passed), so the estimate is deterministic and does not
touch the global random state. :class:`FiniteDifference` is the forward difference along one
axis, plain (``n - 1`` differences) or circular (``n``, the last wraps to the first, as
DiffusionMBIR's and DDS's ``_Dz``).
"""

from __future__ import annotations

import numbers
from collections.abc import Callable

import torch
from torch import Tensor

from operators.base import LinearOperator, check_tensor, real_dtype


def power_iteration(
    normal: Callable[[Tensor], Tensor],
    like: Tensor,
    *,
    iterations: int = 20,
    per_sample: bool = False,
    generator: torch.Generator | None = None,
) -> Tensor:
    r"""The largest eigenvalue of a positive semidefinite map, e.g. :math:`\|A^H A\|_2`.

    Each iteration applies ``normal`` to the current unit vector and takes the norm of the
    result as the estimate. The start is standard normal: the whole of ``like``'s shape, or, with
    ``per_sample``, one draw of a sample's shape shared by every sample, so that a sample's
    estimate does not depend on the rest of the batch.

    Args:
        normal: :math:`v \mapsto A^H A v`, batch-first.
        like: a tensor of the unknown's shape, device and dtype, ``(B, ...)``.
        iterations: power iterations (each one application of ``normal``).
        per_sample: one estimate per sample (norms over ``flatten(1)``) instead of one for the
            whole tensor.
        generator: the start's source; default a fresh generator on ``like``'s device seeded
            with 0.

    Returns:
        The estimate, a 0-dim tensor, or ``(B,)`` with ``per_sample``; 0 where the map is zero.
    """
    if isinstance(iterations, bool) or not isinstance(iterations, numbers.Integral) or iterations < 1:
        raise ValueError(f"iterations: expected a positive integer, got {iterations!r}")
    if generator is None:
        generator = torch.Generator(like.device).manual_seed(0)
    tiny = torch.finfo(real_dtype(like.dtype)).tiny
    if per_sample:
        v = torch.randn(like.shape[1:], generator=generator, device=like.device, dtype=like.dtype).expand(like.shape)

        def unit(w: Tensor) -> tuple[Tensor, Tensor]:
            norm = w.flatten(1).norm(dim=1)
            return w / norm.clamp_min(tiny).view(-1, *[1] * (w.ndim - 1)), norm
    else:
        v = torch.randn(like.shape, generator=generator, device=like.device, dtype=like.dtype)

        def unit(w: Tensor) -> tuple[Tensor, Tensor]:
            norm = w.norm()
            return w / norm.clamp_min(tiny), norm

    v, value = unit(v)
    for _ in range(iterations):
        v, value = unit(normal(v))
    return value


class FiniteDifference(LinearOperator):
    r"""Forward differences along axis ``dim``: :math:`(D x)_k = x_{k+1} - x_k`.

    Plain: :math:`k = 0, \dots, n - 2` (``n - 1`` differences; the ends are not tied),
    :math:`(D^T v)_k = v_{k-1} - v_k` with :math:`v_{-1} = v_{n-1} = 0`. Circular: :math:`k = 0,
    \dots, n - 1` with :math:`x_n = x_0` (``n`` differences), :math:`(D^T v)_k = v_{k-1} - v_k`
    with :math:`v_{-1} = v_{n-1}`; this is ``_Dz``/``_DzT`` of ``HJ-harry/DiffusionMBIR``
    (``controllable_generation_TV.py``) and ``HJ-harry/DDS`` (``utils.py``) for ``dim=0``.

    ``dim`` indexes the whole tensor, batch axis included: ``dim=0`` differentiates across the
    batch, as DiffusionMBIR does along ``z`` for a volume held as a batch of slices
    ``(D, C, H, W)``; any other axis acts on each sample on its own. Real and complex inputs.

    Args:
        dim: the axis (negative counts from the end).
        circular: wrap the last difference to the first element.

    Shapes:
        ``x``: ``(..., n, ...)`` with ``n`` along ``dim``; ``y``: ``n - 1`` (plain) or ``n``
        (circular) along ``dim``.
    """

    def __init__(self, dim: int = 0, circular: bool = False):
        if isinstance(dim, bool) or not isinstance(dim, numbers.Integral):
            raise ValueError(f"dim: expected an integer axis, got {dim!r}")
        self.dim = int(dim)
        self.circular = bool(circular)

    def _axis(self, t: Tensor, name: str) -> int:
        check_tensor(t, name)
        if not -t.ndim <= self.dim < t.ndim:
            raise ValueError(f"{name}: dim={self.dim} is not an axis of a tensor of shape {tuple(t.shape)}")
        return self.dim % t.ndim

    def A(self, x: Tensor) -> Tensor:
        d = self._axis(x, "x")
        if self.circular:
            return torch.roll(x, -1, d) - x
        return x.narrow(d, 1, x.shape[d] - 1) - x.narrow(d, 0, x.shape[d] - 1)

    def AT(self, y: Tensor) -> Tensor:
        d = self._axis(y, "y")
        if self.circular:
            return torch.roll(y, 1, d) - y
        zero = torch.zeros_like(y.narrow(d, 0, 1))
        return torch.cat([zero, y], d) - torch.cat([y, zero], d)

    def __repr__(self) -> str:
        return f"FiniteDifference(dim={self.dim}, circular={self.circular})"
