"""Native DiffPIR: against a transcription of the official loop, against deepinv's DiffPIR, guards."""

from __future__ import annotations

import math

import pytest
import torch

from invdiff.priors.gmm import GaussianMixture
from invdiff.samplers import SAMPLERS, sample_deepinv_diffpir, sample_diffpir
from invdiff.samplers.diffpir import diffpir_sigmas
from invdiff.schedules import sigmas_vp, vp_alphas_cumprod
from operators.base import Matrix
from tests.samplers import gaussian_problem, seeded
from tests.samplers.test_pigdm import complex_and_twin
from tests.samplers import single_thread  # noqa: F401  (autouse fixture)


def _batch(y: torch.Tensor, B: int = 3) -> torch.Tensor:
    return y.reshape(1, -1).expand(B, -1).clone()


class _Network(torch.nn.Module):
    """The caller's prior seen in the network's units, x_n = k x + b (sigma_n = k sigma)."""

    def __init__(self, prior, k, b):
        super().__init__()
        self.prior, self.k, self.b = prior, k, b

    def forward(self, x_n, sigma_n):
        return self.k * self.prior((x_n - self.b) / self.k, sigma_n / self.k) + self.b


def official_diffpir(model, A, y, noise_level_img, lambda_, zeta, iter_num, zs, k, b):
    """``main_ddpir.py``'s DiffPIR loop at ``111d26e`` (``generate_mode: DiffPIR``, ``eta: 0``,
    ``skip_type: quad``, ``iter_num_U: 1``, ``model_output_type: pred_xstart``), transcribed in its
    variable names: VP state in the network's units, the data step in the caller's (the official
    [0, 1] images: ``x0_p = x0 / 2 + 0.5`` is ``(x0 - b) / k``), the closed-form solution of
    ``argmin ||y - A x||^2 + rho ||x - x0||^2`` in place of ``sr.data_solution`` (the same
    minimiser for its operator). The start's ``x_init`` is the caller's zero image (``b`` in the
    network's units; ours starts from pure noise around 0), and the VP state ``x`` of the last
    level is returned, as the official loop does.
    """
    num_train_timesteps = 1000
    betas = torch.linspace(0.1 / 1000, 20 / 1000, num_train_timesteps, dtype=torch.float64)
    alphas = 1.0 - betas
    alphas_cumprod = torch.cumprod(alphas, 0)
    sqrt_alphas_cumprod = torch.sqrt(alphas_cumprod)
    sqrt_1m_alphas_cumprod = torch.sqrt(1.0 - alphas_cumprod)
    reduced_alpha_cumprod = sqrt_1m_alphas_cumprod / sqrt_alphas_cumprod
    sigma = max(0.001, noise_level_img)
    t_start = num_train_timesteps - 1
    sigmas, sigma_ks, rhos = [], [], []
    for i in range(num_train_timesteps):
        sigmas.append(reduced_alpha_cumprod[num_train_timesteps - 1 - i])
        sigma_ks.append(sqrt_1m_alphas_cumprod[i] / sqrt_alphas_cumprod[i])
        rhos.append(lambda_ * sigma**2 / sigma_ks[i] ** 2)
    find_nearest = lambda array, value: int(torch.abs(array - value).argmin())  # noqa: E731
    x = sqrt_alphas_cumprod[t_start] * b + sqrt_1m_alphas_cumprod[t_start] * zs[0]
    seq = [int(s) for s in torch.sqrt(torch.linspace(0, num_train_timesteps**2, iter_num, dtype=torch.float64))]
    seq[-1] = seq[-1] - 1
    d = A.shape[1]
    for i in range(len(seq)):
        curr_sigma = sigmas[seq[i]]
        t_i = find_nearest(reduced_alpha_cumprod, curr_sigma)
        x0 = model(x / sqrt_alphas_cumprod[t_i], curr_sigma)  # pred_xstart of the VP network
        if seq[i] != seq[-1]:
            tau = rhos[t_i]
            x0_p = ((x0 - b) / k).reshape(-1, d)
            x0_p = torch.linalg.solve(A.T @ A + tau * torch.eye(d, dtype=A.dtype), (A.T @ y.T + tau * x0_p.T)).T
            x0_p = (x0_p * k + b).reshape(x0.shape)
            x0 = x0 + 1.0 * (x0_p - x0)
            t_im1 = find_nearest(reduced_alpha_cumprod, sigmas[seq[i + 1]])
            eps = (x - sqrt_alphas_cumprod[t_i] * x0) / sqrt_1m_alphas_cumprod[t_i]
            eta_sigma = 0.0
            x = (
                sqrt_alphas_cumprod[t_im1] * x0
                + math.sqrt(1 - zeta) * (torch.sqrt(sqrt_1m_alphas_cumprod[t_im1] ** 2 - eta_sigma**2) * eps)
                + math.sqrt(zeta) * sqrt_1m_alphas_cumprod[t_im1] * zs[i + 1]
            )
    return x, sqrt_alphas_cumprod[find_nearest(reduced_alpha_cumprod, sigmas[seq[-1]])]


@pytest.mark.parametrize("k, b", [(1.0, 0.0), (2.0, -1.0)])
def test_matches_the_official_loop(k, b):
    """Same random numbers, exact Gaussian denoiser; k = 2, b = -1 is the official [0, 1] images
    under a [-1, 1] network, where rho mixes the two units as the official code does."""
    prior, op, y, _ = gaussian_problem(seed=1, d=6, m=3, noise_std=0.1)
    prior.data_scale = k
    ys = _batch(y)
    n, lambda_, zeta = 12, 1.0, 0.25
    sigmas = diffpir_sigmas(n, "quad", data_scale=k)
    assert sigmas[-1] == 0 and len(sigmas) == n + 1
    x, info = sample_diffpir(prior, op, ys, sigmas[:-1], noise_std=0.1, generator=seeded(3), lambda_=lambda_, zeta=zeta)
    g = seeded(3)
    zs = [torch.randn(x.shape, generator=g, dtype=torch.float64) for _ in range(n)]
    x_vp, sqrt_abar = official_diffpir(_Network(prior, k, b), op.matrix, ys, 0.1, lambda_, zeta, n, zs, k, b)
    torch.testing.assert_close(x, ((x_vp / sqrt_abar) - b) / k, rtol=1e-9, atol=1e-9)
    assert info["nfe"] == n - 1 and info["linear_algebra"] == "closed form"


def test_skip_type_runs_the_official_levels_and_ends_at_the_estimate():
    prior, op, y, _ = gaussian_problem(seed=1, d=6, m=3, noise_std=0.1)
    seen = []
    x, info = sample_diffpir(
        prior, op, _batch(y), sigmas_vp(7), noise_std=0.1, generator=seeded(0), skip_type="quad", callback=seen.append
    )
    assert info["nfe"] == 7 and [s["sigma"] for s in seen] == pytest.approx(diffpir_sigmas(7)[:-1].tolist())
    torch.testing.assert_close(x, seen[-1]["x0"])  # the step to 0 returns the data-consistent estimate
    # The official quad timesteps: 999 - int(sqrt(linspace(0, 1e6, n))), the last one 0.
    abar = vp_alphas_cumprod()
    grid = ((1 - abar) / abar).sqrt()
    assert diffpir_sigmas(5)[:-1].tolist() == pytest.approx(grid[[999, 499, 292, 133, 0]].tolist())
    # uniform: range(0, 1000, 200) plus 999, i.e. timesteps 999, 799, ..., 0 and the last 0 -> 6 levels.
    assert len(diffpir_sigmas(5, "uniform")) == 7


@pytest.mark.parametrize("zeta", [0.0, 0.25, 1.0])
def test_native_and_deepinv_agree(zeta):
    """deepinv's DiffPIR is the same iteration with its prox weight 2 rho (``gamma = 1/(2 rho)`` on
    ``1/2 ||Ax - y||^2``): deepinv's lambda_ = 2 x ours. Fed the same noise (deepinv draws from the
    global generator seeded with a number from ours: the same stream, one draw at the start and
    one per step as ours), on a prior inside [-1, 1] (deepinv's clamp never acts) and with deepinv's
    [-1, 1] state equal to our units, they differ only by deepinv's start (A^T y added to the noise,
    contracted by sigma_end / sigma_start), its float32 level tables and its CG prox."""
    import deepinv

    g = torch.Generator().manual_seed(0)
    d, m = 6, 3
    mean = 0.2 * torch.randn(d, generator=g, dtype=torch.float64)
    prior = GaussianMixture(mean[None], 0.01 * torch.eye(d, dtype=torch.float64)[None])
    A = torch.randn(m, d, generator=g, dtype=torch.float64) / math.sqrt(d)
    op = Matrix(A, (1, 1, d))
    y = _batch(A @ prior.sample(1, generator=g).reshape(d) + 0.05 * torch.randn(m, generator=g, dtype=torch.float64))
    n = 20
    ref = deepinv.sampling.DiffPIR(model=None, data_fidelity=deepinv.optim.L2(), sigma=0.05 / 2, max_iter=n)
    levels = ref.sigmas[ref.seq].double()  # deepinv's levels; it returns the state at the last one
    seed = int(torch.randint(0, 2**62, (1,), generator=seeded(1)))  # what the wrapper seeds deepinv with
    run_deepinv = lambda lam: sample_deepinv_diffpir(  # noqa: E731
        prior, op, y, sigmas_vp(n), noise_std=0.05, generator=seeded(1), lambda_=lam, zeta=zeta
    )[0]
    x_nat, _ = sample_diffpir(
        prior, op, y, levels, noise_std=0.05, generator=seeded(seed), lambda_=1.0, zeta=zeta
    )
    x_dinv = run_deepinv(2.0)
    torch.testing.assert_close(x_nat, x_dinv, rtol=0, atol=2e-3)
    # deepinv at our lambda_ (the paper's formula read as deepinv's) is off by far more: the factor 2 is real.
    assert (run_deepinv(1.0) - x_nat).abs().max() > 10 * (x_dinv - x_nat).abs().max()


def test_noiseless_data_are_matched():
    """noise_std = 0 takes the official floor 0.001 for rho: the estimate fits y almost exactly."""
    prior, op, y, _ = gaussian_problem(seed=2, d=6, m=2, noise_std=0.0)
    x, info = sample_diffpir(prior, op, _batch(y), sigmas_vp(20), noise_std=0.0, generator=seeded(0))
    assert (op.A(x) - _batch(y)).abs().max() < 1e-3 and info["rho"] > 0


def test_complex_measurements_are_their_real_twin():
    """rho_t takes the variance per real component: s^2 / 2 for circular complex noise of E|n|^2 = s^2."""
    prior, op_c, y_c, op_r, y_r, s_r = complex_and_twin()
    x_c, _ = sample_diffpir(prior, op_c, y_c, sigmas_vp(8), noise_std=0.3, generator=seeded(1))
    x_r, _ = sample_diffpir(prior, op_r, y_r, sigmas_vp(8), noise_std=s_r, generator=seeded(1))
    torch.testing.assert_close(x_c, x_r, rtol=1e-8, atol=1e-8)


def test_registered_and_bad_inputs_name_the_argument():
    assert SAMPLERS["diffpir"] is sample_diffpir
    prior, op, y, _ = gaussian_problem(seed=0)
    ys = _batch(y)
    run = lambda **kw: sample_diffpir(prior, op, ys, sigmas_vp(5), noise_std=0.1, generator=seeded(0), **kw)  # noqa: E731
    for kw, name in [({"zeta": 1.5}, "zeta"), ({"lambda_": 0.0}, "lambda_"), ({"lambda_": math.nan}, "lambda_"),
                     ({"skip_type": "cubic"}, "skip_type"), ({"max_iter": 0}, "max_iter")]:
        with pytest.raises(ValueError, match=f"sample_diffpir: {name}"):
            run(**kw)
    with pytest.raises(ValueError, match="sample_diffpir: noise_std"):
        sample_diffpir(prior, op, ys, sigmas_vp(5), noise_std=-1.0, generator=seeded(0))
    with pytest.raises(ValueError, match="sample_diffpir: op"):
        sample_diffpir(prior, lambda x: x, ys, sigmas_vp(5), noise_std=0.1, generator=seeded(0))
