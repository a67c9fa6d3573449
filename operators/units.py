r"""Measurement units: the parts of a linear operator's measurement that are acquired whole.

An active acquisition (e.g. :func:`invdiff.samplers.ads.sample_ads`) chooses, one unit at a
time, which parts of the measurement to take: MRI phase-encode lines (k-space columns), CT view
angles (sinogram rows), inpainting pixels or square blocks of pixels. :func:`measurement_units`
reads the unit structure off an operator and :class:`MeasurementUnits` gives

* the candidates: the units the operator measures (a line mask's sampled columns, every view);
* :meth:`~MeasurementUnits.per_unit`: a per-element quantity of the measurement (e.g. the variance
  of predicted measurements) summed over each unit;
* :meth:`~MeasurementUnits.operator`: the operator restricted to a set of acquired units, whose
  measurement is the full one with the other units zero.

The operator may be a composition whose outermost factor (the one that produces the measurement)
is :class:`~operators.mri.SingleCoilMRI`, :class:`~operators.mri.MultiCoilMRI`, a CT projector
or :class:`~operators.inpainting.Inpainting`, e.g. ``MultiCoilMRI(maps, mask) @ RealToComplex()``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from operators.base import LinearComposition, LinearOperator, Multiply
from operators.ct import _RayTransform
from operators.inpainting import Inpainting
from operators.mri import MultiCoilMRI, SingleCoilMRI

UNIT_KINDS = ("lines", "views", "pixels", "blocks", "elements")
"""What a unit can be: MRI phase-encode lines, CT views, inpainting pixels or square blocks, or
each element of any operator's measurement."""

_AUTO = {SingleCoilMRI: "lines", MultiCoilMRI: "lines", Inpainting: "pixels"}


def _outer(op: LinearOperator) -> tuple[LinearOperator, list[LinearOperator]]:
    """The outermost factor of ``op`` and the factors applied before it."""
    if isinstance(op, LinearComposition):
        return op.ops[0], list(op.ops[1:])
    return op, []


def _per_unit(index: Tensor, num_units: int, values: Tensor) -> Tensor:
    """``values`` ``(B, ...)`` summed over the elements of each unit of ``index`` (broadcast to
    them): ``(B, num_units)``."""
    B = values.shape[0]
    flat = index.to(values.device).expand(values.shape).reshape(B, -1)
    out = torch.zeros(B, num_units, device=values.device, dtype=values.dtype)
    return out.scatter_add_(1, flat, values.reshape(B, -1))


def _repeat(t: Tensor, repeat: int) -> Tensor:
    """A per-problem buffer ``(B, ...)`` repeated for ``repeat`` rows per problem; shared ``(1, ...)`` kept."""
    return t if t.shape[0] == 1 or repeat == 1 else t.repeat_interleave(repeat, dim=0)


class MeasurementUnits:
    """The unit structure of a linear operator's measurement (module docstring).

    Attributes:
        kind: one of :data:`UNIT_KINDS`.
        grid: the units' layout: ``(W,)`` lines, ``(V,)`` views, ``(H, W)`` pixels or
            ``(ceil(H / b), ceil(W / b))`` blocks; ``num_units`` is its product.
        index: ``(1, *measurement shape)`` long, the unit of each measurement element
            (broadcast over the batch).
        candidates: ``(B or 1, num_units)`` bool, the units the operator measures.
    """

    def __init__(self, op: LinearOperator, kind: str, grid: tuple[int, ...], index: Tensor, candidates: Tensor):
        self.op, self.kind, self.grid = op, kind, tuple(int(g) for g in grid)
        self.index, self.candidates = index, candidates
        self.num_units = math.prod(self.grid)
        self._outer, self._inner = _outer(op)

    def per_unit(self, values: Tensor) -> Tensor:
        """``values`` ``(B, *measurement shape)`` (real) summed over each unit: ``(B, num_units)``."""
        return _per_unit(self.index, self.num_units, values)

    def element_mask(self, acquired: Tensor) -> Tensor:
        """The ``(B, *measurement shape)`` 0/1 mask of the elements of the ``acquired`` units
        (``(B, num_units)`` bool), in the measurement's real dtype."""
        B = acquired.shape[0]
        index = self.index.to(acquired.device)
        flat = acquired.float().gather(1, index.expand(B, *index.shape[1:]).reshape(B, -1))
        return flat.reshape(B, *index.shape[1:])

    def operator(self, acquired: Tensor, repeat: int = 1) -> LinearOperator:
        """``op`` restricted to the ``acquired`` units.

        Args:
            acquired: ``(B, num_units)`` bool, the units acquired for each of ``B`` problems.
            repeat: rows per problem of the operator's input (particles): the result acts on
                ``(B * repeat, ...)`` batches, problem-major, with each problem's units.

        Returns:
            A linear operator with the measurement's shape, zero outside the acquired units; the
            original sampling weights kept on the acquired ones.
        """
        if acquired.ndim != 2 or acquired.shape[1] != self.num_units:
            raise ValueError(f"acquired: expected (B, {self.num_units}) booleans, got shape {tuple(acquired.shape)}")
        rows = acquired.repeat_interleave(repeat, dim=0) if repeat > 1 else acquired
        outer = self._outer
        if isinstance(outer, (SingleCoilMRI, MultiCoilMRI)):
            mask = _repeat(outer.mask, repeat) * rows[:, None, :].to(outer.mask.device, outer.mask.dtype)
            if isinstance(outer, SingleCoilMRI):
                restricted = SingleCoilMRI(mask)
            else:
                restricted = MultiCoilMRI(_repeat(outer.coil_maps, repeat), mask)
        elif isinstance(outer, Inpainting) and self.kind in ("pixels", "blocks"):
            mask = outer.mask if outer.mask.ndim == 4 else outer.mask[None, None]
            element = self.element_mask(rows)[:, :1]
            restricted = Inpainting(_repeat(mask, repeat) * element.to(mask.device, mask.dtype))
        else:
            restricted = Multiply(self.element_mask(rows)) @ outer
        return LinearComposition(restricted, *self._inner) if self._inner else restricted

    def subset(self, acquired: Tensor, y: Tensor) -> tuple[LinearOperator, Tensor] | None:
        """The operator and measurement of the ``acquired`` views alone (a projector over those
        angles and the sinogram's rows), when the units are CT views of a bare projector and every
        problem acquired the same ones; ``None`` otherwise (use :meth:`operator`)."""
        if self.kind != "views" or self._inner or not bool((acquired == acquired[:1]).all()):
            return None
        index = torch.nonzero(acquired[0]).flatten()
        return self._outer.with_angles(self._outer.angles[index.to(self._outer.angles.device)]), \
            y[:, :, index.to(y.device)]

    def __repr__(self) -> str:
        return f"MeasurementUnits({self.kind}, grid={self.grid}, candidates={int(self.candidates[0].sum())})"


def measurement_units(
    op: LinearOperator, unit: str = "auto", *, block: int = 8, shape: tuple[int, ...] | None = None
) -> MeasurementUnits:
    """The units of ``op``'s measurement (module docstring).

    Args:
        op: a linear operator; its outermost factor gives the units.
        unit: ``"auto"`` (lines for MRI, views for CT, pixels for inpainting, elements for any
            other operator) or one of :data:`UNIT_KINDS` that fits the operator (``"blocks"``
            for inpainting, ``"elements"`` for any).
        block: the side of a block, for ``unit="blocks"``.
        shape: the measurement's shape ``(B, ...)``, needed for ``"elements"``.

    Raises:
        ValueError: ``unit`` is unknown or does not fit ``op``, ``shape`` is missing for
            ``"elements"``, or ``block`` is not a positive integer.
    """
    outer, _ = _outer(op)
    if unit == "auto":
        unit = "views" if isinstance(outer, _RayTransform) else _AUTO.get(type(outer), "elements")
    if unit == "elements":
        if shape is None:
            raise ValueError(f"shape: the measurement's shape is needed for unit 'elements' of {op!r}")
        size = math.prod(shape[1:])
        index = torch.arange(size).reshape(1, *shape[1:])
        return MeasurementUnits(op, unit, (size,), index, torch.ones(1, size, dtype=torch.bool))
    fits = {
        "lines": isinstance(outer, (SingleCoilMRI, MultiCoilMRI)),
        "views": isinstance(outer, _RayTransform),
        "pixels": isinstance(outer, Inpainting),
        "blocks": isinstance(outer, Inpainting),
    }
    if unit not in fits:
        raise ValueError(f"unit: expected 'auto' or one of {', '.join(UNIT_KINDS)}, got {unit!r}")
    if not fits[unit]:
        raise ValueError(f"unit: {unit!r} does not fit the operator's measurement ({op!r})")
    if unit == "lines":
        mask = outer.mask  # (B or 1, H, W), constant along H for a line mask
        H, W = mask.shape[-2:]
        index = torch.arange(W, device=mask.device).expand(1, 1, H, W)
        return MeasurementUnits(op, unit, (W,), index, (mask != 0).any(dim=-2))
    if unit == "views":
        V, D = outer.sinogram_shape
        index = torch.arange(V, device=outer.angles.device)[None, None, :, None].expand(1, 1, V, D)
        return MeasurementUnits(op, unit, (V,), index, torch.ones(1, V, dtype=torch.bool, device=index.device))
    mask = outer.mask if outer.mask.ndim == 4 else outer.mask[None, None]
    H, W = mask.shape[-2:]
    if unit == "pixels":
        grid, size = (H, W), 1
    else:
        if isinstance(block, bool) or not isinstance(block, int) or block < 1:
            raise ValueError(f"block: expected a positive integer (the side of a block), got {block!r}")
        grid, size = (-(-H // block), -(-W // block)), block
    rows = torch.arange(H, device=mask.device) // size
    cols = torch.arange(W, device=mask.device) // size
    index = (rows[:, None] * grid[1] + cols[None, :])[None, None]
    observed = (mask != 0).any(dim=1, keepdim=True).float()  # (B or 1, 1, H, W)
    return MeasurementUnits(op, unit, grid, index, _per_unit(index, math.prod(grid), observed) > 0)


__all__ = ["UNIT_KINDS", "MeasurementUnits", "measurement_units"]
