"""The run layer: the unknown's size comes from the problem, the prior says whether and where it runs."""

from __future__ import annotations

import pytest
import torch

from invdiff.priors.gmm import GaussianMixture
from invdiff.priors.packaged import load_packaged
from invdiff.priors.unet import edm_unet, save_prior
from invdiff.problems import Problem, mri
from invdiff.run import Method, reconstruct, resolve_device, run_method
from invdiff.samplers import sample_dds
from operators import CenterCrop, MultiCoilMRI, RealToComplex, fastmri_mask


# the packaged 64 x 64 priors run here on small images on purpose
pytestmark = pytest.mark.filterwarnings("ignore:prior .* trained at:UserWarning")

DDS = Method("dds", sampler="dds", steps=3)


def _mri_problem(H: int, W: int, batch: int = 1) -> Problem:
    """Multi-coil MRI of a complex blob on an H x W grid (no target)."""
    g = torch.Generator().manual_seed(0)
    maps = torch.randn((4, H, W), dtype=torch.complex64, generator=g) * 0.1 + 0.5
    op = MultiCoilMRI(maps, fastmri_mask((H, W), 4, 0.2, kind="equispaced", seed=0)) @ RealToComplex()
    x = torch.randn((batch, 2, H, W), generator=g) * 0.1
    return Problem("mri", op, op.A(x), 0.01, (batch, 2, H, W), is_complex=True)


def test_a_network_prior_runs_at_the_problems_size_padded_to_its_multiple():
    prior = load_packaged("mri_brain_64")
    assert prior.size_multiple == 8
    problem = _mri_problem(20, 30)  # runs at 24 x 32
    x, info = run_method(DDS, problem, prior, generator=torch.Generator().manual_seed(1))
    assert x.shape == (1, 2, 20, 30) and info["nfe"] == 3
    # the same as DDS on the padded unknown through op @ CenterCrop, then cropped
    padded_op = problem.op @ CenterCrop((24, 32), (20, 30))
    ref, _ = sample_dds(prior, padded_op, problem.y, DDS.sigmas(prior), noise_std=problem.noise_std,
                        generator=torch.Generator().manual_seed(1), shape=(1, 2, 24, 32))
    torch.testing.assert_close(x, CenterCrop((24, 32), (20, 30)).A(ref))


def test_a_size_that_fits_runs_unpadded_and_matches_the_sampler_called_directly():
    prior = load_packaged("mri_brain_64")
    problem = _mri_problem(24, 40, batch=2)
    x, _ = run_method(DDS, problem, prior, generator=torch.Generator().manual_seed(2))
    ref, _ = sample_dds(prior, problem.op, problem.y, DDS.sigmas(prior), noise_std=problem.noise_std,
                        generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(x, ref)


def test_a_checkpoint_whose_channels_do_not_fit_names_the_file(tmp_path):
    path = tmp_path / "grey.safetensors"
    save_prior(path, edm_unet(in_channels=1, channels=16, channel_mult=(1, 2), num_blocks=1, attn_resolutions=(),
                              img_resolution=16, num_groups=8))
    from invdiff.priors.unet import load_prior

    with pytest.raises(ValueError, match=rf"prior {path}: models 1-channel images.*\(1, 2, 20, 30\) with 2 channels"):
        run_method(DDS, _mri_problem(20, 30), load_prior(path), generator=torch.Generator())


def test_a_fixed_size_prior_at_another_size_names_both_sizes():
    d = 16 * 16
    gmm = GaussianMixture(torch.zeros(1, d), torch.eye(d)[None], shape=(2, 8, 16))
    with pytest.raises(ValueError, match=r"runs only at its fixed size 8 x 16.*of size 20 x 30"):
        run_method(DDS, _mri_problem(20, 30), gmm, generator=torch.Generator())


def test_bad_calls_are_named():
    problem = _mri_problem(16, 16)
    with pytest.raises(ValueError, match=r"dds: the sampler 'dds' needs a prior"):
        run_method(DDS, problem, None, generator=torch.Generator())
    with pytest.raises(ValueError, match="precision: expected one of fp32, bf16, fp16, got 'fp8'"):
        run_method(DDS, problem, load_packaged("mri_brain_64"), generator=torch.Generator(), precision="fp8")
    with pytest.raises(ValueError, match=r"methods\.m: expected exactly one of 'sampler' and 'baseline'"):
        Method("m", sampler="dds", baseline="cg")
    with pytest.raises(ValueError, match=r"x_shape: expected \(B, C, H, W\) with B = 1"):
        Problem("p", problem.op, problem.y, 0.1, (2, 2, 16, 16))


def test_baselines_ignore_the_prior_and_auto_is_the_cpu_here():
    problem = _mri_problem(16, 20)
    x, info = run_method(Method("cg", baseline="cg"), problem, generator=torch.Generator())
    assert x.shape == problem.x_shape and info["nfe"] == 0
    if not torch.cuda.is_available():
        assert resolve_device("auto") == torch.device("cpu")


def test_reconstruct_scores_a_simulated_task_and_leaves_a_measurement_without_reference_unscored():
    prior = load_packaged("mri_brain_64")
    simulated = reconstruct(mri(size=16, image="phantom"), prior, DDS, seed=0)
    assert set(simulated.metrics["reconstruction"]) == {"psnr", "ssim", "nmse"}
    assert simulated.metrics["baseline"] == "cg" and simulated.metrics["shape"] == [1, 2, 16, 16]
    measured = reconstruct(_mri_problem(16, 16), prior, DDS, seed=0)
    assert measured.metrics["reconstruction"] is None and measured.metrics["baseline_metrics"] is None


ADS_FAST = Method("ads", sampler="ads", steps=4, schedule="karras",
                  params={"num_particles": 2, "guidance": "dds", "cg_steps": 3, "window": [0.0, 1.0]})


def test_an_active_mri_task_measures_every_line_with_the_equispaced_budget():
    from operators import line_budget

    problem = mri(size=32, coils=2, mask_kind="active", image="phantom", seed=3)
    assert problem.acquisition == {"budget": line_budget((32, 32), 4, seed=3)[0], "start": 3}
    assert bool((problem.op.ops[0].mask == 1).all())
    fixed = mri(size=32, coils=2, image="phantom", seed=3)
    assert fixed.acquisition is None and problem.noise_std == fixed.noise_std


def test_only_active_methods_run_on_an_active_problem_and_the_baseline_uses_their_lines():
    problem = mri(size=32, coils=2, mask_kind="active", image="phantom", seed=3)
    prior = load_packaged("mri_brain_64")
    with pytest.raises(ValueError, match=r"dds: the problem acquires its measurements actively \(budget 8\); "
                                         r"'dds' reconstructs from fixed ones; use an active sampler \(ads\)"):
        run_method(Method("dds", sampler="dds", steps=3), problem, prior, generator=torch.Generator().manual_seed(0))
    result = reconstruct(problem, prior, ADS_FAST, seed=0)
    acquisition = result.metrics["acquisition"]
    assert acquisition["unit"] == "lines" and len(acquisition["order"][0]) == 8
    fixed = problem.acquired(result.info["mask"], "lines")
    assert fixed.acquisition is None and fixed.op.ops[0].mask[0, 0].tolist() == result.info["mask"][0].float().tolist()
    baseline, _ = run_method(Method("cg", baseline="cg", params={"max_iter": 30}), fixed,
                             generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(result.x_baseline, baseline)


def test_an_active_ct_problem_chooses_among_candidate_views():
    from invdiff.problems import ct

    problem = ct(size=32, views=8, image="phantom", candidate_views=360)
    assert problem.acquisition == {"budget": 8, "start": None} and problem.y.shape[-2] == 360
    mask = torch.zeros(1, 360, dtype=torch.bool)
    mask[0, ::45] = True
    fixed = problem.acquired(mask, "views")  # the projector over the 8 views, for FBP
    assert fixed.op.angles.numel() == 8 and fixed.y.shape[-2] == 8
    torch.testing.assert_close(fixed.y, problem.y[:, :, ::45])
    with pytest.raises(ValueError, match=r"candidate_views: expected an integer >= views \(8\), got 4"):
        ct(size=32, views=8, image="phantom", candidate_views=4)
