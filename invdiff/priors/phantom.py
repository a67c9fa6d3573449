"""The default prior of the reconstruction tasks: a Gaussian fitted to generated phantoms.

Built on first use from phantoms ``[0, n_train)`` of :mod:`invdiff.data.phantoms` and cached
under the data root, so later runs load it in milliseconds. Held-out phantoms (indices from
:data:`~invdiff.data.phantoms.HELD_OUT`) serve as ground truth.
"""

from __future__ import annotations

from pathlib import Path

from operators.base import RealToComplex

from invdiff.data.phantoms import phantom_batch
from invdiff.priors.gaussian import LowRankGaussian, fit_low_rank_gaussian, load_gaussian, save_gaussian


def phantom_gaussian(
    size: int,
    *,
    complex_: bool = False,
    n_train: int = 1500,
    rank: int = 256,
    cache_dir: str | Path | None = None,
) -> LowRankGaussian:
    """A low-rank Gaussian prior of ``size x size`` phantoms, real (1 channel) or complex (2
    channels: real and imaginary parts, the layout of :class:`operators.RealToComplex`).

    Args:
        size: image side in pixels.
        complex_: model complex phantoms with a smooth random phase.
        n_train: the number of training phantoms.
        rank: the number of principal directions.
        cache_dir: where to keep the fitted prior; ``None`` fits it every time.

    Returns:
        The prior, ``shape`` ``(1 or 2, size, size)``, fixed-size; its ``source`` is the cache file,
        or ``"phantom_gaussian:<real|complex>_<size>_n<n_train>_r<rank>"`` without ``cache_dir``.
    """
    kind = "complex" if complex_ else "real"
    path = None if cache_dir is None else Path(cache_dir) / f"phantom_gaussian_{kind}_{size}_n{n_train}_r{rank}.pt"
    if path is not None and path.is_file():
        return load_gaussian(path)
    images = phantom_batch(size, range(n_train), complex_=complex_)
    if complex_:
        images = RealToComplex().AT(images)
    prior = fit_low_rank_gaussian(images, min(rank, n_train - 1))
    prior.source = f"phantom_gaussian:{kind}_{size}_n{n_train}_r{rank}" if path is None else str(path)
    if path is not None:
        save_gaussian(prior, path)
    return prior
