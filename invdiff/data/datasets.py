"""Training and evaluation datasets built from packaged anatomy, stored under the data root.

A dataset is a folder holding ``train.npy``, ``val.npy`` and ``test.npy``, each an
``(N, C, H, W)`` float array in the prior's representation (complex images as two channels,
real and imaginary parts), plus ``info.json`` saying how it was made. Files are written to a
temporary name and renamed, so an interrupted build leaves no partial file; a complete dataset
is reused, not rebuilt.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
from torch import Tensor

from operators.base import RealToComplex

SPLIT_NAMES = ("train", "val", "test")


def _write_npy(path: Path, array: np.ndarray) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with tmp.open("wb") as f:
        np.save(f, array)
    tmp.replace(path)


def dataset_ready(folder: Path) -> bool:
    return all((folder / f"{s}.npy").is_file() for s in SPLIT_NAMES) and (folder / "info.json").is_file()


def build_dataset(folder: Path, make: Callable[[str], Tensor], info: dict, *, dtype=np.float16) -> Path:
    """Write ``make(split)`` for every split into ``folder`` unless it is already complete."""
    folder = Path(folder)
    if dataset_ready(folder):
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    for split in SPLIT_NAMES:
        images = make(split)
        if images.is_complex():
            images = RealToComplex().AT(images)
        _write_npy(folder / f"{split}.npy", images.numpy().astype(dtype))
    (folder / "info.json").write_text(json.dumps(info, indent=2) + "\n")
    return folder


def load_split(folder: str | Path, split: str) -> np.ndarray:
    """A split of a dataset as a read-only memory map, ``(N, C, H, W)``."""
    path = Path(folder) / f"{split}.npy"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such dataset split; build it with scripts/make_data.py")
    array = np.load(path, mmap_mode="r")
    if array.ndim != 4:
        raise ValueError(f"{path}: expected an (N, C, H, W) array, got shape {array.shape}")
    return array


def mri_brain(root: str | Path, size: int = 64, variants: tuple[int, int, int] = (64, 4, 1), seed: int = 0) -> Path:
    """Complex brain slices from the MNI templates: ``root/mri_brain_{size}``.

    Args:
        root: the data root.
        size: image side.
        variants: random contrasts/poses/phases per slice for train, val and test (the test
            split's first variant is each slice as it is, unmoved).
        seed: seeds the synthesis of each split (offset per split).
    """
    from invdiff.data.anatomy import SPLITS, complex_brain_images

    counts = dict(zip(SPLIT_NAMES, variants))
    offsets = dict(zip(SPLIT_NAMES, (0, 1, 2)))
    info = {"source": "MNI ICBM152 2009a (nilearn)", "splits": SPLITS, "size": size, "variants": counts,
            "seed": seed, "representation": "complex as (real, imaginary) channels, magnitude in [0, 1]"}
    return build_dataset(
        Path(root) / f"mri_brain_{size}",
        lambda split: complex_brain_images(split, size, counts[split], seed=seed * 10 + offsets[split]),
        info,
    )


DATASETS = {"mri_brain": mri_brain}


NATURAL_SPLITS = {
    "train": ["astronaut", "rocket", "moon", "brick", "grass", "gravel", "coins", "cell", "retina",
              "immunohistochemistry", "hubble_deep_field", "pywt:aero", "pywt:ascent"],
    "val": ["chelsea"],
    "test": ["camera", "coffee"],
}
"""Photographs that scikit-image and PyWavelets ship and load offline, split by image."""


def natural_photo(name: str) -> Tensor:
    """A packaged photograph as a grey-level ``(H, W)`` float32 tensor in ``[0, 1]``."""
    import torch

    if name.startswith("pywt:"):
        import pywt.data

        image = np.asarray(getattr(pywt.data, name[5:])(), dtype=np.float64)
    else:
        import skimage.data

        image = np.asarray(getattr(skimage.data, name)(), dtype=np.float64)
    if image.ndim == 3:
        image = image[..., :3] @ np.array([0.2125, 0.7154, 0.0721])
    image = (image - image.min()) / max(image.max() - image.min(), 1e-12)
    return torch.from_numpy(image).float()


def natural_crops(names: list[str], size: int, count: int, *, seed: int, scale=(0.2, 1.0)) -> Tensor:
    """``count`` random square crops (side a random fraction ``scale`` of the shorter side,
    area-resampled to ``size``, randomly flipped), drawn evenly from the photographs ``names``.
    ``(count, 1, size, size)`` float32."""
    import torch
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(seed)
    photos = [natural_photo(n) for n in names]
    crops = []
    for k in range(count):
        photo = photos[k % len(photos)]
        H, W = photo.shape
        side = max(size, int(min(H, W) * (scale[0] + (scale[1] - scale[0]) * float(torch.rand((), generator=g)))))
        top = int(torch.randint(0, H - side + 1, (), generator=g))
        left = int(torch.randint(0, W - side + 1, (), generator=g))
        crop = photo[top : top + side, left : left + side][None, None]
        crop = F.interpolate(crop, size=(size, size), mode="area")[0]
        if float(torch.rand((), generator=g)) < 0.5:
            crop = crop.flip(-1)
        crops.append(crop)
    return torch.stack(crops)


def natural(root: str | Path, size: int = 64, counts: tuple[int, int, int] = (8000, 256, 64), seed: int = 0) -> Path:
    """Grey-level natural-image crops from packaged photographs: ``root/natural_{size}``;
    the splits use different photographs (:data:`NATURAL_SPLITS`)."""
    sizes = dict(zip(SPLIT_NAMES, counts))
    info = {"source": "scikit-image and PyWavelets sample photographs", "splits": NATURAL_SPLITS, "size": size,
            "counts": sizes, "seed": seed, "representation": "grey level in [0, 1]"}
    return build_dataset(
        Path(root) / f"natural_{size}",
        lambda split: natural_crops(NATURAL_SPLITS[split], size, sizes[split], seed=seed * 10 + SPLIT_NAMES.index(split)),
        info,
    )


DATASETS["natural"] = natural
