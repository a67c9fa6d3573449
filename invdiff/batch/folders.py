r"""Folders of volumes as the batch engine reads them (:class:`invdiff.batch.engine.Dataset`).

**fastMRI** (:class:`FastMRIFolder`): multi-coil or single-coil fastMRI files, fully sampled
(undersampled here with each setting's line mask, and scored against their reference) or
prospective (test and challenge files, reconstructed with their own mask and not scored). The
problems are :func:`invdiff.problems.fastmri.fastmri_problem`'s: coil maps from the ACS lines,
the intensity scale and the noise level estimated from the measured k-space by default, or the
oracle options (maps of the fully sampled slice, the reference maximum) as an upper bound. A
volume's estimates depend on the setting's mask (its ACS lines and sampled columns) and are
computed once per volume and setting.

**CT** (:class:`CTFolder`): HDF5 files with a float ``image`` dataset ``(slices, H, W)`` in
relative attenuation; each slice is projected with a parallel beam (sparse views over 180° or a
limited wedge), with Gaussian noise of ``noise_std`` drawn from the slice's own generator.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import torch

from invdiff.data.fastmri import MAPS_CACHE_SUFFIX, open_h5
from invdiff.problems.base import Problem
from invdiff.problems.fastmri import (
    Estimates,
    FastMRIFile,
    MapsOptions,
    fastmri_problem,
    open_fastmri,
    reference_max,
    sampling_mask,
    volume_estimates,
)
from invdiff.problems.simulated import ct_projections


def h5_paths(root: Path, pattern: str) -> list[Path]:
    """The ``pattern`` entries of ``root``, sorted, without hidden files and coil-map caches.

    Entries that are not readable files (folders, dangling links, link loops) are listed too, so
    that opening them (:func:`check_file`) reports them as skipped rather than leaving them out.

    Raises:
        FileNotFoundError: ``root`` is not a folder.
        ValueError: nothing in ``root`` matches ``pattern``.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"data.root: {root} is not a folder")
    paths = [p for p in sorted(root.glob(pattern))
             if not p.name.startswith(".") and not p.name.endswith(MAPS_CACHE_SUFFIX)]
    if not paths:
        raise ValueError(f"data.root: {root} holds no {pattern!r} files (data.pattern); expected the folder of "
                         f"volumes to run on")
    return paths


def check_file(path: Path) -> None:
    """Raise ``ValueError`` naming ``path`` when it is not a regular file: a link loop, a dangling
    link, a folder or another kind of entry."""
    try:
        mode = os.stat(path).st_mode
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise ValueError(f"{path}: a symbolic link loop, not a file") from err
        if path.is_symlink():
            raise ValueError(f"{path}: a dangling symbolic link (to {os.readlink(path)})") from err
        raise ValueError(f"{path}: cannot be read ({err.strerror})") from err
    if stat.S_ISDIR(mode):
        raise ValueError(f"{path}: is a folder, not a file")
    if not stat.S_ISREG(mode):
        raise ValueError(f"{path}: is not a regular file")


# --------------------------------------------------------------------------------------------
# fastMRI
# --------------------------------------------------------------------------------------------


@dataclass
class FastMRIVolume:
    """One fastMRI file of a folder: its header and its estimates per setting."""

    file: FastMRIFile
    maps: MapsOptions
    scale: str
    noise_std: float | None
    estimates: dict[str, Estimates] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.file.name

    @property
    def num_slices(self) -> int:
        return self.file.num_slices

    @property
    def data_max(self) -> float | None:
        return self.file.data_max

    @property
    def x_shape(self) -> tuple[int, int, int, int]:
        H, W = self.file.kspace_size
        return 1, 2, H // 2 if self.file.oversampled else H, W

    def problem(self, indices: Sequence[int], setting: dict, *, generators: Sequence[torch.Generator]) -> Problem:
        options = {"acceleration": setting.get("acceleration", 4), "center_fraction": setting.get("center_fraction"),
                   "mask_kind": setting.get("mask_kind", "equispaced")}
        key = repr(sorted(options.items()))
        if key not in self.estimates:
            mask = sampling_mask(self.file, **options)
            self.estimates[key] = volume_estimates(self.file, mask, scale=self.scale, noise_std=self.noise_std)
        return fastmri_problem(self.file.path, list(indices), maps=self.maps, file=self.file,
                               estimates=self.estimates[key], **options)


class FastMRIFolder:
    """A folder of fastMRI files (module docstring).

    Args:
        root: the folder.
        maps: coil-map options (:class:`~invdiff.problems.fastmri.MapsOptions`; its cache folder
            keeps each slice's maps for a resumed run).
        scale: ``"estimate"`` or ``"oracle"``.
        noise_std: the k-space noise std in the files' units; ``None`` estimates it per volume.
        pattern: a glob pattern for the file names.
    """

    def __init__(self, root: Path, maps: MapsOptions, *, scale: str = "estimate", noise_std: float | None = None,
                 pattern: str = "*.h5"):
        if noise_std is not None and not noise_std > 0:
            raise ValueError(f"noise_std: expected the k-space noise std (> 0) or null to estimate it, got {noise_std}")
        self.root, self.maps, self.scale, self.noise_std, self.pattern = Path(root), maps, scale, noise_std, pattern

    def paths(self) -> list[Path]:
        return h5_paths(self.root, self.pattern)

    def describe(self) -> dict:
        """The folder and the rules the problems are made with, by config name (the run record)."""
        return {"kind": "fastmri", "data.root": str(self.root.resolve()), "data.pattern": self.pattern,
                "coil_maps": self.maps.method, "calib_rows": self.maps.calib_rows,
                "kernel_width": self.maps.kernel_width, "espirit": dict(self.maps.espirit), "scale": self.scale,
                "noise_std": self.noise_std}

    def open(self, path: Path) -> FastMRIVolume:
        """The volume's header (:func:`~invdiff.problems.fastmri.open_fastmri`); errors name the file."""
        check_file(path)
        return FastMRIVolume(open_fastmri(path), self.maps, self.scale, self.noise_std)


# --------------------------------------------------------------------------------------------
# CT
# --------------------------------------------------------------------------------------------


@dataclass
class CTVolume:
    path: Path
    name: str
    num_slices: int
    data_max: float
    x_shape: tuple[int, int, int, int]

    def problem(self, indices: Sequence[int], setting: dict, *, generators: Sequence[torch.Generator]) -> Problem:
        with open_h5(self.path) as f:
            images = torch.from_numpy(np.stack([np.asarray(f["image"][i], dtype=np.float32) for i in indices]))
        return ct_projections(images[:, None], int(setting["views"]), float(setting["noise_std"]), generators,
                              angle_range=setting.get("angle_range"), data_range=self.data_max,
                              info={"file": str(self.path), "slices": list(indices)},
                              candidate_views=setting.get("candidate_views"))


class CTFolder:
    """A folder of CT volumes: HDF5 files with a float ``image`` dataset ``(slices, H, W)``."""

    def __init__(self, root: Path, pattern: str = "*.h5"):
        self.root, self.pattern = Path(root), pattern

    def paths(self) -> list[Path]:
        return h5_paths(self.root, self.pattern)

    def describe(self) -> dict:
        """The folder, by config name (the run record); the projections are the settings'."""
        return {"kind": "ct", "data.root": str(self.root.resolve()), "data.pattern": self.pattern}

    def open(self, path: Path) -> CTVolume:
        """The volume's header: ``image`` must be a float ``(slices, H, W)`` dataset with slices, finite
        values and a positive maximum, which a ``max`` attribute must equal (within
        :data:`~invdiff.problems.fastmri.MAX_RTOL`); errors name the file."""
        check_file(path)
        with open_h5(path) as f:
            if "image" not in f:
                raise ValueError(f"{path}: no 'image' dataset (found {sorted(f.keys())})")
            ds = f.get("image")
            if not isinstance(ds, h5py.Dataset):
                raise ValueError(f"{path}: 'image' is a group, expected a dataset (float images (slices, H, W))")
            if ds.ndim != 3 or ds.dtype.kind != "f" or 0 in ds.shape:
                raise ValueError(f"{path}: 'image' is {ds.dtype} {ds.shape}; expected float (slices, H, W)")
            data_max = reference_max(ds, "image", f.attrs, path)
            return CTVolume(path, path.name, ds.shape[0], data_max, (1, 1, *ds.shape[1:]))


def ct_volumes(root: str | Path, size: int = 64, *, slab: int = 2, count: int = 4, split: str = "test") -> Path:
    """CT volumes for the batch benchmark from the held-out CT images: ``root/ct_volumes_{size}/{split}``.

    The first ``count`` images of the split (:func:`invdiff.data.datasets.ct`) in volumes of ``slab``
    slices, ``image`` float32 with the attribute ``max``; complete files are reused, each written atomically.
    """
    from invdiff.data.datasets import DATASETS, load_split
    from invdiff.fileio import atomic_write

    images = np.asarray(load_split(DATASETS["ct"](root, size=size, splits=(split,)), split)[:count, 0], np.float32)
    folder = Path(root) / f"ct_volumes_{size}" / split
    folder.mkdir(parents=True, exist_ok=True)
    for v, start in enumerate(range(0, images.shape[0] - slab + 1, slab)):
        path = folder / f"ct_{split}_{v:03d}.h5"
        if path.is_file():
            continue
        volume = images[start : start + slab]

        def write(tmp: Path, volume=volume) -> None:
            with h5py.File(tmp, "w") as f:
                f.create_dataset("image", data=volume)
                f.attrs["max"] = float(volume.max())

        atomic_write(path, write)
    return folder
