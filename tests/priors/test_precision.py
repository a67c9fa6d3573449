"""Reduced-precision evaluation: ``with_precision`` runs the network in bfloat16/float16 under
autocast, returns ``x``'s dtype, lets gradients through, forwards the prior's attributes, and
stays close to float32 on the shipped MRI prior."""

import math

import pytest
import torch
from torch import nn

from invdiff.priors import precision as precision_module
from invdiff.priors.packaged import load_packaged
from invdiff.priors.precision import PRECISIONS, AutocastDenoiser, with_precision
from invdiff.priors.unet import edm_unet
from tests.priors import TINY_UNET

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
# Relative error bounds, a few units of each format's rounding (2**-8 and 2**-11).
TOLERANCE = {"bf16": 3e-2, "fp16": 4e-3}


def _tiny(generator, device):
    denoiser = edm_unet(in_channels=2, **TINY_UNET)
    with torch.no_grad():
        for p in denoiser.parameters():
            scale = 1 / math.sqrt(p[0].numel()) if p.ndim > 1 else 0.1
            p.copy_(scale * torch.randn(p.shape, generator=generator))
    denoiser.source = "tiny"
    return denoiser.eval().requires_grad_(False).to(device)


def _conv_dtypes(net: nn.Module, run) -> set[torch.dtype]:
    """The dtypes of every ``nn.Conv2d`` output during ``run()``."""
    seen = set()
    handles = [
        m.register_forward_hook(lambda _m, _i, out: seen.add(out.dtype))
        for m in net.modules()
        if isinstance(m, nn.Conv2d)
    ]
    try:
        run()
    finally:
        for h in handles:
            h.remove()
    return seen


def _rel(a, b):
    return float(((a - b).flatten(1).norm(dim=1) / b.flatten(1).norm(dim=1)).max())


def test_names_and_unknown_precision(generator, device):
    assert PRECISIONS == ("fp32", "bf16", "fp16")
    denoiser = _tiny(generator, device)
    with pytest.raises(ValueError) as info:
        with_precision(denoiser, "fp64")
    assert str(info.value) == "precision: expected one of fp32, bf16, fp16, got 'fp64'"
    assert with_precision(denoiser, "fp32") is denoiser
    wrapped = with_precision(denoiser, "bf16")
    assert with_precision(wrapped, "fp32") is denoiser
    rewrapped = with_precision(wrapped, "fp16")
    assert rewrapped.denoiser is denoiser and rewrapped.precision == "fp16"


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_wrapper_forwards_attributes_and_to(precision, generator, device):
    denoiser = _tiny(generator, device)
    wrapped = with_precision(denoiser, precision)
    assert isinstance(wrapped, AutocastDenoiser)
    for name in ("shape", "sigma_min", "sigma_max", "size_multiple", "source"):
        assert getattr(wrapped, name) == getattr(denoiser, name), name
    assert wrapped.size_multiple == 2 and wrapped.source == "tiny"
    assert wrapped.input_size((1, 2, 15, 17)) == (16, 18)
    with pytest.raises(ValueError, match="prior tiny: models 2-channel images"):
        wrapped.input_size((1, 1, 16, 16))
    assert wrapped.to(device) is wrapped
    assert wrapped.to(torch.float64) is wrapped and next(denoiser.parameters()).dtype == torch.float64


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_network_runs_in_low_precision_output_in_x_dtype(precision, generator, device):
    denoiser = _tiny(generator, device)
    wrapped = with_precision(denoiser, precision)
    x = torch.randn(2, 2, 16, 16, generator=generator).to(device)
    sigma = torch.tensor([0.1, 2.0], device=device)
    with torch.no_grad():
        ref = denoiser(x, sigma)
        seen = _conv_dtypes(denoiser, lambda: wrapped(x, sigma))
        out = wrapped(x, sigma)
    assert seen == {DTYPES[precision]}
    assert out.dtype == x.dtype and out.shape == x.shape
    assert _rel(out, ref) < TOLERANCE[precision]
    assert out.dtype == torch.float32 and not torch.equal(out, ref)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_gradients_flow_to_the_input(precision, generator, device):
    """Guidance differentiates through the denoiser: the input gradient exists and is close to fp32's."""
    denoiser = _tiny(generator, device)
    wrapped = with_precision(denoiser, precision)
    x = torch.randn(2, 2, 16, 16, generator=generator).to(device)
    target = torch.randn(2, 2, 16, 16, generator=generator).to(device)
    grads = []
    for d in (denoiser, wrapped):
        xg = x.clone().requires_grad_(True)
        with torch.enable_grad():
            loss = (d(xg, 0.5) - target).square().sum()
            (grad,) = torch.autograd.grad(loss, xg)
        grads.append(grad)
    assert grads[1].dtype == x.dtype and torch.isfinite(grads[1]).all()
    assert _rel(grads[1], grads[0]) < 2 * TOLERANCE[precision]


def test_unsupported_autocast_is_an_error_not_fp32(generator, device, monkeypatch):
    """If torch disables autocast for a dtype/device (it warns and runs fp32), the wrapper refuses."""
    denoiser = _tiny(generator, device)
    monkeypatch.setattr(precision_module.torch, "is_autocast_enabled", lambda *args: False)
    x = torch.randn(1, 2, 16, 16, generator=generator).to(device)
    message = rf"precision fp16: torch .* autocast to torch.float16 on device {device}"
    with pytest.raises(RuntimeError, match=message):
        with_precision(denoiser, "fp16")(x, 0.5)


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_packaged_mri_prior_close_to_fp32(precision, generator, device):
    """On this CPU (AVX2, no bf16/fp16 in oneDNN) a low-precision forward is 20-30 times slower than fp32;
    measured relative errors: bf16 <= 7.2e-3, fp16 <= 8.3e-4 (sigma from 0.02 to 10)."""
    from invdiff.data.phantoms import phantom_batch
    from operators.base import RealToComplex

    denoiser = load_packaged("mri_brain_64").to(device)
    x0 = RealToComplex().AT(phantom_batch(64, range(2), complex_=True)).float().to(device)
    sigma = torch.tensor([0.05, 1.0], device=device)
    x = x0 + sigma.view(-1, 1, 1, 1) * torch.randn(x0.shape, generator=generator).to(device)
    with torch.no_grad():
        ref = denoiser(x, sigma)
        out = with_precision(denoiser, precision)(x, sigma)
    assert out.dtype == torch.float32
    assert _rel(out, ref) < TOLERANCE[precision]


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_cuda_autocast_packaged_prior(precision, generator):
    cuda = torch.device("cuda")
    denoiser = load_packaged("mri_brain_64").to(cuda)
    wrapped = with_precision(denoiser, precision).to(cuda)
    x = torch.randn(2, 2, 64, 72, generator=generator).to(cuda)
    with torch.no_grad():
        ref = denoiser(x, 0.3)
        seen = _conv_dtypes(denoiser, lambda: wrapped(x, 0.3))
        out = wrapped(x, 0.3)
    assert seen == {DTYPES[precision]} and out.dtype == torch.float32
    assert _rel(out, ref) < TOLERANCE[precision]
