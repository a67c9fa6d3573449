r"""Random Shepp–Logan-like phantoms: a seeded family of images for priors and default tasks.

Each phantom perturbs the ten ellipses of the modified Shepp–Logan phantom (centres, semi-axes,
orientations and the inner intensities) and adds a few small random "lesions", then rasterises
them with 2 × 2 supersampling. Values lie in about ``[0, 1]``. Complex phantoms multiply the
magnitude by a smooth random phase (a random low-order polynomial), as MR images have.

Phantom ``k`` of a family depends only on ``(seed, k)``, so a prior fitted to indices
``[0, n)`` never sees the held-out images that default tasks draw from :data:`HELD_OUT`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from operators.ct import ellipse_image, shepp_logan_ellipses

HELD_OUT = 1_000_000
"""Index offset of held-out phantoms: indices below it train priors, at or above it test them."""


def _generator(seed: int, index: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 2_147_483_647 + index)


def _uniform(g: torch.Generator, shape, low: float, high: float) -> Tensor:
    return low + (high - low) * torch.rand(shape, generator=g, dtype=torch.float64)


def random_ellipses(size: int, g: torch.Generator, lesions: int = 3) -> Tensor:
    """Perturbed Shepp–Logan ellipses plus up to ``lesions`` small ones, ``(E, 6)`` rows
    ``(value, a, b, x0, y0, phi)`` in pixel units."""
    base = shepp_logan_ellipses((size, size))
    n = base.shape[0]
    half = size / 2
    out = base.clone()
    # 1. Inner structures move, resize, turn and change contrast on their own.
    inner = slice(2, n)
    out[inner, 1:3] *= _uniform(g, (n - 2, 2), 0.8, 1.2)
    out[inner, 3:5] += _uniform(g, (n - 2, 2), -0.05, 0.05) * half
    out[inner, 5] += _uniform(g, (n - 2,), -0.25, 0.25)
    out[inner, 0] *= _uniform(g, (n - 2,), 0.6, 1.4)
    # 2. The whole head is scaled, rotated and shifted as one.
    scale = _uniform(g, (2,), 0.85, 1.05)
    turn = float(_uniform(g, (), -0.3, 0.3))
    shift = _uniform(g, (2,), -0.04, 0.04) * half
    c, s = math.cos(turn), math.sin(turn)
    x0, y0 = out[:, 3] * scale[0], out[:, 4] * scale[1]
    out[:, 3], out[:, 4] = c * x0 - s * y0 + shift[0], s * x0 + c * y0 + shift[1]
    out[:, 1] *= scale.mean()
    out[:, 2] *= scale.mean()
    out[:, 5] += turn
    k = int(torch.randint(0, lesions + 1, (), generator=g))
    # 3. A few small lesions anywhere inside the head.
    extra = torch.stack(
        [
            _uniform(g, (k,), -0.15, 0.25),
            _uniform(g, (k,), 0.03, 0.09) * half,
            _uniform(g, (k,), 0.03, 0.09) * half,
            _uniform(g, (k,), -0.45, 0.45) * half,
            _uniform(g, (k,), -0.55, 0.55) * half,
            _uniform(g, (k,), 0, math.pi),
        ],
        dim=1,
    )
    return torch.cat([out, extra])


def phantom(size: int, index: int, *, seed: int = 0) -> Tensor:
    """Phantom ``index`` of family ``seed``: ``(size, size)`` float32, values in ``[0, 1]``."""
    if size < 8:
        raise ValueError(f"size: expected at least 8 pixels, got {size}")
    g = _generator(seed, index)
    image = ellipse_image(random_ellipses(size, g), (size, size), supersample=2)
    return image.clamp(0, 1).float()


def smooth_phase(size: int, g: torch.Generator, amplitude: float = math.pi / 3) -> Tensor:
    """A random quadratic phase map over ``[-1, 1]^2`` with values within ``±amplitude``, float64."""
    yy, xx = torch.meshgrid(
        torch.linspace(-1, 1, size, dtype=torch.float64), torch.linspace(-1, 1, size, dtype=torch.float64), indexing="ij"
    )
    basis = torch.stack([torch.ones_like(xx), xx, yy, xx * yy, xx**2, yy**2])
    coeffs = _uniform(g, (6,), -1, 1)
    phase = torch.einsum("k,khw->hw", coeffs, basis)
    return amplitude * phase / phase.abs().max().clamp_min(1e-12)


def complex_phantom(size: int, index: int, *, seed: int = 0) -> Tensor:
    """Phantom ``index`` with a smooth random phase: ``(size, size)`` complex64."""
    magnitude = phantom(size, index, seed=seed).double()
    phase = smooth_phase(size, _generator(seed + 7919, index))
    return torch.polar(magnitude, phase).to(torch.complex64)


def phantom_batch(size: int, indices, *, seed: int = 0, complex_: bool = False) -> Tensor:
    """Phantoms ``indices`` as ``(N, 1, size, size)``, float32 or complex64."""
    make = complex_phantom if complex_ else phantom
    return torch.stack([make(size, int(i), seed=seed) for i in indices])[:, None]
