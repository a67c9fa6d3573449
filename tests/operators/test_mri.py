"""MRI operators against numpy references: centred FFTs, SENSE on every code path, coil tools, ESPIRiT."""

import numpy as np
import pytest
import torch

from operators.base import adjointness_error
from operators.masks import fastmri_mask
from operators.mri import MultiCoilMRI, SingleCoilMRI, coil_combine, espirit_maps, fft2c, ifft2c, rss

AXES = (-2, -1)
SIZES = [(25, 19), (24, 18), (16, 33)]
COMPLEX = [torch.complex64, torch.complex128]
TOL = {torch.complex64: 2e-5, torch.complex128: 1e-12}


def np_fft2c(x: np.ndarray) -> np.ndarray:
    return np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(x, axes=AXES), norm="ortho"), axes=AXES)


def np_ifft2c(k: np.ndarray) -> np.ndarray:
    return np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(k, axes=AXES), norm="ortho"), axes=AXES)


def np_sense(maps: np.ndarray, mask: np.ndarray):
    """The plain SENSE definition. ``maps`` ``(B, C, H, W)``, ``mask`` ``(B, H, W)`` (``B`` may be 1)."""
    m = mask[:, None]

    def A(x):
        return m * np_fft2c(maps * x)

    def AT(y):
        return (maps.conj() * np_ifft2c(m * y)).sum(1, keepdims=True)

    return A, AT


def crandn(shape, rng: np.random.Generator) -> np.ndarray:
    return rng.standard_normal(shape) + 1j * rng.standard_normal(shape)


def rel(a, b) -> float:
    a, b = np.asarray(a), np.asarray(b)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def make_mask(kind: str, H: int, W: int, rng: np.random.Generator, batch: int = 1) -> np.ndarray:
    """``(batch, H, W)`` masks that steer MultiCoilMRI onto each of its paths."""
    out = []
    for _ in range(batch):
        if kind == "columns":  # fastMRI-like 0/1 lines: the normal operator needs no FFT along H
            m = np.tile(rng.random(W) < 0.3, (H, 1))
        elif kind == "columns_weighted":  # sampled columns, weights varying along H: 2D FFTs throughout
            m = rng.random((H, W)) * (rng.random(W) < 0.3)
        elif kind == "rows":  # weighted rows: the normal operator needs no FFT along W
            m = np.tile((rng.random(H) < 0.3)[:, None] * (1 + rng.random((H, 1))), (1, W))
        elif kind == "2d":
            m = rng.random((H, W)) < 0.4
        else:
            raise AssertionError(kind)
        out.append(m.astype(np.float64))
    return np.stack(out)


# 1. Centred FFTs.


@pytest.mark.parametrize("dtype", COMPLEX, ids=str)
@pytest.mark.parametrize("size", SIZES + [(1, 7), (8, 8)], ids=str)
def test_fft2c_matches_numpy(size, dtype):
    rng = np.random.default_rng(0)
    x = crandn((2, 3, *size), rng)
    xt = torch.from_numpy(x).to(dtype)
    tol = TOL[dtype]
    assert rel(fft2c(xt).numpy(), np_fft2c(xt.numpy())) < tol
    assert rel(ifft2c(xt).numpy(), np_ifft2c(xt.numpy())) < tol
    assert rel(ifft2c(fft2c(xt)).numpy(), x) < tol
    assert fft2c(xt).dtype == dtype


def test_fft2c_dc_at_centre():
    H, W = 7, 6
    k = fft2c(torch.ones(H, W, dtype=torch.complex128))
    assert abs(k[H // 2, W // 2] - np.sqrt(H * W)) < 1e-12
    assert float(k.abs().sum()) == pytest.approx(np.sqrt(H * W))


# 2. SENSE on every path against the plain definition.


@pytest.mark.parametrize("dtype", COMPLEX, ids=str)
@pytest.mark.parametrize("size", SIZES, ids=str)
@pytest.mark.parametrize(
    "kind, filter_dim",
    [("columns", -1), ("columns_weighted", None), ("rows", -2), ("2d", None)],
)
def test_multicoil_matches_definition(kind, filter_dim, size, dtype):
    rng = np.random.default_rng(1)
    H, W = size
    maps, mask = crandn((1, 4, H, W), rng), make_mask(kind, H, W, rng)
    x, y = crandn((2, 1, H, W), rng), crandn((2, 4, H, W), rng)
    op = MultiCoilMRI(torch.from_numpy(maps[0]).to(dtype), torch.from_numpy(mask[0]))
    assert op._sampling.filter_dim == filter_dim, "the normal operator's 1D path is covered"
    A, AT = np_sense(maps, mask)
    xt, yt = torch.from_numpy(x).to(dtype), torch.from_numpy(y).to(dtype)
    tol = TOL[dtype]
    assert rel(op.A(xt).numpy(), A(x)) < tol
    assert rel(op.AT(yt).numpy(), AT(y)) < tol
    assert rel(op.normal(xt).numpy(), AT(A(x))) < tol
    assert op.A(xt).dtype == op.AT(yt).dtype == dtype


@pytest.mark.parametrize("kind", ["columns", "columns_weighted", "rows", "2d"])
def test_multicoil_per_sample_matches_definition(kind):
    """Per-sample masks (different lines per sample) and per-sample maps."""
    rng = np.random.default_rng(2)
    H, W = 25, 19
    maps, mask = crandn((3, 2, H, W), rng), make_mask(kind, H, W, rng, batch=3)
    x, y = crandn((3, 1, H, W), rng), crandn((3, 2, H, W), rng)
    op = MultiCoilMRI(torch.from_numpy(maps), torch.from_numpy(mask))
    A, AT = np_sense(maps, mask)
    assert rel(op.A(torch.from_numpy(x)).numpy(), A(x)) < 1e-12
    assert rel(op.AT(torch.from_numpy(y)).numpy(), AT(y)) < 1e-12
    assert rel(op.normal(torch.from_numpy(x)).numpy(), AT(A(x))) < 1e-12
    for b in range(3):
        one = MultiCoilMRI(torch.from_numpy(maps[b]), torch.from_numpy(mask[b]))
        assert rel(one.A(torch.from_numpy(x[b : b + 1])).numpy(), A(x)[b : b + 1]) < 1e-12


def test_multicoil_shared_mask_per_sample_maps_and_vice_versa():
    rng = np.random.default_rng(3)
    H, W = 16, 33
    maps, mask = crandn((2, 3, H, W), rng), make_mask("columns", H, W, rng, batch=2)
    x = crandn((2, 1, H, W), rng)
    for m, s in [(mask[:1], maps), (mask, maps[:1])]:
        op = MultiCoilMRI(
            torch.from_numpy(s if s.shape[0] > 1 else s[0]), torch.from_numpy(m if m.shape[0] > 1 else m[0])
        )
        A, _ = np_sense(s, m)
        assert rel(op.A(torch.from_numpy(x)).numpy(), A(x)) < 1e-12
        assert adjointness_error(op, torch.from_numpy(x)) < 1e-12


def test_multicoil_fastmri_mask_and_buffers_follow_input():
    """A float32 operator applied to complex128 data casts its buffers, not the data."""
    rng = np.random.default_rng(4)
    H, W = 32, 20
    mask = fastmri_mask((H, W), 4, seed=0)
    maps = torch.from_numpy(crandn((5, H, W), rng)).to(torch.complex64)
    op = MultiCoilMRI(maps, mask)
    x = torch.from_numpy(crandn((2, 1, H, W), rng))
    A, _ = np_sense(maps.to(torch.complex128).numpy()[None], mask.double().numpy()[None])
    assert op.A(x).dtype == torch.complex128
    assert rel(op.A(x).numpy(), A(x.numpy())) < 1e-6
    assert rel(op.coil_maps[0].numpy(), maps.numpy()) < 1e-6
    assert torch.equal(op.mask[0], mask)


def test_singlecoil_matches_definition_and_pinv():
    rng = np.random.default_rng(5)
    H, W = 25, 18
    mask = make_mask("2d", H, W, rng)[0] * (1 + rng.random((H, W)))
    op = SingleCoilMRI(torch.from_numpy(mask))
    x = crandn((2, 3, H, W), rng)
    xt = torch.from_numpy(x)
    y = mask * np_fft2c(x)
    assert rel(op.A(xt).numpy(), y) < 1e-12
    assert rel(op.AT(op.A(xt)).numpy(), np_ifft2c(mask * y)) < 1e-12
    assert rel(op.normal(xt).numpy(), np_ifft2c(mask * y)) < 1e-12
    zero_filled = np.where(mask != 0, y / np.where(mask != 0, mask, 1), 0)
    assert rel(op.pinv(torch.from_numpy(y)).numpy(), np_ifft2c(zero_filled)) < 1e-12
    assert rel(op.A(op.pinv(op.A(xt))).numpy(), y) < 1e-12


@pytest.mark.parametrize("kind", ["columns", "2d"])
def test_singlecoil_per_sample_pinv(kind):
    rng = np.random.default_rng(6)
    H, W = 20, 24
    mask = make_mask(kind, H, W, rng, batch=2)
    op = SingleCoilMRI(torch.from_numpy(mask))
    x = crandn((2, 1, H, W), rng)
    y = mask[:, None] * np_fft2c(x)
    assert rel(op.A(torch.from_numpy(x)).numpy(), y) < 1e-12
    assert rel(op.pinv(torch.from_numpy(y)).numpy(), np_ifft2c(y)) < 1e-12


def test_multicoil_pinv_is_least_squares():
    """Fully sampled with unit-norm maps: the pseudo-inverse recovers x (CG-SENSE)."""
    rng = np.random.default_rng(7)
    H, W = 12, 10
    maps = crandn((4, H, W), rng)
    maps /= np.sqrt((np.abs(maps) ** 2).sum(0))
    op = MultiCoilMRI(torch.from_numpy(maps), torch.ones(H, W, dtype=torch.float64))
    x = torch.from_numpy(crandn((2, 1, H, W), rng))
    assert rel(op.pinv(op.A(x), tol=1e-10).numpy(), x.numpy()) < 1e-8


def test_gradients_through_A_and_AT():
    """Autograd through A gives A^H (A x - y) and through A^H gives A (A^H v - u)."""
    rng = np.random.default_rng(8)
    H, W = 16, 21
    maps, mask = crandn((3, H, W), rng), make_mask("columns", H, W, rng)[0]
    op = MultiCoilMRI(torch.from_numpy(maps), torch.from_numpy(mask))
    x = torch.from_numpy(crandn((2, 1, H, W), rng)).requires_grad_()
    y = torch.from_numpy(crandn((2, 3, H, W), rng))
    (0.5 * (op.A(x) - y).abs().square().sum()).backward()
    assert rel(x.grad.numpy(), op.AT(op.A(x.detach()) - y).numpy()) < 1e-12
    v = y.clone().requires_grad_()
    u = x.detach()
    (0.5 * (op.AT(v) - u).abs().square().sum()).backward()
    assert rel(v.grad.numpy(), op.A(op.AT(y) - u).numpy()) < 1e-12
    x.grad = None
    (0.5 * op.normal(x).abs().square().sum()).backward()
    assert rel(x.grad.numpy(), op.normal(op.normal(x.detach())).numpy()) < 1e-12


def test_to_moves_and_keeps_paths():
    rng = np.random.default_rng(9)
    H, W = 25, 19
    maps, mask = crandn((2, H, W), rng), make_mask("columns", H, W, rng)[0]
    op = MultiCoilMRI(torch.from_numpy(maps).to(torch.complex64), torch.from_numpy(mask))
    op64 = op.to(dtype=torch.float64)
    assert op64._maps.dtype == torch.complex128 and op64._sampling.weights.dtype == torch.complex128
    assert op64._maps_conj.dtype == torch.complex128 and op64._sampling.filter_dim == -1
    assert "MultiCoilMRI(coils=2" in repr(op) and "SingleCoilMRI" in repr(SingleCoilMRI(torch.ones(3, 4)))


# 3. Coil tools.


def test_rss_matches_numpy():
    rng = np.random.default_rng(10)
    x = crandn((2, 5, 7, 6), rng)
    assert rel(rss(torch.from_numpy(x)).numpy(), np.sqrt((np.abs(x) ** 2).sum(1))) < 1e-12
    assert rss(torch.from_numpy(x), keepdim=True).shape == (2, 1, 7, 6)
    assert rel(rss(torch.from_numpy(x.real), dim=0).numpy(), np.sqrt((x.real**2).sum(0))) < 1e-12


def test_coil_combine_matches_numpy_and_inverts_sense():
    rng = np.random.default_rng(11)
    maps = crandn((4, 9, 8), rng)
    maps[:, :2] = 0  # no coverage: combine gives zero there, not nan
    imgs = crandn((2, 4, 9, 8), rng)
    den = (np.abs(maps) ** 2).sum(0)
    ref = np.where(den > 0, (maps.conj() * imgs).sum(1) / np.where(den > 0, den, 1), 0)[:, None]
    out = coil_combine(torch.from_numpy(imgs), torch.from_numpy(maps))
    assert out.shape == (2, 1, 9, 8) and torch.isfinite(out.abs()).all()
    assert rel(out.numpy(), ref) < 1e-12
    x = crandn((2, 1, 9, 8), rng)
    x[:, :, :2] = 0
    assert rel(coil_combine(torch.from_numpy(maps * x), torch.from_numpy(maps[None])).numpy(), x) < 1e-12


# 4. ESPIRiT.


def _birdcage_data(C=6, H=48, W=40):
    import sigpy.mri

    true = sigpy.mri.birdcage_maps((C, H, W))
    yy, xx = np.meshgrid(np.linspace(-1, 1, H), np.linspace(-1, 1, W), indexing="ij")
    img = np.exp(-(((yy / 0.7) ** 2 + (xx / 0.6) ** 2) ** 4)) * (1 + 0.3 * np.cos(2 * xx)) * np.exp(0.5j * yy)
    return true, img


def test_espirit_recovers_birdcage_maps():
    true, img = _birdcage_data()
    kspace = fft2c(torch.from_numpy(true * img)).to(torch.complex64)
    maps = espirit_maps(kspace, calib_width=16)
    assert maps.shape == kspace.shape and maps.dtype == torch.complex64
    maps = maps.to(torch.complex128).numpy()
    power = (np.abs(maps) ** 2).sum(0)
    inside, outside = np.abs(img) > 0.5, np.abs(img) < 1e-4
    # 1. Unit norm on the object, cropped away from it.
    assert np.abs(power[inside] - 1).max() < 1e-4
    assert power[outside].max() < 1e-6
    # 2. The same coil profile as the truth, up to a phase per pixel.
    unit = true / np.sqrt((np.abs(true) ** 2).sum(0))
    assert np.abs((maps.conj() * unit).sum(0))[inside].min() > 0.999
    # 3. Batched input gives the per-volume maps.
    batched = espirit_maps(torch.stack([kspace, 2 * kspace]), calib_width=16)
    assert batched.shape == (2, *kspace.shape)
    assert rel(batched[1].to(torch.complex128).numpy(), maps) < 1e-4


def test_espirit_errors():
    k = torch.zeros(4, 16, 20, dtype=torch.complex64)
    with pytest.raises(ValueError, match="calib_width"):
        espirit_maps(k, calib_width=24)
    with pytest.raises(ValueError, match="kspace"):
        espirit_maps(k.real, calib_width=12)
    with pytest.raises(ValueError, match="kspace"):
        espirit_maps(k[0], calib_width=12)


# 5. Bad input.


def _c(*shape):
    return torch.ones(*shape, dtype=torch.complex64)


def _r(*shape):
    return torch.ones(*shape)


def _op():
    return MultiCoilMRI(_c(3, 25, 19), _r(25, 19))


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: _op().A(_r(2, 1, 25, 19)), "x: expected a complex"),
        (lambda: _op().A(_c(2, 2, 25, 19)), r"x: expected shape \(\.\.\., 1, 25, 19\)"),
        (lambda: _op().A(_c(2, 1, 19, 25)), r"x: expected shape \(\.\.\., 1, 25, 19\)"),
        (lambda: _op().A(_c(1, 25, 19)), "x: expected 4 dimensions"),
        (lambda: _op().AT(_c(2, 4, 25, 19)), r"y: expected shape \(\.\.\., 3, 25, 19\)"),
        (lambda: _op().AT(_r(2, 3, 25, 19)), "y: expected a complex"),
        (lambda: MultiCoilMRI(_c(3, 25, 19), _r(25, 18)), "mask: expected spatial size"),
        (lambda: MultiCoilMRI(_r(3, 25, 19), _r(25, 19)), "coil_maps: expected a complex"),
        (lambda: MultiCoilMRI(_c(25, 19), _r(25, 19)), "coil_maps: expected"),
        (lambda: MultiCoilMRI(_c(1, 1, 3, 25, 19), _r(25, 19)), "coil_maps: expected"),
        (lambda: MultiCoilMRI(_c(3, 25, 19), _c(25, 19)), "mask: expected a real"),
        (lambda: MultiCoilMRI(_c(3, 25, 19), _r(1, 1, 25, 19)), "mask: expected"),
        (lambda: MultiCoilMRI(_c(2, 3, 5, 4), _r(3, 5, 4)), "mask: expected a batch"),
        (lambda: MultiCoilMRI(_c(2, 3, 5, 4), _r(5, 4)).A(_c(3, 1, 5, 4)), "x: expected a batch of 2"),
        (lambda: SingleCoilMRI(_r(5, 4)).A(_c(1, 1, 4, 5)), r"x: expected shape"),
        (lambda: SingleCoilMRI(_r(2, 5, 4)).AT(_c(3, 1, 5, 4)), "y: expected a batch"),
        (lambda: SingleCoilMRI(_r(5)), "mask: expected"),
        (lambda: SingleCoilMRI(torch.ones(5, 4, dtype=torch.int64)), "mask: expected a real"),
        (lambda: coil_combine(_c(1, 3, 5, 4), _c(2, 5, 4)), "coil_maps"),
        (lambda: coil_combine(_c(3, 5, 4), _c(3, 5, 4)), "coil_images"),
    ],
)
def test_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_boolean_mask_and_no_mutation():
    mask = torch.zeros(6, 5, dtype=torch.bool)
    mask[:, 2] = True
    maps = torch.ones(2, 6, 5, dtype=torch.complex128)
    op = MultiCoilMRI(maps, mask)
    x = torch.ones(1, 1, 6, 5, dtype=torch.complex128)
    before = x.clone()
    y = op.A(x)
    assert torch.equal(x, before) and y.dtype == torch.complex128
    assert torch.equal(maps, torch.ones(2, 6, 5, dtype=torch.complex128))
