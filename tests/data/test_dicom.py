"""CT slices from DICOM: Hounsfield units of packaged real slices, attenuation, and files that fail."""

import shutil

import pydicom
import pytest
import torch
from pydicom.data import get_testdata_file

from invdiff.data import dicom


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _testdata(name: str):
    path = get_testdata_file(name, download=False)
    if path is None:
        pytest.skip(f"{name} is not installed (pydicom-data)")
    return path


def test_packaged_slices_list_sources_and_licences():
    slices = {s.name: s for s in dicom.packaged_ct_slices()}
    assert "CT_small.dcm" in slices  # ships with pydicom itself
    for s in slices.values():
        assert s.decodes and s.path.is_file() and s.body_part and s.source and s.licence
    if "693_UNCR.dcm" in slices:
        assert slices["693_UNCR.dcm"].commercial_use is False and "NC" in slices["693_UNCR.dcm"].licence
    everything = {s.name for s in dicom.packaged_ct_slices(decodable_only=False)}
    assert set(slices) <= everything


def test_head_slice_has_air_and_soft_tissue_hounsfield_units():
    hu, meta = dicom.read_ct(_testdata("693_UNCR.dcm"))
    assert hu.dtype == torch.float32 and hu.shape == (512, 512)
    assert meta["modality"] == "CT" and meta["rescale_intercept"] == -1024
    assert meta["pixel_spacing"] == pytest.approx((0.478516, 0.478516)) and meta["slice_thickness"] == 5
    air = hu[(hu > -1200) & (hu < -800)]
    assert float(air.median()) == pytest.approx(-1000, abs=30)
    tissue = (hu >= 0) & (hu <= 100)
    assert float(tissue.float().mean()) > 0.05  # the brain


def test_small_slice_is_mostly_soft_tissue():
    hu, meta = dicom.read_ct(_testdata("CT_small.dcm"))
    assert hu.shape == (128, 128) and meta["pixel_spacing"] == pytest.approx((0.661468, 0.661468))
    assert 0 <= float(hu.median()) <= 100
    assert float(hu.max()) > 500  # bone


def test_jpeg2000_abdomen_decodes_when_a_plugin_is_installed():
    slices = {s.name for s in dicom.packaged_ct_slices()}
    if "explicit_VR-UN.dcm" not in slices:
        pytest.skip("no JPEG 2000 decoder installed")
    hu, meta = dicom.read_ct(_testdata("explicit_VR-UN.dcm"))
    assert meta["body_part"] == "PANCREAS" and "JPEG 2000" in meta["transfer_syntax"]
    air = hu[(hu > -1200) & (hu < -800)]
    assert float(air.median()) == pytest.approx(-1000, abs=30)
    assert float(((hu >= 0) & (hu <= 100)).float().mean()) > 0.05


def test_attenuation_round_trip():
    hu = torch.tensor([-3024.0, -1000.0, 0.0, 40.0, 1000.0])
    mu = dicom.hu_to_attenuation(hu)
    torch.testing.assert_close(mu, torch.tensor([0.0, 0.0, 1.0, 1.04, 2.0]) * dicom.MU_WATER)
    torch.testing.assert_close(dicom.attenuation_to_hu(mu[1:]), hu[1:])
    with pytest.raises(ValueError, match="mu_water"):
        dicom.hu_to_attenuation(hu, mu_water=0)


def test_missing_pixel_data_names_the_file(tmp_path):
    ds = pydicom.dcmread(_testdata("CT_small.dcm"))
    del ds.PixelData
    path = tmp_path / "no_pixels.dcm"
    ds.save_as(path)
    with pytest.raises(ValueError, match="no_pixels.dcm: no pixel data"):
        dicom.read_ct(path)


def test_not_dicom_and_not_ct(tmp_path):
    path = tmp_path / "notes.dcm"
    path.write_text("not a DICOM file\n")
    with pytest.raises(ValueError, match="notes.dcm: not a DICOM file"):
        dicom.read_ct(path)
    with pytest.raises(FileNotFoundError, match="absent.dcm"):
        dicom.read_ct(tmp_path / "absent.dcm")
    mr = _testdata("MR_small.dcm")
    with pytest.raises(ValueError, match="modality is 'MR', not 'CT'"):
        dicom.read_ct(mr)
    with pytest.warns(UserWarning, match="not 'CT'"):
        image, meta = dicom.read_ct(mr, require_ct=False)
    assert meta["modality"] == "MR" and image.ndim == 2


def test_undecodable_compression_names_syntax_and_packages():
    from pydicom.pixels import get_decoder
    from pydicom.uid import JPEGLosslessSV1

    if get_decoder(JPEGLosslessSV1).is_available:
        pytest.skip("a JPEG Lossless decoder is installed")
    path = _testdata("bad_sequence.dcm")
    message = "bad_sequence.dcm: pixel data are compressed with JPEG Lossless"
    with pytest.raises(ValueError, match=message) as info:
        dicom.read_ct(path)
    assert "pylibjpeg" in str(info.value) and "gdcm" in str(info.value)


def test_iter_dicoms_skips_and_reports_bad_files(tmp_path):
    source = _testdata("CT_small.dcm")
    shutil.copy(source, tmp_path / "a_good.dcm")
    data = (tmp_path / "a_good.dcm").read_bytes()
    (tmp_path / "b_truncated.dcm").write_bytes(data[: len(data) // 2])
    (tmp_path / "c_junk.dcm").write_bytes(b"\x00\x01junk" * 50)
    results = list(dicom.iter_dicoms(tmp_path))
    assert [p.name for p, _ in results] == ["a_good.dcm", "b_truncated.dcm", "c_junk.dcm"]
    hu, meta = results[0][1]
    assert hu.shape == (128, 128) and meta["path"].name == "a_good.dcm"
    for path, error in results[1:]:
        assert isinstance(error, ValueError) and path.name in str(error)
