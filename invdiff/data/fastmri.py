r"""fastMRI files: read, write and prepare multi-coil and single-coil k-space volumes.

The layout is that of the fastMRI data (``facebookresearch/fastMRI``, ``fastmri/data/mri_data.py``):
one HDF5 file per volume holding

* ``kspace``: complex64, ``(slices, coils, H, W)`` for multi-coil files or ``(slices, H, W)`` for
  single-coil ones, in the centred layout of :mod:`operators.mri` (DC at ``(H // 2, W // 2)``). ``H``
  is the readout (frequency-encode) direction, usually oversampled twice; ``W`` the phase-encode
  direction, whose columns are the lines fastMRI's masks pick;
* ``reconstruction_rss`` (and ``reconstruction_esc`` in single-coil files): float32,
  ``(slices, h, w)``, the target images, ``(h, w)`` the reconstruction size of the header;
* ``ismrmrd_header``: the ISMRMRD XML header, of which fastMRI reads the encoded and
  reconstructed matrix sizes and the phase-encode limits (:func:`parse_ismrmrd_header`);
* ``mask`` (test and challenge files only): the sampled columns, ``(W,)``;
* attributes ``max`` and ``norm`` (the maximum and the L2 norm of the whole
  ``reconstruction_rss`` volume, fastMRI's SSIM data range and normaliser), ``acquisition``
  (e.g. ``"AXT1"``, ``"CORPD_FBK"``) and ``patient_id``.

Targets follow fastMRI's order of operations (:func:`reconstruct_rss`): the centred orthonormal
inverse FFT of each coil (:func:`operators.mri.ifft2c`), a centre crop of the complex coil images
to the reconstruction size, then the root sum of squares over the coils. The crop comes before the
RSS and after the FFT, so it also removes the readout oversampling of fastMRI's 640-sample
readouts (:func:`remove_readout_oversampling` does the same in k-space).

Every writer here puts the file under a temporary name in the destination folder and renames it
into place, so an interrupted write never leaves a partial file. Readers raise a
``FileNotFoundError`` or ``ValueError`` that names the file and what is missing or wrong;
:func:`iter_volumes` and :func:`load_folder` turn those into reports so that a batch over a folder
skips a bad file and finishes the rest.
"""

from __future__ import annotations

import inspect
import json
import logging
import os
import xml.etree.ElementTree as etree
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
from torch import Tensor

from operators.mri import espirit_maps, ifft2c, rss

logger = logging.getLogger(__name__)

ISMRMRD_NAMESPACE = "http://www.ismrm.org/ISMRMRD"

MAPS_CACHE_SUFFIX = ".espirit.h5"
"""The suffix of coil-map caches written next to the data (:func:`maps_cache_path`);
:func:`iter_volumes` skips files that end with it."""

_HEADER_KEYS = {
    "encoding_size",
    "recon_size",
    "encoding_limits",
    "encoding_fov_mm",
    "recon_fov_mm",
    "padding_left",
    "padding_right",
}

PathLike = str | os.PathLike

_ESPIRIT_DEFAULTS = {
    name: p.default
    for name, p in inspect.signature(espirit_maps).parameters.items()
    if p.default is not inspect.Parameter.empty
}


# --------------------------------------------------------------------------------------------
# Containers
# --------------------------------------------------------------------------------------------


@dataclass(eq=False)
class FastMRIVolume:
    """One fastMRI volume read into memory.

    Attributes:
        path: the file it came from.
        kspace: ``(slices, coils, H, W)`` complex64; single-coil files get ``coils = 1``.
        reconstruction_rss: ``(slices, h, w)`` float32, or ``None`` when the file has none (test
            and challenge files).
        reconstruction_esc: ``(slices, h, w)`` float32 (single-coil files), or ``None``.
        mask: ``(W,)`` float32 sampled columns (test and challenge files), or ``None``.
        header: the metadata fastMRI takes from ``ismrmrd_header`` (:func:`parse_ismrmrd_header`),
            empty when the file has no header and it was not required.
        attrs: the file's attributes (``max``, ``norm``, ``acquisition``, ``patient_id``, ...)
            as Python scalars and strings.
        single_coil: ``True`` when the file stores ``kspace`` without a coil axis.
    """

    path: Path
    kspace: Tensor
    reconstruction_rss: Tensor | None
    reconstruction_esc: Tensor | None = None
    mask: Tensor | None = None
    header: dict[str, Any] = field(default_factory=dict)
    attrs: dict[str, Any] = field(default_factory=dict)
    single_coil: bool = False

    @property
    def num_slices(self) -> int:
        return self.kspace.shape[0]

    @property
    def num_coils(self) -> int:
        return self.kspace.shape[1]

    @property
    def recon_shape(self) -> tuple[int, int]:
        """``(h, w)``, the reconstruction size of the header (its ``x`` and ``y``)."""
        return _recon_shape(self.header, self.path)


@dataclass(eq=False)
class FastMRISlice:
    """One slice of a fastMRI volume, read on its own (:func:`read_slice`).

    Attributes:
        path: the file it came from.
        index: the slice index in the volume.
        kspace: ``(coils, H, W)`` complex64; single-coil files give ``coils = 1``.
        reconstruction_rss: ``(h, w)`` float32 or ``None``.
        mask: ``(W,)`` float32 or ``None``.
        header: as :attr:`FastMRIVolume.header`.
        attrs: as :attr:`FastMRIVolume.attrs`.
    """

    path: Path
    index: int
    kspace: Tensor
    reconstruction_rss: Tensor | None
    mask: Tensor | None = None
    header: dict[str, Any] = field(default_factory=dict)
    attrs: dict[str, Any] = field(default_factory=dict)

    @property
    def recon_shape(self) -> tuple[int, int]:
        """``(h, w)``, the reconstruction size of the header."""
        return _recon_shape(self.header, self.path)


def _recon_shape(header: Mapping[str, Any], path: Path | None) -> tuple[int, int]:
    if "recon_size" not in header:
        where = f"{path}: " if path is not None else ""
        raise ValueError(
            f"{where}no ismrmrd_header with encoding/reconSpace/matrixSize; the reconstruction size "
            f"is needed to crop the images"
        )
    x, y = header["recon_size"][:2]
    return int(x), int(y)


# --------------------------------------------------------------------------------------------
# Array helpers: crops, centred 1D FFTs, RSS targets, readout oversampling
# --------------------------------------------------------------------------------------------


def _crop_starts(size: tuple[int, int], shape, name: str) -> tuple[int, int, int, int]:
    if len(shape) < 2:
        raise ValueError(f"{name}: expected (h, w), got {tuple(shape)!r}")
    h, w = int(shape[0]), int(shape[1])
    H, W = size
    if not (0 < h <= H and 0 < w <= W):
        raise ValueError(f"{name}: expected a crop (h, w) with 0 < h <= {H} and 0 < w <= {W}, got {(h, w)}")
    return (H - h) // 2, h, (W - w) // 2, w


def center_crop(x: Tensor, shape: tuple[int, int]) -> Tensor:
    """The centre ``(h, w)`` of the last two dimensions, fastMRI's ``center_crop``.

    The crop starts at ``((H - h) // 2, (W - w) // 2)``, so the centre pixel ``(H // 2, W // 2)``
    of an even-sized array stays the centre pixel ``(h // 2, w // 2)`` of an even-sized crop.

    Args:
        x: ``(..., H, W)``, real or complex.
        shape: ``(h, w)`` with ``0 < h <= H`` and ``0 < w <= W``; a third entry (the ``z`` of a
            header's matrix size) is ignored.

    Returns:
        ``(..., h, w)``, a view of ``x``.
    """
    if x.ndim < 2:
        raise ValueError(f"x: expected (..., H, W), got shape {tuple(x.shape)}")
    top, h, left, w = _crop_starts(tuple(x.shape[-2:]), shape, "shape")
    return x[..., top : top + h, left : left + w]


def complex_center_crop(x: Tensor, shape: tuple[int, int]) -> Tensor:
    """The centre ``(h, w)`` of a complex image, native or in fastMRI's real-pair layout.

    Args:
        x: a complex tensor ``(..., H, W)``, or a real one ``(..., H, W, 2)`` (real and imaginary
            parts last, fastMRI's ``complex_center_crop`` layout).
        shape: ``(h, w)``.

    Returns:
        ``(..., h, w)`` or ``(..., h, w, 2)``, a view of ``x``.
    """
    if x.is_complex():
        return center_crop(x, shape)
    if x.ndim < 3 or x.shape[-1] != 2:
        raise ValueError(
            f"x: expected a complex tensor (..., H, W) or a real one (..., H, W, 2), "
            f"got dtype {x.dtype} and shape {tuple(x.shape)}"
        )
    return center_crop(x.movedim(-1, 0), shape).movedim(0, -1)


def _fft1c(x: Tensor, dim: int) -> Tensor:
    return torch.fft.fftshift(torch.fft.fft(torch.fft.ifftshift(x, dim=dim), dim=dim, norm="ortho"), dim=dim)


def _ifft1c(x: Tensor, dim: int) -> Tensor:
    return torch.fft.fftshift(torch.fft.ifft(torch.fft.ifftshift(x, dim=dim), dim=dim, norm="ortho"), dim=dim)


def reconstruct_rss(kspace: Tensor, recon_size: tuple[int, ...] | None = None) -> Tensor:
    r"""The root-sum-of-squares image of fully sampled k-space, in fastMRI's order.

    .. math:: \hat x = \sqrt{\textstyle\sum_c |\operatorname{crop}(\mathcal F_c^{-1} y_c)|^2}

    1. the centred orthonormal inverse FFT of each coil (:func:`operators.mri.ifft2c`);
    2. the centre crop of the complex coil images to ``recon_size`` (:func:`center_crop`);
    3. the RSS over the coils (:func:`operators.mri.rss`).

    The crop commutes with the RSS (both are pointwise in space), so the order matters only in
    that the crop acts on images, never on k-space. For zero-filled undersampled k-space this is
    the zero-filled RSS image.

    Args:
        kspace: ``(..., C, H, W)`` complex; a single coil needs ``C = 1``.
        recon_size: ``(h, w)`` or a header's ``(x, y, z)``; ``None`` keeps ``(H, W)``.

    Returns:
        ``(..., h, w)`` real, the real dtype matching ``kspace``'s precision.
    """
    if not isinstance(kspace, Tensor) or not kspace.is_complex() or kspace.ndim < 3:
        got = (
            f"dtype {kspace.dtype}, shape {tuple(kspace.shape)}"
            if isinstance(kspace, Tensor)
            else type(kspace).__name__
        )
        raise ValueError(f"kspace: expected a complex tensor (..., C, H, W), got {got}")
    images = ifft2c(kspace)
    if recon_size is not None:
        images = center_crop(images, recon_size)
    return rss(images, dim=-3)


def remove_readout_oversampling(kspace: Tensor, dim: int = -2) -> Tensor:
    r"""Halve the field of view along a twice-oversampled readout, in k-space.

    1. the centred orthonormal inverse FFT along ``dim`` (hybrid space: image along the readout);
    2. the centre half along ``dim``, from ``N // 4`` (:func:`center_crop`'s convention);
    3. the centred orthonormal FFT back.

    The steps are unitary up to the crop, so an object inside the centre half comes back exactly:
    for an image ``x`` of ``N / 2`` rows zero-padded to ``N`` rows, ``fft2c`` of the padded image
    becomes ``fft2c(x)``.

    Args:
        kspace: ``(..., H, W)`` complex, ``H`` (the size along ``dim``) even.
        dim: the readout dimension; fastMRI's is ``-2`` (the 640 rows of its files).

    Returns:
        ``(..., H // 2, W)`` complex (with the halving along ``dim``).
    """
    if not isinstance(kspace, Tensor) or not kspace.is_complex():
        got = kspace.dtype if isinstance(kspace, Tensor) else type(kspace).__name__
        raise ValueError(f"kspace: expected a complex tensor, got {got}")
    n = kspace.shape[dim]
    if n % 2:
        raise ValueError(f"kspace: expected an even readout length along dim {dim}, got {n}")
    hybrid = _ifft1c(kspace, dim)
    start = (n - n // 2) // 2
    return _fft1c(hybrid.narrow(dim, start, n // 2), dim)


# --------------------------------------------------------------------------------------------
# ISMRMRD header
# --------------------------------------------------------------------------------------------


def make_ismrmrd_header(
    encoding_size: tuple[int, int, int],
    recon_size: tuple[int, int, int] | None = None,
    *,
    encoding_limits: Mapping[str, int] | None = None,
    encoding_fov_mm: tuple[float, float, float] | None = None,
    recon_fov_mm: tuple[float, float, float] | None = None,
    num_slices: int = 1,
) -> str:
    """A minimal ISMRMRD XML header holding the fields fastMRI's ``SliceDataset`` reads.

    It has the schema's required parts (``experimentalConditions``; one ``encoding`` with
    ``encodedSpace``, ``reconSpace``, ``encodingLimits`` and ``trajectory``) and nothing else.

    Args:
        encoding_size: ``(x, y, z)``, the encoded matrix: ``x`` the readout (k-space ``H``),
            ``y`` the phase encodes (k-space ``W``), ``z`` 1 for 2D slices.
        recon_size: ``(x, y, z)``, the reconstructed matrix; ``None`` takes ``encoding_size``.
        encoding_limits: ``{"center": c, "maximum": m}`` of ``kspace_encoding_step_1`` (the phase
            encodes); defaults to ``center = y // 2`` and ``maximum = y - 1``, no padding.
        encoding_fov_mm: the encoded field of view, ``(x, y, z)`` mm; defaults to 1 mm per sample.
        recon_fov_mm: the reconstructed one; defaults to the encoded spacing times ``recon_size``.
        num_slices: the ``slice`` encoding limit is ``0 .. num_slices - 1``.

    Returns:
        the XML document, a ``str``.
    """
    enc = _triple(encoding_size, "encoding_size", int)
    rec = enc if recon_size is None else _triple(recon_size, "recon_size", int)
    if any(v < 1 for v in enc + rec):
        raise ValueError(f"encoding_size, recon_size: expected positive sizes, got {enc} and {rec}")
    limits = {"center": enc[1] // 2, "maximum": enc[1] - 1}
    if encoding_limits is not None:
        unknown = set(encoding_limits) - {"center", "maximum", "minimum"}
        if unknown:
            raise ValueError(
                f"encoding_limits: expected keys 'center' and 'maximum', got {sorted(encoding_limits)}"
            )
        limits.update({k: int(v) for k, v in encoding_limits.items() if k != "minimum"})
    if encoding_fov_mm is None:
        enc_fov = tuple(float(v) for v in enc)
    else:
        enc_fov = _triple(encoding_fov_mm, "encoding_fov_mm", float)
    if recon_fov_mm is None:
        rec_fov = tuple(f / e * r for f, e, r in zip(enc_fov, enc, rec))
    else:
        rec_fov = _triple(recon_fov_mm, "recon_fov_mm", float)

    def triple(tag: str, values) -> str:
        return f"<{tag}>" + "".join(f"<{a}>{v:g}</{a}>" for a, v in zip("xyz", values)) + f"</{tag}>"

    def space(tag: str, size, fov) -> str:
        return f"<{tag}>{triple('matrixSize', size)}{triple('fieldOfView_mm', fov)}</{tag}>"

    def limit(tag: str, minimum: int, maximum: int, center: int) -> str:
        values = f"<minimum>{minimum}</minimum><maximum>{maximum}</maximum><center>{center}</center>"
        return f"<{tag}>{values}</{tag}>"

    return (
        '<?xml version="1.0" encoding="utf-8"?>\n'
        f'<ismrmrdHeader xmlns="{ISMRMRD_NAMESPACE}" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">'
        "<experimentalConditions><H1resonanceFrequency_Hz>63646310</H1resonanceFrequency_Hz>"
        "</experimentalConditions>"
        "<encoding>"
        + space("encodedSpace", enc, enc_fov)
        + space("reconSpace", rec, rec_fov)
        + "<encodingLimits>"
        + limit("kspace_encoding_step_1", 0, limits["maximum"], limits["center"])
        + limit("kspace_encoding_step_2", 0, 0, 0)
        + limit("slice", 0, max(num_slices - 1, 0), 0)
        + "</encodingLimits>"
        "<trajectory>cartesian</trajectory>"
        "</encoding>"
        "</ismrmrdHeader>"
    )


def _triple(values, name: str, kind) -> tuple:
    try:
        out = tuple(kind(v) for v in values)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name}: expected (x, y, z), got {values!r}") from err
    if len(out) == 2:
        out = (*out, kind(1))
    if len(out) != 3:
        raise ValueError(f"{name}: expected (x, y, z), got {values!r}")
    return out


def parse_ismrmrd_header(xml: str | bytes, path: PathLike | None = None) -> dict[str, Any]:
    """The metadata fastMRI's ``SliceDataset._retrieve_metadata`` takes from an ISMRMRD header.

    Args:
        xml: the header document.
        path: the file it came from, for error messages.

    Returns:
        ``{"encoding_size": (x, y, z), "recon_size": (x, y, z), "encoding_limits": {"center": c,
        "maximum": m}, "padding_left": y // 2 - c, "padding_right": padding_left + m + 1,
        "encoding_fov_mm": (x, y, z) or None, "recon_fov_mm": (x, y, z) or None}``.
        ``padding_left`` and ``padding_right`` bound the acquired phase-encode columns, fastMRI's
        convention.
    """
    where = f"{path}: " if path is not None else ""
    try:
        root = etree.fromstring(xml)
    except etree.ParseError as err:
        raise ValueError(f"{where}ismrmrd_header is not valid XML ({err})") from err
    ns = {"m": ISMRMRD_NAMESPACE}

    def find(*tags: str, required: bool = True) -> str | None:
        node = root.find(".//" + "/".join(f"m:{t}" for t in tags), ns)
        if node is None or node.text is None:
            if required:
                raise ValueError(f"{where}ismrmrd_header has no {'/'.join(tags)}")
            return None
        return node.text.strip()

    def numbers(tags: tuple[str, ...], kind, required: bool = True):
        values = [find(*tags, a, required=required) for a in "xyz"]
        if any(v is None for v in values):
            return None
        try:
            return tuple(kind(float(v)) if kind is int else kind(v) for v in values)
        except ValueError as err:
            raise ValueError(f"{where}ismrmrd_header has a non-numeric {'/'.join(tags)}: {values}") from err

    enc = numbers(("encoding", "encodedSpace", "matrixSize"), int)
    rec = numbers(("encoding", "reconSpace", "matrixSize"), int)
    lims = ("encoding", "encodingLimits", "kspace_encoding_step_1")
    center, maximum = find(*lims, "center"), find(*lims, "maximum")
    try:
        center, maximum = int(center), int(maximum)
    except ValueError as err:
        raise ValueError(
            f"{where}ismrmrd_header has a non-integer {'/'.join(lims)}: {center}, {maximum}"
        ) from err
    padding_left = enc[1] // 2 - center
    return {
        "encoding_size": enc,
        "recon_size": rec,
        "encoding_limits": {"center": center, "maximum": maximum},
        "padding_left": padding_left,
        "padding_right": padding_left + maximum + 1,
        "encoding_fov_mm": numbers(("encoding", "encodedSpace", "fieldOfView_mm"), float, required=False),
        "recon_fov_mm": numbers(("encoding", "reconSpace", "fieldOfView_mm"), float, required=False),
    }


def _header_xml(header: Mapping[str, Any] | str | None, kspace_shape: tuple[int, ...]) -> str:
    H, W = kspace_shape[-2:]
    if isinstance(header, (str, bytes)):
        parse_ismrmrd_header(header)
        return header.decode() if isinstance(header, bytes) else header
    header = dict(header or {})
    unknown = set(header) - _HEADER_KEYS
    if unknown:
        raise ValueError(f"header: unknown keys {sorted(unknown)}; expected some of {sorted(_HEADER_KEYS)}")
    enc = _triple(header.get("encoding_size", (H, W, 1)), "header['encoding_size']", int)
    if enc[:2] != (H, W):
        raise ValueError(
            f"header['encoding_size']: expected (x, y) = the k-space size {(H, W)}, got {enc[:2]}"
        )
    xml = make_ismrmrd_header(
        enc,
        header.get("recon_size"),
        encoding_limits=header.get("encoding_limits"),
        encoding_fov_mm=header.get("encoding_fov_mm"),
        recon_fov_mm=header.get("recon_fov_mm"),
        num_slices=kspace_shape[0],
    )
    parsed = parse_ismrmrd_header(xml)
    for key in ("padding_left", "padding_right"):
        if key in header and header[key] != parsed[key]:
            raise ValueError(
                f"header['{key}']: derived from the encoding limits as {parsed[key]}, got {header[key]}"
            )
    return xml


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


@contextmanager
def _atomic_path(path: Path) -> Iterator[Path]:
    """A temporary sibling of ``path`` to write, renamed to ``path`` on success, removed on failure."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _to_numpy(x, name: str) -> np.ndarray:
    if isinstance(x, Tensor):
        return x.detach().cpu().numpy()
    if isinstance(x, np.ndarray):
        return x
    raise ValueError(f"{name}: expected a torch.Tensor or numpy array, got {type(x).__name__}")


def _attr_value(value):
    if isinstance(value, (bytes, np.bytes_)):
        return bytes(value).decode(errors="replace")
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def write_volume(
    path: PathLike,
    kspace: Tensor | np.ndarray,
    *,
    reconstruction_rss: Tensor | np.ndarray | None = None,
    header: Mapping[str, Any] | str | None = None,
    attrs: Mapping[str, Any] | None = None,
) -> Path:
    """Write a volume in fastMRI's layout (see the module docstring), atomically.

    Args:
        path: the ``.h5`` file to write; its folder is created.
        kspace: ``(slices, coils, H, W)`` (multi-coil) or ``(slices, H, W)`` (single-coil),
            complex; stored as complex64 in that shape.
        reconstruction_rss: ``(slices, h, w)`` real targets; ``None`` computes them from
            ``kspace`` with :func:`reconstruct_rss` at the header's reconstruction size (for a
            single-coil file, the magnitude of the cropped image).
        header: the ISMRMRD XML as a string, written as given once it parses; or a dict with
            any of ``encoding_size`` (must be ``(H, W, z)``, the default with ``z = 1``),
            ``recon_size`` (default: the encoding size), ``encoding_limits``
            (``{"center", "maximum"}``), ``encoding_fov_mm``, ``recon_fov_mm`` (see
            :func:`make_ismrmrd_header`); ``padding_left`` and ``padding_right`` are derived and,
            if given, must agree. The ``header`` of a :class:`FastMRIVolume` round-trips.
        attrs: file attributes; ``acquisition`` defaults to ``"unknown"`` and ``patient_id`` to
            the file's stem. ``max`` and ``norm`` are always those of ``reconstruction_rss``.

    Returns:
        the path written.
    """
    path = Path(path)
    k = _to_numpy(kspace, "kspace")
    if k.ndim not in (3, 4):
        raise ValueError(f"kspace: expected (slices, coils, H, W) or (slices, H, W), got shape {k.shape}")
    if not np.iscomplexobj(k):
        raise ValueError(f"kspace: expected complex k-space, got dtype {k.dtype}")
    k = np.ascontiguousarray(k, dtype=np.complex64)
    xml = _header_xml(header, k.shape)
    recon_size = parse_ismrmrd_header(xml)["recon_size"]
    if reconstruction_rss is None:
        coils = torch.from_numpy(k if k.ndim == 4 else k[:, None])
        target = reconstruct_rss(coils, recon_size).numpy()
    else:
        target = _to_numpy(reconstruction_rss, "reconstruction_rss")
        if np.iscomplexobj(target) or target.ndim != 3 or target.shape[0] != k.shape[0]:
            raise ValueError(
                f"reconstruction_rss: expected real (slices, h, w) with slices = {k.shape[0]}, "
                f"got dtype {target.dtype} and shape {target.shape}"
            )
    target = np.ascontiguousarray(target, dtype=np.float32)
    meta = {"acquisition": "unknown", "patient_id": path.stem}
    meta.update(dict(attrs or {}))
    meta["max"] = float(target.max())
    meta["norm"] = float(np.linalg.norm(target))
    with _atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f.create_dataset("kspace", data=k)
        f.create_dataset("reconstruction_rss", data=target)
        f.create_dataset("ismrmrd_header", data=xml.encode())
        for key, value in meta.items():
            f.attrs[key] = value
    return path


def write_reconstructions(
    out_dir: PathLike, reconstructions: Mapping[str, Tensor | np.ndarray]
) -> list[Path]:
    """Write reconstructions in fastMRI's submission layout (``fastmri.save_reconstructions``).

    One HDF5 file per volume, named as the input volume, holding one float32 dataset
    ``reconstruction`` of shape ``(slices, h, w)``; each file is written atomically.

    Args:
        out_dir: the output folder; created if absent.
        reconstructions: ``{file name: (slices, h, w) real array}``, e.g.
            ``{"file1000000.h5": recon}``; names are bare file names ending in ``.h5``.

    Returns:
        the paths written, in the mapping's order.
    """
    out_dir = Path(out_dir)
    written = []
    for fname, recon in reconstructions.items():
        if not isinstance(fname, str) or os.path.basename(fname) != fname or not fname.endswith(".h5"):
            raise ValueError(
                f"reconstructions: expected bare file names ending in '.h5' as keys, got {fname!r}"
            )
        array = _to_numpy(recon, f"reconstructions[{fname!r}]")
        if np.iscomplexobj(array) or array.ndim != 3:
            raise ValueError(
                f"reconstructions[{fname!r}]: expected a real (slices, h, w) array, "
                f"got dtype {array.dtype} and shape {array.shape}"
            )
        path = out_dir / fname
        with _atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
            f.create_dataset("reconstruction", data=np.ascontiguousarray(array, dtype=np.float32))
        written.append(path)
    return written


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------


@contextmanager
def _open(path: Path) -> Iterator[h5py.File]:
    """Open ``path`` for reading; missing files and unreadable bytes become named errors."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such fastMRI file")
    try:
        f = h5py.File(path, "r")
    except OSError as err:
        raise ValueError(
            f"{path}: not a readable HDF5 file (truncated, corrupt or another format): {err}"
        ) from err
    try:
        yield f
    except OSError as err:
        raise ValueError(f"{path}: cannot read the HDF5 data (truncated or corrupt file): {err}") from err
    finally:
        f.close()


def _check_kspace(f: h5py.File, path: Path) -> h5py.Dataset:
    if "kspace" not in f:
        raise ValueError(f"{path}: no 'kspace' dataset (found {sorted(f.keys())})")
    ds = f["kspace"]
    if not isinstance(ds, h5py.Dataset):
        raise ValueError(f"{path}: 'kspace' is a group, expected a dataset")
    if ds.ndim not in (3, 4):
        raise ValueError(
            f"{path}: 'kspace' has shape {ds.shape}; expected (slices, coils, H, W) or (slices, H, W)"
        )
    if ds.dtype.kind != "c":
        raise ValueError(f"{path}: 'kspace' has dtype {ds.dtype}; expected complex k-space (complex64)")
    return ds


def _read_header(f: h5py.File, path: Path, required: bool) -> dict[str, Any]:
    if "ismrmrd_header" not in f:
        if required:
            raise ValueError(
                f"{path}: no 'ismrmrd_header' dataset; fastMRI reads the encoding and reconstruction "
                f"sizes from it (pass require_header=False to read the k-space alone)"
            )
        return {}
    raw = f["ismrmrd_header"][()]
    if isinstance(raw, np.ndarray):
        raw = raw.item() if raw.size == 1 else raw.tobytes()
    return parse_ismrmrd_header(raw, path)


def _read_target(f: h5py.File, key: str, path: Path, num_slices: int, index=slice(None)) -> Tensor | None:
    if key not in f:
        return None
    ds = f[key]
    if ds.ndim != 3 or ds.shape[0] != num_slices:
        raise ValueError(f"{path}: '{key}' has shape {ds.shape}; expected ({num_slices}, h, w)")
    return torch.from_numpy(np.asarray(ds[index], dtype=np.float32))


def _read_mask(f: h5py.File) -> Tensor | None:
    return torch.from_numpy(np.asarray(f["mask"], dtype=np.float32)) if "mask" in f else None


def read_volume(path: PathLike, *, require_header: bool = True) -> FastMRIVolume:
    """Read a whole fastMRI volume.

    Args:
        path: the ``.h5`` file.
        require_header: raise when the file has no ``ismrmrd_header`` (fastMRI's loaders need
            it); ``False`` reads such files with an empty ``header``.

    Returns:
        the volume; ``kspace`` is complex64 ``(slices, coils, H, W)`` whatever the file stores.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is not HDF5 or is truncated, has no ``kspace`` dataset, one of the
            wrong number of dimensions or a non-complex one, a target whose slices disagree, or no
            (or an unusable) ``ismrmrd_header`` where one is required; the message names the file.
    """
    path = Path(path)
    with _open(path) as f:
        ds = _check_kspace(f, path)
        header = _read_header(f, path, require_header)
        kspace = torch.from_numpy(np.asarray(ds[()], dtype=np.complex64))
        single = kspace.ndim == 3
        n = kspace.shape[0]
        return FastMRIVolume(
            path=path,
            kspace=kspace[:, None] if single else kspace,
            reconstruction_rss=_read_target(f, "reconstruction_rss", path, n),
            reconstruction_esc=_read_target(f, "reconstruction_esc", path, n),
            mask=_read_mask(f),
            header=header,
            attrs={k: _attr_value(v) for k, v in f.attrs.items()},
            single_coil=single,
        )


def read_slice(path: PathLike, index: int, *, require_header: bool = True) -> FastMRISlice:
    """Read one slice of a fastMRI volume without loading the others (HDF5 partial reads).

    Args:
        path: the ``.h5`` file.
        index: the slice, ``0 <= index < slices`` (negative indices count from the end).
        require_header: as in :func:`read_volume`.

    Returns:
        the slice; ``kspace`` is complex64 ``(coils, H, W)``.

    Raises:
        FileNotFoundError, ValueError: as :func:`read_volume`.
        IndexError: ``index`` is out of range; the message names the file and its slice count.
    """
    path = Path(path)
    with _open(path) as f:
        ds = _check_kspace(f, path)
        header = _read_header(f, path, require_header)
        n = ds.shape[0]
        if not -n <= index < n:
            raise IndexError(f"{path}: slice {index} is out of range for a volume of {n} slices")
        index = int(index) % n
        kspace = torch.from_numpy(np.asarray(ds[index], dtype=np.complex64))
        target = _read_target(f, "reconstruction_rss", path, n, index)
        return FastMRISlice(
            path=path,
            index=index,
            kspace=kspace[None] if kspace.ndim == 2 else kspace,
            reconstruction_rss=target,
            mask=_read_mask(f),
            header=header,
            attrs={k: _attr_value(v) for k, v in f.attrs.items()},
        )


def iter_volumes(
    folder: PathLike, pattern: str = "*.h5", *, require_header: bool = True
) -> Iterator[tuple[Path, FastMRIVolume | Exception]]:
    """Read every fastMRI file of a folder, one at a time, reporting the bad ones instead of stopping.

    Files are visited in sorted order; hidden files (the writers' temporary files) and coil-map
    caches (names ending in :data:`MAPS_CACHE_SUFFIX`) are skipped. A file that
    :func:`read_volume` rejects (``ValueError`` or ``OSError``) yields its exception, whose
    message names the file and the problem, and is logged as a warning; other exceptions
    propagate.

    Args:
        folder: the folder to scan (not recursively).
        pattern: a glob pattern for the file names.
        require_header: as in :func:`read_volume`.

    Yields:
        ``(path, volume)`` for a good file, ``(path, exception)`` for a bad one.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such folder")
    for path in sorted(folder.glob(pattern)):
        if path.name.startswith(".") or path.name.endswith(MAPS_CACHE_SUFFIX) or not path.is_file():
            continue
        try:
            volume = read_volume(path, require_header=require_header)
        except (ValueError, OSError) as err:
            logger.warning("skipping %s", err)
            yield path, err
        else:
            yield path, volume


def load_folder(
    folder: PathLike, pattern: str = "*.h5", *, require_header: bool = True
) -> tuple[list[FastMRIVolume], list[tuple[Path, str]]]:
    """Read the good volumes of a folder and list the bad ones (:func:`iter_volumes`).

    Returns:
        ``(volumes, errors)``: the volumes read, and ``(path, message)`` for every file skipped.
    """
    volumes, errors = [], []
    for path, result in iter_volumes(folder, pattern, require_header=require_header):
        if isinstance(result, Exception):
            errors.append((path, str(result)))
        else:
            volumes.append(result)
    return volumes, errors


# --------------------------------------------------------------------------------------------
# Coil maps and normalisation
# --------------------------------------------------------------------------------------------


def maps_cache_path(volume_path: PathLike) -> Path:
    """Where :func:`coil_maps` caches the maps of a volume next to it: ``<stem>.espirit.h5``."""
    path = Path(volume_path)
    return path.with_name(path.stem + MAPS_CACHE_SUFFIX)


def coil_maps(kspace: Tensor, cache_path: PathLike | None = None, **espirit: Any) -> Tensor:
    """ESPIRiT coil maps of each slice (:func:`operators.mri.espirit_maps`), optionally cached.

    With ``cache_path``, maps already there are loaded instead of recomputed, after checking
    that their shape (and, for an ``.h5`` cache, the ESPIRiT settings) match; new maps are
    written there atomically. An ``.h5`` cache stores the settings (defaults filled in) in its
    attributes, an ``.npy`` cache only the array.

    Args:
        kspace: ``(slices, coils, H, W)`` or ``(coils, H, W)`` complex, fully sampled or with a
            fully sampled centre of at least ``calib_width``.
        cache_path: an ``.h5`` or ``.npy`` file, e.g. :func:`maps_cache_path` of the volume.
        **espirit: ``calib_width``, ``thresh``, ``crop``, ``kernel_width``, ``max_iter`` of
            :func:`operators.mri.espirit_maps`.

    Returns:
        maps of ``kspace``'s shape, dtype and device; ``sum_c |S_c|^2 = 1`` where the ESPIRiT
        eigenvalue exceeds ``crop`` and 0 elsewhere.

    Raises:
        ValueError: the cache holds maps of another shape or settings, or has another suffix.
    """
    if cache_path is None:
        return espirit_maps(kspace, **espirit)
    cache = Path(cache_path)
    if cache.suffix not in (".h5", ".npy"):
        raise ValueError(f"cache_path: expected an .h5 or .npy file, got {cache}")
    unknown = set(espirit) - set(_ESPIRIT_DEFAULTS)
    if unknown:
        raise ValueError(
            f"espirit: unknown settings {sorted(unknown)}; expected some of {sorted(_ESPIRIT_DEFAULTS)}"
        )
    settings = json.dumps({**_ESPIRIT_DEFAULTS, **espirit}, sort_keys=True, default=str)
    if cache.is_file():
        maps = _load_maps(cache, settings)
        if maps.shape != tuple(kspace.shape):
            raise ValueError(
                f"{cache}: cached coil maps have shape {maps.shape}, expected {tuple(kspace.shape)}; "
                f"delete the cache to recompute"
            )
        return torch.from_numpy(maps).to(device=kspace.device, dtype=kspace.dtype)
    maps = espirit_maps(kspace, **espirit)
    array = maps.detach().cpu().numpy()
    with _atomic_path(cache) as tmp:
        if cache.suffix == ".npy":
            with tmp.open("wb") as fh:
                np.save(fh, array)
        else:
            with h5py.File(tmp, "w") as f:
                f.create_dataset("coil_maps", data=array)
                f.attrs["espirit"] = settings
    return maps


def _load_maps(cache: Path, settings: str) -> np.ndarray:
    if cache.suffix == ".npy":
        try:
            return np.load(cache)
        except (OSError, ValueError) as err:
            raise ValueError(f"{cache}: unreadable coil-map cache ({err}); delete it to recompute") from err
    with _open(cache) as f:
        if "coil_maps" not in f:
            raise ValueError(f"{cache}: no 'coil_maps' dataset; not a coil-map cache")
        stored = f.attrs.get("espirit")
        stored = _attr_value(stored) if stored is not None else None
        if stored != settings:
            raise ValueError(
                f"{cache}: cached coil maps were made with ESPIRiT settings {stored}, asked for {settings}; "
                f"delete the cache to recompute"
            )
        return np.asarray(f["coil_maps"][()])


def normalise(
    kspace: Tensor,
    *,
    percentile: float = 100.0,
    recon_size: tuple[int, ...] | None = None,
    per_slice: bool = False,
) -> tuple[Tensor, Tensor]:
    r"""Scale k-space so that its RSS (zero-filled) image peaks at 1.

    The reference value is the ``percentile`` of :func:`reconstruct_rss` of ``kspace`` (the
    maximum by default; e.g. 99.5 is robust to a few bright pixels), over the whole volume or per
    slice; ``kspace`` is multiplied by ``scale = 1 / value``. The FFTs are linear, so the
    image of the scaled k-space is the image times ``scale``.

    Args:
        kspace: ``(..., C, H, W)`` complex, e.g. ``(slices, coils, H, W)``.
        percentile: in ``(0, 100]``.
        recon_size: crop the images to this size first (:func:`reconstruct_rss`).
        per_slice: one scale per leading index (``(...)``) instead of one for all.

    Returns:
        ``(scaled kspace, scale)``: ``scale`` is a real tensor, ``()`` or ``kspace.shape[:-3]``.
    """
    if not 0 < percentile <= 100:
        raise ValueError(f"percentile: expected a value in (0, 100], got {percentile}")
    image = reconstruct_rss(kspace, recon_size).detach()
    lead = tuple(image.shape[:-2])
    flat = image.reshape(-1, image.shape[-2] * image.shape[-1]) if per_slice else image.reshape(1, -1)
    values = np.percentile(flat.cpu().double().numpy(), percentile, axis=1)
    if not np.all(values > 0):
        raise ValueError("kspace: the RSS image is zero (at that percentile); nothing to normalise")
    scale = torch.as_tensor(1.0 / values, dtype=image.dtype, device=kspace.device)
    scale = scale.reshape(lead) if per_slice else scale.reshape(())
    return kspace * scale[(...,) + (None,) * 3], scale


__all__ = [
    "FastMRISlice",
    "FastMRIVolume",
    "MAPS_CACHE_SUFFIX",
    "center_crop",
    "coil_maps",
    "complex_center_crop",
    "iter_volumes",
    "load_folder",
    "make_ismrmrd_header",
    "maps_cache_path",
    "normalise",
    "parse_ismrmrd_header",
    "read_slice",
    "read_volume",
    "reconstruct_rss",
    "remove_readout_oversampling",
    "write_reconstructions",
    "write_volume",
]
