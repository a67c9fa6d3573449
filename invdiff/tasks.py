r"""The default reconstruction tasks: ground truth, operator, measurement and baseline.

Each task function builds a :class:`Task` from typed arguments (configs in ``configs/task/``
call them through Hydra). Ground truths are held-out images (:func:`ground_truth`): the test
split of a dataset built from packaged anatomy or photographs (built under the data root on
first use and reused), or a held-out phantom of :mod:`invdiff.data.phantoms`. They are in the
representation the prior models: real images ``(1, 1, H, W)``, or complex images as two
real channels ``(1, 2, H, W)`` (real and imaginary parts, :class:`operators.RealToComplex`), so
the operator includes the embedding and every sampler works on real tensors.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

import sigpy.mri
import torch
from torch import Tensor

from operators import (
    GaussianNoise,
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

from invdiff.data.datasets import DATASETS, load_split
from invdiff.data.phantoms import HELD_OUT, complex_phantom, phantom

IMAGES = ("phantom", "mri_brain", "natural", "ct")
"""Sources of ground truth: generated phantoms or the test split of a dataset."""


def ground_truth(image: str, size: int, index: int, *, complex_: bool, data_root: str | Path = "data") -> Tensor:
    """Held-out image ``index`` of ``image``, ``(1, C, size, size)`` float32 (2 channels if complex).

    Args:
        image: ``"phantom"`` (complex with a smooth phase when ``complex_``), ``"mri_brain"``
            (complex brain slices), ``"natural"`` (grey-level photographs) or ``"ct"`` (real CT
            slices in relative attenuation).
        size: image side.
        index: which held-out image.
        complex_: whether the task wants a complex image.
        data_root: where datasets are built and reused.
    """
    if image == "phantom":
        if complex_:
            return RealToComplex().AT(complex_phantom(size, HELD_OUT + index)[None, None])
        return phantom(size, HELD_OUT + index)[None, None]
    if image not in DATASETS or image not in IMAGES:
        raise ValueError(f"image: expected one of {IMAGES}, got {image!r}")
    test = load_split(DATASETS[image](data_root, size=size, splits=("test",)), "test")
    if not 0 <= index < test.shape[0]:
        raise ValueError(f"index: expected 0 <= index < {test.shape[0]} (test images of {image}), got {index}")
    x = torch.from_numpy(np.asarray(test[index : index + 1], dtype=np.float32))
    if (x.shape[1] == 2) != complex_:
        kind = "complex" if complex_ else "real"
        raise ValueError(f"image: {image} holds {x.shape[1]}-channel images, the task needs {kind} ones")
    return x


@dataclass
class Task:
    """One inverse problem, ready for a sampler.

    Attributes:
        name: the task's name.
        x_true: ground truth in the prior's representation, ``(1, C, H, W)`` real.
        op: the forward operator on that representation.
        y: the noisy measurement ``op.A(x_true) + noise``.
        noise_std: the measurement noise's standard deviation.
        baseline: the name of the classical reconstruction in ``invdiff.samplers.BASELINES``.
        baseline_kwargs: its keyword arguments.
        is_complex: ``x_true`` holds a complex image as (real, imaginary) channels.
    """

    name: str
    x_true: Tensor
    op: Operator
    y: Tensor
    noise_std: float
    baseline: str
    baseline_kwargs: dict = field(default_factory=dict)
    is_complex: bool = False

    def image(self, x: Tensor) -> Tensor:
        """The real display image on which metrics are computed, ``(B, H, W)``: the first
        channel, or the magnitude of a complex representation."""
        return RealToComplex().A(x)[:, 0].abs() if self.is_complex else x[:, 0]

    def array(self, x: Tensor):
        """``x`` as a numpy array in its natural type: complex ``(B, C, H, W)`` for complex tasks."""
        return (RealToComplex().A(x) if self.is_complex else x).detach().cpu().numpy()


def _measure(op: Operator, x: Tensor, noise_std: float, seed: int) -> Tensor:
    generator = torch.Generator().manual_seed(seed)
    return GaussianNoise(noise_std)(op.A(x), generator=generator)


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
) -> Task:
    """Multi-coil Cartesian MRI of a held-out complex image: birdcage coils, a fastMRI line mask."""
    x = ground_truth(image, size, index, complex_=True, data_root=data_root)
    op = mri_operator(size, coils, acceleration, center_fraction, mask_kind, seed)
    return Task("mri", x, op, _measure(op, x, noise_std, seed), noise_std, "cg", {"max_iter": 30}, is_complex=True)


def ct(size: int = 64, views: int = 30, noise_std: float = 0.2, image: str = "phantom", index: int = 0,
       seed: int = 0, data_root: str | Path = "data") -> Task:
    """Sparse-view parallel-beam CT of a held-out image (attenuation per pixel length, about ``[0, 1]``)."""
    x = ground_truth(image, size, index, complex_=False, data_root=data_root)
    op = ParallelBeamCT((size, size), sparse_view_angles(views))
    return Task("ct", x, op, _measure(op, x, noise_std, seed), noise_std, "fbp")


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
) -> Task:
    """Inpainting of a held-out image: a random-pixel mask (``observed`` fraction kept) or a centred box."""
    x = ground_truth(image, size, index, complex_=False, data_root=data_root)
    masks = {
        "random": lambda: random_pixel_mask((size, size), observed, generator=torch.Generator().manual_seed(seed)),
        "box": lambda: box_mask((size, size), (box, box)),
    }
    if mask not in masks:
        raise ValueError(f"mask: expected one of {sorted(masks)}, got {mask!r}")
    op = Inpainting(masks[mask]())
    return Task("inpaint", x, op, _measure(op, x, noise_std, seed), noise_std, "adjoint")


def sr(size: int = 64, factor: int = 4, kernel: str = "bicubic", noise_std: float = 0.01, image: str = "phantom",
       index: int = 0, seed: int = 0, data_root: str | Path = "data") -> Task:
    """Super-resolution of a held-out image by an integer factor with an anti-aliasing kernel."""
    x = ground_truth(image, size, index, complex_=False, data_root=data_root)
    op = SuperResolution(factor, kernel)
    return Task("sr", x, op, _measure(op, x, noise_std, seed), noise_std, "pinv")


def phase(size: int = 64, oversampling: float = 2.0, noise_std: float = 0.01, image: str = "phantom",
          index: int = 0, seed: int = 0, data_root: str | Path = "data") -> Task:
    """Fourier phase retrieval of a held-out image from oversampled magnitudes."""
    x = ground_truth(image, size, index, complex_=False, data_root=data_root)
    op = PhaseRetrieval(oversampling)
    return Task("phase", x, op, _measure(op, x, noise_std, seed), noise_std, "error_reduction",
                {"iterations": 200})


def ct_prelog(size: int = 64, views: int = 60, photons: float = 1e4, mu: float = 0.16, image: str = "ct",
              index: int = 0, seed: int = 0, data_root: str | Path = "data") -> Task:
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
    return Task("ct_prelog", x, op, y, noise_std, "postlog_fbp", {"min_count": 0.5 / photons})


TASKS = {"mri": mri, "ct": ct, "ct_prelog": ct_prelog, "inpaint": inpaint, "sr": sr, "phase": phase}

# The volume tasks build on Task and the measurement above.
from invdiff.tasks3d import ct3d, mri3d  # noqa: E402

TASKS.update(ct3d=ct3d, mri3d=mri3d)
