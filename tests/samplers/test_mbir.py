"""DiffusionMBIR: the TV-z ADMM pieces against dense references, guards, chunking, and a volume
where coupling the slices along z beats slice-by-slice DDS."""

from __future__ import annotations

import pytest
import torch

from invdiff.priors.phantom import phantom_gaussian
from invdiff.samplers import SAMPLERS, sample_dds
from invdiff.samplers.common import operator_norm
from invdiff.samplers.mbir import (
    admm_tv_z_step,
    diff_z,
    diff_z_adjoint,
    sample_diffusion_mbir,
    soft_threshold,
)
from invdiff.problems.volumes import brain_volume, ct3d, phantom_volume
from invdiff.schedules import sigmas_vp
from operators import ParallelBeamCT, PhaseRetrieval, sparse_view_angles
from tests.samplers import seeded
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


def test_registered():
    assert SAMPLERS["diffusion_mbir"] is sample_diffusion_mbir


def test_diff_z_adjoint_is_its_transpose():
    g = seeded(0)
    x, v = torch.randn(5, 2, 3, 4, generator=g, dtype=torch.float64), torch.randn(4, 2, 3, 4, generator=g, dtype=torch.float64)
    torch.testing.assert_close((diff_z(x) * v).sum(), (x * diff_z_adjoint(v)).sum())
    D = _dense(diff_z, (4, 1, 1, 1))
    torch.testing.assert_close(D, torch.tensor([[-1.0, 1, 0, 0], [0, -1, 1, 0], [0, 0, -1, 1]], dtype=torch.float64))


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
    M = _dense(op.normal, shape) + rho * _dense(lambda v: diff_z_adjoint(diff_z(v)), shape)
    b = (op.AT(y) + rho * diff_z_adjoint(z - u)).reshape(-1)
    assert float((M @ x.reshape(-1) - b).norm() / b.norm()) < 1e-5  # CG's stopping tolerance is 1e-6
    torch.testing.assert_close(x.reshape(-1), torch.linalg.solve(M, b), rtol=1e-3, atol=1e-3)
    assert info["residual"] < 1e-5
    torch.testing.assert_close(z_new, soft_threshold(diff_z(x) + u, lam / rho))
    torch.testing.assert_close(u_new, u + diff_z(x) - z_new)


def test_operator_norm_matches_the_largest_eigenvalue():
    op = ParallelBeamCT((6, 6), sparse_view_angles(3))
    top = torch.linalg.eigvalsh(_dense(op.normal, (1, 1, 6, 6)))[-1]
    assert operator_norm(op.normal, torch.zeros(2, 1, 6, 6, dtype=torch.float64), iterations=200) == pytest.approx(float(top), rel=1e-3)


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
