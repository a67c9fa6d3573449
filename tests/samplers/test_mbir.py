"""DiffusionMBIR: the TV-z ADMM pieces against dense references, guards, chunking, and a volume
where coupling the slices along z beats slice-by-slice DDS."""

from __future__ import annotations

import pytest
import torch

from invdiff.priors.phantom import phantom_gaussian
from invdiff.samplers import SAMPLERS, sample_dds
from invdiff.samplers.mbir import (
    admm_tv_z_step,
    sample_dds3d,
    sample_diffusion_mbir,
    sample_diffusion_mbir_paper,
    soft_threshold,
)
from invdiff.problems.volumes import brain_volume, ct3d, phantom_volume
from invdiff.schedules import sigmas_loglinear, sigmas_vp
from operators import FiniteDifference, Matrix, ParallelBeamCT, PhaseRetrieval, sparse_view_angles
from tests.samplers import gaussian_problem, seeded
from tests.samplers import single_thread  # noqa: F401  (autouse fixture)


@pytest.fixture(scope="module")
def small_ct():
    """8 slices of 32 x 32, 8 views, and the phantom Gaussian prior at 32 x 32."""
    task = ct3d(size=32, depth=8, views=8, noise_std=0.1)
    prior = phantom_gaussian(32, n_train=300, rank=64)
    return task, prior


def _dense(fn, shape):
    n = torch.Size(shape).numel()
    basis = torch.eye(n, dtype=torch.float64).reshape(n, *shape)
    return torch.stack([fn(e).reshape(-1) for e in basis], 1)


diff_z = FiniteDifference(0).A


def test_registered():
    assert SAMPLERS["diffusion_mbir"] is sample_diffusion_mbir
    assert SAMPLERS["diffusion_mbir_paper"] is sample_diffusion_mbir_paper
    assert SAMPLERS["dds3d"] is sample_dds3d


def test_soft_threshold():
    v = torch.tensor([-2.0, -0.5, 0.0, 0.3, 1.5])
    torch.testing.assert_close(soft_threshold(v, 0.5), torch.tensor([-1.5, 0.0, 0.0, 0.0, 1.0]))
    torch.testing.assert_close(soft_threshold(v, 0.0), v)


def test_admm_x_update_solves_its_normal_equations():
    """Converged CG equals a dense solve of (A^T A + rho D_z^T D_z) x = A^T y + rho D_z^T (z - u);
    z and u follow the soft threshold and the dual update."""
    g = seeded(1)
    shape = (3, 1, 6, 6)
    op = ParallelBeamCT((6, 6), sparse_view_angles(8))  # enough views for a non-singular system
    y = op.A(torch.rand(shape, generator=g, dtype=torch.float64))
    x0 = torch.randn(shape, generator=g, dtype=torch.float64)
    z = 0.1 * torch.randn(2, 1, 6, 6, generator=g, dtype=torch.float64)
    u = 0.1 * torch.randn(2, 1, 6, 6, generator=g, dtype=torch.float64)
    rho, lam = 0.7, 0.05
    x, z_new, u_new, info = admm_tv_z_step(op.normal, op.AT(y), x0, z, u, rho=rho, lam=lam, cg_steps=500)
    M = _dense(op.normal, shape) + rho * _dense(FiniteDifference(0).normal, shape)
    b = (op.AT(y) + rho * FiniteDifference(0).AT(z - u)).reshape(-1)
    assert float((M @ x.reshape(-1) - b).norm() / b.norm()) < 1e-5  # CG's stopping tolerance is 1e-6
    torch.testing.assert_close(x.reshape(-1), torch.linalg.solve(M, b), rtol=1e-3, atol=1e-3)
    assert info["residual"] < 1e-5
    torch.testing.assert_close(z_new, soft_threshold(diff_z(x) + u, lam / rho))
    torch.testing.assert_close(u_new, u + diff_z(x) - z_new)


def test_errors_name_the_problem(small_ct):
    task, prior = small_ct
    sigmas = sigmas_vp(3)
    with pytest.raises(ValueError, match="sample_diffusion_mbir.*dps or reddiff"):
        sample_diffusion_mbir(prior, PhaseRetrieval(2.0), task.y, sigmas, noise_std=0.1, generator=seeded(0),
                              shape=task.x_true.shape)
    with pytest.raises(ValueError, match="volume.*task=ct3d or task=mri3d.*dds/dps"):
        sample_diffusion_mbir(prior, task.op, task.y[:1], sigmas, noise_std=0.1, generator=seeded(0))
    for bad in (0, 1.5, True, -2):
        with pytest.raises(ValueError, match="slice_batch"):
            sample_diffusion_mbir(prior, task.op, task.y, sigmas, noise_std=0.1, generator=seeded(0), slice_batch=bad)


@pytest.mark.parametrize("decomposed", [False, True])
def test_chunking_and_seed_do_not_change_the_output(small_ct, decomposed):
    task, prior = small_ct
    run = lambda slice_batch: sample_diffusion_mbir(  # noqa: E731
        prior, task.op, task.y, sigmas_vp(6), noise_std=0.1, generator=seeded(3), slice_batch=slice_batch,
        decomposed=decomposed,
    )
    x1, info1 = run(1)
    x8, info8 = run(8)
    x3, _ = run(3)
    again, _ = run(8)
    torch.testing.assert_close(x1, x8, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(x3, x8, rtol=1e-5, atol=1e-5)
    assert torch.equal(again, x8)
    assert info1["nfe"] == info8["nfe"] == 6
    assert {"cg_residual", "tv_z", "op_norm", "admm_primal"} <= set(info8)


def test_decomposed_is_dds3d(small_ct):
    task, prior = small_ct
    common = dict(noise_std=0.1, generator=seeded(3), lam=1e-3)
    x_old, info = sample_diffusion_mbir(prior, task.op, task.y, sigmas_vp(4), decomposed=True, **common)
    common["generator"] = seeded(3)
    x_new, _ = sample_dds3d(prior, task.op, task.y, sigmas_vp(4), **common)
    assert torch.equal(x_old, x_new) and info["decomposed"] and info["admm_cg"] == 5


def _official_pc_admm_tv(score, A, AT, y, discrete_sigmas, snr, rho, lamb, generator, shape, chunk,
                         final_consistency=True, eps=1e-5):
    """``get_pc_radon_ADMM_TV_vol`` (HJ-harry/DiffusionMBIR 592ea29) with ``ReverseDiffusionPredictor``,
    ``LangevinCorrector`` (``n_steps=1``) and ``VESDE.discretize``, transcribed; ``score(x, sigma)``
    takes the grid's sigma (see the sampler's docstring), ``torch.randn`` draws from ``generator``."""
    N = len(discrete_sigmas)
    randn_like = lambda x: torch.randn(x.shape, generator=generator, dtype=x.dtype)  # noqa: E731

    def _Dz(x):
        y = torch.zeros_like(x)
        y[:-1] = x[1:]
        y[-1] = x[0]
        return y - x

    def _DzT(x):
        y = torch.zeros_like(x)
        y[:-1] = x[1:]
        y[-1] = x[0]
        tempt = -(y - x)
        difft = tempt[:-1]
        y[1:] = difft
        y[0] = x[-1] - x[0]
        return y

    def shrink(src, lamb):
        return torch.sign(src) * torch.max(torch.abs(src) - lamb, torch.zeros_like(src))

    def A_cg(x):
        return AT(A(x)) + rho * _DzT(_Dz(x))

    def CG(A_fn, b_cg, x, n_inner=10):
        r = b_cg - A_fn(x)
        p = r
        rs_old = torch.matmul(r.view(1, -1), r.view(1, -1).T)
        for i in range(n_inner):
            Ap = A_fn(p)
            a = rs_old / torch.matmul(p.view(1, -1), Ap.view(1, -1).T)
            x += a * p
            r -= a * Ap
            rs_new = torch.matmul(r.view(1, -1), r.view(1, -1).T)
            if torch.sqrt(rs_new) < 1e-10:
                break
            p = r + (rs_new / rs_old) * p
            rs_old = rs_new
        return x

    del_z = torch.zeros(shape, dtype=torch.float64)
    udel_z = torch.zeros(shape, dtype=torch.float64)
    x = torch.randn(shape, generator=generator, dtype=torch.float64) * discrete_sigmas[-1]
    norm_const = AT(A(torch.ones_like(x)))
    timesteps = torch.linspace(1, eps, N)
    for i in range(N):
        timestep = int((timesteps[i] * (N - 1)).long())
        sigma = discrete_sigmas[timestep]
        adjacent_sigma = 0.0 if timestep == 0 else discrete_sigmas[timestep - 1]
        x_agg = []
        for xb in x.chunk(len(x) // chunk + 1, dim=0):
            # ReverseDiffusionPredictor.update_fn
            G = torch.sqrt(torch.tensor(sigma**2 - adjacent_sigma**2, dtype=torch.float64))
            rev_f = torch.zeros_like(xb) - G**2 * score(xb, sigma)
            z = randn_like(xb)
            xb = (xb - rev_f) + G * z
            # LangevinCorrector.update_fn
            grad = score(xb, sigma)
            noise = randn_like(xb)
            grad_norm = torch.norm(grad.reshape(grad.shape[0], -1), dim=-1).mean()
            noise_norm = torch.norm(noise.reshape(noise.shape[0], -1), dim=-1).mean()
            step_size = (snr * noise_norm / grad_norm) ** 2 * 2 * 1.0
            xb = xb + step_size * grad + torch.sqrt(step_size * 2) * noise
            x_agg.append(xb)
        x = torch.cat(x_agg, dim=0)
        # CS_routine(x, ATy, niter=1)
        b_cg = AT(y) + rho * (_DzT(del_z) - _DzT(udel_z))
        x = CG(A_cg, b_cg, x, n_inner=1)
        del_z = shrink(_Dz(x) + udel_z, lamb / rho)
        udel_z = _Dz(x) - del_z + udel_z
    if final_consistency:
        x = x + AT(y - A(x)) / norm_const
    return x


def test_paper_form_matches_the_official_predictor_corrector_loop():
    """Five 'slices' of a 6-dim Gaussian prior (closed-form denoiser), 2000 steps would be the paper;
    40 here, chunks of 2 (batchfy(x, 2) on 5 slices: 3 chunks of 2, 2, 1), unnormalised data term."""
    prior, op, y, _ = gaussian_problem(seed=4, d=6, m=4, noise_std=0.1)
    op = Matrix(op.matrix.abs(), (1, 1, 6))  # A^T A 1 > 0, where the final step is defined
    ys = y.reshape(1, -1) + 0.05 * torch.randn(5, 4, generator=seeded(1), dtype=torch.float64)
    sigmas = sigmas_loglinear(40, sigma_min=0.01, sigma_max=20.0)
    discrete = [float(s) for s in sigmas[:-1].flip(0)]
    ours, info = sample_diffusion_mbir_paper(prior, op, ys, sigmas, noise_std=0.1, generator=seeded(7), snr=0.16,
                                             slice_batch=2, rho=0.5, lam=0.04, op_norm=1.0)
    score = lambda x, s: (prior(x, s) - x) / s**2  # noqa: E731
    ref = _official_pc_admm_tv(score, op.A, op.AT, ys, discrete, 0.16, 0.5, 0.04, seeded(7), (5, 1, 1, 6), chunk=2)
    torch.testing.assert_close(ours, ref, rtol=1e-8, atol=1e-10)
    assert info["nfe"] == 80 and info["circular"] and info["final_consistency"]


def test_tv_z_beats_slice_by_slice_dds_on_a_smooth_volume(small_ct):
    """8 slices, 8 views: coupling the slices gains over DDS with the same prior and steps."""
    task, prior = small_ct
    sigmas = sigmas_vp(30)
    common = dict(noise_std=task.noise_std, generator=seeded(0), shape=task.x_true.shape)
    x_dds, _ = sample_dds(prior, task.op, task.y, sigmas, **common)
    common["generator"] = seeded(0)
    x_mbir, info = sample_diffusion_mbir(prior, task.op, task.y, sigmas, decomposed=True, lam=1e-3, **common)
    psnr_dds, psnr_mbir = task.score(x_dds)["psnr"], task.score(x_mbir)["psnr"]
    print(f"\nDDS {psnr_dds:.2f} dB, DiffusionMBIR {psnr_mbir:.2f} dB, TV-z {info['tv_z']:.4f}")
    assert psnr_mbir > psnr_dds + 0.5


def test_volumes_are_continuous_along_z():
    x = phantom_volume(32, 8, 0)
    assert x.shape == (8, 32, 32) and 0 <= float(x.min()) and float(x.max()) <= 1
    rel = (diff_z(x).flatten(1).norm(dim=1) / x[1:].flatten(1).norm(dim=1)).max()
    assert rel < 0.3
    b = brain_volume(32, depth=4).abs()
    assert b.shape == (4, 32, 32)
    assert (diff_z(b).flatten(1).norm(dim=1) / b[1:].flatten(1).norm(dim=1)).max() < 0.15


def test_reconstruct_script_runs_on_a_tiny_volume(tmp_path):
    """``scripts/reconstruct.py task=mri3d sampler=diffusion_mbir`` at 16 x 16, 4 slices (complex
    phantom volume and prior; ct3d takes the same path with a real one)."""
    task = "mri3d"
    import json
    import subprocess
    import sys
    from pathlib import Path

    import numpy as np

    root = Path(__file__).resolve().parents[2]
    args = [sys.executable, "scripts/reconstruct.py", f"task={task}", "sampler=diffusion_mbir", "sampler.steps=4",
            "task.size=16", "task.depth=4", "task.image=phantom", "prior=phantom", "prior.n_train=60",
            "prior.rank=16", f"prior.complex_={str(task == 'mri3d').lower()}", "progress=false",
            f"hydra.run.dir={tmp_path / 'run'}", f"data_root={tmp_path / 'data'}"]
    proc = subprocess.run(args, cwd=root, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["nfe"] == 4 and np.isfinite(metrics["reconstruction"]["psnr"])
    assert np.load(tmp_path / "run" / "reconstruction.npy").shape[:1] == (4,)
