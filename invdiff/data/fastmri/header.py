r"""The ISMRMRD header of fastMRI files: write a minimal one, read what fastMRI reads from it.

Every fastMRI file holds its ISMRMRD XML header in the ``ismrmrd_header`` dataset. fastMRI's
``SliceDataset._retrieve_metadata`` (``fastmri/data/mri_data.py``) reads four things from it:

* the encoded matrix size ``encoding/encodedSpace/matrixSize`` ``(x, y, z)``: ``x`` the readout
  (k-space ``H``), ``y`` the phase encodes (k-space ``W``);
* the reconstructed matrix size ``encoding/reconSpace/matrixSize``, whose ``(x, y)`` is the size
  of the target images (:func:`recon_shape`);
* ``encoding/encodingLimits/kspace_encoding_step_1`` ``center`` and ``maximum``, from which it
  derives the acquired phase-encode columns ``padding_left = y // 2 - center`` to
  ``padding_right = padding_left + maximum + 1``.

:func:`make_ismrmrd_header` writes a header with those fields and the schema's required parts;
:func:`parse_ismrmrd_header` reads them back, with the fields of view when present.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as etree
from collections.abc import Mapping
from typing import Any

PathLike = str | os.PathLike

ISMRMRD_NAMESPACE = "http://www.ismrm.org/ISMRMRD"

_HEADER_KEYS = {
    "encoding_size",
    "recon_size",
    "encoding_limits",
    "encoding_fov_mm",
    "recon_fov_mm",
    "padding_left",
    "padding_right",
}
"""The keys of a header dict (:func:`parse_ismrmrd_header`'s result) that writers accept."""


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

    Raises:
        ValueError: a size is not three (or two) positive integers, or ``encoding_limits`` has
            keys other than ``center``, ``maximum`` and ``minimum``.
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
    """``values`` as an ``(x, y, z)`` tuple of ``kind``; a pair gets ``z = 1``."""
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

    Raises:
        ValueError: the XML does not parse, or lacks (or has non-numeric) matrix sizes or
            phase-encode limits; the message names ``path`` when given.
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


def _header_xml(header: Mapping[str, Any] | str | bytes | None, kspace_shape: tuple[int, ...]) -> str:
    """The XML to write for a volume of ``kspace_shape`` (``(slices, [coils,] H, W)``).

    ``header`` is XML (checked to parse, written as given), a dict of :data:`_HEADER_KEYS`
    (missing sizes default to the k-space's), or ``None`` (all defaults).
    """
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


def recon_shape(header: Mapping[str, Any], path: PathLike | None = None) -> tuple[int, int]:
    """``(h, w)``, the reconstruction size of a parsed header (its ``reconSpace`` ``x`` and ``y``).

    Args:
        header: :func:`parse_ismrmrd_header`'s result, or ``{}`` for a file without a header.
        path: the file it came from, for error messages.

    Returns:
        ``(h, w)``, the size of the target images.

    Raises:
        ValueError: ``header`` has no ``recon_size``; the message names ``path`` when given.
    """
    if "recon_size" not in header:
        where = f"{path}: " if path is not None else ""
        raise ValueError(
            f"{where}no ismrmrd_header with encoding/reconSpace/matrixSize; the reconstruction size "
            f"is needed to crop the images"
        )
    x, y = header["recon_size"][:2]
    return int(x), int(y)
