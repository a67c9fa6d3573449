r"""Real brain anatomy that ships inside a package: the MNI ICBM152 2009a templates of nilearn.

The nilearn wheel carries the T1-weighted template and the grey- and white-matter probability
maps (197 × 233 × 189 at 1 mm, brain only) as ``.nii.gz`` files; they are read with nibabel,
without importing nilearn. Axial slices are split into training, validation and test slabs
separated by gaps (:data:`SPLITS`), so no split shares a slice or a neighbourhood with another.

MR images of many contrasts are synthesised from the tissue maps (grey matter, white matter,
cerebrospinal fluid) with random tissue intensities, optionally blended with the T1 template's
own texture, moved by a random flip, rotation and scale, and given a smooth random phase.
"""

from __future__ import annotations

import math
from functools import lru_cache
from importlib.util import find_spec
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from invdiff.data.phantoms import smooth_phase

TEMPLATE = "mni_icbm152_{}_tal_nlin_sym_09a_converted.nii.gz"

SPLITS = {"train": [(16, 58), (96, 146)], "val": [(62, 72)], "test": [(76, 92)]}
"""Axial slice ranges (z, half-open) of each split; 4-slice gaps keep the slabs apart."""


def template_path(kind: str) -> Path:
    """The path of the ``kind`` (``"t1"``, ``"gm"``, ``"wm"``) template inside the nilearn package."""
    spec = find_spec("nilearn")
    if spec is None or spec.origin is None:
        raise FileNotFoundError("the MNI templates come with the nilearn package: pip install nilearn")
    path = Path(spec.origin).parent / "datasets" / "data" / TEMPLATE.format(kind)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the nilearn package does not carry the MNI {kind} template")
    return path


@lru_cache(maxsize=1)
def _volumes() -> dict[str, np.ndarray]:
    import nibabel

    return {k: np.asarray(nibabel.load(template_path(k)).dataobj, dtype=np.float32) / 255 for k in ("t1", "gm", "wm")}


def split_slices(split: str) -> list[int]:
    """The axial slice indices of ``split``."""
    if split not in SPLITS:
        raise ValueError(f"split: expected one of {sorted(SPLITS)}, got {split!r}")
    return [z for start, stop in SPLITS[split] for z in range(start, stop)]


NATIVE_SIZE = 233
"""The side of a slice at the templates' own 1 mm grid: 197 x 233 zero-padded to a square."""


def tissue_maps(split: str, size: int | None) -> Tensor:
    """Tissue maps of a split's axial slices, square and resampled to ``size``.

    Args:
        split: a key of :data:`SPLITS`.
        size: the side to resample to; ``None`` keeps the 1 mm grid (:data:`NATIVE_SIZE`).

    Returns:
        ``(N, 4, size, size)`` float32: T1 template, grey matter, white matter, CSF, each in
        ``[0, 1]``, anterior at the top. CSF is the brain mask (T1 above 8 % of its maximum)
        minus grey and white matter.
    """
    vols = _volumes()
    z = split_slices(split)
    t1, gm, wm = (torch.from_numpy(np.ascontiguousarray(vols[k][:, :, z])) for k in ("t1", "gm", "wm"))
    mask = (t1 > 0.08).float()
    csf = (mask - gm - wm).clamp(0, 1)
    maps = torch.stack([t1, gm, wm, csf]).permute(3, 0, 2, 1).flip(-2)  # (N, 4, y, x), anterior up
    H, W = maps.shape[-2:]
    side = max(H, W)
    maps = F.pad(maps, ((side - W) // 2, side - W - (side - W) // 2, (side - H) // 2, side - H - (side - H) // 2))
    if size is None:
        return maps.clamp(0, 1)
    return F.interpolate(maps, size=(size, size), mode="area").clamp(0, 1)


def _uniform(g: torch.Generator, n: int, low: float, high: float) -> Tensor:
    return low + (high - low) * torch.rand(n, generator=g)


def augment(maps: Tensor, g: torch.Generator, *, max_angle: float = 0.17, scale: tuple[float, float] = (0.9, 1.1)) -> Tensor:
    """Random left-right flip, rotation (``±max_angle`` rad) and zoom of ``(N, C, H, W)`` maps."""
    n = maps.shape[0]
    angle = _uniform(g, n, -max_angle, max_angle)
    zoom = _uniform(g, n, *scale)
    flip = torch.where(torch.rand(n, generator=g) < 0.5, -1.0, 1.0)
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    theta = torch.stack([torch.stack([cos * flip, -sin, torch.zeros(n)], 1), torch.stack([sin * flip, cos, torch.zeros(n)], 1)], 1)
    grid = F.affine_grid(theta, list(maps.shape), align_corners=False)
    return F.grid_sample(maps, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


CONTRASTS = {
    # (grey matter, white matter, CSF) intensity ranges
    "t1w": ((0.55, 0.75), (0.95, 1.0), (0.05, 0.25)),
    "t2w": ((0.5, 0.7), (0.3, 0.45), (0.9, 1.0)),
    "pd": ((0.9, 1.0), (0.7, 0.85), (0.75, 1.0)),
}


def synthesize(maps: Tensor, g: torch.Generator, family: Tensor | None = None) -> Tensor:
    """Magnitude images of random contrasts from ``(N, 4, H, W)`` tissue maps, ``(N, H, W)`` in ``[0, 1]``.

    Each image takes a random contrast family (T1-, T2- or proton-density-weighted) with random
    tissue intensities; T1-weighted ones blend in the T1 template's texture with a random weight.
    ``family`` (``(N,)`` indices into :data:`CONTRASTS`) fixes the families instead.
    """
    n = maps.shape[0]
    family = torch.randint(len(CONTRASTS), (n,), generator=g) if family is None else family
    weights = torch.zeros(n, 3)
    for k, ranges in enumerate(CONTRASTS.values()):
        for tissue, (low, high) in enumerate(ranges):
            weights[:, tissue] = torch.where(family == k, _uniform(g, n, low, high), weights[:, tissue])
    image = torch.einsum("nt,nthw->nhw", weights, maps[:, 1:])
    blend = torch.where(family == 0, torch.rand(n, generator=g), torch.zeros(n))[:, None, None]
    image = (1 - blend) * image + blend * maps[:, 0]
    peak = image.flatten(1).quantile(0.995, dim=1).clamp_min(1e-6)[:, None, None]
    return (image / peak).clamp(0, 1)


def complex_brain_images(split: str, size: int | None, variants: int, *, seed: int) -> Tensor:
    """Complex brain images: every slice of ``split`` in ``variants`` random contrasts, poses and
    phases (the first variant of each slice unmoved). ``(N * variants, 1, size, size)`` complex64;
    ``size=None`` keeps the 1 mm grid (:data:`NATIVE_SIZE`)."""
    maps = tissue_maps(split, size)
    size = maps.shape[-1]
    g = torch.Generator().manual_seed(seed)
    images = []
    for v in range(variants):
        moved = maps if v == 0 else augment(maps, g)
        magnitude = synthesize(moved, g).double()
        phase = torch.stack([smooth_phase(size, g, amplitude=math.pi / 2) for _ in range(maps.shape[0])])
        images.append(torch.polar(magnitude, phase).to(torch.complex64))
    return torch.cat(images)[:, None]
