r"""Problems from fastMRI files: a user's own k-space, with or without a reference, without oracles.

A fastMRI file (:mod:`invdiff.data.fastmri`) is either *fully sampled* (train/val files: ``kspace``
and a reference ``reconstruction_rss``, or ``reconstruction_esc`` for single-coil ones), which is
undersampled here with fastMRI's line mask for the file name (:func:`operators.volume_seed`: the
same columns for every slice), or *prospective* (test and challenge files: ``kspace`` already
masked, its ``mask``, no reference), reconstructed with its own mask. Each slice becomes
``MultiCoilMRI(maps, mask) @ RealToComplex()`` (``SingleCoilMRI`` for single-coil files) on the
k-space without its readout oversampling (when the header's encoded readout is twice the
reconstruction size); the display image is the magnitude, zero outside the coil maps' support,
centre-cropped to the header's reconstruction size and scored, when there is a reference,
against it with the reference volume's maximum as the data range (fastMRI's ``evaluate.py``).

**No oracle information.** Only the measured (masked) k-space is used, by these rules:

* *Coil maps* (``coil_maps="acs"``) come from the auto-calibration (ACS) lines, the contiguous
  fully sampled columns around the centre (:func:`operators.acs_lines`): ESPIRiT
  (:func:`operators.espirit_maps`) on a calibration block of ``calib_rows`` readout rows by the
  widest centred run of ``w`` ACS columns, with a kernel ``kernel_width`` wide, narrowed to
  ``max(2, ceil(w / 2))`` columns when the ACS block is narrow (fewer than 12 columns); a single
  ACS column gets the low-resolution estimate of :func:`operators.lowres_coil_maps`. fastMRI's
  ACS blocks (30 columns at 4x, 15 at 8x on 372) keep the 6 x 6 kernel: on generated 320 x 372
  six-coil data CG-SENSE then matches the oracle maps (33.6 and 25.7 dB against 33.6 and 25.4).
  The narrowed kernel was chosen on the generated 64 x 64 validation volume (5 ACS columns at 4x:
  a 3-wide kernel gives CG-SENSE 26 dB where the 6-wide one fails and the oracle maps give 29;
  with 3 columns at 8x no estimate works, 9 dB against the oracle's 19). The maps are turned so
  that the coil-combined zero-filled image has a mean phase of 0, as the priors' training
  images do.
* *Intensity scale* (``scale="estimate"``): the k-space is multiplied by ``1 / m``, with ``m`` the
  maximum over the volume of the root-sum-of-squares image of the ACS lines alone (zero-filled to
  the full width, readout oversampling removed, cropped to the reconstruction size). It uses every
  slice's ACS columns (a partial read of the file), so a slice gets the same scale whether it is
  reconstructed alone or in a batch. The priors are trained on images that peak at about 1.
* *Noise level* (``noise_std=None``): the k-space noise std (:math:`E|n|^2 = s^2`, unchanged by
  the unitary transforms below) from samples that hold noise alone, by the Rayleigh median rule
  of :func:`operators.estimate_kspace_noise_std` (:math:`\hat s = \operatorname{median}|n| /
  \sqrt{\ln 2}`), pooled over the sampled columns of every slice and every coil. With a twice
  oversampled readout (fastMRI's raw data) the samples are the outer eighth of the readout
  field of view at both ends in hybrid space (inverse FFT along the readout only), outside the
  reconstructed field of view, where the object is absent (``"readout_background"``); without
  oversampling, the outer eighth of the k-space readout at both ends, the highest frequencies,
  where some signal remains and biases the estimate up (``"kspace_edges"``).

Both estimates are linear in the data, so scaling the k-space by ``c`` scales the reconstruction
by ``c``; neither reads the reference, so a reconstruction does not change when only the file's
reference changes. The estimates are undone before scoring and writing (data units). The oracle
options (``coil_maps="oracle"``: ESPIRiT of the fully sampled slice; ``scale="oracle"``: the
reference volume's maximum, fastMRI's ``max`` attribute) reproduce the common retrospective
practice and are an upper bound: tables that use them say so.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
from torch import Tensor

from invdiff.data.fastmri import (
    center_crop,
    check_kspace,
    ifft1c,
    open_h5,
    read_header,
    read_kspace_columns,
    read_kspace_rows,
    read_mask,
    read_slice,
    recon_shape,
    remove_readout_oversampling,
)
from invdiff.fileio import atomic_save_npy
from invdiff.problems.base import ACTIVE, Problem, line_acquisition
from operators import (
    MultiCoilMRI,
    RealToComplex,
    SingleCoilMRI,
    acs_lines,
    center_lines,
    espirit_maps,
    estimate_kspace_noise_std,
    fastmri_mask,
    lowres_coil_maps,
    volume_seed,
)
from operators.mri import ifft2c, rss

log = logging.getLogger(__name__)

COIL_MAPS = ("acs", "oracle")
SCALES = ("estimate", "oracle")
NOISE_BAND = 0.125
"""The fraction of readout rows at each end of k-space the noise estimate reads."""

FEW_ACS = 8
"""Fewer calibration columns than this give unreliable coil maps (the problem's ``info`` and the
log say so): on the generated 64 x 64 volumes, 5 columns (4x) cost CG-SENSE 3.6 dB against the
oracle maps and 3 columns (8x) leave every SENSE reconstruction below zero filling."""


@dataclass
class FastMRIFile:
    """What a fastMRI file holds, read from its header and attributes (no k-space loaded).

    Attributes:
        path: the file.
        num_slices, num_coils: ``kspace``'s slices and coils (1 for single-coil files).
        kspace_size: ``(H, W)`` of the stored k-space (readout, phase encodes).
        recon_size: ``(h, w)``, the header's reconstruction size.
        oversampled: the readout is twice the reconstruction size (removed before reconstructing).
        single_coil: ``kspace`` has no coil axis.
        mask: the file's own ``(W,)`` mask (prospective files), else ``None``.
        target_key: ``"reconstruction_rss"`` or ``"reconstruction_esc"``, or ``None`` without a reference.
        data_max: the reference volume's maximum (computed; a ``max`` attribute must agree), ``None``
            without a reference.
    """

    path: Path
    num_slices: int
    num_coils: int
    kspace_size: tuple[int, int]
    recon_size: tuple[int, int]
    oversampled: bool
    single_coil: bool
    mask: Tensor | None
    target_key: str | None
    data_max: float | None

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def prospective(self) -> bool:
        return self.mask is not None


MAX_RTOL = 1e-3
"""How far (relative) a file's ``max`` attribute may be from its reference volume's maximum."""


def _dataset(f: h5py.File, key: str, path: Path, expected: str) -> h5py.Dataset | None:
    """``f[key]`` when it is a dataset, ``None`` when absent; a group (or a link to nothing) raises."""
    if key not in f:
        return None
    ds = f.get(key)
    if not isinstance(ds, h5py.Dataset):
        kind = "a group" if isinstance(ds, h5py.Group) else "a link to nothing" if ds is None else type(ds).__name__
        raise ValueError(f"{path}: '{key}' is {kind}, expected a dataset ({expected})")
    return ds


def attribute_max(attrs: h5py.AttributeManager, path: Path) -> float | None:
    """The file's ``max`` attribute as a float, ``None`` without one; a non-number raises, naming the file."""
    if "max" not in attrs:
        return None
    value = attrs["max"]
    array = np.asarray(value)
    if array.size != 1 or array.dtype.kind not in "fiu":
        raise ValueError(f"{path}: the 'max' attribute {value!r} is not a number; expected the reference "
                         f"volume's maximum (one real value)")
    return float(array.reshape(()))


def reference_max(target: h5py.Dataset, key: str, attrs: h5py.AttributeManager, path: Path, *,
                  check_attribute: bool = True) -> float:
    """The reference volume's maximum (fastMRI's data range), computed from the whole volume as
    fastMRI's ``evaluate.py`` does, after checking the values and the ``max`` attribute.

    Args:
        target: the reference dataset ``(slices, h, w)``.
        key: its name in the file, for messages.
        attrs: the file's attributes.
        path: the file, for messages.
        check_attribute: compare a ``max`` attribute with the computed maximum.

    Raises:
        ValueError: the reference is not real, holds NaN or infinite values, or has no positive
            maximum; or the ``max`` attribute is not a number or differs from the maximum by more
            than :data:`MAX_RTOL` (relative). The message names the file and both values.
    """
    if target.dtype.kind not in "fiu":
        raise ValueError(f"{path}: '{key}' has dtype {target.dtype}; expected real (float) reference images")
    values = np.asarray(target[()], dtype=np.float64)
    if not np.all(np.isfinite(values)):
        raise ValueError(f"{path}: '{key}' holds NaN or infinite values")
    data_max = float(values.max()) if values.size else math.nan
    if not data_max > 0:
        raise ValueError(f"{path}: the reference volume's maximum is {data_max}; expected > 0")
    given = attribute_max(attrs, path) if check_attribute else None
    if given is not None and not abs(given - data_max) <= MAX_RTOL * data_max:
        raise ValueError(f"{path}: the 'max' attribute {given:.6g} differs from the maximum of '{key}', "
                         f"{data_max:.6g} (relative tolerance {MAX_RTOL:g}); 'max' is the reference volume's "
                         f"maximum, the data range of PSNR and SSIM: correct or delete the attribute")
    return data_max


def open_fastmri(path: str | Path) -> FastMRIFile:
    """Read a fastMRI file's header; errors name the file and the key that is missing or wrong.

    The file is opened read-only. Besides the k-space checks of
    :func:`invdiff.data.fastmri.check_kspace`: ``ismrmrd_header``, ``mask`` and the reference
    must be datasets, the k-space must have slices, the reference real and finite with its
    slices matching the k-space's and the header's reconstruction size; the reference volume's
    maximum is computed from it (fastMRI's ``evaluate.py``), and a multi-coil file's ``max``
    attribute (the maximum of ``reconstruction_rss``) must agree with it within
    :data:`MAX_RTOL`. A single-coil file's ``max`` is not read.

    Raises:
        FileNotFoundError: ``path`` is not a file.
        ValueError: the file is not HDF5, or one of the checks fails; the message names the file,
            the dataset or attribute, and what was expected.
    """
    path = Path(path)
    with open_h5(path) as f:
        kspace = check_kspace(f, path)
        if 0 in kspace.shape:
            raise ValueError(f"{path}: 'kspace' has no slices (shape {kspace.shape})" if kspace.shape[0] == 0
                             else f"{path}: 'kspace' has shape {kspace.shape}, with an empty axis")
        single = kspace.ndim == 3
        H, W = kspace.shape[-2:]
        _dataset(f, "ismrmrd_header", path, "the ISMRMRD XML header")
        recon = recon_shape(read_header(f, path, True), path)
        _dataset(f, "mask", path, "one value per k-space column")
        mask = read_mask(f, path, W)
        target_key = next((k for k in (("reconstruction_esc", "reconstruction_rss") if single else
                                       ("reconstruction_rss",)) if k in f), None)
        data_max = None
        if target_key is not None:
            target = _dataset(f, target_key, path, "the reference images (slices, h, w)")
            if target.ndim != 3 or target.shape[0] != kspace.shape[0]:
                raise ValueError(f"{path}: '{target_key}' has shape {target.shape}; expected "
                                 f"({kspace.shape[0]}, h, w)")
            if tuple(target.shape[1:]) != tuple(recon):
                raise ValueError(f"{path}: '{target_key}' slices are {tuple(target.shape[1:])}, the header's "
                                 f"reconstruction size is {tuple(recon)}")
            data_max = reference_max(target, target_key, f.attrs, path,
                                     check_attribute=target_key == "reconstruction_rss")
        return FastMRIFile(path, kspace.shape[0], 1 if single else kspace.shape[1], (H, W), tuple(recon),
                           H == 2 * recon[0], single, mask, target_key, data_max)


def sampling_mask(file: FastMRIFile, acceleration: float = 4, center_fraction: float | None = None,
                  mask_kind: str = "equispaced") -> Tensor:
    """The ``(W,)`` columns a slice is reconstructed from: the file's own mask (prospective files),
    else fastMRI's line mask for the file name (every slice of a volume shares it); for
    ``mask_kind="active"`` the centre band an active acquisition starts from (the lines the coil
    maps, scale and noise are estimated on)."""
    if file.mask is not None:
        return (file.mask > 0).float()
    H, W = file.kspace_size
    if mask_kind == ACTIVE:  # the centre band an active acquisition starts from
        n, mask = center_lines(W, acceleration, center_fraction), torch.zeros(W)
        mask[(W - n + 1) // 2 : (W - n + 1) // 2 + n] = 1.0
        return mask
    return fastmri_mask((H, W), acceleration, center_fraction, kind=mask_kind, seed=volume_seed(file.name))[0]


@dataclass
class Estimates:
    """A volume's intensity scale and k-space noise std, and how they were obtained."""

    scale: float
    noise_std: float
    scale_rule: str
    noise_rule: str
    acs: tuple[int, int]

    def as_dict(self) -> dict[str, Any]:
        return {"scale": self.scale, "noise_std": self.noise_std, "scale_rule": self.scale_rule,
                "noise_rule": self.noise_rule, "acs": list(self.acs)}


def _readout_ready(kspace: Tensor, file: FastMRIFile) -> Tensor:
    return remove_readout_oversampling(kspace) if file.oversampled else kspace


def acs_scale(file: FastMRIFile, acs: tuple[int, int], columns: Tensor) -> float:
    """``1 / m``, ``m`` the volume maximum of the RSS image of the ACS lines (module docstring).

    Args:
        file: the fastMRI file.
        acs: ``(start, stop)``, the ACS columns.
        columns: those columns of every slice as stored, ``(S, C, H, stop - start)``.
    """
    start, stop = acs
    W = file.kspace_size[1]
    peak = 0.0
    for block in columns:  # one slice at a time: (C, H, acs)
        block = _readout_ready(block, file)
        full = torch.zeros((*block.shape[:-1], W), dtype=block.dtype)
        full[..., start:stop] = block
        peak = max(peak, float(center_crop(rss(ifft2c(full), dim=0), file.recon_size).max()))
    if not peak > 0:
        raise ValueError(f"{file.path}: the ACS lines (columns {start}-{stop - 1}) hold no signal; cannot set the scale")
    return 1.0 / peak


def kspace_noise(file: FastMRIFile, mask: Tensor, sampled: Tensor | None = None) -> tuple[float, str]:
    """The k-space noise std of every slice's sampled columns and the rule used (module docstring).

    Args:
        file: the fastMRI file.
        mask: the ``(W,)`` sampled columns.
        sampled: those columns of every slice as stored, ``(S, C, H, columns)``, when already read
            (the readout-background rule needs them whole); read here otherwise.
    """
    H = file.kspace_size[0]
    band = max(1, int(round(NOISE_BAND * H)))
    columns = torch.nonzero(mask > 0).flatten().tolist()
    if file.oversampled:
        sampled = read_kspace_columns(file.path, columns) if sampled is None else sampled
        hybrid = ifft1c(sampled, -2)  # (S, C, H, columns), image along the readout
        background = torch.cat([hybrid[..., :band, :], hybrid[..., H - band :, :]], dim=-2)
        return float(estimate_kspace_noise_std(background, band=0.5)), "readout_background"
    rows = list(range(band)) + list(range(H - band, H))
    samples = read_kspace_rows(file.path, rows, columns)  # (S, C, 2 band, columns): the rows at both ends
    return float(estimate_kspace_noise_std(samples, band=0.5)), "kspace_edges"


def volume_estimates(file: FastMRIFile, mask: Tensor, *, scale: str = "estimate", noise_std: float | None = None) -> Estimates:
    """The volume's scale and noise std by the rules of the module docstring.

    The columns both estimates read (the ACS block lies inside the sampled columns) are read from
    the file once.

    Args:
        file: the fastMRI file.
        mask: the ``(W,)`` sampled columns.
        scale: ``"estimate"`` (ACS lines) or ``"oracle"`` (the reference volume's maximum).
        noise_std: the k-space noise std in the file's units; ``None`` estimates it.
    """
    if scale not in SCALES:
        raise ValueError(f"scale: expected one of {SCALES}, got {scale!r}")
    if noise_std is not None and not noise_std > 0:
        raise ValueError(f"noise_std: expected the k-space noise std (> 0) or null to estimate it, got {noise_std}")
    acs = acs_lines(mask)
    sampled_columns = torch.nonzero(mask > 0).flatten().tolist()
    sampled = None
    if noise_std is None and file.oversampled:
        sampled = read_kspace_columns(file.path, sampled_columns)
    if scale == "oracle":
        if file.data_max is None:
            raise ValueError(f"{file.path}: scale=oracle needs a reference volume; the file has none (use scale=estimate)")
        s, scale_rule = 1.0 / file.data_max, "reference_max (oracle)"
    else:
        if sampled is not None:
            at = sampled_columns.index(acs[0])
            columns = sampled[..., at : at + acs[1] - acs[0]]
        else:
            columns = read_kspace_columns(file.path, list(range(*acs)))
        s, scale_rule = acs_scale(file, acs, columns), "acs_max"
    if noise_std is None:
        noise, noise_rule = kspace_noise(file, mask, sampled)
    else:
        noise, noise_rule = float(noise_std), "given"
    return Estimates(s, noise, scale_rule, noise_rule, acs)


def calibration_width(acs: tuple[int, int], W: int) -> int:
    """The widest calibration region centred like ESPIRiT's (from ``W // 2 - w // 2``) inside the ACS run."""
    start, stop = acs
    return min(2 * (W // 2 - start) + 1, 2 * (stop - W // 2))


def acs_kernel_width(width: int, kernel_width: int = 6) -> int:
    """The ESPIRiT kernel width for ``width`` calibration columns: ``kernel_width``, narrowed to
    ``max(2, ceil(width / 2))`` for narrow blocks (module docstring)."""
    return min(kernel_width, max(2, math.ceil(width / 2)))


def acs_calibration(acs: tuple[int, int], kspace_size: tuple[int, int], *, calib_rows: int = 24,
                    kernel_width: int = 6) -> tuple[int, int, int] | None:
    """``(rows, columns, kernel width)`` of ESPIRiT on the ACS block ``acs`` of k-space of
    ``kspace_size`` (module docstring), or ``None`` when the block is too narrow and the maps are
    the low-resolution estimate."""
    H, W = kspace_size
    width = calibration_width(acs, W)
    if width < 2:
        return None
    return min(calib_rows, H), width, acs_kernel_width(width, kernel_width)


def describe_calibration(calibration: tuple[int, int, int] | None) -> str:
    """How :func:`acs_maps` estimates the maps for an :func:`acs_calibration` result, for a run's ``info``."""
    if calibration is None:
        return "lowres"
    rows, width, kernel = calibration
    return f"espirit {rows}x{width}, kernel {min(kernel, rows)}x{kernel}"


def acs_maps(kspace: Tensor, acs: tuple[int, int], *, calib_rows: int = 24, kernel_width: int = 6,
             espirit: dict | None = None) -> Tensor:
    """Coil maps of ``(C, H, W)`` k-space from its ACS columns ``acs`` (module docstring)."""
    calibration = acs_calibration(acs, tuple(kspace.shape[-2:]), calib_rows=calib_rows, kernel_width=kernel_width)
    if calibration is None:
        return lowres_coil_maps(kspace, acs)
    rows, width, kernel = calibration
    return espirit_maps(kspace, calib_shape=(rows, width), kernel_width=kernel, **(espirit or {}))


def _align_phase(maps: Tensor, y: Tensor) -> Tensor:
    """Turn ``(C, H, W)`` maps so that the coil-combined zero-filled image has a mean phase of 0."""
    combined = (maps.conj() * ifft2c(y)).sum(0)
    total = combined.sum()
    return maps * torch.exp(1j * torch.angle(total)) if total.abs() > 0 else maps


@dataclass
class MapsOptions:
    """How coil maps are made: ``method`` (``"acs"`` or ``"oracle"``), the ESPIRiT calibration rows
    and widest kernel on the ACS lines, ESPIRiT's other settings (``thresh``, ``crop``), and a cache
    folder (each slice's maps, keyed by file, slice, method and ACS range, for a resumed run)."""

    method: str = "acs"
    calib_rows: int = 24
    kernel_width: int = 6
    espirit: dict = field(default_factory=dict)
    cache_dir: Path | None = None

    def __post_init__(self) -> None:
        if self.method not in COIL_MAPS:
            raise ValueError(f"coil_maps: expected one of {COIL_MAPS}, got {self.method!r}")


def _cached(path: Path | None, make) -> Tensor:
    if path is not None and path.is_file():
        return torch.from_numpy(np.load(path))
    maps = make()
    if path is not None:
        atomic_save_npy(path, maps.numpy(), mkdir=True)
    return maps


def _slice_maps(file: FastMRIFile, index: int, kspace: Tensor, y: Tensor, acs: tuple[int, int],
                options: MapsOptions) -> tuple[Tensor, str]:
    if file.single_coil:
        return torch.ones_like(kspace), "single coil"
    cache = None if options.cache_dir is None else Path(options.cache_dir)
    if options.method == "oracle":
        if file.prospective:
            raise ValueError(f"{file.path}: coil_maps=oracle needs fully sampled k-space; the file is undersampled "
                             f"(use coil_maps=acs)")
        path = None if cache is None else cache / f"{file.path.stem}-{index:04d}-oracle.npy"
        return _cached(path, lambda: espirit_maps(kspace, **options.espirit)), "espirit of the fully sampled slice"
    calibration = acs_calibration(acs, tuple(kspace.shape[-2:]), calib_rows=options.calib_rows,
                                  kernel_width=options.kernel_width)
    path = None if cache is None else cache / f"{file.path.stem}-{index:04d}-acs{acs[0]}-{acs[1]}.npy"
    maps = _cached(path, lambda: acs_maps(y, acs, calib_rows=options.calib_rows, kernel_width=options.kernel_width,
                                          espirit=options.espirit))
    return maps, describe_calibration(calibration)


def fastmri_problem(
    path: str | Path,
    slices: list[int],
    *,
    acceleration: float = 4,
    center_fraction: float | None = None,
    mask_kind: str = "equispaced",
    maps: MapsOptions | None = None,
    scale: str = "estimate",
    noise_std: float | None = None,
    file: FastMRIFile | None = None,
    estimates: Estimates | None = None,
) -> Problem:
    """Slices of a fastMRI file as one problem (slices in the batch dimension; module docstring).

    Args:
        path: the ``.h5`` file.
        slices: slice indices (negative count from the end).
        acceleration, center_fraction, mask_kind: fastMRI's line mask for a fully sampled file;
            a prospective file uses its own mask and ignores them.
        maps: coil-map options (:class:`MapsOptions`); default ESPIRiT on the ACS lines.
        scale: ``"estimate"`` or ``"oracle"``.
        noise_std: the k-space noise std in the file's units; ``None`` estimates it.
        file: the file's header (:func:`open_fastmri`), to avoid reading it again.
        estimates: the volume's estimates (:func:`volume_estimates`) for this mask, to reuse them.

    Returns:
        A complex :class:`~invdiff.problems.base.Problem` named ``"fastmri"`` on ``(B, 2, H, W)``;
        its target is the reference ``(B, 1, h, w)`` or ``None``.
    """
    file = file or open_fastmri(path)
    maps_options = maps or MapsOptions()
    if not slices:
        raise ValueError("slices: expected at least one slice index")
    indices = []
    for k in slices:
        if not -file.num_slices <= int(k) < file.num_slices:
            raise IndexError(f"{file.path}: slice {k} is out of range for a volume of {file.num_slices} slices")
        indices.append(int(k) % file.num_slices)
    active = mask_kind == ACTIVE
    if active and file.prospective:
        raise ValueError(f"{file.path}: mask_kind 'active' chooses lines of a fully sampled file; this one is "
                         f"undersampled (it has its own mask)")
    mask = sampling_mask(file, acceleration, center_fraction, mask_kind)
    est = estimates or volume_estimates(file, mask, scale=scale, noise_std=noise_std)
    acs_columns = calibration_width(est.acs, file.kspace_size[1])
    if maps_options.method == "acs" and not file.single_coil and acs_columns < FEW_ACS:
        log.warning("%s: coil maps from %d ACS columns are unreliable (fewer than %d); expect artefacts, or use "
                    "a mask with a wider centre (center_fraction)", file.path.name, acs_columns, FEW_ACS)
    ys, all_maps, targets = [], [], []
    for index in indices:
        s = read_slice(file.path, index)
        kspace = _readout_ready(s.kspace, file) * est.scale
        y = kspace * mask
        maps_i, estimator = _slice_maps(file, index, kspace, y, est.acs, maps_options)
        if not file.single_coil:
            maps_i = _align_phase(maps_i, y)
        ys.append(kspace if active else y)
        all_maps.append(maps_i)
        if file.target_key is not None:
            target = s.reconstruction_rss if file.target_key == "reconstruction_rss" else s.reconstruction_esc
            targets.append(target)
    y, coil_maps = torch.stack(ys), torch.stack(all_maps)
    H, W = y.shape[-2:]
    acquisition = line_acquisition((H, W), acceleration, center_fraction, mask_kind, volume_seed(file.name))
    if active:
        mask = torch.ones_like(mask)
    if file.single_coil:
        op, support = SingleCoilMRI(mask.expand(H, W)) @ RealToComplex(), None
        y = y[:, 0:1]
    else:
        op = MultiCoilMRI(coil_maps, mask.expand(H, W)) @ RealToComplex()
        support = coil_maps.abs().square().sum(1) > 0
    info = {
        "file": str(file.path), "slices": indices, "prospective": file.prospective,
        "acceleration": None if file.prospective else acceleration,
        "mask_columns": acquisition["budget"] if active else int((mask > 0).sum()), "acs_columns": acs_columns, "coil_maps": maps_options.method,
        "maps_estimator": estimator,
        **est.as_dict(),
    }
    return Problem(
        "fastmri", op, y, est.noise_std * est.scale, (len(indices), 2, H, W),
        target=torch.stack(targets)[:, None].float() if targets else None,
        is_complex=True, scale=est.scale, crop=file.recon_size, support=support, data_range=file.data_max,
        baseline="cg", baseline_kwargs={"max_iter": 30}, info=info, acquisition=acquisition,
    )


def fastmri(
    file: str,
    slice: int = 0,
    acceleration: float = 4,
    center_fraction: float | None = None,
    mask_kind: str = "equispaced",
    coil_maps: str = "acs",
    scale: str = "estimate",
    noise_std: float | None = None,
    calib_rows: int = 24,
    kernel_width: int = 6,
) -> Problem:
    """One slice of a user's fastMRI file (``task=fastmri task.file=<h5> task.slice=<k>``); see
    :func:`fastmri_problem` and the module docstring."""
    if not file or file == "???":
        raise ValueError("task.file: expected the path of a fastMRI .h5 file (task.file=<path>)")
    maps = MapsOptions(coil_maps, calib_rows=calib_rows, kernel_width=kernel_width)
    return fastmri_problem(file, [slice], acceleration=acceleration, center_fraction=center_fraction,
                           mask_kind=mask_kind, maps=maps, scale=scale, noise_std=noise_std)


__all__ = ["COIL_MAPS", "Estimates", "FastMRIFile", "MAX_RTOL", "MapsOptions", "SCALES", "acs_calibration", "acs_kernel_width",
           "acs_maps", "acs_scale", "attribute_max", "calibration_width", "describe_calibration", "fastmri",
           "fastmri_problem", "kspace_noise", "open_fastmri", "reference_max", "sampling_mask", "volume_estimates"]
