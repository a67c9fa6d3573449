r"""Simulated problems: a held-out ground truth, an operator, a noisy measurement and a baseline.

Each task function builds a :class:`~invdiff.problems.base.Problem` from typed arguments
(configs in ``configs/task/`` call them through Hydra); its ground truth comes from
:func:`invdiff.problems.images.ground_truth`, in the representation the prior models.
"""

from __future__ import annotations

from pathlib import Path

import sigpy.mri
import torch

from invdiff.problems.base import Problem, measure, simulated
from invdiff.problems.images import ground_truth
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
    random_pixel_mask,
    sparse_view_angles,
)

def mri_operator(
    size: int, coils: int, acceleration: float, center_fraction: float | None, mask_kind: str, seed: int
) -> Operator:
    """Birdcage coil maps, a fastMRI line mask seeded by ``seed``, on real (real, imaginary) channels."""
    maps = torch.from_numpy(sigpy.mri.birdcage_maps((coils, size, size))).to(torch.complex64)
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
    """Multi-coil Cartesian MRI of a held-out complex image: birdcage coils, a fastMRI line mask."""
    x = ground_truth(image, size, index, complex_=True, data_root=data_root)
    op = mri_operator(size, coils, acceleration, center_fraction, mask_kind, seed)
    return simulated("mri", op, x, measure(op, x, noise_std, seed), noise_std, "cg", {"max_iter": 30},
                     is_complex=True)


def ct(size: int = 64, views: int = 30, noise_std: float = 0.2, image: str = "phantom", index: int = 0,
       seed: int = 0, data_root: str | Path = "data") -> Problem:
    """Sparse-view parallel-beam CT of a held-out image (attenuation per pixel length, about ``[0, 1]``)."""
    x = ground_truth(image, size, index, complex_=False, data_root=data_root)
    op = ParallelBeamCT((size, size), sparse_view_angles(views))
    return simulated("ct", op, x, measure(op, x, noise_std, seed), noise_std, "fbp")


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
) -> Problem:
    """Inpainting of a held-out image: a random-pixel mask (``observed`` fraction kept) or a centred box."""
    x = ground_truth(image, size, index, complex_=False, data_root=data_root)
    masks = {
        "random": lambda: random_pixel_mask((size, size), observed, generator=torch.Generator().manual_seed(seed)),
        "box": lambda: box_mask((size, size), (box, box)),
    }
    if mask not in masks:
        raise ValueError(f"mask: expected one of {sorted(masks)}, got {mask!r}")
    op = Inpainting(masks[mask]())
    return simulated("inpaint", op, x, measure(op, x, noise_std, seed), noise_std, "adjoint")


def sr(size: int = 64, factor: int = 4, kernel: str = "bicubic", noise_std: float = 0.01, image: str = "phantom",
       index: int = 0, seed: int = 0, data_root: str | Path = "data") -> Problem:
    """Super-resolution of a held-out image by an integer factor with an anti-aliasing kernel."""
    x = ground_truth(image, size, index, complex_=False, data_root=data_root)
    op = SuperResolution(factor, kernel)
    return simulated("sr", op, x, measure(op, x, noise_std, seed), noise_std, "pinv")


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
