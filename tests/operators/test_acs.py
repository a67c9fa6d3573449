"""Reconstructing real multi-coil data without oracle information: ESPIRiT on a rectangular
calibration region (checked against sigpy), the ACS lines of a mask, low-resolution coil maps,
the noise level of measured k-space, and the centre crop that lets a prior run on a padded unknown.
"""

import numpy as np
import pytest
import torch

import operators.mri as mri
from operators.base import CenterCrop
from operators.masks import acs_lines, fastmri_mask, volume_seed
from operators.mri import MultiCoilMRI, espirit_maps, lowres_coil_maps
from operators.noise import estimate_kspace_noise_std

# --------------------------------------------------------------------------------------------
# Data: birdcage coils times a Shepp-Logan phantom, in k-space, plus a little noise.
# --------------------------------------------------------------------------------------------


def _phantom_kspace(C, H, W, noise, seed=0):
    """``(kspace, true_maps)``: numpy complex128, ``(C, H, W)``; noise relative to max |k|."""
    import sigpy
    import sigpy.mri

    true = sigpy.mri.birdcage_maps((C, H, W))
    img = sigpy.shepp_logan((H, W))
    # numpy's centred orthonormal FFT, independent of operators.mri.
    axes = (-2, -1)
    k = np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(true * img, axes=axes), norm="ortho"), axes=axes)
    rng = np.random.default_rng(seed)
    s = noise * np.abs(k).max()
    k = k + s * (rng.standard_normal(k.shape) + 1j * rng.standard_normal(k.shape)) / np.sqrt(2)
    return k, true


def _power(maps):
    return (np.abs(maps) ** 2).sum(0)


def _sigpy_espirit(k, calib_width, max_iter=100):
    from sigpy.mri.app import EspiritCalib

    maps, eig = EspiritCalib(
        k, calib_width=calib_width, max_iter=max_iter, show_pbar=False, output_eigenvalue=True
    ).run()
    return maps, eig[0]


# --------------------------------------------------------------------------------------------
# 1. ESPIRiT.
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def phantom():
    return _phantom_kspace(8, 80, 72, noise=1e-3)


def test_espirit_matches_sigpy_square(phantom):
    """The square case is sigpy's EspiritCalib wherever sigpy's power iteration has converged."""
    k, _ = phantom
    ref, eig = _sigpy_espirit(k, 24)
    ref_longer, _ = _sigpy_espirit(k, 24, max_iter=200)
    ours = espirit_maps(torch.from_numpy(k), 24).numpy()
    # 1. The same support, but for pixels whose eigenvalue sits at the crop threshold.
    support_ref, support = _power(ref) > 0, _power(ours) > 0
    assert support_ref.sum() > 0.5 * support_ref.size and (~support_ref).sum() > 100, "the crop bites"
    disagree = support_ref != support
    assert disagree.sum() <= 3 and np.all(np.abs(eig[disagree] - 0.95) < 1e-3)
    # 2. The same maps where 100 more power iterations do not move sigpy's (near-degenerate top
    # eigenvalues leave sigpy's unconverged there, at the edges of the field of view).
    converged = np.sqrt(_power(ref_longer - ref)) < 1e-6
    both = support_ref & support & converged
    assert both.sum() > 0.95 * (support_ref & support).sum()
    err = np.sqrt(_power(ours - ref))
    assert err[both].max() < 1e-5
    assert np.median(err[support_ref & support]) < 1e-10
    # 3. Unit norm on the support, and complex64 in, complex64 out.
    assert np.abs(_power(ours)[support] - 1).max() < 1e-10
    ours32 = espirit_maps(torch.from_numpy(k).to(torch.complex64), 24)
    assert ours32.dtype == torch.complex64
    assert np.sqrt(_power(ours32.numpy() - ref))[both].max() < 1e-4


def test_espirit_rectangular_matches_square(phantom):
    """A narrow band of centre columns (ACS lines) gives nearly the maps of the square region."""
    import sigpy

    k, _ = phantom
    obj = np.abs(sigpy.shepp_logan(k.shape[1:])) > 0.1
    square = espirit_maps(torch.from_numpy(k), 24).numpy()
    assert np.all(_power(square)[obj] > 0)
    for width in (16, 12):
        rect = espirit_maps(torch.from_numpy(k), calib_shape=(24, width)).numpy()
        assert np.all(_power(rect)[obj] > 0), "the crop keeps the whole object"
        assert np.abs(_power(rect)[_power(rect) > 0] - 1).max() < 1e-10
        # The part of each pixel's map outside the span of the square-region map.
        residual = np.sqrt(_power(rect - square * (square.conj() * rect).sum(0)))[obj]
        assert np.median(residual) < 0.01 and np.quantile(residual, 0.95) < 0.03


def test_espirit_reads_only_the_calibration_region(phantom):
    """Undersampled k-space with the calibration region fully sampled gives the same maps."""
    k, _ = phantom
    W = k.shape[-1]
    mask = fastmri_mask((1, W), 4, seed=3)[0].numpy()
    start, stop = acs_lines(mask)
    width = min(2 * (W // 2 - start) + 1, 2 * (stop - W // 2))  # the widest centred region
    assert start <= W // 2 - width // 2 and W // 2 - width // 2 + width <= stop
    assert width >= round(W * 0.08)
    full = espirit_maps(torch.from_numpy(k), calib_shape=(24, width))
    under = espirit_maps(torch.from_numpy(k * mask), calib_shape=(24, width))
    assert torch.equal(full, under)


def test_espirit_invariant_to_scaling(phantom):
    k, _ = phantom
    kt = torch.from_numpy(k)
    maps = espirit_maps(kt, calib_shape=(24, 10))
    for c in (1e-6, 3e3, 2 - 3j):
        scaled = espirit_maps(c * kt, calib_shape=(24, 10))
        assert torch.equal(scaled != 0, maps != 0)
        assert float((scaled - maps).abs().max()) < 1e-9


def test_espirit_chunks_batches_and_narrow_regions(phantom, monkeypatch):
    k, _ = phantom
    kt = torch.from_numpy(k[:, 20:60, 18:54]).to(torch.complex64)  # the centre, at half the FOV
    maps = espirit_maps(kt, calib_shape=(20, 4), crop=0.5)  # a (6, 4) kernel
    assert maps.shape == kt.shape and maps.dtype == torch.complex64
    assert (maps != 0).any()
    # 1. One row per chunk: the same maps.
    monkeypatch.setattr(mri, "_EIGH_CHUNK_BYTES", 1)
    assert float((espirit_maps(kt, calib_shape=(20, 4), crop=0.5) - maps).abs().max()) < 1e-6
    # 2. A batch gives each volume's maps.
    monkeypatch.undo()
    batch = espirit_maps(torch.stack([kt, kt.flip(-1)]), calib_shape=(20, 4), crop=0.5)
    assert batch.shape == (2, *kt.shape)
    assert torch.equal(batch[0], maps)
    assert torch.equal(batch[1], espirit_maps(kt.flip(-1), calib_shape=(20, 4), crop=0.5))


def test_espirit_bad_arguments():
    k = torch.zeros(4, 16, 20, dtype=torch.complex64)
    with pytest.raises(ValueError, match="calib_shape"):
        espirit_maps(k, calib_shape=(17, 4))
    with pytest.raises(ValueError, match="calib_shape"):
        espirit_maps(k, calib_shape=(0, 4))
    with pytest.raises(ValueError, match="calib_shape"):
        espirit_maps(k, calib_shape=12)
    with pytest.raises(ValueError, match="kernel_width"):
        espirit_maps(k, calib_shape=(12, 4), kernel_width=0)
    with pytest.raises(ValueError, match="thresh"):
        espirit_maps(k, 12, thresh=1.5)
    with pytest.raises(ValueError, match="crop"):
        espirit_maps(k, 12, crop=2.0)


# --------------------------------------------------------------------------------------------
# 2. ACS lines.
# --------------------------------------------------------------------------------------------


def _run_through_centre(sampled):
    """The run of sampled columns through W // 2, by walking outwards (the reference)."""
    start = stop = len(sampled) // 2
    while start > 0 and sampled[start - 1]:
        start -= 1
    while stop < len(sampled) and sampled[stop]:
        stop += 1
    return start, stop


# Sampled columns of fastMRI's own masks (tests/operators/test_masks.py, from fastMRI's
# subsample.py): (columns, W, num_low_frequencies, the run through W // 2).
FASTMRI_RUNS = [
    ([3, 6, 7, 11, 15, 22, 23, 24, 25, 31, 35, 38], 48, 4, (22, 26)),
    ([4, 5, 6, 10, 21, 22, 23, 24, 25, 29, 31, 32, 37, 40, 42], 48, 4, (21, 26)),  # one outer line adjacent
    ([6, 7, 11, 31, 32, 33, 57], 64, 3, (31, 34)),
    ([3, 8, 14, 20, 22, 23, 24, 25, 30, 36, 42], 48, 4, (22, 26)),  # equispaced
]


@pytest.mark.parametrize("columns, W, num_low, run", FASTMRI_RUNS)
def test_acs_lines_of_fastmri_masks(columns, W, num_low, run):
    mask = np.zeros(W, dtype=bool)
    mask[columns] = True
    assert acs_lines(mask) == run
    start, stop = run
    assert stop - start >= num_low


@pytest.mark.parametrize("kind", ["random", "equispaced"])
@pytest.mark.parametrize("acceleration", [4, 8])
@pytest.mark.parametrize("W", [368, 372, 64])
def test_acs_lines_contain_the_centre_block(kind, acceleration, W):
    """The run is fastMRI's centre block of num_low_frequencies, widened by adjacent outer lines only.

    An outer line lands next to the block in about a third of the draws at 4x and a fifth at 8x,
    for both kinds; equispaced lines widen it by at most a column or two, random ones by more.
    """
    num_low = round(W * {4: 0.08, 8: 0.04}[acceleration])
    pad = (W - num_low + 1) // 2
    widths = []
    for seed in range(20):
        lines = fastmri_mask((1, W), acceleration, kind=kind, seed=seed)[0]
        start, stop = acs_lines(lines)
        assert (start, stop) == _run_through_centre(lines.numpy() != 0)
        assert start <= pad and pad + num_low <= stop
        adjacent = bool(lines[pad - 1]) or bool(lines[pad + num_low])
        assert ((start, stop) == (pad, pad + num_low)) == (not adjacent)
        widths.append(stop - start)
        # The widest region centred like espirit_maps's (sigpy's resize) is the whole block.
        centred = min(2 * (W // 2 - start) + 1, 2 * (stop - W // 2))
        assert centred >= num_low and (adjacent or centred == num_low)
    assert min(widths) == num_low
    if kind == "equispaced":
        assert max(widths) <= num_low + 2


def test_acs_lines_shapes():
    lines = fastmri_mask((6, 64), 8, seed=volume_seed("file1000001.h5"))
    expected = acs_lines(lines[0])
    for mask in (lines, lines[:1, None], lines[0].reshape(1, 1, 64, 1), lines[0].numpy(), lines[0].bool()):
        assert acs_lines(mask) == expected
    assert acs_lines(torch.ones(5)) == (0, 5)


def test_acs_lines_errors():
    mask = torch.zeros(64)
    mask[:10] = 1
    with pytest.raises(ValueError, match="mask: the centre column W // 2 = 32 is not sampled"):
        acs_lines(mask)
    pattern = torch.ones(4, 64)
    pattern[0, 3] = 0
    with pytest.raises(ValueError, match="mask: expected a line mask"):
        acs_lines(pattern)
    with pytest.raises(ValueError, match="mask"):
        acs_lines(torch.ones(2, 3, 4))


# --------------------------------------------------------------------------------------------
# 3. Low-resolution coil maps.
# --------------------------------------------------------------------------------------------


def test_lowres_maps_match_a_numpy_reference(phantom):
    k, _ = phantom
    W = k.shape[-1]
    start, stop = 30, 41
    n = stop - start
    taper = np.zeros(W)
    taper[start:stop] = np.sin(np.pi * (np.arange(n) + 0.5) / n) ** 2
    axes = (-2, -1)
    images = np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(k * taper, axes=axes), norm="ortho"), axes=axes)
    root = np.sqrt(_power(images))
    support = root > 0.05 * root.max()
    ref = images / np.where(support, root, 1) * np.exp(-1j * np.angle(images[0]))
    ref = np.where(support, ref, 0)
    maps = lowres_coil_maps(torch.from_numpy(k), (start, stop)).numpy()
    assert np.abs(maps - ref).max() < 1e-12


def test_lowres_maps_are_normalised_like_espirit(phantom):
    k, true = phantom
    kt = torch.from_numpy(k)
    maps = lowres_coil_maps(kt, (24, 48)).numpy()
    support = _power(maps) > 0
    assert np.abs(_power(maps)[support] - 1).max() < 1e-12
    assert np.abs(maps[0][support].imag).max() < 1e-12 and maps[0][support].real.min() >= 0
    # Close to the truth and to ESPIRiT on the object, all three phased to coil 0.
    import sigpy

    unit = true / np.sqrt(_power(true)) * np.exp(-1j * np.angle(true[0]))
    espirit = espirit_maps(kt, calib_shape=(24, 24)).numpy()
    obj = support & (_power(espirit) > 0) & (np.abs(sigpy.shepp_logan(k.shape[1:])) > 0.1)
    assert np.median(np.sqrt(_power(maps - unit))[obj]) < 0.05
    assert np.median(np.sqrt(_power(maps - espirit))[obj]) < 0.05


@pytest.mark.parametrize("width", [1, 2, 3])
def test_lowres_maps_from_very_few_columns(phantom, width):
    k, _ = phantom
    W = k.shape[-1]
    start = W // 2 - width // 2
    maps = lowres_coil_maps(torch.from_numpy(k).to(torch.complex64), (start, start + width))
    assert maps.dtype == torch.complex64 and torch.isfinite(maps).all()
    power = _power(maps.to(torch.complex128).numpy())
    assert np.abs(power[power > 0] - 1).max() < 1e-5
    if width == 1:
        # One column: each coil image is a column profile times a phase ramp, |S| constant along W.
        mag = maps.abs()
        assert float((mag - mag[..., :1]).abs().max()) < 1e-5


def test_lowres_maps_batch_and_errors(phantom):
    k, _ = phantom
    kt = torch.from_numpy(k)
    batch = lowres_coil_maps(torch.stack([kt, 3 * kt]), (30, 40), window="boxcar")
    assert torch.allclose(batch[1], batch[0], atol=1e-12)
    assert torch.equal(batch[0], lowres_coil_maps(kt, (30, 40), window="boxcar"))
    with pytest.raises(ValueError, match="acs"):
        lowres_coil_maps(kt, (40, 30))
    with pytest.raises(ValueError, match="acs"):
        lowres_coil_maps(kt, (0, 100))
    with pytest.raises(ValueError, match="window"):
        lowres_coil_maps(kt, (30, 40), window="kaiser")
    with pytest.raises(ValueError, match="eps_fraction"):
        lowres_coil_maps(kt, (30, 40), eps_fraction=1.0)
    with pytest.raises(ValueError, match="kspace"):
        lowres_coil_maps(kt.real, (30, 40))


# --------------------------------------------------------------------------------------------
# 4. The noise level of measured k-space.
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("s", [1e-5, 0.3, 7.0])
def test_noise_std_of_pure_noise(s, generator):
    n = s * torch.randn(4, 6, 128, 96, dtype=torch.complex128, generator=generator)
    assert estimate_kspace_noise_std(n) == pytest.approx(s, rel=0.02)
    # Unsampled columns are exact zeros: left out with the mask or, without one, as zeros.
    mask = fastmri_mask((128, 96), 4, seed=2)
    under = n * mask.double()
    with_mask = estimate_kspace_noise_std(under, mask[0])
    assert with_mask == pytest.approx(s, rel=0.03)
    assert estimate_kspace_noise_std(under) == with_mask
    assert estimate_kspace_noise_std(under, mask) == with_mask


def test_noise_std_of_phantom_kspace():
    H, W = 320, 368
    k, _ = _phantom_kspace(8, H, W, noise=0.0)
    s = 3e-3 * np.abs(k).max()  # a peak coil-image SNR of about 16
    rng = np.random.default_rng(1)
    y = k + s * (rng.standard_normal(k.shape) + 1j * rng.standard_normal(k.shape)) / np.sqrt(2)
    mask = fastmri_mask((H, W), 4, seed=5).double()
    yt = torch.from_numpy(y)
    assert estimate_kspace_noise_std(yt) == pytest.approx(s, rel=0.1)
    assert estimate_kspace_noise_std(yt * mask, mask[0]) == pytest.approx(s, rel=0.1)


def test_noise_std_is_homogeneous(generator):
    y = torch.randn(2, 3, 40, 30, dtype=torch.complex128, generator=generator) + 0.5
    est = estimate_kspace_noise_std(y)
    assert estimate_kspace_noise_std(4 * y) == 4 * est
    assert estimate_kspace_noise_std(-0.25j * y) == 0.25 * est
    assert estimate_kspace_noise_std(3.7 * y) == pytest.approx(3.7 * est, rel=1e-12)
    # Leading dimensions pool: two slices are one larger sample.
    assert estimate_kspace_noise_std(y) == estimate_kspace_noise_std(y.reshape(6, 40, 30))


def test_noise_std_uses_the_outer_rows_only(generator):
    y = torch.randn(2, 40, 30, dtype=torch.complex128, generator=generator)
    y[:, 5:35] *= 1000  # strong signal in the centre rows
    assert estimate_kspace_noise_std(y, band=0.125) == pytest.approx(1.0, rel=0.15)


def test_noise_std_errors():
    y = torch.ones(2, 16, 8, dtype=torch.complex64)
    with pytest.raises(ValueError, match="kspace"):
        estimate_kspace_noise_std(y.real)
    with pytest.raises(ValueError, match="kspace"):
        estimate_kspace_noise_std(y[0])
    with pytest.raises(ValueError, match="band"):
        estimate_kspace_noise_std(y, band=0.0)
    with pytest.raises(ValueError, match="band"):
        estimate_kspace_noise_std(y, band=0.6)
    with pytest.raises(ValueError, match="kspace: no sampled, non-zero sample"):
        estimate_kspace_noise_std(torch.zeros_like(y))
    with pytest.raises(ValueError, match="kspace: no sampled"):
        estimate_kspace_noise_std(y, torch.zeros(8))
    with pytest.raises(ValueError, match="mask: expected a shape broadcastable"):
        estimate_kspace_noise_std(y, torch.ones(5))


# --------------------------------------------------------------------------------------------
# 5. The centre crop.
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("in_size, out_size", [((320, 376), (320, 372)), ((11, 9), (8, 4)), ((6, 7), (6, 7))])
def test_center_crop_is_fastmris(in_size, out_size, generator):
    x = torch.randn(2, 3, *in_size, dtype=torch.complex64, generator=generator)
    op = CenterCrop(in_size, out_size)
    # fastMRI's center_crop, on numpy.
    top, left = (in_size[0] - out_size[0]) // 2, (in_size[1] - out_size[1]) // 2
    ref = x.numpy()[..., top : top + out_size[0], left : left + out_size[1]].copy()
    y = op.A(x)
    assert np.array_equal(y.numpy(), ref)
    padded = np.zeros(x.shape, dtype=np.complex64)
    padded[..., top : top + out_size[0], left : left + out_size[1]] = ref
    assert np.array_equal(op.AT(y).numpy(), padded)
    assert np.array_equal(op.normal(x).numpy(), padded)
    assert torch.equal(op.pinv(y), op.AT(y))
    y.zero_()
    assert np.array_equal(x.numpy()[..., top : top + out_size[0], left : left + out_size[1]], ref), "a copy"


def test_center_crop_under_an_mri_operator(generator):
    H, W = 24, 30
    maps = torch.from_numpy(_phantom_kspace(3, H, W, 0.0)[1]).to(torch.complex64)
    mask = fastmri_mask((H, W), 4, 0.2, seed=0)
    op = MultiCoilMRI(maps, mask) @ CenterCrop((H, 32), (H, W))
    x = torch.randn(2, 1, H, 32, dtype=torch.complex64, generator=generator)
    assert op.A(x).shape == (2, 3, H, W) and op.AT(op.A(x)).shape == x.shape
    assert torch.allclose(op.A(x), MultiCoilMRI(maps, mask).A(x[..., 1:31]))


def test_center_crop_errors():
    with pytest.raises(ValueError, match="out_size: expected at most"):
        CenterCrop((10, 10), (12, 8))
    with pytest.raises(ValueError, match="in_size"):
        CenterCrop((10,), (8, 8))
    with pytest.raises(ValueError, match="out_size"):
        CenterCrop((10, 10), (0, 8))
    op = CenterCrop((10, 12), (8, 8))
    with pytest.raises(ValueError, match="x: expected shape"):
        op.A(torch.zeros(1, 1, 10, 11))
    with pytest.raises(ValueError, match="y: expected shape"):
        op.AT(torch.zeros(1, 1, 10, 12))
    with pytest.raises(ValueError, match="x: expected 4 dimensions"):
        op.A(torch.zeros(10, 12))
