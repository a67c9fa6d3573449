"""Inpainting: observe the pixels a mask keeps, and seeded random, box and free-form masks.

Masks are real ``(H, W)`` tensors, 1 where a pixel is observed and 0 where it is missing, or
``(B, C, H, W)`` (either of ``B``, ``C`` may be 1) for per-sample or per-channel masks.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from operators.base import (
    LinearOperator,
    cast_like,
    check_finite,
    check_tensor,
    check_weights,
    half_in_single_precision,
    regulariser,
)


def _check_shape(shape, name: str = "shape") -> tuple[int, int]:
    if len(shape) != 2 or any(int(s) != s or s < 1 for s in shape):
        raise ValueError(f"{name}: expected (H, W) as two positive integers, got {tuple(shape)}")
    return int(shape[0]), int(shape[1])


class Inpainting(LinearOperator):
    r"""Pointwise masking, :math:`y = m \odot x`, same shape as ``x`` with zeros where missing.

    Args:
        mask: real, ``(H, W)`` or ``(B, C, H, W)`` with ``B`` and ``C`` each 1 or the input's;
            values in ``[0, 1]`` (1 observed, 0 missing, weights between).

    Raises:
        ValueError: ``mask`` has the wrong shape or dtype, or holds NaN, infinite, negative or
            larger-than-1 values (a 0/255 image mask must be divided by 255 first).
    """

    def __init__(self, mask: Tensor):
        check_tensor(mask, "mask", complex_=False)
        if mask.ndim not in (2, 4):
            raise ValueError(f"mask: expected (H, W) or (B, C, H, W), got shape {tuple(mask.shape)}")
        check_weights(mask, "mask", at_most=1.0, hint="; an 8-bit image mask (0/255) needs dividing by 255")
        self.mask = mask

    def _mask(self, x: Tensor, name: str) -> Tensor:
        check_tensor(x, name, ndim=4)
        m = self.mask
        if m.shape[-2:] != x.shape[-2:]:
            raise ValueError(
                f"{name}: expected spatial size {tuple(m.shape[-2:])} to match mask, got shape {tuple(x.shape)}"
            )
        if m.ndim == 4 and any(ms not in (1, xs) for ms, xs in zip(m.shape[:2], x.shape[:2])):
            raise ValueError(
                f"{name}: mask of shape {tuple(m.shape)} does not fit batch and channels of {tuple(x.shape)}"
            )
        return cast_like(m, x)

    def A(self, x: Tensor) -> Tensor:
        return self._mask(x, "x") * x

    def AT(self, y: Tensor) -> Tensor:
        return self._mask(y, "y") * y

    def normal(self, x: Tensor) -> Tensor:
        return self._mask(x, "x").square() * x

    @half_in_single_precision
    def pinv(self, y: Tensor, **kwargs) -> Tensor:
        m = self._mask(y, "y")
        check_finite(y, "y")
        observed = m != 0
        return torch.where(observed, y / torch.where(observed, m, torch.ones_like(m)), torch.zeros_like(y))

    has_closed_form_solve = True

    @half_in_single_precision
    def solve_normal(self, b: Tensor, lam: float | Tensor, **kwargs) -> Tensor:
        r""":math:`b / (m^2 + \lambda)`, pixel by pixel."""
        m = self._mask(b, "b")
        check_finite(b, "b")
        return b / (m.square() + regulariser(lam, b))

    def __repr__(self) -> str:
        return f"Inpainting(mask={tuple(self.mask.shape)}, observed={float((self.mask != 0).float().mean()):.3f})"


def random_pixel_mask(shape: tuple[int, int], observed: float, *, generator: torch.Generator | None) -> Tensor:
    """Each pixel observed independently with probability ``observed``.

    Args:
        shape: ``(H, W)``.
        observed: the fraction of pixels kept, in ``[0, 1]``.
        generator: the source of randomness.

    Returns:
        ``(H, W)`` float32 mask of zeros and ones.
    """
    H, W = _check_shape(shape)
    if not 0.0 <= observed <= 1.0:
        raise ValueError(f"observed: expected a fraction in [0, 1], got {observed}")
    u = torch.rand((H, W), generator=generator, device=_device(generator))
    return (u < observed).float()


def box_mask(
    shape: tuple[int, int],
    box: tuple[int, int],
    *,
    generator: torch.Generator | None = None,
    margin: int = 0,
) -> Tensor:
    """One missing rectangle, centred, or at a random position when a generator is given.

    Args:
        shape: ``(H, W)``.
        box: ``(h, w)``, the size of the missing rectangle.
        generator: picks the position uniformly (at least ``margin`` pixels from the border);
            ``None`` centres the box.
        margin: the smallest distance between the box and the image border.

    Returns:
        ``(H, W)`` float32 mask, 0 inside the box.
    """
    H, W = _check_shape(shape)
    h, w = _check_shape(box, "box")
    if h + 2 * margin > H or w + 2 * margin > W:
        raise ValueError(f"box: expected a box that fits {H}x{W} with margin {margin}, got {h}x{w}")
    if generator is None:
        top, left = (H - h) // 2, (W - w) // 2
    else:
        dev = _device(generator)
        top = int(torch.randint(margin, H - h - margin + 1, (), generator=generator, device=dev))
        left = int(torch.randint(margin, W - w - margin + 1, (), generator=generator, device=dev))
    mask = torch.ones((H, W), device=_device(generator))
    mask[top : top + h, left : left + w] = 0.0
    return mask


def freeform_mask(
    shape: tuple[int, int],
    *,
    generator: torch.Generator | None,
    strokes: int = 4,
    vertices: tuple[int, int] = (4, 12),
    width: tuple[float, float] = (0.03, 0.08),
    length: float = 0.15,
) -> Tensor:
    """Free-form brush strokes: random polylines of random thickness, as in image-inpainting benchmarks.

    Each stroke starts at a uniform point and takes a random number of segments with uniform
    directions; widths and segment lengths are fractions of the image's larger side.

    Args:
        shape: ``(H, W)``.
        generator: the source of randomness.
        strokes: the number of strokes.
        vertices: the range (inclusive) of segments per stroke.
        width: the range of stroke widths, as fractions of ``max(H, W)``.
        length: the largest segment length, as a fraction of ``max(H, W)``.

    Returns:
        ``(H, W)`` float32 mask, 0 under the strokes.
    """
    H, W = _check_shape(shape)
    if strokes < 0:
        raise ValueError(f"strokes: expected a non-negative integer, got {strokes}")
    if not 1 <= vertices[0] <= vertices[1]:
        raise ValueError(f"vertices: expected 1 <= low <= high, got {vertices}")
    if not 0 < width[0] <= width[1]:
        raise ValueError(f"width: expected 0 < low <= high, got {width}")
    dev = _device(generator)
    scale = max(H, W)
    yy, xx = torch.meshgrid(
        torch.arange(H, device=dev, dtype=torch.float32),
        torch.arange(W, device=dev, dtype=torch.float32),
        indexing="ij",
    )
    covered = torch.zeros((H, W), dtype=torch.bool, device=dev)

    def uniform(low: float, high: float) -> float:
        return low + (high - low) * float(torch.rand((), generator=generator, device=dev))

    for _ in range(strokes):
        n = int(torch.randint(vertices[0], vertices[1] + 1, (), generator=generator, device=dev))
        radius = 0.5 * scale * uniform(*width)
        p = torch.tensor([uniform(0, H - 1), uniform(0, W - 1)], device=dev)
        for _ in range(n):
            angle = uniform(0.0, 2 * math.pi)
            step = scale * uniform(0.2 * length, length)
            q = p + step * torch.tensor([math.sin(angle), math.cos(angle)], device=dev)
            q = torch.stack((q[0].clamp(0, H - 1), q[1].clamp(0, W - 1)))
            covered |= _segment_distance(yy, xx, p, q) <= radius
            p = q
    return (~covered).float()


def _segment_distance(yy: Tensor, xx: Tensor, p: Tensor, q: Tensor) -> Tensor:
    """Distance from every pixel centre to the segment ``p``–``q``."""
    d = q - p
    length2 = float(d.square().sum())
    t = ((yy - p[0]) * d[0] + (xx - p[1]) * d[1]) / max(length2, 1e-12)
    t = t.clamp(0.0, 1.0)
    return torch.hypot(yy - (p[0] + t * d[0]), xx - (p[1] + t * d[1]))


def _device(generator: torch.Generator | None) -> torch.device:
    return generator.device if generator is not None else torch.device("cpu")
