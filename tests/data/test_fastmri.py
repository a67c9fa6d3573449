"""fastMRI files: round trips on a tiny generated multi-coil volume, fastMRI's conventions checked
against numpy references, masks, ESPIRiT maps, readout oversampling, submissions and bad files."""

import xml.etree.ElementTree as etree

import h5py
import numpy as np
import pytest
import torch

from invdiff.data import fastmri as fm
from operators.masks import acceleration_of, fastmri_mask, volume_seed
from operators.mri import MultiCoilMRI, fft2c, ifft2c

SLICES, COILS, H, W = 2, 4, 32, 24
RECON = (16, 16, 1)
FNAME = "file1000001.h5"


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _object() -> tuple[torch.Tensor, torch.Tensor]:
    """A smooth-phase ellipse per slice, ``(SLICES, H, W)`` complex64, and its support ``(H, W)``."""
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, H), torch.linspace(-1, 1, W), indexing="ij")
    support = (yy / 0.45) ** 2 + (xx / 0.7) ** 2 <= 1
    images = [support * (1 + 0.3 * s) * torch.exp(1j * (0.5 * xx + 0.2 * s * yy)) for s in range(SLICES)]
    return torch.stack(images).to(torch.complex64), support


@pytest.fixture(scope="module")
def volume(tmp_path_factory):
    """``(path, image, coil_maps, support)`` of a tiny multi-coil file written once."""
    import sigpy.mri

    image, support = _object()
    maps = torch.from_numpy(sigpy.mri.birdcage_maps((COILS, H, W))).to(torch.complex64)
    kspace = fft2c(maps * image[:, None])
    path = tmp_path_factory.mktemp("fastmri") / FNAME
    attrs = {"acquisition": "AXT1", "patient_id": "p01"}
    fm.write_volume(path, kspace, header={"recon_size": RECON}, attrs=attrs)
    return path, image, maps, support


def _numpy_rss(kspace: np.ndarray, h: int, w: int) -> np.ndarray:
    """fastMRI's target, in numpy: centred orthonormal iFFT per coil, centre crop, RSS."""
    axes = (-2, -1)
    images = np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(kspace, axes=axes), norm="ortho"), axes=axes)
    top, left = (images.shape[-2] - h) // 2, (images.shape[-1] - w) // 2
    images = images[..., top : top + h, left : left + w]
    return np.sqrt((np.abs(images) ** 2).sum(-3))


# ----------------------------------------------------------------------------------------------
# Round trips and fastMRI's conventions
# ----------------------------------------------------------------------------------------------


def test_write_read_round_trip(volume):
    path, image, maps, _ = volume
    vol = fm.read_volume(path)
    assert vol.kspace.dtype == torch.complex64 and vol.kspace.shape == (SLICES, COILS, H, W)
    assert torch.equal(vol.kspace, fft2c(maps * image[:, None]))
    assert not vol.single_coil and vol.num_slices == SLICES and vol.num_coils == COILS
    assert vol.header["encoding_size"] == (H, W, 1) and vol.header["recon_size"] == RECON
    assert vol.header["encoding_limits"] == {"center": W // 2, "maximum": W - 1}
    assert (vol.header["padding_left"], vol.header["padding_right"]) == (0, W)
    assert vol.recon_shape == RECON[:2]
    target = vol.reconstruction_rss
    assert target.dtype == torch.float32 and target.shape == (SLICES, *RECON[:2])
    assert vol.attrs["acquisition"] == "AXT1" and vol.attrs["patient_id"] == "p01"
    assert vol.attrs["max"] == pytest.approx(float(target.max()))
    assert vol.attrs["norm"] == pytest.approx(float(np.linalg.norm(target.numpy())), rel=1e-6)


def test_file_reads_the_way_fastmri_reads_it(volume):
    """fastMRI's ``SliceDataset._retrieve_metadata`` and ``__getitem__``, run on the file with h5py."""
    path, *_ = volume
    ns = {"ismrmrd_namespace": "http://www.ismrm.org/ISMRMRD"}

    def et_query(root, qlist):
        return root.find("." + "".join(f"//ismrmrd_namespace:{q}" for q in qlist), ns).text

    with h5py.File(path, "r") as hf:
        root = etree.fromstring(hf["ismrmrd_header"][()])
        enc = ["encoding", "encodedSpace", "matrixSize"]
        rec = ["encoding", "reconSpace", "matrixSize"]
        lims = ["encoding", "encodingLimits", "kspace_encoding_step_1"]
        enc_size = tuple(int(et_query(root, enc + [a])) for a in "xyz")
        recon_size = tuple(int(et_query(root, rec + [a])) for a in "xyz")
        center, maximum = int(et_query(root, lims + ["center"])), int(et_query(root, lims + ["maximum"])) + 1
        kspace, target = hf["kspace"][1], hf["reconstruction_rss"][1]
        attrs = dict(hf.attrs)
    assert enc_size == (H, W, 1) and recon_size == RECON
    padding_left = enc_size[1] // 2 - center
    assert (padding_left, padding_left + maximum) == (0, W)
    assert kspace.dtype == np.complex64 and kspace.shape == (COILS, H, W)
    assert target.dtype == np.float32 and target.shape == RECON[:2]
    assert {"max", "norm", "acquisition", "patient_id"} <= set(attrs)


def test_target_is_fastmri_rss(volume):
    path, *_ = volume
    vol = fm.read_volume(path)
    mine = fm.reconstruct_rss(vol.kspace, vol.recon_shape)
    torch.testing.assert_close(mine, vol.reconstruction_rss)
    reference = _numpy_rss(vol.kspace.numpy().astype(np.complex128), *RECON[:2])
    np.testing.assert_allclose(vol.reconstruction_rss.numpy(), reference, rtol=1e-5, atol=1e-6)


def test_read_slice_is_the_volume_slice(volume):
    path, *_ = volume
    vol = fm.read_volume(path)
    for index in (0, -1):
        piece = fm.read_slice(path, index)
        assert piece.index == index % SLICES
        assert torch.equal(piece.kspace, vol.kspace[index])
        assert torch.equal(piece.reconstruction_rss, vol.reconstruction_rss[index])
        assert piece.header == vol.header and piece.attrs == vol.attrs
    with pytest.raises(IndexError, match=FNAME):
        fm.read_slice(path, SLICES)


def test_header_of_a_volume_round_trips(volume, tmp_path):
    path, *_ = volume
    vol = fm.read_volume(path)
    copy = fm.write_volume(tmp_path / "copy.h5", vol.kspace, header=vol.header, attrs=vol.attrs)
    again = fm.read_volume(copy)
    assert again.header == vol.header
    torch.testing.assert_close(again.reconstruction_rss, vol.reconstruction_rss)
    assert again.attrs == vol.attrs


def test_single_coil_file_gets_a_coil_axis(tmp_path):
    image, _ = _object()
    kspace = fft2c(image)
    header, attrs = {"recon_size": RECON}, {"acquisition": "CORPD_FBK"}
    path = fm.write_volume(tmp_path / "single.h5", kspace, header=header, attrs=attrs)
    with h5py.File(path, "r") as hf:
        assert hf["kspace"].shape == (SLICES, H, W)
    vol = fm.read_volume(path)
    assert vol.single_coil and vol.kspace.shape == (SLICES, 1, H, W)
    # fastMRI's single-coil target is reconstruction_esc; an RSS is written only when given.
    torch.testing.assert_close(vol.reconstruction_esc, fm.center_crop(image.abs(), RECON[:2]))
    assert vol.reconstruction_rss is None
    assert vol.attrs["max"] == pytest.approx(float(vol.reconstruction_esc.max()))


def test_header_xml_rejects_inconsistent_fields(tmp_path):
    kspace = torch.zeros(1, 2, H, W, dtype=torch.complex64)
    with pytest.raises(ValueError, match="encoding_size"):
        fm.write_volume(tmp_path / "x.h5", kspace, header={"encoding_size": (W, H, 1)})
    with pytest.raises(ValueError, match="unknown keys"):
        fm.write_volume(tmp_path / "x.h5", kspace, header={"matrix": 3})
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="reconSpace"):
        fm.parse_ismrmrd_header(
            '<ismrmrdHeader xmlns="http://www.ismrm.org/ISMRMRD"><encoding><encodedSpace><matrixSize>'
            "<x>4</x><y>4</y><z>1</z></matrixSize></encodedSpace></encoding></ismrmrdHeader>"
        )


def test_failed_write_leaves_nothing(tmp_path):
    kspace = torch.ones(1, 2, H, W, dtype=torch.complex64)
    with pytest.raises(TypeError):
        fm.write_volume(tmp_path / "bad.h5", kspace, attrs={"unstorable": object()})
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------------------------
# Masks, coil maps, oversampling, normalisation, crops
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("acceleration", [4, 8])
def test_masks_on_the_file_reach_their_acceleration(volume, acceleration):
    path, image, maps, _ = volume
    vol = fm.read_volume(path)
    shape = tuple(vol.kspace.shape[-2:])
    seed = volume_seed(path)
    # Equispaced lines reach the acceleration on the file's own seed.
    mask = fastmri_mask(shape, acceleration, kind="equispaced", seed=seed)
    assert acceleration_of(mask) == pytest.approx(acceleration, rel=0.1)
    assert torch.equal(mask, fastmri_mask(shape, acceleration, kind="equispaced", seed=seed))
    # Random lines reach it in expectation over volumes (each file its own seed): the outer
    # columns are Bernoulli(p) with W p = W / acceleration - num_low; 4 standard errors of the mean.
    n, width = 400, shape[1]
    seeds = [volume_seed(f"file{i}.h5") for i in range(n)]
    lines = torch.stack([fastmri_mask(shape, acceleration, seed=s)[0].sum() for s in seeds])
    num_low = {4: round(width * 0.08), 8: round(width * 0.04)}[acceleration]
    p = (width / acceleration - num_low) / (width - num_low)
    stderr = ((width - num_low) * p * (1 - p) / n) ** 0.5
    assert abs(float(lines.mean()) - width / acceleration) < 4 * stderr
    # The file's k-space is the fully sampled data of MultiCoilMRI with the same maps and image.
    op = MultiCoilMRI(maps, mask)
    torch.testing.assert_close(op.A(image[:, None]), mask * vol.kspace, atol=1e-5, rtol=1e-5)


def test_espirit_maps_have_unit_norm_inside_support_and_are_cached(volume, monkeypatch):
    path, _, _, support = volume
    vol = fm.read_volume(path)
    cache = fm.maps_cache_path(path)
    maps = fm.coil_maps(vol.kspace, cache, calib_width=20)
    assert maps.shape == vol.kspace.shape and maps.dtype == torch.complex64
    norm = maps.abs().square().sum(1)
    torch.testing.assert_close(norm[:, support], torch.ones_like(norm[:, support]), atol=1e-3, rtol=0)
    assert cache.is_file() and not list(cache.parent.glob(".*tmp*"))

    def recompute(*args, **kwargs):
        raise AssertionError("the cache should have been used")

    monkeypatch.setattr("invdiff.data.fastmri.io.espirit_maps", recompute)
    torch.testing.assert_close(fm.coil_maps(vol.kspace, cache, calib_width=20), maps)
    torch.testing.assert_close(fm.coil_maps(vol.kspace, cache, calib_width=20, crop=0.95), maps)  # a default
    with pytest.raises(ValueError, match="unknown settings"):
        fm.coil_maps(vol.kspace, cache, calibration=20)
    with pytest.raises(ValueError, match="espirit.h5.*settings"):
        fm.coil_maps(vol.kspace, cache, calib_width=16)
    with pytest.raises(ValueError, match="shape"):
        fm.coil_maps(vol.kspace[:1], cache, calib_width=20)
    # The cache lives next to the data but is not taken for a volume.
    volumes, errors = fm.load_folder(path.parent)
    assert [v.path.name for v in volumes] == [FNAME] and errors == []


def test_readout_oversampling_removal_recovers_the_image(generator):
    image, _ = _object()
    gains = torch.randn(COILS, 1, 1, dtype=torch.complex64, generator=generator)
    small = image[0, H // 4 : H // 4 + H // 2] * gains
    padded = torch.zeros(COILS, H, W, dtype=torch.complex64)
    padded[:, H // 4 : H // 4 + H // 2] = small
    oversampled = fft2c(padded)
    kspace = fm.remove_readout_oversampling(oversampled)
    assert kspace.shape == (COILS, H // 2, W)
    torch.testing.assert_close(kspace, fft2c(small), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ifft2c(kspace), small, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="even"):
        fm.remove_readout_oversampling(oversampled[:, :-1])


def test_normalise_scales_rss_peak_to_one(volume):
    path, *_ = volume
    kspace = fm.read_volume(path).kspace
    scaled, scale = fm.normalise(kspace)
    assert scale.shape == () and float(fm.reconstruct_rss(scaled).max()) == pytest.approx(1, rel=1e-5)
    scaled, scale = fm.normalise(kspace, per_slice=True, recon_size=RECON)
    assert scale.shape == (SLICES,)
    peaks = fm.reconstruct_rss(scaled, RECON).flatten(1).max(1).values
    torch.testing.assert_close(peaks, torch.ones(SLICES))
    scaled, _ = fm.normalise(kspace, percentile=90)
    q90 = torch.quantile(fm.reconstruct_rss(scaled).flatten().double(), 0.9)
    assert float(q90) == pytest.approx(1, rel=1e-4)
    with pytest.raises(ValueError, match="zero"):
        fm.normalise(torch.zeros_like(kspace))


def test_crops_follow_fastmri(generator):
    x = torch.randn(3, 7, 10, dtype=torch.complex64, generator=generator)
    crop = fm.center_crop(x, (4, 5))
    assert torch.equal(crop, x[:, 1:5, 2:7])  # from (7 - 4) // 2 and (10 - 5) // 2
    pairs = torch.view_as_real(x)
    assert torch.equal(fm.complex_center_crop(pairs, (4, 5)), torch.view_as_real(crop))
    assert torch.equal(fm.complex_center_crop(x, (4, 5)), crop)
    with pytest.raises(ValueError, match="shape"):
        fm.center_crop(x, (8, 5))


# ----------------------------------------------------------------------------------------------
# Submission files
# ----------------------------------------------------------------------------------------------


def test_reconstructions_use_the_submission_layout(tmp_path):
    rng = np.random.default_rng(0)
    recons = {FNAME: torch.from_numpy(rng.random((SLICES, 16, 16))), "file1000002.h5": rng.random((3, 8, 8))}
    paths = fm.write_reconstructions(tmp_path / "out", recons)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(recons)
    for path, (name, recon) in zip(paths, recons.items()):
        with h5py.File(path, "r") as hf:
            assert list(hf.keys()) == ["reconstruction"]
            assert hf["reconstruction"].dtype == np.float32
            np.testing.assert_allclose(hf["reconstruction"][()], np.asarray(recon, dtype=np.float32))
    with pytest.raises(ValueError, match="bare file names"):
        fm.write_reconstructions(tmp_path, {"sub/file.h5": torch.zeros(1, 2, 2)})
    with pytest.raises(ValueError, match="real"):
        fm.write_reconstructions(tmp_path, {"x.h5": torch.zeros(1, 2, 2, dtype=torch.complex64)})


# ----------------------------------------------------------------------------------------------
# Bad files
# ----------------------------------------------------------------------------------------------


def _no_kspace(path):
    with h5py.File(path, "w") as hf:
        hf.create_dataset("reconstruction_rss", data=np.zeros((1, 4, 4), np.float32))


def _wrong_ndim(path):
    with h5py.File(path, "w") as hf:
        hf.create_dataset("kspace", data=np.zeros((4, 4), np.complex64))


def _real_kspace(path):
    with h5py.File(path, "w") as hf:
        hf.create_dataset("kspace", data=np.zeros((1, 2, 4, 4), np.float32))


def _not_hdf5(path):
    path.write_bytes(b"this is not an HDF5 file\n" * 8)


def _truncated(path):
    fm.write_volume(path, torch.ones(2, 2, 8, 8, dtype=torch.complex64))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


BAD = [
    (_no_kspace, "no 'kspace' dataset"),
    (_wrong_ndim, r"shape \(4, 4\); expected \(slices, coils, H, W\)"),
    (_real_kspace, "expected complex"),
    (_not_hdf5, "not a readable HDF5 file"),
    (_truncated, "HDF5"),
]


@pytest.mark.parametrize("make, message", BAD, ids=[m.__name__.strip("_") for m, _ in BAD])
def test_bad_files_name_the_file_and_the_problem(tmp_path, make, message):
    path = tmp_path / "bad_file.h5"
    make(path)
    with pytest.raises(ValueError, match=message) as info:
        fm.read_volume(path, require_header=False)
    assert str(path) in str(info.value)
    with pytest.raises(ValueError, match=message):
        fm.read_slice(path, 0, require_header=False)


def test_missing_file_and_missing_header(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.h5"):
        fm.read_volume(tmp_path / "nowhere.h5")
    path = tmp_path / "headerless.h5"
    with h5py.File(path, "w") as hf:
        hf.create_dataset("kspace", data=np.ones((1, 2, 4, 4), np.complex64))
    with pytest.raises(ValueError, match="headerless.h5: no 'ismrmrd_header'"):
        fm.read_volume(path)
    vol = fm.read_volume(path, require_header=False)
    assert vol.header == {} and vol.reconstruction_rss is None
    with pytest.raises(ValueError, match="headerless.h5.*reconstruction size"):
        vol.recon_shape


def test_load_folder_skips_and_reports_bad_files(volume, tmp_path):
    path, *_ = volume
    (tmp_path / FNAME).write_bytes(path.read_bytes())
    _no_kspace(tmp_path / "file_a.h5")
    _not_hdf5(tmp_path / "file_b.h5")
    volumes, errors = fm.load_folder(tmp_path)
    assert [v.path.name for v in volumes] == [FNAME]
    assert [p.name for p, _ in errors] == ["file_a.h5", "file_b.h5"]
    assert "file_a.h5: no 'kspace'" in errors[0][1] and "file_b.h5: not a readable HDF5" in errors[1][1]
    seen = [(p.name, isinstance(r, Exception)) for p, r in fm.iter_volumes(tmp_path)]
    assert seen == [("file1000001.h5", False), ("file_a.h5", True), ("file_b.h5", True)]


# ----------------------------------------------------------------------------------------------
# Prospective (test) files, single-coil targets, partial reads
# ----------------------------------------------------------------------------------------------


def _lines(name: str = FNAME, acceleration: int = 4) -> torch.Tensor:
    """fastMRI's equispaced mask of a file, one value per column, ``(W,)``."""
    return fastmri_mask((H, W), acceleration, kind="equispaced", seed=volume_seed(name))[0]


def test_prospective_multicoil_file_round_trips(volume, tmp_path):
    path, *_ = volume
    full = fm.read_volume(path)
    lines = _lines()
    attrs = {**full.attrs, "acceleration": 4, "num_low_frequency": round(W * 0.08)}
    out = fm.write_volume(tmp_path / FNAME, full.kspace, mask=lines, header=full.header, attrs=attrs)
    with h5py.File(out, "r") as hf:
        assert sorted(hf.keys()) == ["ismrmrd_header", "kspace", "mask"]
        assert hf["mask"].dtype == np.bool_ and hf["mask"].shape == (W,)
        assert hf["kspace"].shape == (SLICES, COILS, H, W)
        assert {"max", "norm"}.isdisjoint(hf.attrs)
    vol = fm.read_volume(out)
    assert torch.equal(vol.mask, lines)
    assert torch.equal(vol.kspace, full.kspace * lines)
    assert bool((vol.kspace[..., lines == 0] == 0).all()) and bool((vol.kspace[..., lines == 1] != 0).any())
    assert vol.reconstruction_rss is None and vol.reconstruction_esc is None
    assert vol.attrs["acceleration"] == 4 and vol.attrs["num_low_frequency"] == 2
    assert vol.header == full.header and vol.attrs["acquisition"] == "AXT1"
    piece = fm.read_slice(out, 1)
    assert torch.equal(piece.mask, lines) and torch.equal(piece.kspace, vol.kspace[1])
    assert piece.reconstruction_rss is None and piece.reconstruction_esc is None
    # Without nominal values the attributes are derived from the mask.
    derived = fm.read_volume(fm.write_volume(tmp_path / "derived.h5", full.kspace, mask=lines.numpy()))
    assert derived.attrs["acceleration"] == pytest.approx(W / float(lines.sum()))
    assert derived.attrs["num_low_frequency"] >= 2
    rss = full.reconstruction_rss
    with pytest.raises(ValueError, match="reconstruction_rss: a test file"):
        fm.write_volume(tmp_path / "x.h5", full.kspace, mask=lines, reconstruction_rss=rss)


def test_single_coil_files_hold_esc_targets_and_prospective_masks(tmp_path):
    image, _ = _object()
    kspace = fft2c(image)
    esc = fm.center_crop(image.abs(), RECON[:2])
    rss = 1.1 * esc  # fastMRI's RSS of the multi-coil data behind the emulated single coil
    header = {"recon_size": RECON}
    path = fm.write_volume(tmp_path / "single.h5", kspace, reconstruction_rss=rss, header=header)
    vol = fm.read_volume(path)
    torch.testing.assert_close(vol.reconstruction_esc, esc)
    torch.testing.assert_close(vol.reconstruction_rss, rss)
    assert vol.attrs["max"] == pytest.approx(float(esc.max()))  # the single-coil target's
    piece = fm.read_slice(path, 1)
    assert piece.single_coil and piece.kspace.shape == (1, H, W)
    torch.testing.assert_close(piece.reconstruction_esc, esc[1])
    torch.testing.assert_close(piece.reconstruction_rss, rss[1])
    # Prospective single-coil file.
    lines = _lines("single_test.h5", 8)
    test = fm.write_volume(tmp_path / "single_test.h5", kspace, mask=lines, header={"recon_size": RECON})
    with h5py.File(test, "r") as hf:
        assert sorted(hf.keys()) == ["ismrmrd_header", "kspace", "mask"]
        assert hf["kspace"].shape == (SLICES, H, W)
    vol = fm.read_volume(test)
    assert vol.single_coil and torch.equal(vol.kspace[:, 0], kspace * lines) and torch.equal(vol.mask, lines)
    assert vol.reconstruction_esc is None and vol.reconstruction_rss is None
    with pytest.raises(ValueError, match="reconstruction_esc: only single-coil"):
        fm.write_volume(tmp_path / "x.h5", kspace[:, None].expand(-1, 2, -1, -1), reconstruction_esc=esc)


def test_mask_errors_name_the_file_and_the_keys(volume, tmp_path):
    path, *_ = volume
    kspace = fm.read_volume(path).kspace
    with pytest.raises(ValueError, match=rf"bad\.h5: 'mask' has {W - 1} columns, 'kspace' has {W}"):
        fm.write_volume(tmp_path / "bad.h5", kspace, mask=np.ones(W - 1))
    with pytest.raises(ValueError, match=r"bad\.h5: 'mask' has shape \(32, 24\)"):
        fm.write_volume(tmp_path / "bad.h5", kspace, mask=fastmri_mask((H, W), 4, seed=0))
    with pytest.raises(ValueError, match=r"bad\.h5: 'mask' has values other than 0 and 1"):
        fm.write_volume(tmp_path / "bad.h5", kspace, mask=2 * np.ones(W))
    assert list(tmp_path.iterdir()) == []
    for bad in (np.ones(W + 2, bool), np.ones((2, W), bool)):
        file = tmp_path / "stored.h5"
        file.write_bytes(path.read_bytes())
        with h5py.File(file, "a") as hf:
            hf.create_dataset("mask", data=bad)
        message = rf"stored\.h5: 'mask' has {W + 2} columns, 'kspace' has {W}" if bad.ndim == 1 else (
            r"stored\.h5: 'mask' has shape \(2, 24\)")
        for read in (fm.read_volume, lambda p: fm.read_slice(p, 0)):
            with pytest.raises(ValueError, match=message):
                read(file)
        file.unlink()


def test_partial_reads_equal_slices_of_a_full_read(volume, tmp_path):
    path, *_ = volume
    full = fm.read_volume(path).kspace
    columns = [0, 3, 4, 5, 11, 12, W - 1]
    assert torch.equal(fm.read_kspace_columns(path, columns), full[..., columns])
    centre = torch.arange(W // 2 - 2, W // 2 + 2)
    assert torch.equal(fm.read_kspace_columns(path, centre), full[..., centre])
    outer = [*range(H // 8), *range(H - H // 8, H)]  # the outer eighth at both ends
    rows = fm.read_kspace_rows(path, outer)
    assert rows.dtype == torch.complex64 and rows.shape == (SLICES, COILS, len(outer), W)
    assert torch.equal(rows, full[:, :, outer])
    assert torch.equal(fm.read_kspace_rows(path, np.array(outer), columns), full[:, :, outer][..., columns])
    # Single-coil files get a coil axis of 1.
    single = fm.write_volume(tmp_path / "single.h5", full[:, 0], header={"recon_size": RECON})
    assert torch.equal(fm.read_kspace_columns(single, columns), full[:, :1, :, columns])
    assert torch.equal(fm.read_kspace_rows(single, [1, 2], [4]), full[:, :1, 1:3, 4:5])
    for bad in ([3, 1], [0, W], [], [-1, 2]):
        with pytest.raises(ValueError, match=rf"columns: .*{FNAME}"):
            fm.read_kspace_columns(path, bad)
    with pytest.raises(ValueError, match=rf"rows: .*\[0, {H}\).*{FNAME}"):
        fm.read_kspace_rows(path, [H])
    _no_kspace(tmp_path / "empty.h5")
    for read in (lambda p: fm.read_kspace_columns(p, [0]), lambda p: fm.read_kspace_rows(p, [0])):
        with pytest.raises(ValueError, match=r"empty\.h5: no 'kspace' dataset"):
            read(tmp_path / "empty.h5")
