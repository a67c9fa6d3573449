r"""Problems from CT files: a user's parallel-beam sinogram, reconstructed directly.

``task=ct_sinogram task.file=<path>`` (:func:`ct_sinogram`) reads a ``.npz`` or ``.h5``/``.hdf5``
file holding

* ``sinogram``: ``(views, detectors)``, or ``(slices, views, detectors)`` for several slices
  (reconstructed together, the slices in the batch dimension), real and finite;
* ``angles`` (optional): ``(views,)`` view angles in **radians**; without it the angles come
  from ``angles_deg = [start, stop)``, ``views`` equispaced angles ``start + k (stop - start) /
  views`` in degrees (``angles_deg`` also overrides the file's angles);
* ``image`` (optional): the reference, ``(H, W)`` or ``(slices, H, W)``, in the file's units
  (see *Units*); with it the run is scored, without it the metrics are left out.

:func:`write_sinogram` writes such a file.

**Geometry.** The sinogram follows :class:`operators.ParallelBeamCT`'s convention: angle
:math:`\theta` measured from the image's ``+x`` axis (right) towards ``+y`` (up); bin ``d``
integrates along the line :math:`p \cdot (\cos\theta, \sin\theta) = s_d`,
:math:`s_d = (d - (n_{det} - 1) / 2)\,\Delta`, with the rotation centre at the image centre and
lengths in pixels. The bin width :math:`\Delta` is ``detector_spacing`` (pixel units, default 1).
The image is ``image_size`` (an int for a square or ``[H, W]``); by default the reference's size
when the file holds one, else ``round(detectors * detector_spacing)`` pixels square, the square
whose inscribed disc every view sees whole (its corners fall outside some views, where only the
prior constrains them). ``skimage.transform.radon`` writes ``(detectors, views)`` with its own
orientation: transpose its output, and check the orientation on a known image.

**Units.** The prior models relative attenuation :math:`\mu / (2\mu_{water})` (air 0, water
0.5) and ``task=ct`` simulates its line integrals in pixel lengths. The file's data are taken in
those units unless ``scale`` says otherwise: the measurement becomes ``scale * sinogram`` and
the written images (reconstruction, baseline, reference) are in the file's units, the model's
divided by ``scale``. For post-log line integrals of :math:`\mu` in 1/mm along mm, with pixels
of ``p`` mm, ``scale = 1 / (2 * 0.0192 * p)`` (:data:`invdiff.data.dicom.MU_WATER`); the written
images are then :math:`\mu p`, attenuation per pixel.

**Noise.** ``noise_std`` (file units) is given, or estimated from the sinogram
(:func:`estimate_sinogram_noise_std`): for white Gaussian noise of std ``s`` the second
difference along the detectors, :math:`n_{d+1} - 2 n_d + n_{d-1}`, has variance :math:`6 s^2`,
while a projection's own second differences are small over much of the sinogram (zero outside
the object); so :math:`\hat s = 1.4826\,\mathrm{MAD} / \sqrt 6`, the median absolute deviation
taken over every view and slice. The object's own detail at the pixel scale (edges, texture, the
noise of a reconstructed DICOM image) also has second differences, which the rule counts as
noise: it **overestimates**, the more the smaller ``s`` is against that detail (``c``, the
estimate on the noise-free sinogram). Measured on sinograms simulated as ``task=ct`` does (30 to 180 views
over 180 degrees, one seed; tests/problems/test_ct_files.py checks a subset), ``c`` is 0.02 to
0.09 in these units (the held-out CT slice at 64 and 128 pixels, phantoms at 64 to 256, the
packaged DICOM slices at 128 and 512): the estimate is within 10 % for ``s >= 1`` (+0 to +8 %),
within about 15 % at ``s = 0.5``, +15 to +40 % at ``task=ct``'s default 0.2 and +40 to +75 % at
0.1; pure white noise gives ``s`` within a few percent. An overestimate makes a sampler trust
the data less. Give ``noise_std`` when it is known (e.g. from a blank scan or the photon count),
and for noise that is not white along the detectors (smoothed or interpolated data), which the
rule underestimates.

The baseline is filtered back-projection (ramp filter).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from invdiff.fileio import atomic_write
from invdiff.problems.base import Problem
from operators import ParallelBeamCT

SINOGRAM_SUFFIXES = (".npz", ".h5", ".hdf5")
"""Suffixes of sinogram files."""

KEYS = ("sinogram", "angles", "image")
"""The datasets (arrays) a sinogram file may hold; ``sinogram`` is required."""

MAD_TO_STD = 1.4826
"""The Gaussian consistency constant of the median absolute deviation, :math:`1 / \\Phi^{-1}(3/4)`."""


def estimate_sinogram_noise_std(sinogram: Tensor) -> float:
    r"""The std of white Gaussian noise in a sinogram, from its second differences along the detectors.

    .. math:: \hat s = 1.4826\,\operatorname{median}_i |e_i - \operatorname{median}(e)| / \sqrt 6,
       \qquad e = y_{d+1} - 2 y_d + y_{d-1},

    pooled over every view and slice (module docstring for its accuracy).

    Args:
        sinogram: ``(..., views, detectors)`` real, ``detectors >= 3``.

    Returns:
        the estimated noise std, in the sinogram's units.

    Raises:
        ValueError: fewer than 3 detectors.
    """
    if sinogram.ndim < 2 or sinogram.shape[-1] < 3:
        raise ValueError(f"sinogram: expected (..., views, detectors) with at least 3 detectors, got shape "
                         f"{tuple(sinogram.shape)}")
    s = sinogram.double()
    e = (s[..., 2:] - 2 * s[..., 1:-1] + s[..., :-2]).flatten()
    mad = (e - e.median()).abs().median()
    return float(MAD_TO_STD * mad / math.sqrt(6))


def _as_array(value: Tensor | np.ndarray | Sequence[float] | None, name: str) -> np.ndarray | None:
    if value is None:
        return None
    array = value.detach().cpu().numpy() if isinstance(value, Tensor) else np.asarray(value)
    if array.dtype.kind not in "biuf":
        raise ValueError(f"{name}: expected a real numeric array, got {array.dtype}")
    return array


def write_sinogram(
    path: str | Path,
    sinogram: Tensor | np.ndarray,
    angles: Tensor | np.ndarray | Sequence[float] | None = None,
    image: Tensor | np.ndarray | None = None,
) -> Path:
    """Write a sinogram file that :func:`read_sinogram` and ``task=ct_sinogram`` read (atomically).

    Args:
        path: a ``.npz``, ``.h5`` or ``.hdf5`` file.
        sinogram: ``(views, detectors)`` or ``(slices, views, detectors)``, float32 in the file.
        angles: ``(views,)`` radians, float64 in the file; ``None`` writes none (the reader then
            needs ``angles_deg``).
        image: the reference ``(H, W)`` or ``(slices, H, W)``, float32 in the file; ``None``
            writes none.

    Returns:
        ``path``.

    Raises:
        ValueError: an unknown suffix, or shapes that do not fit together.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SINOGRAM_SUFFIXES:
        raise ValueError(f"path: expected a {', '.join(SINOGRAM_SUFFIXES)} file, got {path}")
    arrays: dict[str, np.ndarray] = {"sinogram": _as_array(sinogram, "sinogram").astype(np.float32)}
    if arrays["sinogram"].ndim not in (2, 3):
        raise ValueError(f"sinogram: expected (views, detectors) or (slices, views, detectors), got shape "
                         f"{arrays['sinogram'].shape}")
    if angles is not None:
        arrays["angles"] = _as_array(angles, "angles").astype(np.float64).reshape(-1)
        if arrays["angles"].shape[0] != arrays["sinogram"].shape[-2]:
            raise ValueError(f"angles: expected {arrays['sinogram'].shape[-2]} angles (the sinogram's "
                             f"views), got {arrays['angles'].shape[0]}")
    if image is not None:
        arrays["image"] = _as_array(image, "image").astype(np.float32)
        if arrays["image"].ndim != arrays["sinogram"].ndim or (
                arrays["image"].ndim == 3 and arrays["image"].shape[0] != arrays["sinogram"].shape[0]):
            raise ValueError(f"image: expected one image per sinogram slice, (H, W) or (slices, H, W) "
                             f"like the sinogram's {arrays['sinogram'].shape}, "
                             f"got shape {arrays['image'].shape}")

    def write(tmp: Path) -> None:
        if suffix == ".npz":
            with tmp.open("wb") as f:
                np.savez(f, **arrays)
        else:
            import h5py

            with h5py.File(tmp, "w") as f:
                for key, array in arrays.items():
                    f.create_dataset(key, data=array)

    atomic_write(path, write, mkdir=True)
    return path


def _read_arrays(path: Path) -> dict[str, np.ndarray]:
    """The :data:`KEYS` a sinogram file holds, as arrays; errors name the file."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such sinogram file")
    suffix = path.suffix.lower()
    if suffix not in SINOGRAM_SUFFIXES:
        raise ValueError(f"{path}: unknown sinogram format {suffix or '(no suffix)'!r}; expected one of "
                         f"{', '.join(SINOGRAM_SUFFIXES)}")
    groups: list[str] = []
    try:
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as f:
                found = sorted(f.files)
                arrays = {k: np.asarray(f[k]) for k in KEYS if k in f.files}
        else:
            import h5py

            with h5py.File(path, "r") as f:
                found = sorted(f.keys())
                groups = [k for k in KEYS if k in f and not isinstance(f[k], h5py.Dataset)]
                arrays = {k: np.asarray(f[k][()]) for k in KEYS if k in f and k not in groups}
    except Exception as err:
        # numpy and h5py raise OSError, ValueError, zipfile.BadZipFile, EOFError, ... on bad bytes;
        # at this file boundary each becomes one ValueError that names the file, cause chained.
        raise ValueError(f"{path}: unreadable {suffix} file ({type(err).__name__}: {err})") from err
    if groups:
        raise ValueError(f"{path}: {groups} are HDF5 groups; expected datasets")
    if "sinogram" not in arrays:
        raise ValueError(f"{path}: no 'sinogram' dataset (found {found}); expected 'sinogram' (views, "
                         f"detectors) or (slices, views, detectors), optional 'angles' (views,) in radians "
                         f"and 'image'")
    for key, array in arrays.items():
        if array.dtype.kind not in "biuf":
            raise ValueError(f"{path}: '{key}' is {array.dtype}; expected real numbers")
        if not np.isfinite(array).all():
            raise ValueError(f"{path}: '{key}' holds non-finite values (NaN or inf)")
    return arrays


def read_sinogram(
    path: str | Path, *, angles_deg: Sequence[float] | None = None
) -> tuple[Tensor, Tensor, Tensor | None, dict[str, Any]]:
    """Read a sinogram file (module docstring for the layout).

    Args:
        path: a ``.npz``, ``.h5`` or ``.hdf5`` file.
        angles_deg: ``[start, stop)`` in degrees: ``views`` equispaced angles; overrides the
            file's ``angles``, and is required when it has none.

    Returns:
        ``(sinogram, angles, image, meta)``: ``sinogram`` ``(slices, views, detectors)``
        float32; ``angles`` ``(views,)`` float64 radians; ``image`` ``(slices, H, W)`` float32
        or ``None``; ``meta`` JSON-safe provenance.

    Raises:
        FileNotFoundError: no such file.
        ValueError: naming the file and the key: an unreadable file or unknown suffix; no
            ``sinogram``, or one of the wrong shape; no angles at all; angles whose count
            differs from the views, that are not 1-D, or that look like degrees; an ``image``
            whose slices differ from the sinogram's; non-finite or non-real data.
    """
    path = Path(path)
    arrays = _read_arrays(path)
    sinogram = arrays["sinogram"]
    if sinogram.ndim not in (2, 3) or sinogram.shape[-1] < 3 or sinogram.shape[-2] < 1 or sinogram.size == 0:
        raise ValueError(f"{path}: 'sinogram' has shape {sinogram.shape}; expected (views, detectors) or "
                         f"(slices, views, detectors) with at least 3 detectors")
    sinogram = sinogram if sinogram.ndim == 3 else sinogram[None]
    slices, views, detectors = sinogram.shape
    meta: dict[str, Any] = {"file": str(path), "slices": list(range(slices)), "views": views,
                            "detectors": detectors}
    if angles_deg is not None:
        bounds = [float(a) for a in angles_deg]
        if len(bounds) != 2 or not bounds[1] > bounds[0]:
            raise ValueError(f"angles_deg: expected [start, stop) in degrees with stop > start, "
                             f"got {list(angles_deg)}")
        angles = np.deg2rad(bounds[0] + (bounds[1] - bounds[0]) * np.arange(views) / views)
        meta["angles"] = f"angles_deg [{bounds[0]:g}, {bounds[1]:g}), {views} equispaced views"
    elif "angles" in arrays:
        angles = arrays["angles"].astype(np.float64)
        if angles.ndim != 1 or angles.shape[0] != views:
            hint = ""
            if angles.ndim == 1 and angles.shape[0] == detectors:
                hint = ("; the sinogram may be transposed (it must be (views, detectors); "
                        "skimage.transform.radon writes (detectors, views))")
            raise ValueError(f"{path}: 'angles' has shape {angles.shape}; expected ({views},), one angle per "
                             f"view of 'sinogram' {tuple(arrays['sinogram'].shape)}{hint}")
        if np.abs(angles).max() > 2 * math.pi * 1.01:
            raise ValueError(f"{path}: 'angles' reach {np.abs(angles).max():g}; expected radians (these "
                             f"look like degrees: convert them, or give task.angles_deg=[start, stop))")
        meta["angles"] = "file"
    else:
        raise ValueError(f"{path}: no 'angles' dataset; give the view angles in radians in the file or "
                         f"their range in degrees with task.angles_deg=[start, stop) "
                         f"({views} equispaced views)")
    image = arrays.get("image")
    if image is not None:
        image = image if image.ndim == 3 else image[None]
        if image.ndim != 3 or image.shape[0] != slices or min(image.shape[1:]) < 1:
            raise ValueError(f"{path}: 'image' has shape {arrays['image'].shape}; expected one reference per "
                             f"slice of 'sinogram' {tuple(arrays['sinogram'].shape)}: "
                             f"(H, W) or ({slices}, H, W)")
        image = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))
    meta["reference"] = image is not None
    sinogram = torch.from_numpy(np.ascontiguousarray(sinogram, dtype=np.float32))
    return sinogram, torch.from_numpy(angles), image, meta


def _image_shape(image_size: int | Sequence[int] | None, reference: Tensor | None, detectors: int,
                 detector_spacing: float, path: Path) -> tuple[int, int]:
    if image_size is None:
        if reference is not None:
            return tuple(int(s) for s in reference.shape[-2:])
        side = max(1, round(detectors * detector_spacing))
        return side, side
    size = [image_size] if isinstance(image_size, (int, np.integer)) else list(image_size)
    if len(size) == 1:
        size = size * 2
    if len(size) != 2 or any(isinstance(s, bool) or int(s) != s or s < 1 for s in size):
        raise ValueError(f"task.image_size: expected a positive int or [H, W], got {image_size!r}")
    shape = (int(size[0]), int(size[1]))
    if reference is not None and tuple(reference.shape[-2:]) != shape:
        raise ValueError(f"task.image_size: {list(shape)} differs from the reference 'image' in {path}, "
                         f"{list(reference.shape[-2:])}; leave image_size unset to use the reference's size")
    return shape


def ct_sinogram(
    file: str,
    angles_deg: Sequence[float] | None = None,
    image_size: int | Sequence[int] | None = None,
    detector_spacing: float = 1.0,
    noise_std: float | None = None,
    scale: float = 1.0,
    slices: Sequence[int] | None = None,
) -> Problem:
    """A user's parallel-beam sinogram as a problem (``task=ct_sinogram task.file=<path>``).

    Args:
        file: the ``.npz`` or ``.h5`` file (module docstring); relative to the working directory.
        angles_deg: ``[start, stop)`` degrees for equispaced views when the file has no
            ``angles`` (overrides them when it has).
        image_size: the image, an int (square) or ``[H, W]``; ``None``: the reference's size,
            else ``round(detectors * detector_spacing)``.
        detector_spacing: the detector bin width in image pixels.
        noise_std: the sinogram's noise std in the file's units; ``None`` estimates it
            (:func:`estimate_sinogram_noise_std`).
        scale: model units per file unit (module docstring, *Units*); 1 when the file holds
            line integrals of relative attenuation in pixel lengths, as ``task=ct`` simulates.
        slices: which slices of a ``(slices, views, detectors)`` sinogram (negative count from
            the end); ``None`` takes them all.

    Returns:
        a :class:`~invdiff.problems.base.Problem` named ``"ct_sinogram"`` on ``(slices, 1, H,
        W)``, with an FBP baseline; its target is the file's ``image`` or ``None``.

    Raises:
        FileNotFoundError: no such file.
        ValueError: a bad file (:func:`read_sinogram`) or option (naming the ``task.`` key).
    """
    if not file or file == "???":
        raise ValueError("task.file: expected the path of a .npz or .h5 sinogram file (task.file=<path>)")
    if not scale > 0:
        raise ValueError(f"task.scale: expected model units per file unit (> 0), got {scale}")
    if not detector_spacing > 0:
        raise ValueError(f"task.detector_spacing: expected the bin width in pixels (> 0), "
                         f"got {detector_spacing}")
    path = Path(file)
    sinogram, angles, reference, meta = read_sinogram(path, angles_deg=angles_deg)
    if slices is not None:
        picked = []
        for k in slices:
            if not -sinogram.shape[0] <= int(k) < sinogram.shape[0]:
                raise ValueError(f"task.slices: slice {k} is out of range for {path}, which holds "
                                 f"{sinogram.shape[0]} slices")
            picked.append(int(k) % sinogram.shape[0])
        if not picked:
            raise ValueError("task.slices: expected at least one slice index, or null for all")
        sinogram = sinogram[picked]
        reference = None if reference is None else reference[picked]
        meta["slices"] = picked
    shape = _image_shape(image_size, reference, sinogram.shape[-1], float(detector_spacing), path)
    if noise_std is None:
        std, rule = estimate_sinogram_noise_std(sinogram), "mad_second_difference"
        if not (math.isfinite(std) and std > 0):
            raise ValueError(f"{path}: the noise std estimated from 'sinogram' is {std}; "
                             f"give it with task.noise_std")
    else:
        if not noise_std > 0:
            raise ValueError(f"task.noise_std: expected the sinogram's noise std in the file's units (> 0) "
                             f"or null to estimate it, got {noise_std}")
        std, rule = float(noise_std), "given"
    op = ParallelBeamCT(shape, angles, n_detectors=sinogram.shape[-1],
                        detector_spacing=float(detector_spacing))
    meta.update(image_size=list(shape), detector_spacing=float(detector_spacing), scale=float(scale),
                noise_std=std, noise_rule=rule)
    return Problem(
        "ct_sinogram", op, float(scale) * sinogram[:, None], float(scale) * std,
        (sinogram.shape[0], 1, *shape), target=None if reference is None else reference[:, None],
        scale=float(scale), baseline="fbp", info=meta,
    )


__all__ = ["KEYS", "SINOGRAM_SUFFIXES", "ct_sinogram", "estimate_sinogram_noise_std", "read_sinogram",
           "write_sinogram"]
