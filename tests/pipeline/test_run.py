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
