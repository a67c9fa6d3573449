r"""fastMRI files: the in-memory containers, reading (whole volumes, slices, partial k-space),
writing (volumes, prospective test files, submissions), folder scans and the coil-map cache.

The layout is that of the fastMRI data (``facebookresearch/fastMRI``, ``fastmri/data/mri_data.py``
and ``fastmri/data/README.md``): one HDF5 file per volume holding

* ``kspace``: complex64, ``(slices, coils, H, W)`` for multi-coil files or ``(slices, H, W)`` for
  single-coil ones, in the centred layout of :mod:`operators.mri` (DC at ``(H // 2, W // 2)``). ``H``
  is the readout (frequency-encode) direction, usually oversampled twice; ``W`` the phase-encode
  direction, whose columns are the lines fastMRI's masks pick;
* the targets, float32 ``(slices, h, w)`` with ``(h, w)`` the reconstruction size of the header
  (:func:`~invdiff.data.fastmri.header.recon_shape`), in training and validation files only:
  ``reconstruction_rss`` in multi-coil files (the RSS of the coil images,
  :func:`~invdiff.data.fastmri.transforms.reconstruct_rss`); in single-coil files
  ``reconstruction_esc`` (the magnitude of the single-coil image, the target of fastMRI's
  single-coil track) and, in fastMRI's own files, also ``reconstruction_rss`` (the RSS of the
  multi-coil data the single-coil k-space was emulated from);
* ``ismrmrd_header``: the ISMRMRD XML header (:mod:`invdiff.data.fastmri.header`);
* attributes ``acquisition`` (e.g. ``"AXT1"``, ``"CORPD_FBK"``), ``patient_id``, and, with a
  target, ``max`` and ``norm`` (the maximum and L2 norm of the whole target volume,
  ``reconstruction_rss`` for multi-coil files and ``reconstruction_esc`` for single-coil ones:
  fastMRI's SSIM data range and normaliser).

Test and challenge files (prospective undersampling) hold no target and no ``max`` or ``norm``;
their ``kspace`` is stored already undersampled (zero in the columns not acquired) and they add

* ``mask``: ``(W,)`` bool, the acquired columns;
* attributes ``acceleration`` (the nominal factor, 4 or 8 in fastMRI) and ``num_low_frequency``
  (the width of the fully sampled centre band).

Every writer puts the file under a temporary name in the destination folder and renames it into
place (:func:`invdiff.fileio.atomic_path`), so an interrupted write never leaves a partial file.
Readers raise a ``FileNotFoundError`` or ``ValueError`` that names the file and the dataset that
is missing or wrong; :func:`iter_volumes` and :func:`load_folder` turn those into reports so that a
batch over a folder skips a bad file and finishes the rest. :func:`read_kspace_columns` and
:func:`read_kspace_rows` read parts of the k-space of every slice (HDF5 hyperslabs) for estimates
over a whole volume without loading all of it.
"""

from __future__ import annotations

import inspect
import json
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
from torch import Tensor

from invdiff.data.fastmri.header import _header_xml, parse_ismrmrd_header, recon_shape
from invdiff.data.fastmri.transforms import reconstruct_rss
from invdiff.fileio import atomic_path, atomic_save_npy
from operators.masks import acs_lines
from operators.mri import espirit_maps

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike

MAPS_CACHE_SUFFIX = ".espirit.h5"
"""The suffix of coil-map caches written next to the data (:func:`maps_cache_path`);
:func:`iter_volumes` skips files that end with it."""

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
            and challenge files, single-coil files written without one).
        reconstruction_esc: ``(slices, h, w)`` float32 (single-coil files), or ``None``.
        mask: ``(W,)`` float32 sampled columns (test and challenge files), or ``None``.
        header: the metadata fastMRI takes from ``ismrmrd_header`` (:func:`parse_ismrmrd_header`),
            empty when the file has no header and it was not required.
        attrs: the file's attributes (``max``, ``norm``, ``acquisition``, ``patient_id``,
            ``acceleration``, ``num_low_frequency``, ...) as Python scalars and strings.
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
        return recon_shape(self.header, self.path)


@dataclass(eq=False)
class FastMRISlice:
    """One slice of a fastMRI volume, read on its own (:func:`read_slice`).

    Attributes:
        path: the file it came from.
        index: the slice index in the volume.
        kspace: ``(coils, H, W)`` complex64; single-coil files give ``coils = 1``.
        reconstruction_rss: ``(h, w)`` float32 or ``None``.
        reconstruction_esc: ``(h, w)`` float32 (single-coil files) or ``None``.
        mask: ``(W,)`` float32 or ``None``.
        header: as :attr:`FastMRIVolume.header`.
        attrs: as :attr:`FastMRIVolume.attrs`.
        single_coil: as :attr:`FastMRIVolume.single_coil`.
    """

    path: Path
    index: int
    kspace: Tensor
    reconstruction_rss: Tensor | None
    reconstruction_esc: Tensor | None = None
    mask: Tensor | None = None
    header: dict[str, Any] = field(default_factory=dict)
    attrs: dict[str, Any] = field(default_factory=dict)
    single_coil: bool = False

    @property
    def recon_shape(self) -> tuple[int, int]:
        """``(h, w)``, the reconstruction size of the header."""
        return recon_shape(self.header, self.path)


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


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


def _check_mask_shape(shape: tuple[int, ...], width: int, path: Path) -> None:
    """A ``mask`` must be ``(W,)``, W the k-space width; the message names the file and the keys."""
    if len(shape) != 1:
        raise ValueError(
            f"{path}: 'mask' has shape {tuple(shape)}; expected one value per k-space column, ({width},)"
        )
    if shape[0] != width:
        raise ValueError(f"{path}: 'mask' has {shape[0]} columns, 'kspace' has {width}")


def _center_band(lines: np.ndarray) -> int:
    """The length of the run of sampled columns through the centre column ``W // 2`` (0 if it is not sampled)."""
    if not lines[len(lines) // 2]:
        return 0
    start, stop = acs_lines(lines)
    return stop - start


def _target(value, name: str, slices: int) -> np.ndarray:
    target = _to_numpy(value, name)
    if np.iscomplexobj(target) or target.ndim != 3 or target.shape[0] != slices:
        raise ValueError(
            f"{name}: expected real (slices, h, w) with slices = {slices}, "
            f"got dtype {target.dtype} and shape {target.shape}"
        )
    return target


def write_volume(
    path: PathLike,
    kspace: Tensor | np.ndarray,
    *,
    reconstruction_rss: Tensor | np.ndarray | None = None,
    reconstruction_esc: Tensor | np.ndarray | None = None,
    mask: Tensor | np.ndarray | None = None,
    header: Mapping[str, Any] | str | None = None,
    attrs: Mapping[str, Any] | None = None,
) -> Path:
    """Write a volume in fastMRI's layout (see the module docstring), atomically.

    Without ``mask`` the file is a training/validation file with a target: multi-coil files get
    ``reconstruction_rss``, single-coil files ``reconstruction_esc`` (and ``reconstruction_rss``
    only when given). With ``mask`` it is a test file: ``kspace`` is stored undersampled (zeros
    in the columns not in the mask), with the ``mask`` dataset, no target and no ``max`` or
    ``norm``.

    Args:
        path: the ``.h5`` file to write; its folder is created.
        kspace: ``(slices, coils, H, W)`` (multi-coil) or ``(slices, H, W)`` (single-coil),
            complex; stored as complex64 in that shape.
        reconstruction_rss: ``(slices, h, w)`` real targets. Multi-coil files: ``None`` computes
            them from ``kspace`` with :func:`reconstruct_rss` at the header's reconstruction size.
            Single-coil files: written only when given (in fastMRI, the RSS of the multi-coil
            data the single-coil k-space was emulated from).
        reconstruction_esc: ``(slices, h, w)`` real single-coil targets; ``None`` computes them
            (the magnitude of the centre-cropped image). Multi-coil files take none.
        mask: ``(W,)`` 0/1 (or bool) sampled columns: write a prospective (test) file.
        header: the ISMRMRD XML as a string, written as given once it parses; or a dict with
            any of ``encoding_size`` (must be ``(H, W, z)``, the default with ``z = 1``),
            ``recon_size`` (default: the encoding size), ``encoding_limits``
            (``{"center", "maximum"}``), ``encoding_fov_mm``, ``recon_fov_mm`` (see
            :func:`make_ismrmrd_header`); ``padding_left`` and ``padding_right`` are derived and,
            if given, must agree. The ``header`` of a :class:`FastMRIVolume` round-trips.
        attrs: file attributes; ``acquisition`` defaults to ``"unknown"`` and ``patient_id`` to
            the file's stem. ``max`` and ``norm`` are always those of the target
            (``reconstruction_rss``, or ``reconstruction_esc`` for single-coil files), and are
            dropped from test files. Test files default ``acceleration`` to ``W`` over the
            number of sampled columns and ``num_low_frequency`` to the run of sampled columns
            around the centre column ``W // 2``; pass the nominal values when known (outer
            lines next to the centre band lengthen the run).

    Returns:
        the path written.

    Raises:
        ValueError: ``kspace`` is not complex ``(slices, [coils,] H, W)``; a target has the wrong
            shape or is complex, or is given with ``mask`` (test files hold none), or
            ``reconstruction_esc`` is given for a multi-coil file; ``mask`` is not ``(W,)``
            (``"<path>: 'mask' has N columns, 'kspace' has W"``) or not 0/1; the header is
            inconsistent with ``kspace``.
    """
    path = Path(path)
    k = _to_numpy(kspace, "kspace")
    if k.ndim not in (3, 4):
        raise ValueError(f"kspace: expected (slices, coils, H, W) or (slices, H, W), got shape {k.shape}")
    if not np.iscomplexobj(k):
        raise ValueError(f"kspace: expected complex k-space, got dtype {k.dtype}")
    k = np.ascontiguousarray(k, dtype=np.complex64)
    single = k.ndim == 3
    xml = _header_xml(header, k.shape)
    recon_size = parse_ismrmrd_header(xml)["recon_size"]
    meta = {"acquisition": "unknown", "patient_id": path.stem}
    meta.update(dict(attrs or {}))
    datasets: dict[str, np.ndarray] = {}
    if mask is not None:
        # 1. A prospective file: undersampled k-space, the mask, no target.
        targets = {"reconstruction_rss": reconstruction_rss, "reconstruction_esc": reconstruction_esc}
        given = [name for name, value in targets.items() if value is not None]
        if given:
            raise ValueError(f"{', '.join(given)}: a test file (mask given) holds no target; pass None")
        lines = _to_numpy(mask, "mask")
        _check_mask_shape(lines.shape, k.shape[-1], path)
        if not np.isin(lines, (0, 1)).all():
            raise ValueError(f"{path}: 'mask' has values other than 0 and 1: {np.unique(lines)[:8]}")
        lines = lines.astype(bool)
        datasets["kspace"] = np.where(lines, k, np.complex64(0))
        datasets["mask"] = lines
        for key in ("max", "norm"):
            meta.pop(key, None)
        meta.setdefault("acceleration", float(len(lines) / max(int(lines.sum()), 1)))
        meta.setdefault("num_low_frequency", _center_band(lines))
    else:
        # 2. A training/validation file: the target, and its maximum and norm.
        datasets["kspace"] = k
        if single:
            if reconstruction_esc is None:
                esc = reconstruct_rss(torch.from_numpy(k[:, None]), recon_size).numpy()
            else:
                esc = _target(reconstruction_esc, "reconstruction_esc", k.shape[0])
            esc = np.ascontiguousarray(esc, dtype=np.float32)
            if reconstruction_rss is not None:
                datasets["reconstruction_rss"] = np.ascontiguousarray(
                    _target(reconstruction_rss, "reconstruction_rss", k.shape[0]), dtype=np.float32
                )
            datasets["reconstruction_esc"] = target = esc
        else:
            if reconstruction_esc is not None:
                raise ValueError(
                    "reconstruction_esc: only single-coil files (kspace (slices, H, W)) hold one; "
                    f"kspace has shape {k.shape}"
                )
            if reconstruction_rss is None:
                target = reconstruct_rss(torch.from_numpy(k), recon_size).numpy()
            else:
                target = _target(reconstruction_rss, "reconstruction_rss", k.shape[0])
            datasets["reconstruction_rss"] = target = np.ascontiguousarray(target, dtype=np.float32)
        meta["max"] = float(target.max())
        meta["norm"] = float(np.linalg.norm(target))
    datasets["ismrmrd_header"] = xml.encode()
    with atomic_path(path, mkdir=True) as tmp, h5py.File(tmp, "w") as f:
        for key, data in datasets.items():
            f.create_dataset(key, data=data)
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

    Raises:
        ValueError: a key is not a bare ``.h5`` file name, or an array is not real ``(slices, h, w)``.
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
        with atomic_path(path, mkdir=True) as tmp, h5py.File(tmp, "w") as f:
            f.create_dataset("reconstruction", data=np.ascontiguousarray(array, dtype=np.float32))
        written.append(path)
    return written


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------


@contextmanager
def open_h5(path: PathLike) -> Iterator[h5py.File]:
    """Open an HDF5 file for reading; a missing file and unreadable bytes become named errors.

    Args:
        path: the file (fastMRI volumes, coil-map caches, or any other HDF5 file).

    Yields:
        the open ``h5py.File``, closed when the block ends.

    Raises:
        FileNotFoundError: ``path`` is not a file.
        ValueError: the file is not HDF5, or is truncated or corrupt (also when that shows only
            while reading inside the block); the message names the file.
    """
    path = Path(path)
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


def check_kspace(f: h5py.File, path: Path) -> h5py.Dataset:
    """The ``kspace`` dataset of an open fastMRI file, after checking it is complex
    ``(slices, coils, H, W)`` or ``(slices, H, W)``; errors name the file."""
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


def read_header(f: h5py.File, path: PathLike, required: bool = True) -> dict[str, Any]:
    """The parsed ``ismrmrd_header`` of an open fastMRI file (:func:`parse_ismrmrd_header`).

    Args:
        f: the open file (:func:`open_h5`).
        path: its path, for error messages.
        required: raise when the file has no header; ``False`` returns ``{}`` instead.

    Returns:
        the header's metadata, or ``{}``.

    Raises:
        ValueError: the header is missing (and required) or unusable; the message names the file.
    """
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


def read_mask(f: h5py.File, path: Path, width: int) -> Tensor | None:
    """The ``(W,)`` float32 ``mask`` of an open file (test and challenge files), ``None`` without one;
    a mask that is not one value per k-space column raises, naming the file."""
    if "mask" not in f:
        return None
    _check_mask_shape(f["mask"].shape, width, path)
    return torch.from_numpy(np.asarray(f["mask"], dtype=np.float32))


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
            wrong number of dimensions or a non-complex one, a target whose slices disagree, a
            ``mask`` that is not ``(W,)``, or no (or an unusable) ``ismrmrd_header`` where one is
            required; the message names the file and the dataset.
    """
    path = Path(path)
    with open_h5(path) as f:
        ds = check_kspace(f, path)
        header = read_header(f, path, require_header)
        mask = read_mask(f, path, ds.shape[-1])
        kspace = torch.from_numpy(np.asarray(ds[()], dtype=np.complex64))
        single = kspace.ndim == 3
        n = kspace.shape[0]
        return FastMRIVolume(
            path=path,
            kspace=kspace[:, None] if single else kspace,
            reconstruction_rss=_read_target(f, "reconstruction_rss", path, n),
            reconstruction_esc=_read_target(f, "reconstruction_esc", path, n),
            mask=mask,
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
    with open_h5(path) as f:
        ds = check_kspace(f, path)
        header = read_header(f, path, require_header)
        mask = read_mask(f, path, ds.shape[-1])
        n = ds.shape[0]
        if not -n <= index < n:
            raise IndexError(f"{path}: slice {index} is out of range for a volume of {n} slices")
        index = int(index) % n
        kspace = torch.from_numpy(np.asarray(ds[index], dtype=np.complex64))
        single = kspace.ndim == 2
        return FastMRISlice(
            path=path,
            index=index,
            kspace=kspace[None] if single else kspace,
            reconstruction_rss=_read_target(f, "reconstruction_rss", path, n, index),
            reconstruction_esc=_read_target(f, "reconstruction_esc", path, n, index),
            mask=mask,
            header=header,
            attrs={k: _attr_value(v) for k, v in f.attrs.items()},
            single_coil=single,
        )


def _check_indices(values, size: int, name: str, path: Path, axis: str) -> list[int]:
    """``values`` as a list of strictly increasing indices in ``[0, size)`` (h5py's requirement)."""
    array = np.asarray(values.cpu() if isinstance(values, Tensor) else values)
    if array.ndim != 1 or array.size == 0 or not np.issubdtype(array.dtype, np.integer):
        raise ValueError(
            f"{name}: expected a non-empty 1D sequence of integer indices into the {size} {axis} of "
            f"{path}'s 'kspace', got {values!r}"
        )
    if np.any(np.diff(array) <= 0) or array[0] < 0 or array[-1] >= size:
        raise ValueError(
            f"{name}: expected strictly increasing indices in [0, {size}) (the {axis} of {path}'s 'kspace'), "
            f"got {array.tolist()}"
        )
    return array.tolist()


def _runs(indices: list[int]) -> list[tuple[int, int]]:
    """Increasing ``indices`` as ``[start, stop)`` runs of consecutive values."""
    runs = [[indices[0], indices[0] + 1]]
    for i in indices[1:]:
        if i == runs[-1][1]:
            runs[-1][1] = i + 1
        else:
            runs.append([i, i + 1])
    return [(a, b) for a, b in runs]


def _with_coil_axis(array: np.ndarray) -> Tensor:
    data = torch.from_numpy(np.ascontiguousarray(array, dtype=np.complex64))
    return data[:, None] if data.ndim == 3 else data


def read_kspace_columns(path: PathLike, columns: Sequence[int] | np.ndarray | Tensor) -> Tensor:
    """The k-space columns ``columns`` of every slice and coil, ``kspace[:, :, :, columns]``.

    Only those columns are read from the file (an HDF5 selection), e.g. the fully sampled centre
    band of a whole volume for calibration.

    Args:
        path: the ``.h5`` file.
        columns: strictly increasing phase-encode (``W``) indices in ``[0, W)``.

    Returns:
        ``(slices, coils, H, len(columns))`` complex64; single-coil files give ``coils = 1``.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file or its ``kspace`` is unusable (as :func:`read_volume`), or
            ``columns`` is empty, not increasing or out of range; the message names the file.
    """
    path = Path(path)
    with open_h5(path) as f:
        ds = check_kspace(f, path)
        cols = _check_indices(columns, ds.shape[-1], "columns", path, "columns")
        return _with_coil_axis(ds[(slice(None),) * (ds.ndim - 1) + (cols,)])


def read_kspace_rows(
    path: PathLike,
    rows: Sequence[int] | np.ndarray | Tensor,
    columns: Sequence[int] | np.ndarray | Tensor | None = None,
) -> Tensor:
    """The readout rows ``rows`` (at ``columns``) of every slice and coil, without the rest.

    ``kspace[:, :, rows][..., columns]``, read one run of consecutive rows at a time (h5py allows
    one index list per selection), e.g. the outer eighth of the readout at both ends,
    ``rows = [*range(H // 8), *range(H - H // 8, H)]``, for a noise estimate over a volume.

    Args:
        path: the ``.h5`` file.
        rows: strictly increasing readout (``H``) indices in ``[0, H)``.
        columns: strictly increasing phase-encode (``W``) indices in ``[0, W)``; ``None`` reads
            every column.

    Returns:
        ``(slices, coils, len(rows), len(columns) or W)`` complex64; single-coil files give
        ``coils = 1``.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: as :func:`read_kspace_columns`, for ``rows`` or ``columns``.
    """
    path = Path(path)
    with open_h5(path) as f:
        ds = check_kspace(f, path)
        H, W = ds.shape[-2:]
        wanted = _check_indices(rows, H, "rows", path, "readout rows")
        cols = slice(None) if columns is None else _check_indices(columns, W, "columns", path, "columns")
        lead = (slice(None),) * (ds.ndim - 2)
        pieces = [ds[lead + (slice(start, stop), cols)] for start, stop in _runs(wanted)]
        return _with_coil_axis(np.concatenate(pieces, axis=-2))


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

    Raises:
        FileNotFoundError: ``folder`` is not a folder.
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
# Coil maps, cached next to the data
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
        ValueError: the cache holds maps of another shape or settings, or has another suffix;
            ``espirit`` has unknown settings.
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
    # Settings left at None (a square calibration region) stay out of the key, so caches written
    # before an option existed still match.
    chosen = {k: v for k, v in {**_ESPIRIT_DEFAULTS, **espirit}.items() if v is not None}
    settings = json.dumps(chosen, sort_keys=True, default=str)
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
    if cache.suffix == ".npy":
        atomic_save_npy(cache, array, mkdir=True)
        return maps
    with atomic_path(cache, mkdir=True) as tmp, h5py.File(tmp, "w") as f:
        f.create_dataset("coil_maps", data=array)
        f.attrs["espirit"] = settings
    return maps


def _load_maps(cache: Path, settings: str) -> np.ndarray:
    if cache.suffix == ".npy":
        try:
            return np.load(cache)
        except (OSError, ValueError) as err:
            raise ValueError(f"{cache}: unreadable coil-map cache ({err}); delete it to recompute") from err
    with open_h5(cache) as f:
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
