r"""DDRM and DDNM / DDNM+ against transcriptions of their official loops, data consistency, the
conjugate-gradient path, time travel and bad input.

The transcriptions below follow ``bahjat-kawar/ddrm`` (``functions/denoising.py``,
``efficient_generalized_steps``) and ``wyhuai/DDNM`` (``functions/svd_ddnm.py``,
``ddnm_plus_diffusion``; ``functions/svd_operators.py``, ``Inpainting.Lambda`` /
``Lambda_noise``) with the official variable names, in VP coordinates with
:math:`\bar\alpha = 1/(1+\sigma^2)` and an ε-model built from the exact Gaussian prior. Their
``H_funcs`` / ``A_funcs`` are written here independently of :mod:`invdiff.samplers.svd`: the
official inpainting class (kept pixels first, then missing ones) and a general matrix by
``torch.linalg.svd``. Random numbers: both sides draw white noise in pixel space from one
generator in the same order and take its spectral coordinates (the official loops draw
``randn`` directly in the spectral layout, one per case: the same law).
"""

from __future__ import annotations

import math

import pytest
import torch

from invdiff.samplers import SAMPLERS, sample_ddnm, sample_ddrm
from invdiff.samplers.ddrm import travel_schedule
from invdiff.schedules import sigmas_vp
from operators.base import RealToComplex
from operators.inpainting import Inpainting
from operators.mri import MultiCoilMRI
from tests.samplers import gaussian_problem, seeded
from tests.samplers import single_thread  # noqa: F401  (autouse fixture)


# --- the official SVD classes, on flattened vectors ----------------------------------------------


class _InpaintingH:
    """``svd_replacement.Inpainting`` / ``svd_operators.Inpainting``: kept pixels first."""

    def __init__(self, mask):
        flat = mask.flatten()
        self.kept_indices = torch.nonzero(flat != 0).flatten()
        self.missing_indices = torch.nonzero(flat == 0).flatten()
        self.perm = torch.cat([self.kept_indices, self.missing_indices])
        self._singulars = torch.ones(len(self.kept_indices), dtype=torch.float64)

    def singulars(self):
        return self._singulars

    def Vt(self, vec):
        return vec.reshape(vec.shape[0], -1)[:, self.perm]

    def V(self, vec):
        out = torch.zeros_like(vec)
        out[:, self.perm] = vec
        return out

    def Ut(self, vec):  # y holds the kept pixels only
        return vec

    def H(self, x):
        return x.reshape(x.shape[0], -1)[:, self.kept_indices]


class _GeneralH:
    """``svd_replacement.GeneralH``: a dense matrix by its SVD."""

    def __init__(self, M):
        self._U, self._singulars, Vh = torch.linalg.svd(M, full_matrices=True)
        self._V = Vh.T

    def singulars(self):
        return self._singulars

    def Vt(self, vec):
        return vec.reshape(vec.shape[0], -1) @ self._V

    def V(self, vec):
        return vec @ self._V.T

    def Ut(self, vec):
        return vec @ self._U


def _eps_model(prior, sigma_of_at):
    """The ε-network ``model(xt, at)`` of the exact prior: VE input ``xt / sqrt(at)``."""

    def model(xt, at, shape):
        sigma = sigma_of_at(at)
        x_ve = (xt / math.sqrt(at)).reshape(shape)
        return ((x_ve - prior(x_ve, sigma)) / sigma).reshape(xt.shape[0], -1)

    return model


def _official_ddrm(prior, H_funcs, y_0, sigma_0, sigmas, etaB, etaA, etaC, generator, shape, exact_start=True):
    abar = [1 / (1 + float(s) ** 2) for s in sigmas]
    model = _eps_model(prior, lambda at: math.sqrt((1 - at) / at))
    n = shape[0]
    randn = lambda: torch.randn(shape, generator=generator, dtype=torch.float64).reshape(n, -1)  # noqa: E731
    x = H_funcs.Vt(randn())  # the official x = randn, in the spectral layout
    singulars = H_funcs.singulars()
    Sigma = torch.zeros(x.shape[1], dtype=torch.float64)
    Sigma[: singulars.shape[0]] = singulars
    U_t_y = H_funcs.Ut(y_0)
    Sig_inv_U_t_y = U_t_y / singulars[: U_t_y.shape[-1]]
    largest_alphas = abar[0]
    largest_sigmas = math.sqrt(1 - largest_alphas) / math.sqrt(largest_alphas)
    large_singulars_index = torch.where(singulars * largest_sigmas > sigma_0)
    inv_singulars_and_zero = torch.zeros(x.shape[1], dtype=torch.float64)
    inv_singulars_and_zero[large_singulars_index] = sigma_0 / singulars[large_singulars_index]
    inv_singulars_and_zero = inv_singulars_and_zero.view(1, -1)
    init_y = torch.zeros(n, x.shape[1], dtype=torch.float64)
    init_y[:, large_singulars_index[0]] = U_t_y[:, large_singulars_index[0]] / singulars[large_singulars_index].view(1, -1)
    remaining_s = (largest_sigmas**2 - inv_singulars_and_zero**2).clamp_min(0.0).sqrt()
    init_y = init_y + remaining_s * x
    # official: init_y / largest_sigmas; the exact VP state is init_y * sqrt(abar_T) (documented)
    init_y = init_y * math.sqrt(largest_alphas) if exact_start else init_y / largest_sigmas
    xs = [H_funcs.V(init_y)]
    for i in range(len(sigmas) - 1):
        at, at_next = abar[i], abar[i + 1]
        xt = xs[-1]
        et = model(xt, at, shape)
        x0_t = (xt - et * math.sqrt(1 - at)) / math.sqrt(at)
        sigma = math.sqrt(1 - at) / math.sqrt(at)  # noqa: F841  (unused in the official loop too)
        sigma_next = math.sqrt(1 - at_next) / math.sqrt(at_next)
        V_t_x0 = H_funcs.Vt(x0_t)
        SVt_x0 = (V_t_x0 * Sigma)[:, : U_t_y.shape[1]]
        falses = torch.zeros(V_t_x0.shape[1] - singulars.shape[0], dtype=torch.bool)
        cond_before_lite = singulars * sigma_next > sigma_0
        cond_after_lite = singulars * sigma_next < sigma_0
        cond_before = torch.hstack((cond_before_lite, falses))
        cond_after = torch.hstack((cond_after_lite, falses))
        std_nextC = sigma_next * etaC
        sigma_tilde_nextC = math.sqrt(sigma_next**2 - std_nextC**2)
        std_nextA = sigma_next * etaA
        sigma_tilde_nextA = math.sqrt(sigma_next**2 - std_nextA**2)
        diff_sigma_t_nextB = torch.sqrt(sigma_next**2 - sigma_0**2 / singulars[cond_before_lite] ** 2 * (etaB**2))
        noise = H_funcs.Vt(randn()) if sigma_next > 0 else torch.zeros_like(V_t_x0)
        Vt_xt_mod_next = V_t_x0 + sigma_tilde_nextC * H_funcs.Vt(et) + std_nextC * noise
        Vt_xt_mod_next[:, cond_after] = (
            V_t_x0[:, cond_after]
            + sigma_tilde_nextA * ((U_t_y - SVt_x0) / sigma_0)[:, cond_after_lite]
            + std_nextA * noise[:, cond_after]
        )
        Vt_xt_mod_next[:, cond_before] = (
            Sig_inv_U_t_y[:, cond_before_lite] * etaB
            + (1 - etaB) * V_t_x0[:, cond_before]
            + diff_sigma_t_nextB * noise[:, cond_before]
        )
        xt_mod_next = H_funcs.V(Vt_xt_mod_next)
        xs.append(math.sqrt(at_next) * xt_mod_next)
    return xs[-1].reshape(shape)


def _matrix_problem(noise_std=0.2, B=5):
    prior, op, y, _ = gaussian_problem(seed=3, d=6, m=3, noise_std=noise_std)
    return prior, op, y.reshape(1, -1).expand(B, -1).clone(), _GeneralH(op.matrix), (B, 1, 1, 6)


def _inpainting_problem(noise_std=0.2, B=5):
    prior, _, _, _ = gaussian_problem(seed=4, d=6)
    mask = torch.tensor([[1.0, 0.0, 1.0], [1.0, 1.0, 0.0]], dtype=torch.float64)
    op = Inpainting(mask)
    x = prior.sample(B, generator=seeded(11)).reshape(B, 1, 2, 3)
    y = op.A(x) + noise_std * mask * torch.randn(x.shape, generator=seeded(12), dtype=torch.float64)
    prior.shape = (1, 2, 3)
    return prior, op, y, _InpaintingH(mask), (B, 1, 2, 3)


PROBLEMS = {"matrix": _matrix_problem, "inpainting": _inpainting_problem}


def _official_y(H_funcs, op, y):
    return H_funcs.H(y) if isinstance(H_funcs, _InpaintingH) else y


@pytest.mark.parametrize("problem", sorted(PROBLEMS))
@pytest.mark.parametrize("noise_std,eta,eta_b", [(0.2, 0.85, 1.0), (0.2, 0.5, 0.7), (0.0, 0.85, 1.0)])
def test_ddrm_matches_the_official_loop(problem, noise_std, eta, eta_b):
    prior, op, y, H_funcs, shape = PROBLEMS[problem](noise_std)
    sigmas = sigmas_vp(20, spacing="uniform")
    ours, info = sample_ddrm(prior, op, y, sigmas, noise_std=noise_std, eta=eta, eta_b=eta_b, generator=seeded(7))
    ref = _official_ddrm(prior, H_funcs, _official_y(H_funcs, op, y), noise_std, sigmas, eta_b, eta, eta, seeded(7), shape)
    assert info["linear_algebra"] == "svd" and info["nfe"] == 20
    torch.testing.assert_close(ours, ref, rtol=1e-9, atol=1e-9)
    # the official start (divided by sigma_T, not sqrt(1 + sigma_T^2)) changes the result by round-off only
    official = _official_ddrm(prior, H_funcs, _official_y(H_funcs, op, y), noise_std, sigmas, eta_b, eta, eta,
                              seeded(7), shape, exact_start=False)
    torch.testing.assert_close(ours, official, rtol=1e-3, atol=1e-3)


_ONE = torch.ones((), dtype=torch.float64)
"""The official ``* 1.0`` on a boolean mask gives float32; float64 here (the whole loop is float64)."""


def _official_ddnm_plus(prior, H_funcs, y, sigma_y, sigmas, eta, generator, shape, path=None):
    """``ddnm_plus_diffusion`` with ``Lambda`` / ``Lambda_noise`` of the official inpainting class,
    written for any ``H_funcs`` (``ddnm_diffusion`` for ``sigma_y == 0`` is the same with
    ``Lambda`` the identity and DDIM's noise)."""
    abar = [1 / (1 + float(s) ** 2) for s in sigmas]
    model = _eps_model(prior, lambda at: math.sqrt((1 - at) / at))
    n = shape[0]
    randn = lambda: torch.randn(shape, generator=generator, dtype=torch.float64).reshape(n, -1)  # noqa: E731
    singulars_small = H_funcs.singulars()
    U_t_y_len = singulars_small.shape[0]

    def A_pinv(vec):
        temp = torch.zeros(n, shape[1] * shape[2] * shape[3], dtype=torch.float64)
        temp[:, :U_t_y_len] = H_funcs.Ut(vec)[:, :U_t_y_len] / singulars_small
        return H_funcs.V(temp)

    def A(vec):
        return H_funcs.H(vec) if isinstance(H_funcs, _InpaintingH) else (
            H_funcs.Vt(vec)[:, :U_t_y_len] * singulars_small) @ H_funcs._U.T

    def full_singulars(size):
        singulars = torch.zeros(size, dtype=torch.float64)
        singulars[:U_t_y_len] = singulars_small
        inverse_singulars = torch.zeros(size, dtype=torch.float64)
        inverse_singulars[:U_t_y_len] = 1.0 / singulars_small
        return singulars, inverse_singulars

    def Lambda(vec, a, sigma_y, sigma_t, eta):
        out = H_funcs.Vt(vec)
        singulars, inverse_singulars = full_singulars(out.shape[1])
        lambda_t = torch.ones(out.shape[1], dtype=torch.float64)
        if a != 0 and sigma_y != 0:
            change_index = (sigma_t < a * sigma_y * inverse_singulars) * _ONE
            lambda_t = lambda_t * (-change_index + 1.0) + change_index * (
                singulars * sigma_t * (1 - eta**2) ** 0.5 / a / sigma_y)
        return H_funcs.V(out * lambda_t.reshape(1, -1))

    def Lambda_noise(vec, a, sigma_y, sigma_t, eta, epsilon):
        out_vec, out_eps = H_funcs.Vt(vec), H_funcs.Vt(epsilon)
        singulars, inverse_singulars = full_singulars(out_vec.shape[1])
        d1_t = torch.ones(out_vec.shape[1], dtype=torch.float64) * sigma_t * eta
        d2_t = torch.ones(out_vec.shape[1], dtype=torch.float64) * sigma_t * (1 - eta**2) ** 0.5
        if a != 0 and sigma_y != 0:
            change_index = (sigma_t < a * sigma_y * inverse_singulars) * _ONE
            d1_t = d1_t * (-change_index + 1.0) + change_index * sigma_t * eta
            d2_t = d2_t * (-change_index + 1.0)
            change_index = (sigma_t > a * sigma_y * inverse_singulars) * _ONE
            d1_t = d1_t * (-change_index + 1.0) + torch.sqrt(
                change_index * (sigma_t**2 - a**2 * sigma_y**2 * inverse_singulars**2))
            d2_t = d2_t * (-change_index + 1.0)
            change_index = (singulars == 0) * _ONE
            d1_t = d1_t * (-change_index + 1.0) + change_index * sigma_t * eta
            d2_t = d2_t * (-change_index + 1.0) + change_index * sigma_t * (1 - eta**2) ** 0.5
        return H_funcs.V(out_vec * d1_t.reshape(1, -1) + out_eps * d2_t.reshape(1, -1))

    path = path or list(range(len(sigmas)))
    # official: x = randn (VP); the exact VP start of sigma_T * n is sqrt(abar_T) * sigma_T * n
    xs = [math.sqrt(abar[0]) * float(sigmas[0]) * randn()]
    x0_preds = []
    for k, k_next in zip(path, path[1:]):
        at_next = abar[k_next]
        if k_next > k:  # normal sampling
            at = abar[k]
            xt = xs[-1]
            et = model(xt, at, shape)
            x0_t = (xt - et * math.sqrt(1 - at)) / math.sqrt(at)
            sigma_t = math.sqrt(1 - at_next)
            x0_t_hat = x0_t - Lambda(A_pinv(A(x0_t) - y.reshape(n, -1)), math.sqrt(at_next), sigma_y, sigma_t, eta)
            noise = randn() if at_next < 1 else torch.zeros_like(x0_t)
            xt_next = math.sqrt(at_next) * x0_t_hat + Lambda_noise(noise, math.sqrt(at_next), sigma_y, sigma_t, eta, et)
            x0_preds.append(x0_t)
            xs.append(xt_next)
        else:  # time-travel back
            x0_t = x0_preds[-1]
            xs.append(math.sqrt(at_next) * x0_t + randn() * math.sqrt(1 - at_next))
    return (xs[-1] / math.sqrt(abar[path[-1]])).reshape(shape)


@pytest.mark.parametrize("problem", sorted(PROBLEMS))
@pytest.mark.parametrize("noise_std,eta", [(0.2, 0.85), (0.05, 0.3), (0.0, 0.85)])
def test_ddnm_matches_the_official_loop(problem, noise_std, eta):
    prior, op, y, H_funcs, shape = PROBLEMS[problem](noise_std)
    sigmas = sigmas_vp(25, spacing="uniform")
    ours, info = sample_ddnm(prior, op, y, sigmas, noise_std=noise_std, eta=eta, generator=seeded(7))
    ref = _official_ddnm_plus(prior, H_funcs, _official_y(H_funcs, op, y), noise_std, sigmas, eta, seeded(7), shape)
    assert info["linear_algebra"] == "svd" and info["plus"] == (noise_std > 0) and info["nfe"] == 25
    torch.testing.assert_close(ours, ref, rtol=1e-9, atol=1e-9)


def test_ddnm_time_travel_matches_the_official_loop():
    prior, op, y, H_funcs, shape = _inpainting_problem(0.1)
    sigmas = sigmas_vp(20, spacing="uniform")
    ours, info = sample_ddnm(prior, op, y, sigmas, noise_std=0.1, time_travel=True, travel_length=3,
                             travel_repeat=2, generator=seeded(2))
    path = travel_schedule(20, 3, 2)
    ref = _official_ddnm_plus(prior, H_funcs, H_funcs.H(y), 0.1, sigmas, 0.85, seeded(2), shape, path=path)
    torch.testing.assert_close(ours, ref, rtol=1e-9, atol=1e-9)
    assert info["nfe"] == sum(b > a for a, b in zip(path, path[1:])) == 20 + 6 * 3  # 6 travel points (t = 0, 3, ..., 15), 3 levels back once each


def test_travel_schedule_is_repaints_jump_schedule():
    assert travel_schedule(5, 1, 1) == [0, 1, 2, 3, 4, 5]
    # official times for T=6, l=2, r=2: 5 4 3 2 3 4 3 2 1 0 1 2 1 0 -1 (jumps at t = 0, 2)
    official = [5, 4, 3, 2, 3, 4, 3, 2, 1, 0, 1, 2, 1, 0, -1]
    assert travel_schedule(6, 2, 2) == [6 - 1 - t for t in official]


def test_ddnm_noiseless_output_is_data_consistent():
    prior, op, y, _, _ = _inpainting_problem(0.0)
    for linear_algebra in ("svd", "cg"):
        x, _ = sample_ddnm(prior, op, y, sigmas_vp(10), noise_std=0.0, generator=seeded(1),
                           linear_algebra=linear_algebra)
        torch.testing.assert_close(op.A(x), y, rtol=0, atol=1e-9)
    prior, op, y, _, _ = _matrix_problem(0.0)
    x, _ = sample_ddnm(prior, op, y, sigmas_vp(10), noise_std=0.0, generator=seeded(1), time_travel=True,
                       travel_length=2, travel_repeat=2)
    torch.testing.assert_close(op.A(x), y, rtol=0, atol=1e-9)


@pytest.mark.parametrize("sampler", ["ddrm", "ddnm"])
@pytest.mark.parametrize("problem", sorted(PROBLEMS))
def test_cg_path_equals_the_svd_path_for_noiseless_data(sampler, problem):
    """Noiseless data: the range-null steps by op.pinv are exact, so both paths agree."""
    prior, op, y, _, _ = PROBLEMS[problem](0.0)
    run = lambda la: SAMPLERS[sampler](prior, op, y, sigmas_vp(15), noise_std=0.0, generator=seeded(3),  # noqa: E731
                                       linear_algebra=la, cg_tol=1e-12)
    (x_svd, i_svd), (x_cg, i_cg) = run("svd"), run("cg")
    assert (i_svd["linear_algebra"], i_cg["linear_algebra"]) == ("svd", "cg")
    torch.testing.assert_close(x_cg, x_svd, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("sampler", ["ddrm", "ddnm"])
def test_cg_path_on_multicoil_mri(sampler):
    """No closed form: the samplers run on conjugate gradient, the noisy rule through solve_normal."""
    g = seeded(0)
    maps = torch.randn(3, 4, 4, generator=g, dtype=torch.complex128)
    maps = maps / maps.abs().square().sum(0).sqrt()
    mask = torch.zeros(4, 4, dtype=torch.float64)
    mask[:, ::2] = 1.0
    op = MultiCoilMRI(maps, mask) @ RealToComplex()
    prior, _, _, _ = gaussian_problem(seed=5, d=32)
    prior.shape = (2, 4, 4)
    x_true = prior.sample(2, generator=g).reshape(2, 2, 4, 4)
    for noise_std in (0.0, 0.1):
        y = op.A(x_true) + noise_std / math.sqrt(2) * torch.complex(
            torch.randn(2, 3, 4, 4, generator=g, dtype=torch.float64),
            torch.randn(2, 3, 4, 4, generator=g, dtype=torch.float64)) * mask
        x, info = SAMPLERS[sampler](prior, op, y, sigmas_vp(8), noise_std=noise_std, generator=seeded(1))
        assert info["linear_algebra"] == "cg" and x.shape == (2, 2, 4, 4) and x.dtype == torch.float64
        assert bool(torch.isfinite(x).all())
        residual = (op.A(x) - y).abs().square().sum() / y.abs().square().sum()
        if noise_std == 0 and sampler == "ddnm":
            assert float(residual) < 1e-10  # the last step projects onto the data
        else:
            assert float(residual) < 0.5


def test_linear_algebra_svd_needs_a_closed_form():
    maps = torch.ones(1, 4, 4, dtype=torch.complex128)
    op = MultiCoilMRI(maps, torch.ones(4, 4, dtype=torch.float64)) @ RealToComplex()
    prior, _, _, _ = gaussian_problem(seed=5, d=32)
    y = op.A(torch.randn(1, 2, 4, 4, dtype=torch.float64, generator=seeded(0)))
    with pytest.raises(ValueError, match="sample_ddrm: linear_algebra: 'svd' needs a closed-form SVD"):
        sample_ddrm(prior, op, y, sigmas_vp(4), noise_std=0.0, generator=seeded(0), linear_algebra="svd")


@pytest.mark.parametrize(
    "sampler,kwargs,argument",
    [
        ("ddrm", {"eta": 1.2}, "eta"),
        ("ddrm", {"eta": -0.1}, "eta"),
        ("ddrm", {"eta_b": 1.5}, "eta_b"),
        ("ddrm", {"eta_b": float("nan")}, "eta_b"),
        ("ddrm", {"linear_algebra": "lu"}, "linear_algebra"),
        ("ddrm", {"cg_max_iter": 0}, "cg_max_iter"),
        ("ddnm", {"eta": 2.0}, "eta"),
        ("ddnm", {"travel_length": 0, "time_travel": True}, "travel_length"),
        ("ddnm", {"travel_repeat": 1.5}, "travel_repeat"),
        ("ddnm", {"time_travel": "yes"}, "time_travel"),
        ("ddnm", {"cg_tol": -1.0}, "cg_tol"),
        ("ddnm", {"noise_std": -0.1}, "noise_std"),
    ],
)
def test_bad_inputs_name_the_argument(sampler, kwargs, argument):
    prior, op, y, _, _ = _matrix_problem(0.1)
    kwargs = {"noise_std": 0.1, **kwargs}
    with pytest.raises(ValueError, match=rf"sample_{sampler}: {argument}:"):
        SAMPLERS[sampler](prior, op, y, sigmas_vp(5), generator=seeded(0), **kwargs)


def test_nonlinear_operator_is_refused():
    from operators.nonlinear import PhaseRetrieval

    prior, _, _, _, _ = _matrix_problem(0.1)
    with pytest.raises(ValueError, match="sample_ddnm: op: expected a LinearOperator"):
        sample_ddnm(prior, PhaseRetrieval(2.0), torch.ones(2, 1, 1, 6, dtype=torch.float64), sigmas_vp(5),
                    noise_std=0.1, generator=seeded(0), shape=(2, 1, 1, 6))


def _image_prior(shape, seed=6):
    prior, _, _, _ = gaussian_problem(seed=seed, d=math.prod(shape))
    prior.shape = shape
    return prior


@pytest.mark.parametrize("sampler", ["ddrm", "ddnm"])
@pytest.mark.parametrize("kind", ["sr", "single_coil"])
def test_complex_bases_keep_images_real_and_match_cg(sampler, kind):
    """Super-resolution's Fourier basis (Hermitian coordinates) and single-coil MRI through
    RealToComplex: real outputs, and on noiseless data the same samples as the CG path."""
    from operators.mri import SingleCoilMRI
    from operators.superres import SuperResolution

    if kind == "sr":
        op, shape = SuperResolution(2, "bicubic"), (1, 4, 4)
    else:
        mask = torch.zeros(4, 4, dtype=torch.float64)
        mask[:, ::2] = 1.0
        mask[:, 1] = 0.5
        op, shape = SingleCoilMRI(mask) @ RealToComplex(), (2, 4, 4)
    prior = _image_prior(shape)
    y = op.A(prior.sample(2, generator=seeded(1)).reshape(2, *shape))
    run = lambda la: SAMPLERS[sampler](prior, op, y, sigmas_vp(10), noise_std=0.0, generator=seeded(3),  # noqa: E731
                                       linear_algebra=la, cg_tol=1e-12)
    (x_svd, i_svd), (x_cg, _) = run("svd"), run("cg")
    assert i_svd["linear_algebra"] == "svd" and x_svd.dtype == torch.float64 and x_svd.shape == (2, *shape)
    torch.testing.assert_close(x_cg, x_svd, rtol=1e-6, atol=1e-6)
    if sampler == "ddnm":
        torch.testing.assert_close(op.A(x_svd), y, rtol=0, atol=1e-9)
    # noisy data run on the spectral rule too
    x, _ = SAMPLERS[sampler](prior, op, y, sigmas_vp(10), noise_std=0.05, generator=seeded(3))
    assert x.dtype == torch.float64 and bool(torch.isfinite(x).all())


@pytest.mark.parametrize("sampler", ["ddrm", "ddnm"])
@pytest.mark.parametrize("noise_std", [0.0, 0.1])
@pytest.mark.parametrize("shift,tol", [(0.0, 1e-8), (1.0, 1e-4)])
def test_caller_units_give_the_network_units_samples(sampler, noise_std, shift, tol):
    """The data range (module docstring): with the network's images x_n = k x + b, its
    measurement y_n = k y + A b, noise k * sigma_y and levels k * sigma, the caller's samples are
    (x_n - b) / k: the rules compare sigma' with sigma_y / s_i, both scaled by k, and are affine.
    Only the start, pure noise around 0 in either units, differs by b / (k sigma_T), whose trace
    decays over the steps (1e-5 here)."""
    from invdiff.priors.gmm import GaussianMixture

    prior_n, op, y_n, _ = gaussian_problem(seed=8, d=6, m=3, noise_std=0.2)
    k, b = 2.0, shift * (-1.0 + 0.3 * torch.arange(6, dtype=torch.float64))
    prior = GaussianMixture((prior_n.means - b) / k, prior_n.covs / k**2)
    y_n = y_n.reshape(1, -1).expand(3, -1).clone()
    y = (y_n - op.A(b.reshape(1, 1, 1, 6))) / k
    sigmas_n = sigmas_vp(12)
    run = lambda p, yy, s, ns: SAMPLERS[sampler](p, op, yy, s, noise_std=ns, generator=seeded(4))[0]  # noqa: E731
    x_n = run(prior_n, y_n, sigmas_n, k * noise_std)
    x = run(prior, y, sigmas_n / k, noise_std)
    torch.testing.assert_close(x, (x_n - b.reshape(1, 1, 1, 6)) / k, rtol=tol, atol=tol)
