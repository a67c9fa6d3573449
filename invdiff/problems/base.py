r"""The :class:`Problem`: what a reconstruction method runs on.

A problem holds the forward operator, the measurement, its noise level and, when there is one,
the reference image; and the rules that turn the method's output (an element of the operator's
domain, the representation the prior models) into the image a user looks at and scores:

1. complex images held as (real, imaginary) channels become their magnitude;
2. pixels outside the ``support`` (where the model sees no signal, e.g. outside the coil maps'
   support in SENSE MRI) are set to 0;
3. the centre ``crop`` is taken (fastMRI's reconstruction size);
4. the model's scale is undone: data units are model units divided by ``scale``.

Problems come from a simulated task (:mod:`invdiff.problems.simulated`,
:mod:`invdiff.problems.volumes`) or from a file (:mod:`invdiff.problems.fastmri`,
:mod:`invdiff.problems.ct_files`); a batch of independent slices is one problem with the slices
in the batch dimension. A problem without a reference (a fastMRI test file, a user's sinogram)
is reconstructed and written like any other, and not scored.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from torch import Tensor

from invdiff.data.fastmri import center_crop
from invdiff.metrics import nmse, psnr, ssim
from operators import GaussianNoise, Operator, RealToComplex, line_budget, measurement_units

ACTIVE = "active"
"""The mask kind (MRI) of a problem whose measurements an active sampler chooses."""


def is_active(setting: Mapping[str, Any]) -> bool:
    """Whether a batch setting acquires actively (``mask_kind: active`` for MRI,
    ``candidate_views`` for CT): only active samplers run under it."""
    return setting.get("mask_kind") == ACTIVE or setting.get("candidate_views") is not None


def line_acquisition(shape: tuple[int, int], acceleration: float, center_fraction: float | None,
                     mask_kind: str, seed) -> dict | None:
    """An active acquisition's terms for ``mask_kind="active"`` (``None`` otherwise): the budget of
    fastMRI's equispaced mask at ``acceleration`` and its centre band as the start set."""
    if mask_kind != ACTIVE:
        return None
    budget, centre = line_budget(shape, acceleration, center_fraction, seed=seed)
    return {"budget": budget, "start": centre}


@dataclass
class Problem:
    """One inverse problem (or a batch of independent ones), ready for a method.

    Attributes:
        name: the task's name (``"mri"``, ``"fastmri"``, ``"ct"``, ...).
        op: the forward operator on the model's representation.
        y: the measurement, ``(B, ...)``, on the model's scale.
        noise_std: the measurement noise std on the model's scale.
        x_shape: ``(B, C, H, W)``, the unknown in the operator's domain.
        target: the reference display image ``(B, C', h, w)`` in data units, or ``None``.
        x_true: the ground truth in the operator's domain (simulated problems), or ``None``.
        is_complex: ``x`` holds complex images as (real, imaginary) channels.
        scale: model units per data unit.
        crop: the display size ``(h, w)`` (a centre crop), or ``None`` for the whole image.
        support: ``(B or 1, H, W)`` bool; the display image is 0 outside it. ``None``: everywhere.
        data_range: the metrics' data range in data units; ``None`` takes the target's maximum.
        baseline: the classical reconstruction's name in ``invdiff.samplers.BASELINES``.
        baseline_kwargs: its options.
        info: provenance and estimates (file, slices, estimated scale and noise), JSON-safe.
        acquisition: an active acquisition's terms, or ``None`` for a fixed measurement: the
            keyword options ``budget`` (units in all) and ``start`` (the units held from the
            start), optionally ``unit``, of an active sampler
            (:func:`invdiff.samplers.ads.sample_ads`). ``op`` then measures every candidate
            unit and ``y`` is the fully sampled reference the sampler reads its units from.
    """

    name: str
    op: Operator
    y: Tensor
    noise_std: float
    x_shape: tuple[int, ...]
    target: Tensor | None = None
    x_true: Tensor | None = None
    is_complex: bool = False
    scale: float = 1.0
    crop: tuple[int, int] | None = None
    support: Tensor | None = None
    data_range: float | None = None
    baseline: str = "adjoint"
    baseline_kwargs: dict = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    acquisition: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        self.x_shape = tuple(int(s) for s in self.x_shape)
        if len(self.x_shape) != 4 or self.x_shape[0] != self.y.shape[0]:
            raise ValueError(
                f"x_shape: expected (B, C, H, W) with B = {self.y.shape[0]} (the batch of y), got {self.x_shape}"
            )
        if self.is_complex and self.x_shape[1] != 2:
            raise ValueError(f"x_shape: a complex problem holds 2 channels (real, imaginary), got {self.x_shape}")
        if not self.scale > 0:
            raise ValueError(f"scale: expected > 0, got {self.scale}")
        if not 0 <= self.noise_std < math.inf:
            raise ValueError(f"noise_std: expected a finite number >= 0, got {self.noise_std}")

    def acquired(self, mask: Tensor, unit: str = "auto") -> Problem:
        """The fixed problem of the units an active sampler acquired: ``mask`` ``(B, *grid)`` bool
        (its ``info["mask"]``); the operator restricted to them, the measurement zero elsewhere
        (for CT views shared by the batch, the projector over the acquired angles)."""
        units = measurement_units(self.op, unit, shape=tuple(self.y.shape))
        acquired = mask.reshape(mask.shape[0], -1).to(torch.bool)
        subset = units.subset(acquired, self.y)  # CT views: a projector over the acquired angles (FBP)
        if subset is not None:
            return replace(self, op=subset[0], y=subset[1], acquisition=None)
        y = units.element_mask(acquired).to(self.y.device, self.y.real.dtype) * self.y
        return replace(self, op=units.operator(acquired), y=y, acquisition=None)

    @property
    def batch(self) -> int:
        return self.x_shape[0]

    def _display(self, x: Tensor) -> Tensor:
        x = x.detach().cpu()
        if tuple(x.shape[1:]) != self.x_shape[1:]:
            raise ValueError(f"x: expected (B, {', '.join(map(str, self.x_shape[1:]))}), got {tuple(x.shape)}")
        image = RealToComplex().A(x.float()) if self.is_complex else x.float()
        if self.support is not None:
            image = image * self.support.to(torch.bool)[:, None]
        if self.crop is not None:
            image = center_crop(image, self.crop)
        return image / self.scale

    def image(self, x: Tensor) -> Tensor:
        """The real display image ``(B, C', h, w)`` in data units: the magnitude (``C' = 1``) of a
        complex image, the channels of a real one; zero outside the support, cropped, unscaled."""
        image = self._display(x)
        return image.abs() if image.is_complex() else image

    def output(self, x: Tensor) -> np.ndarray:
        """What a run writes: the complex image ``(B, 1, h, w)`` of a complex problem, the real
        ``(B, C, h, w)`` one otherwise; in data units, zero outside the support, cropped."""
        return self._display(x).numpy()

    def score(self, x: Tensor) -> dict[str, float] | None:
        """PSNR, SSIM and NMSE of ``x`` against the target on the display images (fastMRI's
        conventions over the whole batch, SSIM per 2D image); ``None`` without a target."""
        if self.target is None:
            return None
        target, image = self.target.double(), self.image(x).double()
        if target.shape != image.shape:
            raise ValueError(f"target: shape {tuple(target.shape)} differs from the display image's {tuple(image.shape)}")
        return {"psnr": psnr(target, image, self.data_range), "ssim": ssim(target, image, self.data_range),
                "nmse": nmse(target, image)}


def measure(op: Operator, x: Tensor, noise_std: float, seed: int) -> Tensor:
    """``op.A(x)`` plus Gaussian noise of ``noise_std`` from a generator seeded with ``seed``.

    Raises:
        ValueError: ``noise_std`` is not a finite number ``>= 0``.
    """
    number = isinstance(noise_std, numbers.Real) and not isinstance(noise_std, bool)
    if not number or not 0 <= noise_std < math.inf:
        raise ValueError(f"noise_std: expected a finite number >= 0, got {noise_std!r}")
    return GaussianNoise(noise_std)(op.A(x), generator=torch.Generator().manual_seed(seed))


def simulated(name: str, op: Operator, x_true: Tensor, y: Tensor, noise_std: float, baseline: str,
              baseline_kwargs: dict | None = None, *, is_complex: bool = False, info: dict | None = None) -> Problem:
    """A problem with a known ground truth ``x_true`` in the operator's domain; its target is the
    display image of ``x_true``."""
    problem = Problem(name, op, y, noise_std, tuple(x_true.shape), x_true=x_true, is_complex=is_complex,
                      baseline=baseline, baseline_kwargs=dict(baseline_kwargs or {}), info=dict(info or {}))
    problem.target = problem.image(x_true)
    return problem
