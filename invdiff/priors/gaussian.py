r"""A low-rank-plus-isotropic Gaussian prior with an exact denoiser, fitted to images.

:math:`x_0 \sim \mathcal N(\mu, V \Lambda V^T + \tau^2 (I - V V^T))` with orthonormal
:math:`V \in \mathbb R^{d \times r}`: the leading principal components of a training set carry
their own variances and the remaining directions share the residual variance :math:`\tau^2`.
Its denoiser is the Wiener filter

.. math:: D(x, \sigma) = \mu + V \operatorname{diag}\Big(\frac{\lambda}{\lambda + \sigma^2}\Big) V^T (x - \mu)
          + \frac{\tau^2}{\tau^2 + \sigma^2} (I - V V^T)(x - \mu),

exact, cheap (:math:`O(d r)` per image) and built in seconds on a CPU. It stands in as the
default prior of the reconstruction tasks until trained diffusion priors replace it; with it,
every sampler computes a reconstruction under a Gaussian model of the training images.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import Tensor

from invdiff.fileio import atomic_write
from invdiff.priors.base import Denoiser, as_sigma


class LowRankGaussian(Denoiser):
    """Gaussian prior with ``r`` principal directions and an isotropic remainder.

    Args:
        mean: ``(d,)``.
        basis: ``(d, r)`` with orthonormal columns.
        variances: ``(r,)`` variances along the columns of ``basis``.
        residual_variance: :math:`\\tau^2 > 0`, the variance along every other direction.
        shape: ``(C, H, W)`` with ``C H W = d``.

    A fixed-dimension prior: it runs only at exactly ``shape`` (``size_multiple`` is ``None``).
    """

    size_multiple = None

    def __init__(self, mean: Tensor, basis: Tensor, variances: Tensor, residual_variance: float, shape):
        super().__init__()
        d = mean.numel()
        if basis.ndim != 2 or basis.shape[0] != d:
            raise ValueError(f"basis: expected ({d}, r), got shape {tuple(basis.shape)}")
        if variances.shape != (basis.shape[1],):
            raise ValueError(f"variances: expected ({basis.shape[1]},), got shape {tuple(variances.shape)}")
        if not residual_variance > 0:
            raise ValueError(f"residual_variance: expected a positive variance, got {residual_variance}")
        self.shape = tuple(int(s) for s in shape)
        if math.prod(self.shape) != d:
            raise ValueError(f"shape: expected {d} elements, got {self.shape}")
        self.register_buffer("mean", mean.reshape(d).float())
        self.register_buffer("basis", basis.float())
        self.register_buffer("variances", variances.float())
        self.residual_variance = float(residual_variance)

    def forward(self, x: Tensor, sigma: Tensor | float) -> Tensor:
        s2 = as_sigma(sigma, x).square()[:, None]
        flat = x.reshape(x.shape[0], -1)
        if flat.shape[1] != self.mean.numel():
            raise ValueError(f"x: expected {self.mean.numel()} elements per sample, got shape {tuple(x.shape)}")
        mean, basis = self.mean.to(flat), self.basis.to(flat)
        centred = flat - mean
        # 1. Shrinkage of the remainder, then the correction along the principal directions.
        rest = self.residual_variance / (self.residual_variance + s2)
        coeffs = centred @ basis
        along = self.variances.to(flat)[None] / (self.variances.to(flat)[None] + s2) - rest
        x0 = mean + rest * centred + (along * coeffs) @ basis.T
        return x0.reshape(x.shape)

    def sample(self, n: int, *, generator: torch.Generator | None) -> Tensor:
        """``n`` prior samples, ``(n, C, H, W)`` float32."""
        d, r = self.basis.shape
        white = torch.randn(n, d, generator=generator)
        coeffs = white @ self.basis
        x = self.mean + math.sqrt(self.residual_variance) * (white - coeffs @ self.basis.T)
        x = x + (coeffs * self.variances.sqrt()) @ self.basis.T
        return x.reshape(n, *self.shape)

    def state(self) -> dict[str, Tensor]:
        return {
            "mean": self.mean,
            "basis": self.basis,
            "variances": self.variances,
            "residual_variance": torch.tensor(self.residual_variance),
            "shape": torch.tensor(self.shape),
        }

    @classmethod
    def from_state(cls, state: dict[str, Tensor]) -> LowRankGaussian:
        return cls(
            state["mean"], state["basis"], state["variances"], float(state["residual_variance"]),
            tuple(state["shape"].tolist()),
        )


def fit_low_rank_gaussian(samples: Tensor, rank: int, *, min_variance: float = 1e-6) -> LowRankGaussian:
    """Fit the mean, the ``rank`` leading principal components and the residual variance.

    Args:
        samples: ``(N, C, H, W)`` real training images, ``N > rank``.
        rank: the number of principal directions kept.
        min_variance: floor of the residual variance.
    """
    if samples.ndim != 4 or samples.is_complex():
        raise ValueError(f"samples: expected real (N, C, H, W), got {tuple(samples.shape)} {samples.dtype}")
    N = samples.shape[0]
    if not 0 < rank < N:
        raise ValueError(f"rank: expected 0 < rank < N={N}, got {rank}")
    X = samples.reshape(N, -1).double()
    d = X.shape[1]
    mean = X.mean(0)
    Xc = X - mean
    # 1. Principal directions from the N x N Gram matrix (N << d).
    evals, U = torch.linalg.eigh(Xc @ Xc.T)
    evals, U = evals.flip(0)[:rank].clamp_min(0), U.flip(1)[:, :rank]
    basis = Xc.T @ U / evals.sqrt().clamp_min(1e-12)
    variances = evals / (N - 1)
    # 2. What the kept directions leave, spread over the remaining d - r directions.
    total = float(Xc.square().sum()) / (N - 1)
    residual = max((total - float(variances.sum())) / max(d - rank, 1), min_variance)
    return LowRankGaussian(mean, basis, variances, residual, samples.shape[1:])


def save_gaussian(prior: LowRankGaussian, path: str | Path) -> None:
    """Write ``prior`` to ``path`` (via a temporary file, so a crash leaves no partial file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: torch.save(prior.state(), tmp))


def load_gaussian(path: str | Path) -> LowRankGaussian:
    """Read a prior written by :func:`save_gaussian` (tensors only, ``weights_only=True``).

    Its ``source`` is ``path``.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: naming ``path``: an empty, truncated or unreadable file
            (:func:`~invdiff.priors.checkpoints.read_checkpoint`), or not the tensors
            :func:`save_gaussian` writes.
    """
    from invdiff.priors.checkpoints import read_checkpoint  # here: it imports the network modules

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such Gaussian prior file")
    state = read_checkpoint(path)
    keys = {"mean", "basis", "variances", "residual_variance", "shape"}
    if not isinstance(state, dict):
        raise ValueError(f"{path}: not a Gaussian prior file; expected a dict of tensors {sorted(keys)} "
                         f"(save_gaussian), found a {type(state).__name__}")
    missing = keys - set(state)
    if missing:
        raise ValueError(f"{path}: not a Gaussian prior file, missing {sorted(missing)}")
    not_tensors = sorted(k for k in keys if not isinstance(state[k], Tensor))
    if not_tensors:
        raise ValueError(f"{path}: not a Gaussian prior file, {not_tensors} are not tensors")
    try:
        prior = LowRankGaussian.from_state(state)
    except (ValueError, RuntimeError) as exc:
        raise ValueError(f"{path}: not a consistent Gaussian prior file: {exc}") from exc
    prior.source = str(path)
    return prior
