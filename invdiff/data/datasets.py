"""Training and evaluation datasets built from packaged anatomy, stored under the data root.

A dataset is a folder holding ``train.npy``, ``val.npy`` and ``test.npy``, each an
``(N, C, H, W)`` float array in the prior's representation (complex images as two channels,
real and imaginary parts), plus ``info.json`` saying how it was made. Files are written to a
temporary name and renamed, so an interrupted build leaves no partial file; a complete dataset
is reused, not rebuilt.
"""

from __future__ import annotations

import json
import math
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


def build_dataset(
    folder: Path, make: Callable[[str], Tensor], info: dict, *, splits=SPLIT_NAMES, dtype=np.float16
) -> Path:
    """Write ``make(split)`` into ``folder`` for each of ``splits`` that is not there yet."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for split in splits:
        if split not in SPLIT_NAMES:
            raise ValueError(f"splits: expected names among {SPLIT_NAMES}, got {split!r}")
        if (folder / f"{split}.npy").is_file():
            continue
        images = make(split)
        if images.is_complex():
            images = RealToComplex().AT(images)
        _write_npy(folder / f"{split}.npy", images.numpy().astype(dtype))
    info_path = folder / "info.json"
    if not info_path.is_file():
        info_path.write_text(json.dumps(info, indent=2) + "\n")
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


def mri_brain(
    root: str | Path, size: int = 64, variants: tuple[int, int, int] = (64, 4, 1), seed: int = 0, *, splits=SPLIT_NAMES
) -> Path:
    """Complex brain slices from the MNI templates: ``root/mri_brain_{size}``.

    Args:
        root: the data root.
        size: image side.
        variants: random contrasts/poses/phases per slice for train, val and test (the test
            split's first variant is each slice as it is, unmoved).
        seed: seeds the synthesis of each split (offset per split).
        splits: the splits to build (those already present are reused).
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
        splits=splits,
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


def random_crops(images: list[Tensor], size: int, count: int, *, seed: int, scale=(0.2, 1.0)) -> Tensor:
    """``count`` random square crops drawn evenly from ``images`` (``(H, W)`` each): side a random
    fraction ``scale`` of the shorter side, area-resampled to ``size``, randomly flipped.
    ``(count, 1, size, size)`` float32."""
    import torch
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(seed)
    crops = []
    for k in range(count):
        image = images[k % len(images)]
        H, W = image.shape
        side = max(size, int(min(H, W) * (scale[0] + (scale[1] - scale[0]) * float(torch.rand((), generator=g)))))
        side = min(side, H, W)
        top = int(torch.randint(0, H - side + 1, (), generator=g))
        left = int(torch.randint(0, W - side + 1, (), generator=g))
        crop = image[top : top + side, left : left + side][None, None]
        crop = F.interpolate(crop, size=(size, size), mode="area")[0]
        if float(torch.rand((), generator=g)) < 0.5:
            crop = crop.flip(-1)
        crops.append(crop)
    return torch.stack(crops)


def natural(
    root: str | Path, size: int = 64, counts: tuple[int, int, int] = (8000, 256, 64), seed: int = 0, *, splits=SPLIT_NAMES
) -> Path:
    """Grey-level natural-image crops from packaged photographs: ``root/natural_{size}``;
    the splits use different photographs (:data:`NATURAL_SPLITS`)."""
    sizes = dict(zip(SPLIT_NAMES, counts))
    info = {"source": "scikit-image and PyWavelets sample photographs", "splits": NATURAL_SPLITS, "size": size,
            "counts": sizes, "seed": seed, "representation": "grey level in [0, 1]"}
    return build_dataset(
        Path(root) / f"natural_{size}",
        lambda split: random_crops([natural_photo(n) for n in NATURAL_SPLITS[split]], size, sizes[split],
                                   seed=seed * 10 + SPLIT_NAMES.index(split)),
        info,
        splits=splits,
    )


DATASETS["natural"] = natural


CT_SPLITS = {
    "train": ["explicit_VR-UN.dcm", "J2K_pixelrep_mismatch.dcm"],
    "val": ["CT_small.dcm"],
    "test": ["693_UNCR.dcm"],
}
"""Real CT slices that pydicom and pydicom-data ship (see :func:`invdiff.data.dicom.packaged_ct_slices`
for sources and licences; ``693_UNCR.dcm`` is CQ500, CC BY-NC-SA 4.0: non-commercial use only)."""


def ct_slice(name: str) -> Tensor:
    r"""A packaged CT slice in relative attenuation :math:`\mu / (2 \mu_{water})`: air 0, water 0.5,
    1000 HU and above 1. ``(H, W)`` float32."""
    import pydicom.data

    from invdiff.data.dicom import read_ct

    hu, _ = read_ct(pydicom.data.get_testdata_file(name, download=False))
    return ((1 + hu / 1000) / 2).clamp(0, 1)


def ct(
    root: str | Path, size: int = 64, counts: tuple[int, int, int] = (6000, 64, 16), seed: int = 0, *, splits=SPLIT_NAMES
) -> Path:
    """CT crops in relative attenuation from the packaged slices: ``root/ct_{size}``; the splits
    use different slices (:data:`CT_SPLITS`); the first test image is the whole test slice."""
    import torch

    sizes = dict(zip(SPLIT_NAMES, counts))
    scales = {"train": (0.15, 1.0), "val": (0.5, 1.0), "test": (0.5, 1.0)}
    info = {"source": "pydicom / pydicom-data CT slices", "splits": CT_SPLITS, "size": size, "counts": sizes,
            "seed": seed, "representation": "mu / (2 mu_water), clipped to [0, 1]"}

    def make(split: str) -> Tensor:
        slices = [ct_slice(n) for n in CT_SPLITS[split]]
        crops = random_crops(slices, size, sizes[split], seed=seed * 10 + SPLIT_NAMES.index(split), scale=scales[split])
        if split == "test":
            whole = torch.nn.functional.interpolate(slices[0][None, None], size=(size, size), mode="area")[0]
            crops[0] = whole
        return crops

    return build_dataset(Path(root) / f"ct_{size}", make, info, splits=splits)


DATASETS["ct"] = ct


def mri_brain_fastmri(
    root: str | Path,
    size: int = 64,
    coils: int = 8,
    *,
    split: str = "test",
    slab: int = 8,
    oversample_readout: bool = True,
    noise_std: float = 0.002,
    seed: int = 0,
) -> Path:
    """Multi-coil brain volumes in fastMRI's file layout: ``root/mri_brain_fastmri_{size}/{split}``.

    Every ``slab`` consecutive slices of the split (one random contrast and phase per volume,
    unmoved) become one volume: k-space of the birdcage-coil images (``sigpy.mri.birdcage_maps``),
    with the readout (H) sampled twice as finely as the image when ``oversample_readout`` (k-space
    ``(slices, coils, 2 size, size)``, reconstruction size ``size x size``, as in fastMRI's
    files), plus complex Gaussian noise of ``noise_std``. ``reconstruction_rss`` is the
    noiseless RSS at the reconstruction size. Complete volumes are reused.
    """
    import sigpy.mri
    import torch
    import torch.nn.functional as F

    from invdiff.data.anatomy import synthesize, tissue_maps
    from invdiff.data.fastmri import reconstruct_rss, write_volume
    from invdiff.data.phantoms import smooth_phase
    from operators.mri import fft2c

    folder = Path(root) / f"mri_brain_fastmri_{size}" / split
    folder.mkdir(parents=True, exist_ok=True)
    maps_all = tissue_maps(split, size)
    height = 2 * size if oversample_readout else size
    sens = torch.from_numpy(sigpy.mri.birdcage_maps((coils, height, size))).to(torch.complex64)
    paths = []
    for v, start in enumerate(range(0, maps_all.shape[0] - slab + 1, slab)):
        path = folder / f"brain_{split}_{v:03d}.h5"
        paths.append(path)
        if path.is_file():
            continue
        g = torch.Generator().manual_seed(seed * 1000 + v)
        maps = maps_all[start : start + slab]
        family = torch.full((slab,), int(torch.randint(3, (), generator=g)))
        magnitude = synthesize(maps, g, family=family)
        phase = smooth_phase(size, g, amplitude=math.pi / 2).float()
        image = torch.polar(magnitude, phase.expand_as(magnitude))
        # 1. Field of view twice as long along the readout: zero-pad the image, as a scanner's
        #    2x readout oversampling would see it.
        pad = (height - size) // 2
        image = F.pad(image, (0, 0, pad, height - size - pad))
        clean = fft2c(sens[None] * image[:, None])
        target = reconstruct_rss(clean, (size, size))
        noisy = clean + noise_std * torch.randn(clean.shape, dtype=clean.dtype, generator=g)
        header = {"encoding_size": (height, size, 1), "recon_size": (size, size, 1)}
        write_volume(path, noisy, reconstruction_rss=target, header=header,
                     attrs={"acquisition": ["AXT1", "AXT2", "AXPD"][int(family[0])], "patient_id": f"mni-{split}-{v}"})
    return folder


DATASETS_FASTMRI = {"mri_brain_fastmri": mri_brain_fastmri}
