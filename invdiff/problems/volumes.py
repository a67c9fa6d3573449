r"""Volume tasks: CT and multi-coil MRI of a volume, measured slice by slice.

A volume is a batch of axial slices, ``(D, C, H, W)`` with ``D`` slices along ``z`` in the batch
dimension, and every operator applies to each slice on its own, so these tasks are
:class:`~invdiff.problems.base.Problem` s whose ``x_true`` is ``(D, C, H, W)`` instead of ``(1, C, H, W)``:
the baselines and slice-by-slice samplers (DDS, DPS) treat the slices as independent problems,
and :func:`~invdiff.samplers.mbir.sample_diffusion_mbir` couples them through total variation
along ``z``. Metrics are computed over the whole volume (SSIM per slice, averaged).

Ground truths are volumes whose neighbouring slices are alike, as in a real scan:

* :func:`phantom_volume` (``ct3d``): an ellipsoid phantom whose axial slices resemble the 2D
  phantoms of :mod:`invdiff.data.phantoms`. Each ellipse of held-out 2D phantom ``index`` becomes
  an ellipsoid: the outer two (skull and brain) span the whole slab, inner structures and lesions
  have their own centre and half-height along ``z``, so they grow, shrink, appear and vanish from
  slice to slice. The prior is the phantom Gaussian fitted to 2D phantoms (exact denoiser).
* :func:`brain_volume` (``mri3d``): the 16 consecutive 1 mm axial slices of the held-out MNI test
  slab (``z = 76-91``) in *one* contrast with *one* smooth phase. The ``mri_brain`` dataset's test
  split is not usable as a volume: its (first and only) variant keeps each slice unmoved and in
  slice order, but draws a contrast family, tissue intensities and a phase map per slice, so
  neighbouring slices differ by 5-70 % in magnitude and unrelated phases. Here every slice is
  synthesised with the same random draws (:func:`~invdiff.data.anatomy.synthesize` on one slice
  at a time from the same seed), so each slice is an image the training data could have held,
  and the volume is continuous along ``z``.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import Tensor

from invdiff.data.anatomy import CONTRASTS, split_slices, synthesize, tissue_maps
from invdiff.data.phantoms import HELD_OUT, random_ellipses, smooth_phase
from invdiff.problems.base import Problem, measure, simulated
from invdiff.problems.simulated import mri_operator
from operators import ParallelBeamCT, RealToComplex, ellipse_image, limited_angle

Z_SEED = 7919
"""Offset of the generator that draws the ellipsoids' extents along ``z``."""


def phantom_volume(size: int, depth: int, index: int, *, seed: int = 0) -> Tensor:
    r"""Ellipsoid phantom ``index``: ``(depth, size, size)`` float32 in ``[0, 1]``, 1 pixel between slices.

    The in-plane ellipses are those of held-out 2D phantom ``index`` (the same draws as
    :func:`invdiff.data.phantoms.phantom` at ``HELD_OUT + index``); each becomes an ellipsoid with
    centre :math:`z_0` and half-height :math:`c`, whose slice at height :math:`z` is the ellipse
    scaled by :math:`\sqrt{1 - ((z - z_0)/c)^2}` (absent where that is not real). Skull and brain
    are centred on the slab and ``2 * size`` high; inner structures have
    :math:`z_0` within the slab and :math:`c` between 0.4 and 1.2 times their larger semi-axis
    (at least 1.5 slices), so a slab of 8-16 slices sees them start and end.

    Args:
        size: slice side in pixels (``>= 8``).
        depth: number of slices (``>= 1``).
        index: which held-out phantom.
        seed: the phantom family.
    """
    if size < 8 or depth < 1:
        raise ValueError(f"size, depth: expected size >= 8 and depth >= 1, got {size}, {depth}")
    g = torch.Generator().manual_seed(seed * 2_147_483_647 + HELD_OUT + index)
    ellipses = random_ellipses(size, g)
    gz = torch.Generator().manual_seed(seed * 2_147_483_647 + HELD_OUT + index + Z_SEED)
    n = ellipses.shape[0]
    half_depth = depth / 2
    z0 = (torch.rand(n, generator=gz, dtype=torch.float64) * 2 - 1) * half_depth
    c = (0.4 + 0.8 * torch.rand(n, generator=gz, dtype=torch.float64)) * ellipses[:, 1:3].max(1).values
    c = c.clamp_min(1.5)
    z0[:2], c[:2] = 0.0, 2.0 * size
    slices = []
    for k in range(depth):
        z = k - (depth - 1) / 2
        shrink = (1 - ((z - z0) / c) ** 2).clamp_min(0).sqrt()
        present = shrink > 0
        scaled = ellipses[present].clone()
        scaled[:, 1:3] *= shrink[present, None]
        slices.append(ellipse_image(scaled, (size, size), supersample=2))
    return torch.stack(slices).clamp(0, 1).float()


def brain_volume(size: int, contrast: str = "t1w", *, first: int = 0, depth: int = 16, seed: int = 0) -> Tensor:
    r"""Consecutive held-out brain slices in one contrast and phase: ``(depth, size, size)`` complex64.

    Args:
        size: slice side in pixels.
        contrast: a key of :data:`invdiff.data.anatomy.CONTRASTS` (``"t1w"``, ``"t2w"``, ``"pd"``).
        first: the first slice of the test slab (0 is ``z = 76``).
        depth: the number of slices, ``first + depth <= 16``.
        seed: seeds the tissue intensities (shared by every slice) and the phase map.
    """
    n = len(split_slices("test"))
    if not (0 <= first and depth >= 1 and first + depth <= n):
        raise ValueError(f"first, depth: expected 0 <= first and first + depth <= {n}, got {first}, {depth}")
    families = list(CONTRASTS)
    if contrast not in families:
        raise ValueError(f"contrast: expected one of {families}, got {contrast!r}")
    maps = tissue_maps("test", size)[first : first + depth]
    family = torch.tensor([families.index(contrast)])
    # 1. The same draws for every slice: one slice at a time from the same seed.
    magnitude = torch.cat([synthesize(m[None], torch.Generator().manual_seed(seed), family=family) for m in maps])
    # 2. One smooth phase for the whole volume.
    phase = smooth_phase(size, torch.Generator().manual_seed(seed + Z_SEED), amplitude=math.pi / 2)
    return torch.polar(magnitude.double(), phase.expand_as(magnitude)).to(torch.complex64)


def ct3d(
    size: int = 64,
    depth: int = 16,
    views: int = 8,
    angle_range: float = 180.0,
    noise_std: float = 0.2,
    image: str = "phantom",
    index: int = 0,
    seed: int = 0,
    data_root: str | Path = "data",
) -> Problem:
    """Sparse-view (or limited-angle) parallel-beam CT of an ellipsoid phantom, slice by slice.

    Args:
        size: slice side.
        depth: number of slices.
        views: number of equispaced views.
        angle_range: the angular range in degrees, ``(0, 180]``; below 180 the views cover the
            wedge ``[0, angle_range)`` (limited-angle CT).
        noise_std: Gaussian noise on the sinogram (line integrals in pixel units).
        image: the ground truth; ``"phantom"`` (:func:`phantom_volume`) is the only volume source.
        index: which held-out phantom volume.
        seed: seeds the noise.
        data_root: unused (the phantom is generated); kept so every task takes it.
    """
    if not 0 < angle_range <= 180:
        raise ValueError(f"angle_range: expected degrees in (0, 180], got {angle_range}")
    if image != "phantom":
        raise ValueError(f"image: ct3d's only volume is 'phantom' (an ellipsoid phantom), got {image!r}")
    x = phantom_volume(size, depth, index)[:, None]
    op = ParallelBeamCT((size, size), limited_angle(views, math.radians(angle_range)))
    return simulated("ct3d", op, x, measure(op, x, noise_std, seed), noise_std, "fbp")


def mri3d(
    size: int = 64,
    depth: int = 16,
    coils: int = 8,
    acceleration: float = 4,
    center_fraction: float | None = None,
    mask_kind: str = "equispaced",
    noise_std: float = 0.005,
    contrast: str = "t1w",
    image: str = "mri_brain",
    index: int = 0,
    seed: int = 0,
    data_root: str | Path = "data",
) -> Problem:
    """Multi-coil Cartesian MRI of the held-out brain slab: birdcage coils, one fastMRI line mask
    for every slice (fastMRI seeds masks per volume), complex Gaussian noise in k-space.

    Args:
        size: slice side.
        depth: number of consecutive test slices (at most 16).
        coils: number of birdcage coils.
        acceleration: the mask's nominal acceleration.
        center_fraction: fully sampled centre; fastMRI's default for the acceleration if ``None``.
        mask_kind: ``"equispaced"`` or ``"random"``.
        noise_std: the k-space noise std.
        contrast: the volume's contrast (:func:`brain_volume`).
        image: ``"mri_brain"`` (the held-out slab, :func:`brain_volume`) or ``"phantom"``
            (:func:`phantom_volume` ``index`` with a smooth phase, for tiny tests with the
            complex phantom prior).
        index: which phantom volume (``image="phantom"`` only).
        seed: seeds the mask, the noise, the tissue intensities and the phase.
        data_root: unused (the volumes are synthesised from packaged templates or phantoms).
    """
    if image == "mri_brain":
        volume = brain_volume(size, contrast, depth=depth, seed=seed)
    elif image == "phantom":
        phase = smooth_phase(size, torch.Generator().manual_seed(seed + Z_SEED))
        volume = torch.polar(phantom_volume(size, depth, index).double(), phase.expand(depth, size, size))
    else:
        raise ValueError(f"image: expected 'mri_brain' or 'phantom', got {image!r}")
    x = RealToComplex().AT(volume.to(torch.complex64)[:, None])
    op = mri_operator(size, coils, acceleration, center_fraction, mask_kind, seed)
    return simulated("mri3d", op, x, measure(op, x, noise_std, seed), noise_std, "cg", {"max_iter": 30},
                     is_complex=True)
