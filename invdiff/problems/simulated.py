r"""Simulated problems: a held-out ground truth, an operator, a noisy measurement and a baseline.

Each task function builds a :class:`~invdiff.problems.base.Problem` from typed arguments
(configs in ``configs/task/`` call them through Hydra); its ground truth comes from
:func:`invdiff.problems.images.ground_truth`, in the representation the prior models. ``ct``,
``inpaint`` and ``sr`` also take a user's image file as the ground truth (``image=<path>``, used
at its own size; :mod:`invdiff.problems.images`), and ``inpaint`` and ``sr`` RGB images
(``channels=3``).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from pathlib import Path

import sigpy.mri
import torch
from torch import Tensor

from invdiff.problems.base import ACTIVE, Problem, line_acquisition, measure, simulated
from invdiff.problems.images import describe, ground_truth, is_image_file, read_image_file
from operators import (
    Inpainting,
    MultiCoilMRI,
    Operator,
    ParallelBeamCT,
    PhaseRetrieval,
    PoissonNoise,
    RealToComplex,
    SuperResolution,
    TransmissionCT,
    box_mask,
    fastmri_mask,
    limited_angle,
    random_pixel_mask,
    sparse_view_angles,
)


def mri_operator(
    size: int, coils: int, acceleration: float, center_fraction: float | None, mask_kind: str, seed: int
) -> Operator:
    """Birdcage coil maps, a fastMRI line mask seeded by ``seed``, on real (real, imaginary) channels.

    Raises:
        ValueError: ``coils`` is not a positive integer, or the mask's arguments are out of range.
    """
    if isinstance(coils, bool) or not isinstance(coils, numbers.Integral) or coils < 1:
        raise ValueError(f"coils: expected a positive integer, got {coils!r}")
    maps = torch.from_numpy(sigpy.mri.birdcage_maps((coils, size, size))).to(torch.complex64)
    if mask_kind == ACTIVE:
        mask = torch.ones(size, size)
    else:
        mask = fastmri_mask((size, size), acceleration, center_fraction, kind=mask_kind, seed=seed)
    return MultiCoilMRI(maps, mask) @ RealToComplex()


def mri(
    size: int = 64,
    coils: int = 8,
    acceleration: float = 4,
    center_fraction: float | None = None,
    mask_kind: str = "equispaced",
    noise_std: float = 0.005,
    image: str = "phantom",
    index: int = 0,
    seed: int = 0,
    data_root: str | Path = "data",
) -> Problem:
    """Multi-coil Cartesian MRI of a held-out complex image: birdcage coils, a fastMRI line mask;
    ``mask_kind="active"`` measures every line and leaves the choice to an active sampler, with
    the line budget and centre of the equispaced mask at ``acceleration``."""
    x = ground_truth(image, size, index, complex_=True, data_root=data_root)
    op = mri_operator(size, coils, acceleration, center_fraction, mask_kind, seed)
    problem = simulated("mri", op, x, measure(op, x, noise_std, seed), noise_std, "cg", {"max_iter": 30},
                        is_complex=True)
    problem.acquisition = line_acquisition((size, size), acceleration, center_fraction, mask_kind, seed)
    return problem


def _truth(image: str, size: int, index: int, channels: int, data_root: str | Path) -> tuple[Tensor, dict]:
    """The real ground truth ``(1, channels, H, W)`` and its provenance for ``Problem.info``: a
    packaged source at ``size``, or a user's file at its own size."""
    if is_image_file(image):
        return read_image_file(image, channels=channels, index=index)
    x = ground_truth(image, size, index, complex_=False, channels=channels, data_root=data_root)
    return x, describe(image, size, index, channels)


def ct(size: int = 64, views: int = 30, noise_std: float = 0.2, image: str = "phantom", index: int = 0,
       seed: int = 0, data_root: str | Path = "data", candidate_views: int | None = None) -> Problem:
    """Sparse-view parallel-beam CT of a held-out image or a user's file (relative attenuation).

    The image is relative attenuation, about ``[0, 1]`` (a DICOM file is converted from
    Hounsfield units, :func:`invdiff.data.dicom.relative_attenuation`); the sinogram holds
    its line integrals in pixel lengths over ``views`` equispaced angles in ``[0, pi)``, on
    ``ceil(hypot(H, W))`` unit bins. ``noise_std`` is in the same units, so at a fixed
    ``noise_std`` a larger image (longer paths) has a higher signal-to-noise ratio.

    Args:
        size: image side of a packaged source; an image file keeps its own ``H x W``
            (non-square is fine).
        views: number of projection angles.
        noise_std: Gaussian noise std of the sinogram.
        image: a packaged source (``"ct"``, ``"phantom"``, ...) or the path of an image file
            (``.dcm``, ``.npy``, ``.png``, ...; :mod:`invdiff.problems.images`).
        index: which held-out image (the frame of a multi-frame DICOM file).
        seed: seeds the noise.
        data_root: where datasets are built.
        candidate_views: an active acquisition of ``views`` among that many equispaced angles
            (:func:`ct_projections`); ``None``: the ``views`` equispaced ones.

    Returns:
        a problem on ``(1, 1, H, W)`` with its FBP baseline.
    """
    x, info = _truth(image, size, index, 1, data_root)
    return ct_projections(x, views, noise_std, [torch.Generator().manual_seed(seed)], info=info,
                          candidate_views=candidate_views)


def ct_projections(x: Tensor, views: int, noise_std: float, generators: Sequence[torch.Generator], *,
                   angle_range: float | None = None, data_range: float | None = None,
                   info: dict | None = None, candidate_views: int | None = None) -> Problem:
    """Parallel-beam CT of the images ``x`` ``(B, 1, H, W)``: ``views`` equispaced angles over
    180 degrees, or over ``[0, angle_range)`` degrees (limited angle), and Gaussian noise of
    ``noise_std`` drawn for each image from its own generator (so an image's measurement does not
    depend on the others in the batch); the problem of :func:`ct` and of the CT batch benchmark.

    ``candidate_views``: an active acquisition instead: the sinogram holds that many equispaced
    candidate angles over 180 degrees and an active sampler chooses ``views`` of them."""
    if len(generators) != x.shape[0]:
        raise ValueError(f"generators: expected one per image ({x.shape[0]}), got {len(generators)}")
    if candidate_views is not None:
        if angle_range is not None:
            raise ValueError("candidate_views: an active acquisition chooses among views over 180 degrees; "
                             "leave angle_range unset")
        if isinstance(candidate_views, bool) or not isinstance(candidate_views, int) or candidate_views < views:
            raise ValueError(f"candidate_views: expected an integer >= views ({views}), got {candidate_views!r}")
    angles = sparse_view_angles(views) if angle_range is None else limited_angle(views, math.radians(angle_range))
    if candidate_views is not None:
        angles = sparse_view_angles(candidate_views)
    op = ParallelBeamCT(tuple(x.shape[-2:]), angles)
    clean = op.A(x)
    noise = torch.stack([torch.randn(clean.shape[1:], generator=g, dtype=clean.dtype) for g in generators])
    problem = simulated("ct", op, x, clean + noise_std * noise, noise_std, "fbp", info=info)
    problem.data_range = data_range
    if candidate_views is not None:
        problem.acquisition = {"budget": int(views), "start": None}
    return problem


def inpaint(
    size: int = 64,
    mask: str = "random",
    observed: float = 0.3,
    box: int = 24,
    noise_std: float = 0.01,
    image: str = "phantom",
    index: int = 0,
    seed: int = 0,
    data_root: str | Path = "data",
    channels: int = 1,
) -> Problem:
    """Inpainting of a held-out image or a user's file, grey level or RGB.

    Args:
        size: image side of a packaged source; an image file keeps its own ``H x W``.
        mask: ``"random"`` (each pixel observed with probability ``observed``, seeded by
            ``seed``) or ``"box"`` (a centred ``box x box`` hole); one ``(H, W)`` mask shared
            by the channels.
        observed: the fraction of pixels kept by the random mask.
        box: the side of the box hole.
        noise_std: Gaussian noise std on the observed pixels, image units (``[0, 1]``).
        image: a packaged source (``"natural"``, ``"natural_rgb"``, ``"phantom"``, ...) or the
            path of an image file (:mod:`invdiff.problems.images`).
        index: which held-out image.
        seed: seeds the mask and the noise.
        data_root: where datasets are built.
        channels: 1 (grey level) or 3 (RGB; ``image="natural"`` then takes ``"natural_rgb"``).

    Returns:
        a problem on ``(1, channels, H, W)`` with the masked measurement as its baseline.
    """
    x, info = _truth(image, size, index, channels, data_root)
    H, W = x.shape[-2:]
    masks = {
        "random": lambda: random_pixel_mask((H, W), observed, generator=torch.Generator().manual_seed(seed)),
        "box": lambda: box_mask((H, W), (box, box)),
    }
    if mask not in masks:
        raise ValueError(f"mask: expected one of {sorted(masks)}, got {mask!r}")
    op = Inpainting(masks[mask]())
    return simulated("inpaint", op, x, measure(op, x, noise_std, seed), noise_std, "adjoint", info=info)


def sr(size: int = 64, factor: int = 4, kernel: str = "bicubic", noise_std: float = 0.01,
       image: str = "phantom", index: int = 0, seed: int = 0, data_root: str | Path = "data",
       channels: int = 1) -> Problem:
    """Super-resolution of a held-out image or a user's file by an integer factor, grey level or RGB.

    Args:
        size: image side of a packaged source; an image file keeps its own ``H x W``, which
            must be multiples of ``factor``.
        factor: the integer down-sampling factor.
        kernel: the anti-aliasing kernel (:class:`operators.SuperResolution`).
        noise_std: Gaussian noise std of the low-resolution image, image units (``[0, 1]``).
        image: a packaged source or the path of an image file (:mod:`invdiff.problems.images`).
        index: which held-out image.
        seed: seeds the noise.
        data_root: where datasets are built.
        channels: 1 (grey level) or 3 (RGB; ``image="natural"`` then takes ``"natural_rgb"``).

    Returns:
        a problem on ``(1, channels, H, W)`` with the pseudo-inverse baseline.

    Raises:
        ValueError: the image's sides are not multiples of ``factor`` (naming the image).
    """
    x, info = _truth(image, size, index, channels, data_root)
    op = SuperResolution(factor, kernel)
    H, W = x.shape[-2:]
    if H % op.factor or W % op.factor:
        raise ValueError(f"image: {image} is {H} x {W}; super-resolution by factor={op.factor} needs "
                         f"sides that are multiples of it (crop the image or choose another factor)")
    return simulated("sr", op, x, measure(op, x, noise_std, seed), noise_std, "pinv", info=info)


def phase(size: int = 64, oversampling: float = 2.0, noise_std: float = 0.01, image: str = "phantom",
          index: int = 0, seed: int = 0, data_root: str | Path = "data") -> Problem:
    """Fourier phase retrieval of a held-out image from oversampled magnitudes."""
    x = ground_truth(image, size, index, complex_=False, data_root=data_root)
    op = PhaseRetrieval(oversampling)
    return simulated("phase", op, x, measure(op, x, noise_std, seed), noise_std, "error_reduction",
                     {"iterations": 200})


def ct_prelog(size: int = 64, views: int = 60, photons: float = 1e4, mu: float = 0.16, image: str = "ct",
              index: int = 0, seed: int = 0, data_root: str | Path = "data") -> Problem:
    r"""Pre-log transmission CT with Poisson noise: :math:`y = \mathrm{Poisson}(N e^{-\mu P x}) / N`.

    ``y`` is the transmitted fraction of ``N = photons`` blank-scan photons per detector bin;
    ``mu = 0.16`` makes water (0.5 in relative attenuation) 0.08 per pixel, a 25 cm field of
    view on 64 pixels, so rays through the head keep a few percent of their photons. The
    recorded ``noise_std`` is the root-mean-square Poisson noise, :math:`\sqrt{\overline{e^{-\mu P x}} / N}`.
    The baseline takes the logarithm and filters and back-projects.
    """
    x = ground_truth(image, size, index, complex_=False, data_root=data_root)
    op = TransmissionCT(ParallelBeamCT((size, size), sparse_view_angles(views)), I0=1.0, mu=mu)
    expected = op.A(x)
    y = PoissonNoise(photons)(expected, generator=torch.Generator().manual_seed(seed))
    noise_std = float(expected.mean() / photons) ** 0.5
    return simulated("ct_prelog", op, x, y, noise_std, "postlog_fbp", {"min_count": 0.5 / photons})


SIMULATED = {"mri": mri, "ct": ct, "ct_prelog": ct_prelog, "inpaint": inpaint, "sr": sr, "phase": phase}
"""The 2D simulated tasks by name."""
