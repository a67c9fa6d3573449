r"""Real CT slices from DICOM files, in Hounsfield units and linear attenuation.

:func:`read_ct` decodes one CT image with pydicom and applies its modality rescale,

.. math:: \text{HU} = \text{stored value} \times \text{RescaleSlope} + \text{RescaleIntercept},

taken from the top-level elements of a classic CT image or from the functional groups of an
enhanced (multi-frame) one. :func:`hu_to_attenuation` turns Hounsfield units into linear
attenuation coefficients for a CT forward model, :math:`\mu = \mu_\text{water}(1 + \text{HU}/1000)`.

:func:`packaged_ct_slices` lists the real CT slices that ship with pydicom and pydicom-data and
decode with the plugins installed here, with where each comes from and its licence terms as far
as they are known; read them for tests and demonstrations, and mind the non-commercial ones.

Errors are ``ValueError`` (``FileNotFoundError`` for a missing file) naming the file and what is
wrong; :func:`iter_dicoms` turns them into reports so that a batch skips a bad file.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike

MU_WATER = 0.0192
r"""Linear attenuation of water, 1/mm, at an effective energy of about 70 keV.

The value used for 120 kVp CT simulation; NIST XCOM's mass attenuation of water interpolated
log-log between its 60 keV (0.2059 cm²/g) and 80 keV (0.1837 cm²/g) entries gives 0.0194 /mm at
70 keV, within 1 %.
"""


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------


def _dcmread(path: Path, *, force: bool):
    import pydicom
    from pydicom.errors import InvalidDicomError

    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such DICOM file")
    try:
        return pydicom.dcmread(path, force=force)
    except InvalidDicomError as err:
        raise ValueError(f"{path}: not a DICOM file (no 'DICM' prefix after the preamble): {err}") from err
    except Exception as err:
        # pydicom signals truncated or malformed files with many exception types; at this file
        # boundary each becomes one ValueError that names the file, with the cause chained.
        raise ValueError(f"{path}: unreadable DICOM file ({type(err).__name__}: {err})") from err


def _check_decodable(ds, path: Path) -> str:
    """The transfer syntax's name; raise when no installed plugin decodes its pixel data."""
    from pydicom.pixels import get_decoder

    meta = getattr(ds, "file_meta", None)
    uid = meta.get("TransferSyntaxUID") if meta is not None else None
    if uid is None:
        return "implicit VR little endian (no file meta)"
    if not uid.is_compressed:
        return uid.name
    try:
        decoder = get_decoder(uid)
    except NotImplementedError as err:
        raise ValueError(
            f"{path}: pixel data use the transfer syntax {uid.name} ({uid}), which pydicom cannot decode"
        ) from err
    if not decoder.is_available:
        needs = "; ".join(decoder.missing_dependencies) or "a decoding plugin"
        raise ValueError(
            f"{path}: pixel data are compressed with {uid.name} ({uid}) and no installed plugin decodes "
            f"them; any of these would: {needs}"
        )
    return uid.name


def _rescale(ds, frame: int) -> tuple[float, float, str | None]:
    """``(slope, intercept, rescale type)`` of a classic or enhanced CT image."""
    if "RescaleSlope" in ds and "RescaleIntercept" in ds:
        return float(ds.RescaleSlope), float(ds.RescaleIntercept), ds.get("RescaleType")
    for groups in ("PerFrameFunctionalGroupsSequence", "SharedFunctionalGroupsSequence"):
        seq = ds.get(groups)
        if not seq:
            continue
        item = seq[frame] if groups.startswith("PerFrame") and len(seq) > frame else seq[0]
        transform = item.get("PixelValueTransformationSequence")
        if transform:
            t = transform[0]
            if "RescaleSlope" in t and "RescaleIntercept" in t:
                return float(t.RescaleSlope), float(t.RescaleIntercept), t.get("RescaleType")
    raise KeyError("RescaleSlope/RescaleIntercept")


def _spacing(ds, frame: int) -> tuple[tuple[float, float] | None, float | None]:
    """``(pixel spacing (row, column) mm, slice thickness mm)``, classic or enhanced."""
    spacing = ds.get("PixelSpacing")
    thickness = ds.get("SliceThickness")
    if spacing is None:
        for groups in ("PerFrameFunctionalGroupsSequence", "SharedFunctionalGroupsSequence"):
            seq = ds.get(groups)
            if not seq:
                continue
            item = seq[frame] if groups.startswith("PerFrame") and len(seq) > frame else seq[0]
            measures = item.get("PixelMeasuresSequence")
            if measures:
                spacing = measures[0].get("PixelSpacing")
                thickness = measures[0].get("SliceThickness", thickness)
                break
    spacing = (float(spacing[0]), float(spacing[1])) if spacing else None
    thickness = float(thickness) if thickness not in (None, "") else None
    return spacing, thickness


def read_ct(
    path: PathLike, *, frame: int = 0, require_ct: bool = True, force: bool = False
) -> tuple[Tensor, dict]:
    """Read one CT slice in Hounsfield units.

    Args:
        path: the DICOM file.
        frame: the frame of a multi-frame (enhanced CT) image; ignored for single-frame ones.
        require_ct: raise when the modality is not ``"CT"``; ``False`` only warns (the
            rescale then gives the modality's own units, not HU).
        force: read files without the DICOM preamble (``pydicom.dcmread(force=True)``).

    Returns:
        ``(hu, meta)``: ``hu`` is ``(H, W)`` float32; ``meta`` holds ``path``, ``modality``,
        ``body_part`` (``BodyPartExamined`` or ``None``), ``pixel_spacing`` ((row, column) mm or
        ``None``), ``slice_thickness`` (mm or ``None``), ``rescale_slope``,
        ``rescale_intercept``, ``transfer_syntax``, ``kvp``, ``shape``, ``frames``,
        ``pixel_padding_value`` (stored value marking pixels outside the scan field, or
        ``None``).

    Raises:
        FileNotFoundError: no such file.
        ValueError: naming the file, when it is not DICOM or cannot be parsed; has no pixel data
            (no ``PixelData`` element); is not CT (with ``require_ct``); uses a compressed
            transfer syntax that no installed plugin decodes (the message names the syntax and
            the packages that would, e.g. ``pylibjpeg-libjpeg`` or ``gdcm`` for JPEG Lossless);
            is not a single-sample (greyscale) image; lacks the rescale slope and intercept; or
            has a rescale type other than ``"HU"``.
    """
    path = Path(path)
    ds = _dcmread(path, force=force)
    modality = ds.get("Modality")
    if modality != "CT":
        message = f"{path}: modality is {modality!r}, not 'CT'; Hounsfield units are defined for CT only"
        if require_ct:
            raise ValueError(message)
        warnings.warn(message, stacklevel=2)
    if "PixelData" not in ds:
        raise ValueError(f"{path}: no pixel data (the PixelData element (7FE0,0010) is absent)")
    if int(ds.get("SamplesPerPixel", 1)) != 1:
        raise ValueError(f"{path}: expected a greyscale image (SamplesPerPixel 1), got {ds.SamplesPerPixel}")
    syntax = _check_decodable(ds, path)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if not 0 <= frame < frames:
        raise ValueError(f"frame: expected 0 <= frame < {frames} for {path}, got {frame}")
    try:
        slope, intercept, kind = _rescale(ds, frame)
    except KeyError as err:
        if modality == "CT":
            raise ValueError(
                f"{path}: no RescaleSlope/RescaleIntercept; cannot convert to Hounsfield units"
            ) from err
        slope, intercept, kind = 1.0, 0.0, None
    if modality == "CT" and kind not in (None, "", "HU"):
        raise ValueError(f"{path}: the rescale type is {kind!r}, not 'HU' (e.g. a derived perfusion map)")
    try:
        stored = ds.pixel_array
    except Exception as err:
        # Decoders raise many exception types on corrupt pixel data; name the file, chain the cause.
        raise ValueError(
            f"{path}: cannot decode the pixel data ({syntax}): {type(err).__name__}: {err}"
        ) from err
    if frames > 1:
        stored = stored[frame]
    if stored.ndim != 2:
        raise ValueError(f"{path}: expected a 2D image, got pixel data of shape {stored.shape}")
    hu = stored.astype(np.float64) * slope + intercept
    spacing, thickness = _spacing(ds, frame)
    padding = ds.get("PixelPaddingValue")
    meta: dict[str, Any] = {
        "path": path,
        "modality": modality,
        "body_part": ds.get("BodyPartExamined") or None,
        "pixel_spacing": spacing,
        "slice_thickness": thickness,
        "rescale_slope": slope,
        "rescale_intercept": intercept,
        "transfer_syntax": syntax,
        "kvp": float(ds.KVP) if ds.get("KVP") not in (None, "") else None,
        "shape": tuple(hu.shape),
        "frames": frames,
        "pixel_padding_value": int(padding) if isinstance(padding, (int, np.integer)) else None,
    }
    return torch.from_numpy(hu.astype(np.float32)), meta


def iter_dicoms(
    folder: PathLike, pattern: str = "*", **read_kwargs: Any
) -> Iterator[tuple[Path, tuple[Tensor, dict] | Exception]]:
    """Read every CT slice of a folder with :func:`read_ct`, reporting the bad files instead of stopping.

    Files are visited in sorted order (not recursively); hidden files are skipped. A file that
    :func:`read_ct` rejects (``ValueError`` or ``OSError``) yields its exception, whose message
    names the file and the problem, and is logged as a warning.

    Args:
        folder: the folder to scan.
        pattern: a glob pattern for file names (DICOM files often have no suffix).
        **read_kwargs: passed to :func:`read_ct`.

    Yields:
        ``(path, (hu, meta))`` for a good file, ``(path, exception)`` for a bad one.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such folder")
    for path in sorted(folder.glob(pattern)):
        if path.name.startswith(".") or not path.is_file():
            continue
        try:
            result = read_ct(path, **read_kwargs)
        except (ValueError, OSError) as err:
            logger.warning("skipping %s", err)
            yield path, err
        else:
            yield path, result


# --------------------------------------------------------------------------------------------
# Units
# --------------------------------------------------------------------------------------------


def hu_to_attenuation(hu: Tensor, mu_water: float = MU_WATER) -> Tensor:
    r"""Linear attenuation from Hounsfield units, clamped at 0.

    .. math:: \mu = \max(0, \mu_\text{water}(1 + \text{HU}/1000))

    Air (-1000 HU) maps to 0 and water to ``mu_water``; values below -1000 (the scanners' -2000
    or -3024 padding outside the field of view) clamp to 0.

    Args:
        hu: any shape, real.
        mu_water: water's attenuation, 1/mm (:data:`MU_WATER`); the result is in the same unit.

    Returns:
        ``mu``, ``hu``'s shape and dtype.
    """
    if not mu_water > 0:
        raise ValueError(f"mu_water: expected a positive attenuation, got {mu_water}")
    return (mu_water * (1 + hu / 1000)).clamp(min=0)


def relative_attenuation(hu: Tensor) -> Tensor:
    r"""Hounsfield units to the project's relative attenuation :math:`\mu / (2 \mu_{water})`, clipped to
    ``[0, 1]`` (air 0, water 0.5, 1000 HU and above 1): the units of the ``ct`` dataset, the CT
    tasks and the shipped ``ct_64`` prior.

    Args:
        hu: any shape, real.

    Returns:
        ``hu``'s shape and dtype.
    """
    return ((1 + hu / 1000) / 2).clamp(0, 1)


def attenuation_to_hu(mu: Tensor, mu_water: float = MU_WATER) -> Tensor:
    r"""Hounsfield units from linear attenuation, :math:`1000(\mu / \mu_\text{water} - 1)`; the inverse of
    :func:`hu_to_attenuation` above -1000 HU.

    Args:
        mu: any shape, real, 1/mm.
        mu_water: water's attenuation, 1/mm.

    Returns:
        HU, ``mu``'s shape and dtype.
    """
    if not mu_water > 0:
        raise ValueError(f"mu_water: expected a positive attenuation, got {mu_water}")
    return 1000 * (mu / mu_water - 1)


# --------------------------------------------------------------------------------------------
# Packaged slices
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PackagedCT:
    """A real CT slice shipped with pydicom or pydicom-data.

    Attributes:
        name: the file name for ``pydicom.data.get_testdata_file``.
        path: where it is on this machine, or ``None`` when not installed.
        body_part: the anatomy shown.
        source: where the image comes from.
        licence: the terms it is under, as far as known.
        commercial_use: ``False`` when the licence forbids commercial use, ``None`` when unknown.
        transfer_syntax: the encoding of its pixel data.
        decodes: whether a plugin installed here decodes it.
    """

    name: str
    path: Path | None
    body_part: str
    source: str
    licence: str
    commercial_use: bool | None
    transfer_syntax: str
    decodes: bool


_PACKAGED = (
    (
        "693_UNCR.dcm",
        "head (non-contrast brain, 5 mm, 512 x 512)",
        "CQ500 (qure.ai / CARING) study CQ500-CT-310 (DICOM PatientID), via pydicom issue #693; "
        "uncompressed copy of 693_J2KR.dcm",
        "CQ500 terms: CC BY-NC-SA 4.0 (attribution, non-commercial, share-alike)",
        False,
    ),
    (
        "explicit_VR-UN.dcm",
        "abdomen (contrast-enhanced, pancreas level, 512 x 512)",
        "TCIA Pancreas-CT (NIH Clinical Center), PANCREAS_0001 (DICOM PatientID), via pydicom issue #968; "
        "JPEG 2000 lossless (gdcmconv --j2k)",
        "TCIA Pancreas-CT: Creative Commons Attribution (TCIA gives CC BY 3.0 for this collection; "
        "cite Roth et al. and TCIA)",
        True,
    ),
    (
        "CT_small.dcm",
        "torso, 128 x 128 crop around a vertebral body",
        "NEMA WG04 compression test set, image CT1_UNC, cut down by pydicom",
        "no licence stated; NEMA's public test images, redistributed in pydicom (MIT) whose README "
        "believes there is no restriction",
        None,
    ),
    (
        "J2K_pixelrep_mismatch.dcm",
        "head (skull base, 5 mm, 512 x 512)",
        "pydicom issue #1149 (a user's anonymised upload); JPEG 2000 lossless",
        "no licence stated (shared publicly in a pydicom issue)",
        None,
    ),
    (
        "bad_sequence.dcm",
        "neck",
        "pydicom issue #1067 (anonymised, provided by @sylvainKritter); JPEG Lossless process 14",
        "no licence stated (shared publicly in a pydicom issue)",
        None,
    ),
)
"""(name, body part, source, licence, commercial use) of the packaged CT slices. 693_J2KR.dcm
(same image as 693_UNCR.dcm) and 693_J2KI.dcm (its lossy JPEG 2000 copy) are left out as
duplicates; eCT_Supplemental.dcm is a derived perfusion map (rescale type 'US'), not HU."""


def packaged_ct_slices(*, decodable_only: bool = True) -> list[PackagedCT]:
    """The real CT slices that ship with pydicom / pydicom-data, with their sources and licences.

    Looks each file up with ``pydicom.data.get_testdata_file(name, download=False)`` (never the
    network) and checks that a decoder for its transfer syntax is installed. With pydicom 3.0,
    pydicom-data 1.0 and Pillow here, ``693_UNCR.dcm``, ``explicit_VR-UN.dcm`` (JPEG 2000 through
    Pillow), ``CT_small.dcm`` and ``J2K_pixelrep_mismatch.dcm`` decode; ``bad_sequence.dcm`` (JPEG
    Lossless) needs ``pylibjpeg`` with ``pylibjpeg-libjpeg``, or ``gdcm``.

    Licences are as published by each source and were not re-checked against it here: check them
    before redistributing derived data. CQ500 forbids commercial use.

    Args:
        decodable_only: leave out the files missing here or that no installed plugin decodes.

    Returns:
        the slices, in the order above.
    """
    import pydicom
    from pydicom.data import get_testdata_file
    from pydicom.pixels import get_decoder

    out = []
    for name, body_part, source, licence, commercial in _PACKAGED:
        found = get_testdata_file(name, download=False)
        path = Path(found) if found else None
        syntax, decodes = "unknown", False
        if path is not None:
            uid = pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID
            syntax = uid.name
            decodes = not uid.is_compressed or get_decoder(uid).is_available
        if decodes or not decodable_only:
            out.append(PackagedCT(name, path, body_part, source, licence, commercial, syntax, decodes))
    return out


__all__ = [
    "MU_WATER",
    "PackagedCT",
    "attenuation_to_hu",
    "hu_to_attenuation",
    "iter_dicoms",
    "packaged_ct_slices",
    "read_ct",
]
