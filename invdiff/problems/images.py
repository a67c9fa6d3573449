r"""Ground truths of the simulated problems: held-out images, or a user's image file, in the
representation the prior models.

Real images are ``(1, C, H, W)`` float32 with ``C = 1`` (grey level) or ``C = 3`` (RGB); complex
images are two real channels ``(1, 2, H, W)`` (real and imaginary parts,
:class:`operators.RealToComplex`), so operators include the embedding and every sampler works on
real tensors.

**Packaged sources** (``image`` one of :data:`IMAGES`) are resized to ``size x size``:

* ``"phantom"``: a held-out phantom of :mod:`invdiff.data.phantoms` (complex with a smooth phase
  when the task wants complex images);
* ``"mri_brain"``, ``"natural"``, ``"ct"``: the test split of a dataset built from packaged
  anatomy or photographs (:mod:`invdiff.data.datasets`; built under the data root on first use
  and reused), held out from the project's priors trained on that dataset;
* ``"natural_rgb"``: RGB photographs that scikit-image ships (:data:`NATURAL_RGB`; index 0
  astronaut, a face and so the natural test image for an FFHQ prior, 1 coffee, 2 chelsea, 3
  rocket), the centre square of each resized to ``size`` (antialiased bilinear) in ``[0, 1]``.
  They are **not** held out from anything the project trains: astronaut and rocket are in the
  training split of the grey-level ``natural`` dataset and chelsea in its validation split
  (:data:`invdiff.data.datasets.NATURAL_SPLITS`). The project ships no RGB prior, so a
  3-channel task always runs with a foreign prior (e.g. DPS's FFHQ network, ``prior=adm``),
  for which these images are held out. ``channels=1`` gives their luminance.

With ``channels=3`` the source ``"natural"`` (grey-level crops) is replaced by
``"natural_rgb"`` (same ``index``); the other packaged sources are grey level or complex and
raise an error.

**Files** (any other ``image``: a path, relative to the working directory) are used *at their
own size* (``size`` is ignored):

* ``.dcm`` / ``.dicom`` (or a file without one of the suffixes below that starts like DICOM):
  one CT slice (:func:`invdiff.data.dicom.read_ct`; ``index`` picks the frame of a multi-frame
  image), converted from Hounsfield units to the project's relative attenuation exactly as the
  ``ct`` dataset does (:func:`invdiff.data.dicom.relative_attenuation`: air 0, water 0.5, 1000 HU and above 1);
* ``.npy``: a real ``(H, W)`` or ``(C, H, W)`` array (``C`` 1 or 3), taken as it is;
* ``.png``, ``.jpg``, ``.jpeg``, ``.tif``, ``.tiff``: a photograph, integer pixels divided by their
  type's maximum (255 for 8-bit, 65535 for 16-bit), floating-point TIFFs taken as they are, an
  alpha channel dropped.

A file's channels are converted to the task's ``channels``: RGB to grey by luminance
(:data:`LUMINANCE`, the weights of :func:`invdiff.data.datasets.natural_photo`), grey to RGB by
replication. Files hold one image: ``index`` must be 0 except for a multi-frame DICOM.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from invdiff.data.datasets import DATASETS, load_split
from invdiff.data.dicom import read_ct, relative_attenuation
from invdiff.data.phantoms import HELD_OUT, complex_phantom, phantom
from operators import RealToComplex

IMAGES = ("phantom", "mri_brain", "natural", "natural_rgb", "ct")
"""Packaged sources of ground truth: generated phantoms, the test split of a dataset, or RGB photographs."""

NATURAL_RGB = ("astronaut", "coffee", "chelsea", "rocket")
"""The RGB photographs of ``image="natural_rgb"`` by index (``skimage.data.<name>()``, offline)."""

LUMINANCE = (0.2125, 0.7154, 0.0721)
"""RGB to grey weights (ITU-R BT.709, as ``skimage.color.rgb2gray`` and the ``natural`` dataset)."""

DICOM_SUFFIXES = (".dcm", ".dicom")
PHOTO_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
IMAGE_SUFFIXES = (*DICOM_SUFFIXES, ".npy", *PHOTO_SUFFIXES)
"""Suffixes of image files that :func:`read_image_file` reads."""

CHANNELS = (1, 3)


def is_image_file(image: str | Path) -> bool:
    """Whether ``image`` names a file rather than a packaged source (:data:`IMAGES`)."""
    return str(image) not in IMAGES


def _check_channels(channels: int) -> int:
    if isinstance(channels, bool) or int(channels) != channels or int(channels) not in CHANNELS:
        raise ValueError(f"channels: expected 1 (grey level) or 3 (RGB), got {channels!r}")
    return int(channels)


def _to_channels(x: Tensor, channels: int, where: str) -> Tensor:
    """``(C, H, W)`` with ``C`` 1 or 3 to ``channels``: luminance or replication."""
    c = x.shape[0]
    if c == channels:
        return x
    if c == 3 and channels == 1:
        weights = torch.tensor(LUMINANCE, dtype=x.dtype)
        return (x * weights[:, None, None]).sum(0, keepdim=True)
    if c == 1 and channels == 3:
        return x.expand(3, -1, -1).clone()
    raise ValueError(f"{where}: holds {c}-channel images; expected 1 (grey level) or 3 (RGB)")


def natural_rgb(index: int, size: int) -> Tensor:
    """RGB photograph ``index`` of :data:`NATURAL_RGB`: its centre square resized to ``size``.

    Args:
        index: which photograph, ``0 <= index < len(NATURAL_RGB)``.
        size: the image side, ``>= 1``.

    Returns:
        ``(3, size, size)`` float32 in ``[0, 1]``.
    """
    import skimage.data

    if not 0 <= index < len(NATURAL_RGB):
        raise ValueError(
            f"index: expected 0 <= index < {len(NATURAL_RGB)} (natural_rgb: "
            f"{', '.join(f'{k} {n}' for k, n in enumerate(NATURAL_RGB))}), got {index}"
        )
    photo = np.asarray(getattr(skimage.data, NATURAL_RGB[index])()[..., :3], dtype=np.float32) / 255.0
    H, W = photo.shape[:2]
    side = min(H, W)
    top, left = (H - side) // 2, (W - side) // 2
    square = np.ascontiguousarray(photo[top : top + side, left : left + side])
    square = torch.from_numpy(square).permute(2, 0, 1)[None]
    resized = F.interpolate(square, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return resized[0].clamp(0, 1).contiguous()


def _is_dicom(path: Path) -> bool:
    """The DICOM magic ``DICM`` after the 128-byte preamble."""
    with path.open("rb") as f:
        head = f.read(132)
    return len(head) == 132 and head[128:] == b"DICM"


def _read_npy(path: Path) -> Tensor:
    try:
        array = np.load(path, allow_pickle=False)
    except Exception as err:
        # np.load raises ValueError, OSError or EOFError on bad bytes; name the file, chain the cause.
        raise ValueError(f"{path}: unreadable .npy file ({type(err).__name__}: {err})") from err
    if not isinstance(array, np.ndarray) or array.dtype.kind not in "biuf":
        kind = getattr(array, "dtype", type(array))
        raise ValueError(f"{path}: expected a real numeric array (H, W) or (C, H, W), got {kind}")
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3 or array.shape[0] not in CHANNELS:
        raise ValueError(
            f"{path}: expected an (H, W) or (C, H, W) array with C 1 (grey level) or 3 (RGB), "
            f"got shape {array.shape}"
        )
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))


def _read_photo(path: Path) -> Tensor:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img.load()
            if img.mode == "P" or img.mode in ("CMYK", "YCbCr", "LAB", "HSV"):
                img = img.convert("RGBA" if img.mode == "P" and "transparency" in img.info else "RGB")
            mode = img.mode
            array = np.asarray(img)
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise ValueError(f"{path}: unreadable image file ({type(err).__name__}: {err})") from err
    if array.dtype == bool:
        scale = 1.0
    elif array.dtype == np.uint8:
        scale = 255.0
    elif array.dtype == np.uint16 or mode.startswith("I"):
        scale = 65535.0
    elif array.dtype.kind == "f":
        scale = 1.0
    else:
        raise ValueError(f"{path}: unsupported pixel type {array.dtype} (mode {mode})")
    array = array.astype(np.float32) / np.float32(scale)
    if array.ndim == 3:
        if array.shape[-1] not in (2, 3, 4):
            raise ValueError(f"{path}: expected grey-level, grey+alpha, RGB or RGBA pixels, "
                             f"got shape {array.shape}")
        array = array[..., :1] if array.shape[-1] == 2 else array[..., :3]  # drop alpha
        array = np.moveaxis(array, -1, 0)
    elif array.ndim == 2:
        array = array[None]
    else:
        raise ValueError(f"{path}: expected a 2D image, got pixel data of shape {array.shape}")
    return torch.from_numpy(np.ascontiguousarray(array))


def read_image_file(path: str | Path, *, channels: int = 1, index: int = 0) -> tuple[Tensor, dict[str, Any]]:
    """A user's image file as a ground truth, at its own size (module docstring for the formats).

    Args:
        path: a ``.dcm``/``.dicom`` CT slice, a ``.npy`` array, or a ``.png``/``.jpg``/``.jpeg``/
            ``.tif``/``.tiff`` photograph; relative paths are relative to the working directory.
        channels: 1 (grey level) or 3 (RGB).
        index: the frame of a multi-frame DICOM; 0 for every other file.

    Returns:
        ``(x, meta)``: ``x`` ``(1, channels, H, W)`` float32; ``meta`` JSON-safe provenance
        (``file``, ``format``, ``shape``, ``file_channels``, and for DICOM the pixel spacing,
        body part and rescale).

    Raises:
        FileNotFoundError: ``path`` is not a file (the message names it).
        ValueError: naming the file, when its suffix is not one of :data:`IMAGE_SUFFIXES` (and it
            is not DICOM); it cannot be read; it is not a CT DICOM; its array is not real
            ``(H, W)`` or ``(C, H, W)`` with ``C`` 1 or 3; it holds non-finite values; or
            ``index`` is not 0 for a single-image file.
    """
    channels = _check_channels(channels)
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: no such image file (image: expected one of {IMAGES} or the path of a "
            f"{'/'.join(IMAGE_SUFFIXES)} file)"
        )
    suffix = path.suffix.lower()
    if suffix in DICOM_SUFFIXES or (suffix not in IMAGE_SUFFIXES and _is_dicom(path)):
        kind = "dicom"
    elif suffix == ".npy":
        kind = "npy"
    elif suffix in PHOTO_SUFFIXES:
        kind = "photo"
    else:
        raise ValueError(f"{path}: unknown image format {suffix or '(no suffix)'!r}; expected one of "
                         f"{', '.join(IMAGE_SUFFIXES)} (or a DICOM file)")
    meta: dict[str, Any] = {"file": str(path), "format": kind}
    if kind == "dicom":
        hu, dicom = read_ct(path, frame=int(index))
        image = relative_attenuation(hu)[None]
        meta.update(frame=int(index), pixel_spacing=dicom["pixel_spacing"], body_part=dicom["body_part"],
                    rescale_slope=dicom["rescale_slope"], rescale_intercept=dicom["rescale_intercept"],
                    units="relative attenuation mu / (2 mu_water), clipped to [0, 1]")
    else:
        if index != 0:
            raise ValueError(f"index: {path} holds one image; expected index 0, got {index}")
        image = _read_npy(path) if kind == "npy" else _read_photo(path)
    if min(image.shape[-2:]) < 1:
        raise ValueError(f"{path}: expected an image of at least 1 x 1 pixels, "
                         f"got shape {tuple(image.shape)}")
    if not bool(torch.isfinite(image).all()):
        raise ValueError(f"{path}: holds non-finite values (NaN or inf); expected a finite image")
    meta.update(shape=list(image.shape[-2:]), file_channels=int(image.shape[0]))
    return _to_channels(image, channels, str(path))[None].float().contiguous(), meta


def ground_truth(image: str, size: int, index: int, *, complex_: bool, channels: int = 1,
                 data_root: str | Path = "data") -> Tensor:
    """Held-out image ``index`` of ``image`` (or a user's image file), ``(1, C, H, W)`` float32.

    Args:
        image: a packaged source, ``"phantom"`` (complex with a smooth phase when ``complex_``),
            ``"mri_brain"`` (complex brain slices), ``"natural"`` (grey-level photographs),
            ``"natural_rgb"`` (RGB photographs) or ``"ct"`` (real CT slices in relative
            attenuation); or the path of an image file, used at its own size (module docstring).
        size: image side of a packaged source; a file keeps its own size.
        index: which held-out image (the frame of a multi-frame DICOM file, 0 for other files).
        complex_: whether the task wants a complex image (``C = 2``); files give real images.
        channels: 1 (grey level) or 3 (RGB) for a real image; with 3, ``"natural"`` means
            ``"natural_rgb"``.
        data_root: where datasets are built and reused.

    Returns:
        ``(1, 2, size, size)`` if ``complex_``, else ``(1, channels, size, size)``, or
        ``(1, channels, H, W)`` for a file.

    Raises:
        FileNotFoundError: a file that does not exist.
        ValueError: an unknown source or a bad file (:func:`read_image_file`); ``index`` out of
            range; ``channels`` not 1 or 3, not 1 with ``complex_``, or 3 for a grey-level or
            complex source; a file for a complex task.
    """
    channels = _check_channels(channels)
    if complex_ and channels != 1:
        raise ValueError(f"channels: a complex image is held as 2 channels (real, imaginary); "
                         f"expected channels=1, got {channels}")
    if is_image_file(image):
        if complex_:
            raise ValueError(f"image: {image} would be read as a real image file, the task needs "
                             f"complex images (expected one of {IMAGES})")
        return read_image_file(image, channels=channels, index=index)[0]
    if channels == 3:
        if image not in ("natural", "natural_rgb"):
            raise ValueError(f"channels: image {image!r} is grey level or complex; channels=3 takes "
                             f"'natural_rgb' (or 'natural') or an RGB image file")
        image = "natural_rgb"
    if image == "natural_rgb":
        if complex_:
            raise ValueError("image: natural_rgb holds real RGB photographs, the task needs complex images")
        return _to_channels(natural_rgb(int(index), int(size)), channels, image)[None]
    if image == "phantom":
        if complex_:
            return RealToComplex().AT(complex_phantom(size, HELD_OUT + index)[None, None])
        return phantom(size, HELD_OUT + index)[None, None]
    test = load_split(DATASETS[image](data_root, size=size, splits=("test",)), "test")
    if not 0 <= index < test.shape[0]:
        raise ValueError(f"index: expected 0 <= index < {test.shape[0]} (test images of {image}), "
                         f"got {index}")
    x = torch.from_numpy(np.asarray(test[index : index + 1], dtype=np.float32))
    if (x.shape[1] == 2) != complex_:
        kind = "complex" if complex_ else "real"
        raise ValueError(f"image: {image} holds {x.shape[1]}-channel images, the task needs {kind} ones")
    return x


def describe(image: str, size: int, index: int, channels: int = 1) -> dict[str, Any]:
    """JSON-safe provenance of a packaged ground truth (files: :func:`read_image_file`'s ``meta``)."""
    source = "natural_rgb" if channels == 3 and image == "natural" else image
    info: dict[str, Any] = {"image": source, "index": int(index), "size": int(size),
                            "channels": int(channels)}
    if source == "natural_rgb" and 0 <= index < len(NATURAL_RGB):
        info["photograph"] = NATURAL_RGB[index]
    return info


__all__ = ["CHANNELS", "IMAGES", "IMAGE_SUFFIXES", "LUMINANCE", "NATURAL_RGB", "describe", "ground_truth",
           "is_image_file", "natural_rgb", "read_image_file"]
