"""Training and evaluation datasets built from packaged anatomy, stored under the data root.

A dataset is a folder holding ``train.npy``, ``val.npy`` and ``test.npy``, each an
``(N, C, H, W)`` float array in the prior's representation (complex images as two channels,
real and imaginary parts), plus ``info.json`` saying how it was made. Files are written to a
temporary name and renamed, so an interrupted build leaves no partial file; a complete dataset
is reused, not rebuilt.
"""

from __future__ import annotations

import inspect
import json
import math
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
from torch import Tensor

from invdiff.fileio import atomic_save_npy, atomic_write_text
from operators.base import RealToComplex

SPLIT_NAMES = ("train", "val", "test")


def data_folder(folder: str | Path, *, writing: bool = True) -> Path:
    """``folder`` under the data root, created when missing, with errors that name it.

    The data root comes from ``data_root=`` or the ``INVDIFF_DATA`` environment variable; a
    root that is a file, a folder that cannot be created, or (``writing``) one that cannot be
    written is a ``ValueError`` that names the path, so that it reads well through Hydra, which
    shows an ``OSError`` without its file name.
    """
    folder = Path(folder)
    blocker = next((p for p in (folder, *folder.parents) if p.exists()), None)
    if blocker is not None and not blocker.is_dir():
        raise ValueError(f"data_root: {blocker} is a file, not a folder; set INVDIFF_DATA or data_root=<folder> "
                         f"to a writable folder for the generated data")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ValueError(f"data_root: cannot create {folder} ({err.strerror}); set INVDIFF_DATA or "
                         f"data_root=<folder> to a writable folder") from err
    if writing and not os.access(folder, os.W_OK | os.X_OK):
        raise ValueError(f"data_root: {folder} is not writable; set INVDIFF_DATA or data_root=<folder> "
                         f"to a writable folder")
    return folder


def build_dataset(
    folder: Path, make: Callable[[str], Tensor], info: dict, *, splits=SPLIT_NAMES, dtype=np.float16
) -> Path:
    """Write ``make(split)`` into ``folder`` for each of ``splits`` that is not there yet."""
    folder = Path(folder)
    for split in splits:
        if split not in SPLIT_NAMES:
            raise ValueError(f"splits: expected names among {SPLIT_NAMES}, got {split!r}")
    missing = [s for s in splits if not (folder / f"{s}.npy").is_file()]
    data_folder(folder, writing=bool(missing) or not (folder / "info.json").is_file())
    for split in splits:
        if split not in missing:
            continue
        images = make(split)
        if images.is_complex():
            images = RealToComplex().AT(images)
        atomic_save_npy(folder / f"{split}.npy", images.numpy().astype(dtype))
    info_path = folder / "info.json"
    if not info_path.is_file():
        atomic_write_text(info_path, json.dumps(info, indent=2) + "\n")
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
    root: str | Path, size: int | None = 64, variants: tuple[int, int, int] = (64, 4, 1), seed: int = 0, *,
    splits=SPLIT_NAMES
) -> Path:
    """Complex brain slices from the MNI templates: ``root/mri_brain_{size}``, or with ``size=None``
    ``root/mri_brain_native``, the slices on the templates' own 1 mm grid
    (:data:`~invdiff.data.anatomy.NATIVE_SIZE` square, zero-padded) for patch training
    (:class:`invdiff.training.TrainConfig` ``patch_size``). Both are made from the same slices of
    each split (:data:`invdiff.data.anatomy.SPLITS`), so the native splits are as disjoint as the
    resampled ones.

    Args:
        root: the data root.
        size: image side; ``None`` for the 1 mm grid (at 233 x 233 the default variants make a
            training split of 1.3 GB; patch training does with fewer, e.g. ``(16, 4, 1)``).
        variants: random contrasts/poses/phases per slice for train, val and test (the test
            split's first variant is each slice as it is, unmoved).
        seed: seeds the synthesis of each split (offset per split).
        splits: the splits to build (those already present are reused).
    """
    from invdiff.data.anatomy import NATIVE_SIZE, SPLITS, complex_brain_images

    counts = dict(zip(SPLIT_NAMES, variants))
    offsets = dict(zip(SPLIT_NAMES, (0, 1, 2)))
    info = {"source": "MNI ICBM152 2009a (nilearn)", "splits": SPLITS, "size": size, "variants": counts,
            "seed": seed, "representation": "complex as (real, imaginary) channels, magnitude in [0, 1]"}
    if size is None:
        info.update(pixel_mm=1.0, image_size=[NATIVE_SIZE, NATIVE_SIZE])
    return build_dataset(
        Path(root) / f"mri_brain_{'native' if size is None else size}",
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

    from invdiff.data.dicom import read_ct, relative_attenuation

    hu, _ = read_ct(pydicom.data.get_testdata_file(name, download=False))
    return relative_attenuation(hu)


def pad_to_common(images: list[Tensor]) -> Tensor:
    """``(H_i, W_i)`` images zero-padded, centred, to the largest height and width among them:
    ``(N, 1, H, W)``. Zero is the background of every dataset here (air, no signal)."""
    import torch
    import torch.nn.functional as F

    H, W = max(x.shape[-2] for x in images), max(x.shape[-1] for x in images)
    return torch.stack([F.pad(x, ((W - x.shape[-1]) // 2, W - x.shape[-1] - (W - x.shape[-1]) // 2,
                                  (H - x.shape[-2]) // 2, H - x.shape[-2] - (H - x.shape[-2]) // 2))
                        for x in images])[:, None]


def ct(
    root: str | Path, size: int | None = 64, counts: tuple[int, int, int] = (6000, 64, 16), seed: int = 0, *,
    splits=SPLIT_NAMES
) -> Path:
    """CT crops in relative attenuation from the packaged slices: ``root/ct_{size}``; the splits
    use different slices (:data:`CT_SPLITS`); the first test image is the whole test slice.

    With ``size=None``: ``root/ct_native``, each split's whole slices on their own pixel grid, for
    patch training (:class:`invdiff.training.TrainConfig` ``patch_size``); ``counts`` and ``seed``
    do not apply. Slices of one split that differ in size are zero-padded (air), centred, to the
    largest (:func:`pad_to_common`); ``info.json`` keeps each slice's own size under
    ``image_sizes``. The packaged slices are 512 x 512 for train and test, 128 x 128 for val.
    """
    import torch

    if size is None:
        shapes = {split: [list(ct_slice(n).shape) for n in CT_SPLITS[split]] for split in SPLIT_NAMES}
        info = {"source": "pydicom / pydicom-data CT slices", "splits": CT_SPLITS, "size": None,
                "image_sizes": shapes, "representation": "mu / (2 mu_water), clipped to [0, 1]"}
        return build_dataset(Path(root) / "ct_native",
                             lambda split: pad_to_common([ct_slice(n) for n in CT_SPLITS[split]]), info,
                             splits=splits)
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

NATIVE = ("mri_brain", "ct")
"""The builders of :data:`DATASETS` that take ``size=None`` (the sources' own pixel grid)."""


FASTMRI_CENTER_FRACTIONS = {4: 0.08, 8: 0.04}
"""fastMRI's prospective accelerations and the fraction of fully sampled centre columns of each."""


def mri_brain_fastmri_folder(root: str | Path, *, split: str = "test", **variant) -> Path:
    """Where :func:`mri_brain_fastmri` writes a variant: ``root/<name>/<split>``.

    The name is ``mri_brain_fastmri_{size}`` for the default variant and gains a suffix for each
    setting that differs from the default, so that different variants never share a folder:
    ``_w{width}`` (``width != size``), ``_c{coils}`` (``coils != 8``, multi-coil only),
    ``_slab{slab}``, ``_nos`` (no readout oversampling), ``_noise{noise_std:g}``, ``_seed{seed}``,
    ``_sc`` (single-coil) and ``_x{acceleration:g}_test`` (prospective), in that order; e.g.
    ``mri_brain_fastmri_320_w372_c6_slab2`` or ``mri_brain_fastmri_16_sc_x4_test``.

    Args:
        root, split: as :func:`mri_brain_fastmri`.
        **variant: :func:`mri_brain_fastmri`'s other keyword arguments (``size``, ``coils``,
            ``slab``, ...); those left out take its defaults.

    Returns:
        the folder of that split.
    """
    defaults = {name: p.default for name, p in inspect.signature(mri_brain_fastmri).parameters.items()
                if p.default is not inspect.Parameter.empty and name != "split"}
    unknown = sorted(set(variant) - set(defaults))
    if unknown:
        raise ValueError(f"variant: unknown settings {unknown}; expected some of {sorted(defaults)}")
    v = {**defaults, **variant}
    size, coils, width, slab, seed = v["size"], v["coils"], v["width"], v["slab"], v["seed"]
    noise_std, acceleration, single_coil = v["noise_std"], v["acceleration"], v["single_coil"]
    oversample_readout = v["oversample_readout"]
    name = f"mri_brain_fastmri_{size}"
    if width is not None and width != size:
        name += f"_w{width}"
    if coils != 8 and not single_coil:
        name += f"_c{coils}"
    if slab != 8:
        name += f"_slab{slab}"
    if not oversample_readout:
        name += "_nos"
    if noise_std != 0.002:
        name += f"_noise{noise_std:g}"
    if seed != 0:
        name += f"_seed{seed}"
    if single_coil:
        name += "_sc"
    if acceleration is not None:
        name += f"_x{acceleration:g}_test"
    return Path(root) / name / split


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
    width: int | None = None,
    acceleration: float | None = None,
    single_coil: bool = False,
) -> Path:
    """Brain volumes in fastMRI's file layout (:mod:`invdiff.data.fastmri.io`), in
    :func:`mri_brain_fastmri_folder` (``root/mri_brain_fastmri_{size}/{split}`` by default).

    Every ``slab`` consecutive slices of the split (one random contrast and phase per volume,
    unmoved) become one volume ``brain_{split}_{v:03d}.h5``:

    1. the ``size x size`` complex image is zero-padded to ``H x W``: along the readout to
       ``H = 2 size`` when ``oversample_readout`` (the 2x readout oversampling of fastMRI's
       files), along the phase encodes to ``W = width``; as in fastMRI, where 640 x 372 k-space
       has a 320 x 320 target, the header's reconstruction size stays ``size x size``;
    2. k-space is the centred FFT of the birdcage-coil images (``sigpy.mri.birdcage_maps`` over
       the ``H x W`` field of view), ``(slices, coils, H, W)``, or of the image itself when
       ``single_coil`` (``(slices, H, W)``), plus complex Gaussian noise of ``noise_std``;
    3. the target is the noiseless ``reconstruction_rss`` (multi-coil) or ``reconstruction_esc``
       (single-coil) at the reconstruction size, the centre crop of the RSS (or magnitude) of the
       padded image;
    4. with ``acceleration``, the file is a prospective (test) file instead: k-space zero outside
       the columns of fastMRI's equispaced mask for the file
       (``operators.fastmri_mask((H, W), acceleration, FASTMRI_CENTER_FRACTIONS[acceleration],
       kind="equispaced", seed=operators.volume_seed(file name))``, the kind behind fastMRI's
       multi-coil brain data), the ``mask`` dataset, attributes ``acceleration`` and
       ``num_low_frequency``, and no target.

    The random draws (contrast, phase, noise) do not depend on ``width``, ``acceleration`` or
    ``single_coil``. Complete volumes are reused.

    Args:
        root: the data root.
        size: the image (reconstruction) side.
        coils: the number of coils (multi-coil files).
        split: the anatomy split (:data:`invdiff.data.anatomy.SPLITS`).
        slab: slices per volume.
        oversample_readout: sample the readout twice as finely as the image.
        noise_std: the k-space noise standard deviation.
        seed: seeds each volume's draws (``seed * 1000 + v``).
        width: the k-space phase-encode width ``W >= size``; ``None`` takes ``size``.
        acceleration: write prospective test files at this acceleration, 4 or 8
            (:data:`FASTMRI_CENTER_FRACTIONS`); ``None`` writes fully sampled files with a target.
        single_coil: one coil, the image itself, with fastMRI's single-coil target.

    Returns:
        the folder of the volumes.

    Raises:
        ValueError: ``width`` is smaller than ``size``, or ``acceleration`` is not 4 or 8.
    """
    import sigpy.mri
    import torch
    import torch.nn.functional as F

    from invdiff.data.anatomy import synthesize, tissue_maps
    from invdiff.data.fastmri import reconstruct_rss, write_volume
    from invdiff.data.phantoms import smooth_phase
    from operators import fastmri_mask, volume_seed
    from operators.mri import fft2c

    width = size if width is None else int(width)
    if width < size:
        raise ValueError(f"width: expected the k-space width W >= size = {size}, got {width}")
    if acceleration is not None and acceleration not in FASTMRI_CENTER_FRACTIONS:
        raise ValueError(
            f"acceleration: expected one of fastMRI's {sorted(FASTMRI_CENTER_FRACTIONS)} or None, "
            f"got {acceleration}"
        )
    folder = mri_brain_fastmri_folder(
        root, split=split, size=size, coils=coils, slab=slab, oversample_readout=oversample_readout,
        noise_std=noise_std, seed=seed, width=width, acceleration=acceleration, single_coil=single_coil,
    )
    maps_all = tissue_maps(split, size)
    starts = range(0, maps_all.shape[0] - slab + 1, slab)
    paths = [folder / f"brain_{split}_{v:03d}.h5" for v in range(len(starts))]
    data_folder(folder, writing=not all(p.is_file() for p in paths))
    height = 2 * size if oversample_readout else size
    if not single_coil:
        sens = torch.from_numpy(sigpy.mri.birdcage_maps((coils, height, width))).to(torch.complex64)
    for v, (start, path) in enumerate(zip(starts, paths)):
        if path.is_file():
            continue
        g = torch.Generator().manual_seed(seed * 1000 + v)
        maps = maps_all[start : start + slab]
        family = torch.full((slab,), int(torch.randint(3, (), generator=g)))
        magnitude = synthesize(maps, g, family=family)
        phase = smooth_phase(size, g, amplitude=math.pi / 2).float()
        image = torch.polar(magnitude, phase.expand_as(magnitude))
        # 1. Field of view twice as long along the readout (zero-padded, as a scanner's 2x readout
        #    oversampling would see it) and W columns wide.
        pad, pad_w = (height - size) // 2, (width - size) // 2
        image = F.pad(image, (pad_w, width - size - pad_w, pad, height - size - pad))
        # 2. Coil images and their k-space; the target before the noise.
        clean = fft2c(image[:, None] if single_coil else sens[None] * image[:, None])
        target = reconstruct_rss(clean, (size, size))
        noisy = clean + noise_std * torch.randn(clean.shape, dtype=clean.dtype, generator=g)
        header = {"encoding_size": (height, width, 1), "recon_size": (size, size, 1)}
        attrs = {"acquisition": ["AXT1", "AXT2", "AXPD"][int(family[0])], "patient_id": f"mni-{split}-{v}"}
        kspace = noisy[:, 0] if single_coil else noisy
        if acceleration is not None:
            # 3. A prospective file: fastMRI's mask for this file name, no target.
            fraction = FASTMRI_CENTER_FRACTIONS[acceleration]
            lines = fastmri_mask((height, width), acceleration, fraction, kind="equispaced",
                                 seed=volume_seed(path.name))[0]
            attrs.update(acceleration=int(acceleration), num_low_frequency=round(width * fraction))
            write_volume(path, kspace, mask=lines, header=header, attrs=attrs)
        elif single_coil:
            write_volume(path, kspace, reconstruction_esc=target, header=header, attrs=attrs)
        else:
            write_volume(path, kspace, reconstruction_rss=target, header=header, attrs=attrs)
    return folder


DATASETS_FASTMRI = {"mri_brain_fastmri": mri_brain_fastmri}
