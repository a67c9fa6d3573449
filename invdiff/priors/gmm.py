r"""Gaussian-mixture priors: exact denoiser, score, samples and posterior.

For :math:`p(x_0) = \sum_k w_k \mathcal N(\mu_k, \Sigma_k)` and :math:`x = x_0 + \sigma n`,

.. math::
    p(x) = \sum_k w_k \mathcal N(x; \mu_k, \Sigma_k + \sigma^2 I), \qquad
    D(x, \sigma) = \sum_k r_k(x) \big(\mu_k + \Sigma_k (\Sigma_k + \sigma^2 I)^{-1} (x - \mu_k)\big),

with responsibilities :math:`r_k \propto w_k \mathcal N(x; \mu_k, \Sigma_k + \sigma^2 I)`. For a
linear measurement :math:`y = A x_0 + s\,\epsilon` the posterior is again a Gaussian mixture
(:meth:`GaussianMixture.posterior`), which makes these priors the ground truth for sampler
tests and the exact-posterior benchmark. Covariances are diagonalised once, so a call costs
:math:`O(B K d^2)`; isotropic ones, :math:`\Sigma_k = c_k I` (detected at construction), skip the
eigenvectors and cost :math:`O(B K d)`, with the same results. Everything is computed in float64.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from invdiff.priors.base import Denoiser, as_sigma


class GaussianMixture(Denoiser):
    """A mixture of ``K`` Gaussians in dimension ``d``, as a denoiser.

    Args:
        means: ``(K, d)``.
        covs: ``(K, d, d)`` symmetric positive semi-definite.
        weights: ``(K,)`` non-negative, normalised here; default uniform.
        shape: the image shape ``(C, H, W)`` with ``C * H * W = d``; default ``(1, 1, d)``.

    Inputs ``x`` may have any shape ``(B, ...)`` with ``d`` elements per sample. When every
    covariance is isotropic, ``iso_var`` holds the ``(K,)`` variances :math:`c_k` and the denoiser,
    ``log_prob`` and ``sample`` take the :math:`O(B K d)` path; ``covs`` may then be an expanded
    tensor (``torch.eye(d).expand(K, d, d)``), which is kept without copying. Otherwise
    ``iso_var`` is ``None``.

    A fixed-dimension prior: it runs only at exactly ``shape`` (``size_multiple`` is ``None``).
    """

    size_multiple = None

    def __init__(self, means: Tensor, covs: Tensor, weights: Tensor | None = None, shape=None):
        super().__init__()
        if means.ndim != 2:
            raise ValueError(f"means: expected (K, d), got shape {tuple(means.shape)}")
        K, d = means.shape
        if covs.shape != (K, d, d):
            raise ValueError(f"covs: expected ({K}, {d}, {d}), got shape {tuple(covs.shape)}")
        weights = torch.full((K,), 1.0 / K, dtype=torch.float64) if weights is None else weights.double()
        if weights.shape != (K,) or bool((weights < 0).any()) or not float(weights.sum()) > 0:
            raise ValueError(f"weights: expected ({K},) non-negative with a positive sum, got {weights}")
        self.shape = tuple(shape) if shape is not None else (1, 1, d)
        if math.prod(self.shape) != d:
            raise ValueError(f"shape: expected {d} elements, got {self.shape}")
        covs = covs.double()
        iso_var = _isotropic_variances(covs)
        if iso_var is None:
            covs = (covs + covs.transpose(1, 2)) / 2
            evals, evecs = torch.linalg.eigh(covs)
        else:
            evals = iso_var[:, None].expand(K, d)
            evecs = torch.eye(d, dtype=torch.float64, device=covs.device).expand(K, d, d)
        self.register_buffer("means", means.double())
        self.register_buffer("covs", covs)
        self.register_buffer("weights", weights / weights.sum())
        self.register_buffer("evals", evals.clamp_min(0))
        self.register_buffer("evecs", evecs)
        self.register_buffer("iso_var", None if iso_var is None else iso_var.clamp_min(0))

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    def _flat(self, x: Tensor) -> Tensor:
        flat = x.reshape(x.shape[0], -1)
        if flat.shape[1] != self.dim:
            raise ValueError(f"x: expected {self.dim} elements per sample, got shape {tuple(x.shape)}")
        return flat.double()

    def _posterior_terms(self, x: Tensor, sigma: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Responsibilities ``(B, K)``, whitened residuals ``(B, K, d)`` and variances ``(B, K, d)``."""
        z = torch.einsum("bkd,kde->bke", x[:, None, :] - self.means[None], self.evecs)
        var = self.evals[None] + sigma.double().square()[:, None, None]
        log_r = self.weights.log()[None] - 0.5 * (z.square() / var + var.log()).sum(-1)
        return torch.softmax(log_r, dim=1), z, var

    def _isotropic_terms(self, x: Tensor, sigma: Tensor) -> tuple[Tensor, Tensor]:
        r"""Log-densities up to :math:`-\tfrac d2 \log 2\pi`, ``(B, K)``, and variances
        :math:`c_k + \sigma^2`, ``(B, K)``, of the isotropic components, without ``(B, K, d)`` tensors."""
        var = self.iso_var[None] + sigma.double().square()[:, None]
        # ||x - mu_k||^2 by expansion: one (B, d) x (d, K) product; exact enough in float64.
        sq = (x.square().sum(1, keepdim=True) - 2 * x @ self.means.T + self.means.square().sum(1)[None]).clamp_min(0)
        return -0.5 * (sq / var + self.dim * var.log()), var

    def forward(self, x: Tensor, sigma: Tensor | float) -> Tensor:
        sigma = as_sigma(sigma, x)
        flat = self._flat(x)
        if self.iso_var is not None:
            # D(x) = sum_k r_k ((1 - a_k) mu_k + a_k x), a_k = c_k / (c_k + sigma^2).
            log_comp, var = self._isotropic_terms(flat, sigma)
            r = torch.softmax(self.weights.log()[None] + log_comp, dim=1)
            a = self.iso_var[None] / var
            x0 = (r * (1 - a)) @ self.means + (r * a).sum(1, keepdim=True) * flat
            return x0.reshape(x.shape).to(x.dtype)
        r, z, var = self._posterior_terms(flat, sigma)
        shrunk = torch.einsum("kde,bke->bkd", self.evecs, z * self.evals[None] / var)
        x0 = torch.einsum("bk,bkd->bd", r, self.means[None] + shrunk)
        return x0.reshape(x.shape).to(x.dtype)

    def log_prob(self, x: Tensor, sigma: Tensor | float = 0.0) -> Tensor:
        r""":math:`\log p_\sigma(x)`, ``(B,)``; needs positive-definite covariances when ``sigma = 0``."""
        sigma = as_sigma(sigma, x)
        flat = self._flat(x)
        if self.iso_var is not None:
            log_comp, _ = self._isotropic_terms(flat, sigma)
            log_comp = log_comp - 0.5 * self.dim * math.log(2 * math.pi)
            return torch.logsumexp(self.weights.log()[None] + log_comp, dim=1)
        z = torch.einsum("bkd,kde->bke", flat[:, None, :] - self.means[None], self.evecs)
        var = self.evals[None] + sigma.double().square()[:, None, None]
        log_comp = -0.5 * (z.square() / var + var.log() + math.log(2 * math.pi)).sum(-1)
        return torch.logsumexp(self.weights.log()[None] + log_comp, dim=1)

    def sample(self, n: int, *, generator: torch.Generator | None) -> Tensor:
        """``n`` prior samples, ``(n, *shape)`` float64; memory ``O(n d + d^2)``, one component at a time."""
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        noise = torch.randn(n, self.dim, dtype=torch.float64, generator=generator, device=self.means.device)
        scaled = self.evals[k].sqrt() * noise
        if self.iso_var is not None:
            return (self.means[k] + scaled).reshape(n, *self.shape)
        x = self.means[k].clone()
        for j in torch.unique(k).tolist():
            rows = k == j
            x[rows] += scaled[rows] @ self.evecs[j].T
        return x.reshape(n, *self.shape)

    def posterior(self, A: Tensor, y: Tensor, noise_std: float) -> GaussianMixture:
        r"""The exact posterior of :math:`x_0` given :math:`y = A x_0 + s \epsilon`, a mixture again.

        Args:
            A: the measurement matrix, ``(m, d)``.
            y: one measurement, ``(m,)``.
            noise_std: ``s >= 0`` (0 needs :math:`A \Sigma_k A^T` invertible).

        Returns:
            The posterior, with the same ``shape``.
        """
        A, y = A.double().to(self.means.device), y.double().reshape(-1).to(self.means.device)
        if A.ndim != 2 or A.shape[1] != self.dim:
            raise ValueError(f"A: expected (m, {self.dim}), got shape {tuple(A.shape)}")
        if y.shape[0] != A.shape[0]:
            raise ValueError(f"y: expected {A.shape[0]} measurements, got {y.shape[0]}")
        m = A.shape[0]
        SAt = self.covs @ A.T  # (K, d, m)
        S = A @ SAt + noise_std**2 * torch.eye(m, dtype=torch.float64, device=A.device)  # (K, m, m)
        gain = torch.linalg.solve(S, SAt.transpose(1, 2)).transpose(1, 2)  # Sigma A^T S^-1, (K, d, m)
        resid = y[None] - self.means @ A.T  # (K, m)
        means = self.means + torch.einsum("kdm,km->kd", gain, resid)
        covs = self.covs - gain @ SAt.transpose(1, 2)
        chol = torch.linalg.cholesky(S)
        white = torch.linalg.solve_triangular(chol, resid[..., None], upper=False)[..., 0]
        log_evidence = -0.5 * white.square().sum(-1) - chol.diagonal(dim1=1, dim2=2).log().sum(-1)
        weights = torch.softmax(self.weights.log() + log_evidence, 0)
        return GaussianMixture(means, covs, weights, shape=self.shape)


def _isotropic_variances(covs: Tensor) -> Tensor | None:
    """``(K,)`` variances when every ``covs[k]`` is exactly ``c_k I``, else ``None``."""
    diag = covs.diagonal(dim1=1, dim2=2)
    if not bool((diag == diag[:, :1]).all()):
        return None
    if int(torch.count_nonzero(covs)) != int(torch.count_nonzero(diag)):
        return None
    return diag[:, 0].clone()
