r"""Unconditional samplers on a Gaussian prior, where the probability-flow ODE is solved in closed form.

For :math:`x_0 \sim \mathcal N(\mu, \Sigma)`, :math:`\Sigma = U \Lambda U^T`, the ODE
:math:`dx/d\sigma = (x - D(x, \sigma))/\sigma` maps :math:`x_T` at :math:`\sigma_{max}` to
:math:`x_0 = \mu + M (x_T - \mu)`, :math:`M = U \sqrt{\Lambda / (\Lambda + \sigma_{max}^2)}\, U^T`.
A deterministic sampler's output is affine in its start noise, so a least-squares fit over a
few samples recovers its map exactly and we compare maps, free of Monte Carlo error. At any
:math:`\sigma`, :math:`x(\sigma) = \mu + U \sqrt{(\Lambda + \sigma^2)/(\Lambda + \sigma_{max}^2)}\, U^T (x_T - \mu)`,
which measures the global error of UniPC and DEIS at :math:`\sigma_{min} > 0` and their order.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from invdiff.priors.gmm import GaussianMixture
from invdiff.samplers import UNCONDITIONAL
from invdiff.schedules import sigmas_karras, sigmas_vp
from tests.samplers import moment_errors, seeded
from tests.samplers import single_thread  # noqa: F401  (autouse fixture)

SIGMA_MAX = 80.0


def _prior(d: int = 5) -> GaussianMixture:
    g = seeded(0)
    L = 0.5 * torch.randn(d, d, generator=g, dtype=torch.float64)
    cov = L @ L.T + 0.05 * torch.eye(d, dtype=torch.float64)
    return GaussianMixture(torch.randn(d, generator=g, dtype=torch.float64)[None], cov[None])


def _exact_map(prior: GaussianMixture) -> tuple[torch.Tensor, torch.Tensor]:
    lam, U = torch.linalg.eigh(prior.covs[0])
    M = U @ torch.diag((lam / (lam + SIGMA_MAX**2)).sqrt()) @ U.T
    mu = prior.means[0]
    return mu - M @ mu, M


def _fitted_map(name: str, prior: GaussianMixture, n_steps: int) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """The affine map ``x0 = a + M x_T`` the sampler applies, from 16 samples and their start noise."""
    B, d = 16, prior.dim
    seed = 1
    x, info = UNCONDITIONAL[name](
        prior, sigmas_karras(n_steps, 0.002, SIGMA_MAX), shape=(B, 1, 1, d), generator=seeded(seed)
    )
    x_T = SIGMA_MAX * torch.randn((B, 1, 1, d), generator=seeded(seed), dtype=torch.float64)
    design = torch.cat([torch.ones(B, 1, dtype=torch.float64), x_T.reshape(B, d)], 1)
    coef = torch.linalg.lstsq(design, x.reshape(B, d)).solution
    misfit = float((design @ coef - x.reshape(B, d)).abs().max())
    assert misfit < 1e-10, "the sampler is not affine in its start"
    return coef[0], coef[1:].T, info


def _map_error(name: str, prior: GaussianMixture, n_steps: int) -> tuple[float, dict]:
    a, M, info = _fitted_map(name, prior, n_steps)
    a0, M0 = _exact_map(prior)
    return float((M - M0).norm() / M0.norm() + (a - a0).norm() / a0.norm()), info


@pytest.mark.parametrize(
    "name, bound, order",
    [("euler", 0.1, 1), ("ddim", 0.1, 1), ("heun", 0.01, 2), ("dpmpp_2m", 0.01, 2), ("unipc", 0.01, 2),
     ("deis", 0.01, 2)],
)
def test_deterministic_samplers_solve_the_flow(name, bound, order):
    """Observed at 50 Karras steps: Euler/DDIM 4.9e-2, Heun 4.5e-3, DPM++(2M) 4.7e-3 relative error
    of the map; halving the step divides the error by 2.0 (first order) or about 4.3 (second order)."""
    prior = _prior()
    err50, _ = _map_error(name, prior, 50)
    err25, _ = _map_error(name, prior, 25)
    print(f"\n{name}: map error {err50:.2e} at 50 steps, ratio 25/50 = {err25 / err50:.2f}")
    assert err50 < bound
    if order == 1:
        assert 1.7 < err25 / err50 < 2.4
    else:
        assert err25 / err50 > 3.3


@pytest.mark.parametrize(
    "name, n_steps, nfe",
    [("ddim", 12, 12), ("euler", 12, 12), ("heun", 12, 23), ("dpmpp_2m", 12, 12), ("unipc", 12, 12),
     ("deis", 12, 12)],
)
def test_nfe(name, n_steps, nfe):
    calls = []

    class Counting(GaussianMixture):
        def forward(self, x, sigma):
            calls.append(float(sigma))
            return super().forward(x, sigma)

    base = _prior()
    prior = Counting(base.means, base.covs)
    _, info = UNCONDITIONAL[name](prior, sigmas_karras(n_steps), shape=(2, 1, 1, 5), generator=seeded(0))
    assert info["nfe"] == nfe == len(calls)
    assert info["seconds"] >= 0


@pytest.mark.parametrize(
    "name, sigmas, kwargs, cov_bound",
    [
        ("heun", sigmas_karras(40, 0.002, SIGMA_MAX), {}, 0.25),
        ("dpmpp_2m", sigmas_karras(40, 0.002, SIGMA_MAX), {}, 0.25),
        ("euler", sigmas_karras(100, 0.002, SIGMA_MAX), {}, 0.25),
        ("unipc", sigmas_karras(20, 0.002, SIGMA_MAX), {}, 0.25),
        ("deis", sigmas_karras(20, 0.002, SIGMA_MAX), {}, 0.25),
        ("ddim", sigmas_vp(500), {"eta": 1.0}, 0.25),
    ],
)
def test_samples_match_the_prior(name, sigmas, kwargs, cov_bound):
    """Monte Carlo moments of 4000 samples. The bounds sit at about three times the Monte Carlo
    floor (mean: sqrt(5/4000) = 0.035 std; whitened covariance: about 0.09 in Frobenius norm):
    observed 0.03-0.05 and 0.08-0.15. DDPM's ancestral sampler needs many more steps than the ODE
    solvers for the same accuracy (0.43 at 50 steps, 0.09 at 500)."""
    prior = _prior()
    N, d = 4000, prior.dim
    x, _ = UNCONDITIONAL[name](prior, sigmas, shape=(N, 1, 1, d), generator=seeded(1), **kwargs)
    cov = prior.covs[0]
    chol = torch.linalg.cholesky(cov)
    sample_cov = torch.cov(x.reshape(N, d).T)
    half = torch.linalg.solve_triangular(chol, sample_cov, upper=False)
    whitened = torch.linalg.solve_triangular(chol, half.T, upper=False)
    cov_err = float((whitened - torch.eye(d, dtype=torch.float64)).norm())
    err = moment_errors(x, prior.means[0], cov)
    print(f"\n{name}: mean {err['mahalanobis']:.3f} std, whitened covariance error {cov_err:.3f}")
    assert err["mahalanobis"] < 0.12
    assert cov_err < cov_bound


def test_shape_is_required(generator):
    with pytest.raises(ValueError, match="shape"):
        UNCONDITIONAL["heun"](_prior(), sigmas_karras(5), shape=None, generator=generator)


def test_dtype_and_device_follow_the_denoiser(generator):
    x, _ = UNCONDITIONAL["dpmpp_2m"](_prior(), sigmas_karras(5), shape=(3, 1, 1, 5), generator=generator)
    assert x.dtype == torch.float64 and x.shape == (3, 1, 1, 5)
    x, _ = UNCONDITIONAL["dpmpp_2m"](
        _prior(), sigmas_karras(5), shape=(3, 1, 1, 5), generator=generator, dtype=torch.float32
    )
    assert x.dtype == torch.float32


# --- UniPC and DEIS ----------------------------------------------------------------------------

SIGMA_MIN = 0.002


def _to_sigma_min(n_steps: int) -> torch.Tensor:
    """``n_steps`` Karras steps from ``SIGMA_MAX`` to ``SIGMA_MIN``, without the final 0."""
    return sigmas_karras(n_steps + 1, SIGMA_MIN, SIGMA_MAX)[:-1]


def _flow(prior: GaussianMixture, x_T: torch.Tensor, sigma: float) -> torch.Tensor:
    r"""The exact probability-flow solution at ``sigma`` from ``x_T`` at ``SIGMA_MAX``, ``(B, d)``."""
    lam, U = torch.linalg.eigh(prior.covs[0])
    mu = prior.means[0]
    z = (x_T.reshape(x_T.shape[0], -1) - mu) @ U
    return mu + (z * ((lam + sigma**2) / (lam + SIGMA_MAX**2)).sqrt()) @ U.T


def _global_error(name: str, prior: GaussianMixture, n_steps: int, **kwargs) -> float:
    B, d = 16, prior.dim
    x, _ = UNCONDITIONAL[name](prior, _to_sigma_min(n_steps), shape=(B, 1, 1, d), generator=seeded(1), **kwargs)
    x_T = SIGMA_MAX * torch.randn((B, 1, 1, d), generator=seeded(1), dtype=torch.float64)
    exact = _flow(prior, x_T, SIGMA_MIN)
    return float((x.reshape(B, d) - exact).norm() / exact.norm())


@pytest.mark.parametrize(
    "name, kwargs, expected",
    [
        ("unipc", {"order": 1}, 2),
        ("unipc", {"order": 2}, 3),
        ("unipc", {"order": 3}, 4),
        ("unipc", {"order": 3, "variant": "bh2"}, 4),
        ("unipc", {"order": 1, "corrector": False}, 1),
        ("unipc", {"order": 2, "corrector": False}, 2),
        ("unipc", {"order": 3, "corrector": False}, 3),
        ("deis", {"order": 1}, 1),
        ("deis", {"order": 2}, 2),
        ("deis", {"order": 3}, 3),
        ("deis", {"order": 4}, 4),
    ],
)
def test_empirical_order(name, kwargs, expected):
    r"""The slope of log global error against log steps at :math:`\sigma_{min}` (Karras, 32 to 256
    steps; DEIS-4 64 to 512). UniC raises UniP's order by one. Observed fitted slopes: UniPC 1/2/3:
    2.1/3.1/4.0, UniP 1/2/3: 1.0/2.1/3.0, DEIS 1/2/3/4: 1.0/1.9/2.8/3.8. At 8 to 64 steps DEIS is
    still pre-asymptotic (between successive counts DEIS-3: 1.9, 2.4, 2.7; DEIS-4: 2.2, 3.0, 3.5):
    its polynomial in sigma spans the prior's scale (sigma ~ 1) in few Karras steps."""
    prior = _prior()
    steps = [64, 128, 256, 512] if (name, expected) == ("deis", 4) else [32, 64, 128, 256]
    errors = [_global_error(name, prior, n, **kwargs) for n in steps]
    slope = -float(np.polyfit(np.log(steps), np.log(errors), 1)[0])
    print(f"\n{name} {kwargs}: errors {['%.2e' % e for e in errors]}, slope {slope:.2f}")
    assert expected - 0.3 <= slope <= expected + 0.6


def test_first_order_unip_and_deis_are_ddim():
    prior = _prior()
    sigmas = sigmas_karras(9, SIGMA_MIN, SIGMA_MAX)

    def run(name, **kw):
        return UNCONDITIONAL[name](prior, sigmas, shape=(4, 1, 1, 5), generator=seeded(2), **kw)[0]

    ddim = run("ddim")
    torch.testing.assert_close(run("unipc", order=1, corrector=False), ddim, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(run("deis", order=1), ddim, rtol=1e-12, atol=1e-12)
    # UniC makes UniPC of order 1 a different, second-order method (test_empirical_order).
    assert float((run("unipc", order=1) - ddim).abs().max()) > 1e-3


def test_second_order_unip_bh2_is_dpmpp_2m():
    r"""UniP-2 with :math:`B(h) = e^{-h} - 1` and :math:`\rho = 1/2` is DPM-Solver++(2M) (without
    lower orders at the end; both step into 0 at first order)."""
    prior = _prior()
    sigmas = sigmas_karras(9, SIGMA_MIN, SIGMA_MAX)
    ours, _ = UNCONDITIONAL["unipc"](prior, sigmas, shape=(4, 1, 1, 5), generator=seeded(3), order=2,
                                     variant="bh2", corrector=False, lower_order_final=False)
    reference, _ = UNCONDITIONAL["dpmpp_2m"](prior, sigmas, shape=(4, 1, 1, 5), generator=seeded(3))
    torch.testing.assert_close(ours, reference, rtol=1e-12, atol=1e-12)


# The official UniPC (wl-zhao/UniPC, commit cf9de85, uni_pc.py), transcribed with its variable
# names in VP coordinates: x_vp = alpha x, alpha = 1/sqrt(1 + sigma^2), sigma_vp = alpha sigma,
# lambda = log(alpha / sigma_vp); the "time" t is our sigma, the model the data prediction.


def _ns_alpha(t):
    return 1 / torch.sqrt(1 + t**2)


def _ns_std(t):
    return t / torch.sqrt(1 + t**2)


def _ns_lambda(t):
    return torch.log(_ns_alpha(t)) - torch.log(_ns_std(t))


def _official_bh_update(model_fn, variant, x, model_prev_list, t_prev_list, t, order, use_corrector=True):
    """``UniPC.multistep_uni_pc_bh_update`` with ``predict_x0=True`` and ``x_t=None``."""
    t_prev_0 = t_prev_list[-1]
    lambda_prev_0 = _ns_lambda(t_prev_0)
    lambda_t = _ns_lambda(t)
    model_prev_0 = model_prev_list[-1]
    sigma_prev_0, sigma_t = _ns_std(t_prev_0), _ns_std(t)
    alpha_t = _ns_alpha(t)
    h = lambda_t - lambda_prev_0
    rks, D1s = [], []
    for i in range(1, order):
        t_prev_i = t_prev_list[-(i + 1)]
        model_prev_i = model_prev_list[-(i + 1)]
        lambda_prev_i = _ns_lambda(t_prev_i)
        rk = (lambda_prev_i - lambda_prev_0) / h
        rks.append(rk)
        D1s.append((model_prev_i - model_prev_0) / rk)
    rks.append(torch.tensor(1.0, dtype=torch.float64))
    rks = torch.stack(rks)
    R, b = [], []
    hh = -h
    h_phi_1 = torch.expm1(hh)
    h_phi_k = h_phi_1 / hh - 1
    factorial_i = 1
    B_h = hh if variant == "bh1" else torch.expm1(hh)
    for i in range(1, order + 1):
        R.append(torch.pow(rks, i - 1))
        b.append(h_phi_k * factorial_i / B_h)
        factorial_i *= i + 1
        h_phi_k = h_phi_k / hh - 1 / factorial_i
    R, b = torch.stack(R), torch.stack(b)
    if len(D1s) > 0:
        D1s = torch.stack(D1s, dim=1)
        if order == 2:
            rhos_p = torch.tensor([0.5], dtype=torch.float64)
        else:
            rhos_p = torch.linalg.solve(R[:-1, :-1], b[:-1])
    else:
        D1s = None
    if use_corrector:
        rhos_c = torch.tensor([0.5], dtype=torch.float64) if order == 1 else torch.linalg.solve(R, b)
    model_t = None
    x_t_ = sigma_t / sigma_prev_0 * x - alpha_t * h_phi_1 * model_prev_0
    pred_res = torch.einsum("k,bkchw->bchw", rhos_p, D1s) if D1s is not None else 0
    x_t = x_t_ - alpha_t * B_h * pred_res
    if use_corrector:
        model_t = model_fn(x_t, t)
        corr_res = torch.einsum("k,bkchw->bchw", rhos_c[:-1], D1s) if D1s is not None else 0
        D1_t = model_t - model_prev_0
        x_t = x_t_ - alpha_t * B_h * (corr_res + rhos_c[-1] * D1_t)
    return x_t, model_t


def _official_unipc(model_fn, x, timesteps, order, variant, lower_order_final=True):
    """``UniPC.sample`` with ``method='multistep'``, ``denoise_to_zero=False``."""
    steps = len(timesteps) - 1
    t_prev_list = [timesteps[0]]
    model_prev_list = [model_fn(x, timesteps[0])]
    for step in range(1, order):
        t = timesteps[step]
        x, model_x = _official_bh_update(model_fn, variant, x, model_prev_list, t_prev_list, t, step)
        t_prev_list.append(t)
        model_prev_list.append(model_x)
    for step in range(order, steps + 1):
        t = timesteps[step]
        step_order = min(order, steps + 1 - step) if lower_order_final else order
        use_corrector = step != steps
        x, model_x = _official_bh_update(model_fn, variant, x, model_prev_list, t_prev_list, t, step_order,
                                         use_corrector=use_corrector)
        for i in range(order - 1):
            t_prev_list[i] = t_prev_list[i + 1]
            model_prev_list[i] = model_prev_list[i + 1]
        t_prev_list[-1] = t
        if step < steps:
            model_prev_list[-1] = model_x
    return x


@pytest.mark.parametrize(
    "order, variant, lower_order_final",
    [(1, "bh1", True), (2, "bh1", True), (3, "bh1", True), (3, "bh2", True), (3, "bh2", False)],
)
def test_unipc_matches_the_official_update(order, variant, lower_order_final):
    prior = _prior()
    sigmas = _to_sigma_min(7)
    shape = (3, 1, 1, 5)
    ours, _ = UNCONDITIONAL["unipc"](prior, sigmas, shape=shape, generator=seeded(4), order=order, variant=variant,
                                     lower_order_final=lower_order_final)
    x_T = SIGMA_MAX * torch.randn(shape, generator=seeded(4), dtype=torch.float64)
    model_fn = lambda x_vp, t: prior(x_vp / _ns_alpha(t), float(t))  # noqa: E731  (x0 is the same in VP and VE)
    timesteps = list(sigmas)
    x_vp = _official_unipc(model_fn, _ns_alpha(timesteps[0]) * x_T, timesteps, order, variant, lower_order_final)
    torch.testing.assert_close(ours, x_vp / _ns_alpha(timesteps[-1]), rtol=1e-10, atol=1e-10)


# The official DEIS (qsh-zh/deis, commit a30709f, th_deis/multistep.py and sampler.py), rhoAB-DEIS:
# with rho = sigma, psi = 1 and eps_integrand = 1 (HelperSDE), the state v = x_vp / alpha = our x.


def _official_eps_coef(t_start, t_end, ts_poly, coef_idx, num_item):
    """``get_one_coef_per_step_fn``: a left Riemann sum of the Lagrange basis polynomial."""
    dt = (t_end - t_start) / num_item
    t_inter = np.linspace(t_start, t_end, num_item, endpoint=False)
    num = t_inter[:, None] - ts_poly[None]
    denum = ts_poly[coef_idx] - ts_poly
    num[:, coef_idx] = 1.0
    denum[coef_idx] = 1.0
    return np.sum(np.prod(num, axis=1) / np.prod(denum)) * dt


def _official_ab_eps_coef(highest_order, timesteps, order, num_item):
    """``get_ab_eps_coef``: row ``i`` holds step ``i``'s weights, the current eps first."""
    if order == 0:
        return np.array([[_official_eps_coef(timesteps[i], timesteps[i + 1], timesteps[i:i + 1], 0, num_item)]
                         + [0.0] * highest_order for i in range(len(timesteps) - 1)])
    prev_coef = _official_ab_eps_coef(highest_order, timesteps[:order + 1], order - 1, num_item)
    cur_coef = []
    for i in range(len(timesteps) - order - 1):
        ts_poly = timesteps[i:i + order + 1]
        row = [_official_eps_coef(timesteps[order + i], timesteps[order + i + 1], ts_poly, j, num_item)
               for j in np.flip(np.arange(order + 1))]
        cur_coef.append(row + [0.0] * (highest_order - order))
    return np.concatenate([prev_coef, np.array(cur_coef).reshape(-1, highest_order + 1)], axis=0)


def _official_rho_ab(eps_fn, xT, rhos, ab_order, num_item):
    """``get_sampler_rho_ab``: ``ab_order`` is the polynomial degree (our ``order - 1``)."""
    highest_order = ab_order
    eps_coef = _official_ab_eps_coef(highest_order, rhos, ab_order, num_item)
    ab_coef = np.concatenate([np.ones((len(rhos) - 1, 1)), eps_coef], axis=1)
    v, eps_pred = xT, [xT] * highest_order
    for i in range(len(rhos) - 1):
        eps_cur = eps_fn(v, rhos[i])
        x_coef, coefs = ab_coef[i][0], ab_coef[i][1:]
        full_eps_pred = [eps_cur, *eps_pred]
        v = x_coef * v
        for cur_coef, cur_eps in zip(coefs, full_eps_pred):
            v = v + cur_coef * cur_eps
        eps_pred = full_eps_pred[:-1]
    return v


@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_deis_matches_the_official_update(order):
    """Our exact weights against the official Riemann sums (``ab_order = order - 1``): 10,000 points
    (the official default) agree to about 5e-6 relative, 1,000,000 points 100 times closer, so the
    only difference is the quadrature."""
    prior = _prior()
    sigmas = _to_sigma_min(6)
    shape = (3, 1, 1, 5)
    ours, _ = UNCONDITIONAL["deis"](prior, sigmas, shape=shape, generator=seeded(5), order=order)
    x_T = SIGMA_MAX * torch.randn(shape, generator=seeded(5), dtype=torch.float64)
    eps_fn = lambda x, rho: (x - prior(x, float(rho))) / float(rho)  # noqa: E731
    gaps = []
    for num_item in (10_000, 1_000_000):
        official = _official_rho_ab(eps_fn, x_T, sigmas.numpy(), order - 1, num_item)
        gaps.append(float((ours - official).norm() / official.norm()))
    print(f"\nDEIS order {order}: relative gap {gaps[0]:.1e} (1e4 points), {gaps[1]:.1e} (1e6 points)")
    assert gaps[0] < 1e-3
    assert gaps[1] < gaps[0] / 50 or gaps[1] < 1e-12


def test_step_into_zero_returns_the_last_prediction():
    """UniPC's step into sigma = 0 is first order: the data prediction at the last sigma (diffusers'
    final_sigmas_type="zero"), whatever lower_order_final says."""
    prior = _prior()
    seen = []
    callback = lambda state: seen.append(state["x0_hat"])  # noqa: E731
    for lower_order_final in (True, False):
        seen.clear()
        x, info = UNCONDITIONAL["unipc"](prior, sigmas_karras(6, SIGMA_MIN, SIGMA_MAX), shape=(2, 1, 1, 5),
                                         generator=seeded(0), lower_order_final=lower_order_final,
                                         callback=callback)
        assert len(seen) == info["nfe"] == 6
        torch.testing.assert_close(x, seen[-1], rtol=0, atol=0)


def test_unipc_and_deis_reject_bad_arguments(generator):
    prior, sigmas = _prior(), sigmas_karras(5)
    for name, too_high in (("unipc", 4), ("deis", 5)):
        for order in (0, too_high, 2.5, True):
            with pytest.raises(ValueError, match=rf"sample_{name}: order"):
                UNCONDITIONAL[name](prior, sigmas, shape=(2, 1, 1, 5), generator=generator, order=order)
    with pytest.raises(ValueError, match="variant.*bh1.*bh2.*'vary_coeff'"):
        UNCONDITIONAL["unipc"](prior, sigmas, shape=(2, 1, 1, 5), generator=generator, variant="vary_coeff")
    assert math.isfinite(float(UNCONDITIONAL["deis"](prior, sigmas, shape=(2, 1, 1, 5), generator=generator,
                                                     order=3.0)[0].sum()))
