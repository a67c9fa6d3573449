r"""Ground truths of the simulated problems: held-out images in the representation the prior models.

Real images are ``(1, 1, H, W)`` float32; complex images are two real channels ``(1, 2, H, W)``
(real and imaginary parts, :class:`operators.RealToComplex`), so operators include the
embedding and every sampler works on real tensors. Held-out images are the test split of a
dataset built from packaged anatomy or photographs (built under the data root on first use and
reused), or a held-out phantom of :mod:`invdiff.data.phantoms`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from invdiff.data.datasets import DATASETS, load_split
from invdiff.data.phantoms import HELD_OUT, complex_phantom, phantom
from operators import RealToComplex

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
