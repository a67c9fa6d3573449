"""``torch.compile`` of a denoiser: ``with_compile`` gives the network's output, forwards the
prior's attributes, takes a new noise level without a new graph, lets gradients through, and runs
inside a sampler through the run layer. The tests trace with the ``aot_eager`` backend, which
builds the same graphs as the GPU's ``inductor`` without generating code."""

import pytest
import torch
from torch._dynamo.utils import counters

from invdiff.priors.packaged import load_packaged
from invdiff.priors.precision import CompiledDenoiser, with_compile, with_precision
from invdiff.problems import mri
from invdiff.run import Method, run_method


@pytest.fixture(scope="module")
def prior():
    return load_packaged("mri_brain_64")


def test_modes_and_unwrapping(prior):
    assert with_compile(prior, "off") is prior and with_compile(prior, False) is prior
    compiled = with_compile(prior, True)
    assert isinstance(compiled, CompiledDenoiser) and compiled.mode == "default"
    assert with_compile(compiled, "off") is prior
    assert with_compile(compiled, "max-autotune").denoiser is prior
    with pytest.raises(ValueError, match="compile: expected one of off, default, reduce-overhead, max-autotune"):
        with_compile(prior, "fast")
    assert compiled.shape == prior.shape and compiled.size_multiple == prior.size_multiple
    assert compiled.sigma_max == prior.sigma_max and compiled.source == prior.source
    # the weights are registered once: the compiled function is not a submodule
    assert len(compiled.state_dict()) == len(prior.state_dict())


def test_compiled_output_matches_and_a_new_sigma_reuses_the_graph(prior, generator):
    compiled = CompiledDenoiser(prior, backend="aot_eager")
    x = torch.randn(2, 2, 32, 32, generator=generator)
    counters.clear()
    with torch.no_grad():
        for sigma in (0.5, 0.2, torch.tensor([0.1, 0.3])):
            torch.testing.assert_close(compiled(x, sigma), prior(x, sigma), rtol=1e-5, atol=1e-5)
    assert counters["stats"]["unique_graphs"] == 1


def test_gradients_flow_through_the_compiled_autocast_wrapper(prior, generator):
    compiled = CompiledDenoiser(with_precision(prior, "bf16"), backend="aot_eager")
    x = torch.randn(1, 2, 32, 32, generator=generator, requires_grad=True)
    out = compiled(x, 0.3)
    assert out.dtype == torch.float32
    (grad,) = torch.autograd.grad(out.square().sum(), x)
    assert grad.shape == x.shape and torch.isfinite(grad).all()


def test_run_method_compiles_and_names_a_bad_mode(prior, monkeypatch):
    problem = mri(size=32, coils=4, image="phantom")
    method = Method("dds", sampler="dds", steps=3)
    plain, _ = run_method(method, problem, prior, generator=torch.Generator().manual_seed(0))
    monkeypatch.setattr(CompiledDenoiser.__init__, "__defaults__", ("default", "aot_eager"))
    compiled, info = run_method(method, problem, prior, generator=torch.Generator().manual_seed(0),
                                compile_mode="default")
    torch.testing.assert_close(compiled, plain, rtol=1e-4, atol=1e-4)
    assert info["nfe"] == 3
    with pytest.raises(ValueError, match="compile: expected one of .* or a boolean, got 'yes'"):
        run_method(method, problem, prior, generator=torch.Generator().manual_seed(0), compile_mode="yes")


def test_a_batch_run_compiles_the_prior_and_gives_the_same_rows(monkeypatch, tmp_path):
    from tests.benchmarks.test_batch import _ct_folder, _metric_rows, _run

    data = _ct_folder(tmp_path / "data", volumes=1, slices=2, size=24)
    _run(data, tmp_path / "plain")
    monkeypatch.setattr(CompiledDenoiser.__init__, "__defaults__", ("default", "aot_eager"))
    calls = []
    forward = CompiledDenoiser.forward
    monkeypatch.setattr(CompiledDenoiser, "forward", lambda self, x, sigma: calls.append(1) or forward(self, x, sigma))
    _run(data, tmp_path / "compiled", compile_mode="default")
    assert calls
    plain, compiled = _metric_rows(tmp_path / "plain"), _metric_rows(tmp_path / "compiled")
    assert [r["method"] for r in compiled] == [r["method"] for r in plain]
    for a, b in zip(plain, compiled):
        assert b["psnr"] == pytest.approx(a["psnr"], abs=1e-3), (a, b)


@pytest.mark.gpu
@pytest.mark.parametrize("mode", ["default", "reduce-overhead"])
def test_inductor_on_cuda_matches_the_network_in_a_sampler(prior, mode):
    cuda = torch.device("cuda")
    denoiser = prior.to(cuda)
    compiled = with_compile(denoiser, mode)
    x = torch.randn(2, 2, 64, 64, generator=torch.Generator().manual_seed(0)).to(cuda)
    with torch.no_grad():
        outs = [compiled(x, sigma) for sigma in (0.5, 0.2)]  # the first is overwritten in CUDA-graph memory
        refs = [denoiser(x, sigma) for sigma in (0.5, 0.2)]
    for out, ref in zip(outs, refs):
        torch.testing.assert_close(out, ref, rtol=1e-3, atol=1e-3)
    problem = mri(size=64, coils=4, image="phantom")
    method = Method("dds", sampler="dds", steps=3)
    plain, _ = run_method(method, problem, prior, generator=torch.Generator().manual_seed(0), device=cuda)
    fast, _ = run_method(method, problem, prior, generator=torch.Generator().manual_seed(0), device=cuda,
                         compile_mode=mode)
    torch.testing.assert_close(fast, plain, rtol=1e-3, atol=1e-3)
