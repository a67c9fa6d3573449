"""MRI sampling masks: fastMRI's Cartesian line masks and variable-density Poisson-disc masks.

Masks are real ``(H, W)`` float32 tensors, 1 where k-space is sampled, in the centred layout of
:mod:`operators.mri` (DC at ``(H // 2, W // 2)``). Line masks follow fastMRI: the phase-encode
lines are the columns, so the mask depends on the column index alone and is constant along
``H``.

The fastMRI masks reproduce ``fastmri/data/subsample.py`` sample for sample, including its use of
``np.random.RandomState(seed)``: the same ``(shape, acceleration, center_fraction, kind, seed)``
gives the mask fastMRI gives. Its data pipeline seeds each volume with
``tuple(map(ord, fname))``; :func:`volume_seed` computes that seed.
"""

from __future__ import annotations

import numbers
import os
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from operators.base import check_weights

Seed = int | tuple[int, ...] | None

_DEFAULT_CENTER_FRACTION = {4: 0.08, 8: 0.04}
"""fastMRI's centre fractions for its two challenge accelerations."""


def _check_shape(shape, name: str = "shape") -> tuple[int, int]:
    valid = isinstance(shape, (tuple, list, torch.Size)) and len(shape) == 2
    if not valid or any(isinstance(s, bool) or not isinstance(s, numbers.Integral) or s < 1 for s in shape):
        raise ValueError(f"{name}: expected (H, W) as two positive integers, got {shape!r}")
    return int(shape[0]), int(shape[1])


def volume_seed(fname: str | os.PathLike) -> tuple[int, ...]:
    """fastMRI's per-volume mask seed, ``tuple(map(ord, name))`` of the file's name.

    Args:
        fname: the volume's file name, e.g. ``"file1000000.h5"``; directories are dropped, as
            fastMRI's data sets pass the bare name.

    Returns:
        the seed for :func:`fastmri_mask`, the same for every slice of a volume.
    """
    name = os.path.basename(os.fspath(fname))
    if not name:
        raise ValueError(f"fname: expected a file name, got {fname!r}")
    return tuple(map(ord, name))


def _random_lines(rng: np.random.RandomState, num_cols: int, acceleration: float, num_low: int) -> np.ndarray:
    """``RandomMaskFunc``: outer lines drawn independently, ``num_cols / acceleration`` in all on average."""
    prob = (num_cols / acceleration - num_low) / (num_cols - num_low)
    return rng.uniform(size=num_cols) < prob


def _equispaced_fraction_lines(
    rng: np.random.RandomState, num_cols: int, acceleration: float, num_low: int
) -> np.ndarray:
    """``EquispacedMaskFractionFunc``: outer lines at a spacing adjusted for the centre lines."""
    adjusted = (acceleration * (num_low - num_cols)) / (num_low * acceleration - num_cols)
    offset = rng.randint(0, high=round(adjusted))
    mask = np.zeros(num_cols)
    mask[np.around(np.arange(offset, num_cols - 1, adjusted)).astype(np.uint)] = 1.0
    return mask


_LINE_SAMPLERS: dict[str, Callable[[np.random.RandomState, int, float, int], np.ndarray]] = {
    "random": _random_lines,
    "equispaced": _equispaced_fraction_lines,
    "equispaced_fraction": _equispaced_fraction_lines,
}
"""fastMRI's mask functions by kind; ``"equispaced_fraction"`` is its current name for ``"equispaced"``."""


def center_lines(W: int, acceleration: float, center_fraction: float | None = None) -> int:
    """The fully sampled centre of fastMRI's line masks, ``round(W * center_fraction)`` columns;
    ``center_fraction`` defaults to fastMRI's 0.08 at 4x and 0.04 at 8x."""
    if center_fraction is None:
        if acceleration not in _DEFAULT_CENTER_FRACTION:
            raise ValueError(
                f"center_fraction: no default for acceleration {acceleration} (fastMRI uses 0.08 at 4x and "
                f"0.04 at 8x); pass one explicitly"
            )
        center_fraction = _DEFAULT_CENTER_FRACTION[acceleration]
    if not 0 < center_fraction < 1:
        raise ValueError(f"center_fraction: expected a fraction in (0, 1), got {center_fraction}")
    return round(W * center_fraction)


def line_budget(
    shape: tuple[int, int], acceleration: float, center_fraction: float | None = None, *, seed: Seed
) -> tuple[int, int]:
    """``(lines, centre)``: how many columns fastMRI's equispaced mask of this ``acceleration``
    samples and how many of them form its centre band, the budget and start set of an active
    acquisition at the same acceleration (:func:`invdiff.samplers.ads.sample_ads`)."""
    mask = fastmri_mask(shape, acceleration, center_fraction, kind="equispaced", seed=seed)
    return int((mask[0] > 0).sum()), center_lines(mask.shape[1], acceleration, center_fraction)


def fastmri_mask(
    shape: tuple[int, int],
    acceleration: float,
    center_fraction: float | None = None,
    *,
    kind: str = "random",
    seed: Seed,
    device: torch.device | str | None = None,
) -> Tensor:
    """A fastMRI Cartesian line mask: a fully sampled centre band plus outer columns.

    ``round(W * center_fraction)`` central columns starting at ``(W - num_low + 1) // 2`` are
    sampled, and the outer ones as fastMRI's mask function of that ``kind`` picks them:

    * ``"random"`` (``RandomMaskFunc``): each column independently, ``W / acceleration``
      columns in expectation;
    * ``"equispaced"`` (``EquispacedMaskFractionFunc``, called ``EquispacedMaskFunc`` in fastMRI
      before 2021 and behind the masks of its public multi-coil data): evenly spaced from a random
      offset, at a spacing adjusted for the centre so the total is about ``W / acceleration``;
      ``"equispaced_fraction"`` is the same. (fastMRI's current ``EquiSpacedMaskFunc``, exact
      spacing that oversamples, is not offered.)

    Args:
        shape: ``(H, W)``; lines run along ``H``, one per sampled column.
        acceleration: the nominal acceleration, ``>= 1``.
        center_fraction: the fraction of columns in the fully sampled centre, in ``(0, 1)``;
            defaults to fastMRI's 0.08 at 4x and 0.04 at 8x.
        kind: ``"random"`` or ``"equispaced"`` (alias ``"equispaced_fraction"``).
        seed: an int or a tuple of ints for ``np.random.RandomState`` (e.g. from
            :func:`volume_seed`), or ``None`` for fresh entropy.
        device: where the mask lives.

    Returns:
        ``(H, W)`` float32 mask, constant along ``H``.
    """
    H, W = _check_shape(shape)
    if kind not in _LINE_SAMPLERS:
        raise ValueError(f"kind: expected one of {sorted(_LINE_SAMPLERS)}, got {kind!r}")
    if not acceleration >= 1:
        raise ValueError(f"acceleration: expected a factor >= 1, got {acceleration}")
    num_low = center_lines(W, acceleration, center_fraction)
    if not num_low * acceleration < W:
        raise ValueError(
            f"center_fraction: expected fewer centre columns than W / acceleration = {W / acceleration:.1f}, "
            f"got round({W} * {center_fraction}) = {num_low}"
        )
    # 1. fastMRI's draw order: the choice among its (fraction, acceleration) pairs, then the lines.
    rng = np.random.RandomState(seed)
    rng.randint(1)
    outer = _LINE_SAMPLERS[kind](rng, W, acceleration, num_low)
    # 2. The centre band, then one value per column broadcast along H.
    lines = np.asarray(outer, dtype=np.float32)
    pad = (W - num_low + 1) // 2
    lines[pad : pad + num_low] = 1.0
    return torch.as_tensor(lines, device=device).expand(H, W).contiguous()


def poisson_disc_mask(
    shape: tuple[int, int],
    acceleration: float,
    calib: tuple[int, int] = (24, 24),
    *,
    seed: int,
    crop_corner: bool = True,
    tol: float = 0.1,
    device: torch.device | str | None = None,
) -> Tensor:
    """A 2D variable-density Poisson-disc mask (``sigpy.mri.poisson``) with a fully sampled centre.

    The density falls off as ``1 / (1 + s |r|)`` with the slope ``s`` searched until the
    acceleration is within ``tol`` of the target.

    Args:
        shape: ``(H, W)``.
        acceleration: the target acceleration, ``> 1``.
        calib: ``(h, w)``, the fully sampled calibration box at the centre, smaller than ``shape``.
        seed: the seed of sigpy's sampler (sigpy restores numpy's global state afterwards).
        crop_corner: leave the k-space corners beyond the unit radius unsampled.
        tol: the allowed deviation from ``acceleration``.
        device: where the mask lives.

    Returns:
        ``(H, W)`` float32 mask of zeros and ones.
    """
    import sigpy.mri

    H, W = _check_shape(shape)
    if not acceleration > 1:
        raise ValueError(f"acceleration: expected a factor > 1, got {acceleration}")
    if len(calib) != 2 or any(int(c) != c or not 0 <= c < s for c, s in zip(calib, (H, W))):
        raise ValueError(
            f"calib: expected two non-negative integers smaller than {(H, W)}, got {tuple(calib)}"
        )
    if not isinstance(seed, (int, np.integer)):
        raise ValueError(f"seed: expected an integer, got {seed!r}")
    try:
        mask = sigpy.mri.poisson(
            (H, W),
            acceleration,
            calib=tuple(int(c) for c in calib),
            dtype=np.float32,
            crop_corner=crop_corner,
            seed=int(seed),
            tol=tol,
        )
    except ValueError as err:
        raise ValueError(
            f"acceleration: sigpy cannot reach {acceleration} on {(H, W)} within tol={tol}"
        ) from err
    return torch.as_tensor(np.ascontiguousarray(mask.real, dtype=np.float32), device=device)


def acceleration_of(mask: Tensor) -> float | Tensor:
    """The acceleration of a mask, ``H W`` over the number of sampled (non-zero) entries.

    Args:
        mask: ``(H, W)``, or ``(..., H, W)`` for one value per mask.

    Returns:
        a float for an ``(H, W)`` mask, else a float64 tensor of shape ``(...)``; ``inf`` where
        nothing is sampled.
    """
    if not isinstance(mask, Tensor) or mask.ndim < 2:
        got = tuple(mask.shape) if isinstance(mask, Tensor) else type(mask).__name__
        raise ValueError(f"mask: expected a tensor (..., H, W), got {got}")
    check_weights(mask, "mask")
    sampled = (mask != 0).flatten(-2).sum(-1).double()
    acc = (mask.shape[-2] * mask.shape[-1]) / sampled
    return float(acc) if mask.ndim == 2 else acc


def acs_lines(mask: Tensor | np.ndarray) -> tuple[int, int]:
    """The fully sampled centre of a line mask: the run of sampled columns through ``W // 2``.

    fastMRI puts the DC column at ``W // 2`` and samples a block of ``num_low_frequencies``
    columns around it (the autocalibration, ACS, lines). This returns the contiguous run of
    sampled columns that contains ``W // 2``. Outer lines that happen to be adjacent to the block
    (with ``"random"`` masks, and with ``"equispaced"`` ones whose spacing lands next to it)
    extend the run, so it can be a few columns wider than ``num_low_frequencies`` and off-centre
    (in about a third of fastMRI's 4x masks of either kind and a fifth of its 8x ones, by one or
    two columns for ``"equispaced"``); every column in it is sampled either way, which is what
    calibration needs. The widest calibration region centred like
    :func:`operators.mri.espirit_maps`'s (from ``W // 2 - w // 2``) inside the run has
    ``w = min(2 * (W // 2 - start) + 1, 2 * (stop - W // 2))`` columns: 30 and 15 for fastMRI's
    exact 4x and 8x blocks at ``W = 372``.

    Args:
        mask: a line mask, ``(W,)``, ``(H, W)`` with each column sampled in every row or in none,
            or either with singleton dimensions, such as fastMRI's ``(1, 1, W)`` or
            ``(1, 1, W, 1)``; a tensor or a numpy array, non-zero where sampled.

    Returns:
        ``(start, stop)``: columns ``start, ..., stop - 1`` are sampled, ``start - 1`` and
        ``stop`` are not (or lie outside the mask).

    Raises:
        ValueError: ``mask`` is not a line mask, holds NaN, infinite or negative values, or its
            centre column ``W // 2`` is not sampled.
    """
    lines = torch.as_tensor(mask)
    if lines.ndim == 0 or lines.numel() == 0:
        raise ValueError(f"mask: expected a line mask (W,) or (H, W), got shape {tuple(lines.shape)}")
    if lines.is_complex():
        raise ValueError(f"mask: expected a real or boolean mask, got dtype {lines.dtype}")
    check_weights(lines, "mask")
    squeezed = lines.squeeze() if lines.numel() > 1 else lines.reshape(1)
    if squeezed.ndim == 2:
        sampled = squeezed != 0
        if not bool((sampled == sampled[:1]).all()):
            raise ValueError(
                f"mask: expected a line mask, each column sampled in every row or in none, got a 2D "
                f"pattern of shape {tuple(lines.shape)}"
            )
        squeezed = squeezed[0]
    elif squeezed.ndim != 1:
        raise ValueError(
            f"mask: expected a line mask (W,) or (H, W), possibly with singleton dimensions, got shape "
            f"{tuple(lines.shape)}"
        )
    sampled = (squeezed != 0).cpu().numpy()
    W = sampled.shape[0]
    centre = W // 2
    if not sampled[centre]:
        raise ValueError(
            f"mask: the centre column W // 2 = {centre} is not sampled, so there are no ACS lines"
        )
    unsampled = np.flatnonzero(~sampled)
    before, after = unsampled[unsampled < centre], unsampled[unsampled > centre]
    start = int(before[-1]) + 1 if before.size else 0
    stop = int(after[0]) if after.size else W
    return start, stop
