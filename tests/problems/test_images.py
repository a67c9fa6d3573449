"""Ground truths: RGB photographs, a user's image files at their own size, and 3-channel problems."""

import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from invdiff.data.datasets import ct_slice
from invdiff.problems import ct, inpaint, sr
from invdiff.problems.images import LUMINANCE, NATURAL_RGB, ground_truth, natural_rgb, read_image_file
from operators import adjointness_error


def _ct_small() -> str:
    pydicom_data = pytest.importorskip("pydicom.data")
    return pydicom_data.get_testdata_file("CT_small.dcm", download=False)


def _luminance(x: torch.Tensor) -> torch.Tensor:
    return (x * torch.tensor(LUMINANCE)[:, None, None]).sum(-3, keepdim=True)


# --- packaged RGB photographs ---------------------------------------------------------------


@pytest.mark.parametrize("index", range(len(NATURAL_RGB)))
def test_natural_rgb_is_a_centre_square_in_unit_range(index):
    x = ground_truth("natural_rgb", 16, index, complex_=False, channels=3)
    assert x.shape == (1, 3, 16, 16) and x.dtype == torch.float32
    assert 0 <= float(x.min()) and float(x.max()) <= 1 and float(x.std()) > 0.02


def test_natural_rgb_index_0_is_the_astronaut_centre_square():
    import skimage.data

    photo = torch.from_numpy(skimage.data.astronaut()).permute(2, 0, 1).float() / 255  # 512 x 512, square
    reference = torch.nn.functional.avg_pool2d(photo[None], 32)[0]  # area mean over 32 x 32 blocks
    assert (natural_rgb(0, 16) - reference).abs().mean() < 0.03


def test_channels_1_of_an_rgb_source_is_its_luminance():
    rgb = ground_truth("natural_rgb", 16, 1, complex_=False, channels=3)
    grey = ground_truth("natural_rgb", 16, 1, complex_=False, channels=1)
    torch.testing.assert_close(grey, _luminance(rgb))


def test_natural_with_3_channels_takes_the_rgb_photographs(tmp_path):
    assert torch.equal(ground_truth("natural", 16, 2, complex_=False, channels=3, data_root=tmp_path),
                       ground_truth("natural_rgb", 16, 2, complex_=False, channels=3))


@pytest.mark.parametrize("image", ["phantom", "ct"])
def test_3_channels_of_a_grey_source_is_refused(image, tmp_path):
    with pytest.raises(ValueError, match="channels.*natural_rgb"):
        ground_truth(image, 16, 0, complex_=False, channels=3, data_root=tmp_path)


def test_bad_channels_and_index_name_the_option():
    with pytest.raises(ValueError, match="channels: expected 1 .* or 3"):
        ground_truth("natural_rgb", 16, 0, complex_=False, channels=2)
    with pytest.raises(ValueError, match="channels=1"):
        ground_truth("phantom", 16, 0, complex_=True, channels=3)
    with pytest.raises(ValueError, match=r"index: expected 0 <= index < 4 .*astronaut"):
        ground_truth("natural_rgb", 16, 4, complex_=False, channels=3)


# --- files --------------------------------------------------------------------------------


def test_dicom_is_relative_attenuation_exactly_as_the_ct_dataset():
    x, meta = read_image_file(_ct_small())
    assert x.shape == (1, 1, 128, 128)
    assert torch.equal(x[0, 0], ct_slice("CT_small.dcm"))
    assert meta["format"] == "dicom" and meta["shape"] == [128, 128] and meta["pixel_spacing"] is not None


def test_dicom_without_a_suffix_is_recognised(tmp_path):
    path = tmp_path / "slice"
    shutil.copy(_ct_small(), path)
    assert torch.equal(read_image_file(path)[0], read_image_file(_ct_small())[0])


def test_npy_is_taken_as_it_is_and_channels_are_converted(tmp_path):
    g = np.random.default_rng(0)
    grey, rgb = g.random((12, 20)).astype(np.float32) * 3, g.random((3, 12, 20)).astype(np.float32)
    np.save(tmp_path / "grey.npy", grey)
    np.save(tmp_path / "rgb.npy", rgb)
    np.testing.assert_array_equal(read_image_file(tmp_path / "grey.npy")[0][0, 0].numpy(), grey)
    np.testing.assert_array_equal(read_image_file(tmp_path / "rgb.npy", channels=3)[0][0].numpy(), rgb)
    torch.testing.assert_close(read_image_file(tmp_path / "rgb.npy")[0][0], _luminance(torch.from_numpy(rgb)))
    replicated = read_image_file(tmp_path / "grey.npy", channels=3)[0]
    assert replicated.shape == (1, 3, 12, 20)
    assert all(torch.equal(replicated[0, c], replicated[0, 0]) for c in range(3))


def test_photographs_are_scaled_to_the_unit_range(tmp_path):
    g = np.random.default_rng(0)
    rgba = (g.random((10, 14, 4)) * 255).astype(np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    x = read_image_file(tmp_path / "a.png", channels=3)[0]
    np.testing.assert_allclose(x[0].permute(1, 2, 0).numpy(), rgba[..., :3] / 255, atol=1e-7)  # alpha dropped
    deep = (g.random((10, 14)) * 65535).astype(np.uint16)
    Image.fromarray(deep).save(tmp_path / "deep.png")
    read = read_image_file(tmp_path / "deep.png")[0]
    np.testing.assert_allclose(read[0, 0].numpy(), deep / 65535, atol=1e-6)
    Image.fromarray(rgba[..., :3]).save(tmp_path / "b.jpg", quality=95)
    jpeg = read_image_file(tmp_path / "b.jpg", channels=3)[0]
    assert jpeg.shape == (1, 3, 10, 14) and 0 <= float(jpeg.min()) and float(jpeg.max()) <= 1
    real = g.random((6, 8)).astype(np.float32)
    Image.fromarray(real, "F").save(tmp_path / "c.tif")
    np.testing.assert_array_equal(read_image_file(tmp_path / "c.tif")[0][0, 0].numpy(), real)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere.png"):
        read_image_file(tmp_path / "nothere.png")
    with pytest.raises(FileNotFoundError, match="nothere.dcm"):
        ct(image=str(tmp_path / "nothere.dcm"))


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("notes.txt", b"hello", "unknown image format '.txt'"),
        ("bad.png", b"not a png", "unreadable image file"),
        ("bad.npy", b"not an array", "unreadable .npy file"),
        ("bad.dcm", b"\0" * 200, "DICOM"),
    ],
)
def test_unreadable_file_is_named(name, content, message, tmp_path):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ValueError, match=message) as err:
        read_image_file(path)
    assert str(path) in str(err.value)


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (np.zeros((2, 8, 8)), r"expected an \(H, W\) or \(C, H, W\) array with C 1 .* or 3"),
        (np.zeros((1, 3, 8, 8)), r"got shape \(1, 3, 8, 8\)"),
        (np.zeros((8, 8), dtype=np.complex64), "expected a real numeric array"),
        (np.full((8, 8), np.nan), "non-finite"),
    ],
)
def test_wrong_array_is_named(array, message, tmp_path):
    path = tmp_path / "x.npy"
    np.save(path, array)
    with pytest.raises(ValueError, match=message) as err:
        read_image_file(path)
    assert str(path) in str(err.value)


def test_file_options_that_do_not_apply_are_refused(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((8, 8)))
    with pytest.raises(ValueError, match="index: .*x.npy holds one image"):
        read_image_file(tmp_path / "x.npy", index=1)
    with pytest.raises(ValueError, match="needs complex images"):
        ground_truth(str(tmp_path / "x.npy"), 16, 0, complex_=True)


# --- problems -----------------------------------------------------------------------------


def test_rgb_inpainting_shares_one_mask_over_the_channels(generator):
    problem = inpaint(size=16, channels=3, image="natural_rgb", noise_std=0.0)
    assert problem.x_shape == (1, 3, 16, 16) and problem.target.shape == (1, 3, 16, 16)
    observed = problem.y != 0
    assert torch.equal(observed[:, 0], observed[:, 1]) and torch.equal(observed[:, 0], observed[:, 2])
    x = torch.rand(2, 3, 16, 16, generator=generator)
    assert adjointness_error(problem.op, x, generator=generator) < 1e-5
    assert problem.info["photograph"] == "astronaut"


def test_rgb_super_resolution(generator):
    problem = sr(size=16, factor=4, channels=3, image="natural")
    assert problem.x_shape == (1, 3, 16, 16) and problem.y.shape == (1, 3, 4, 4)
    x = torch.rand(2, 3, 16, 16, generator=generator)
    assert adjointness_error(problem.op, x, generator=generator) < 1e-5


def test_ct_of_a_dicom_file_at_its_own_size():
    problem = ct(size=64, views=12, image=_ct_small())
    assert problem.x_shape == (1, 1, 128, 128) and problem.y.shape == (1, 1, 12, 182)
    assert problem.info["format"] == "dicom" and problem.info["file"].endswith("CT_small.dcm")
    assert torch.equal(problem.x_true[0, 0], ct_slice("CT_small.dcm"))


def test_ct_of_a_non_square_image(tmp_path):
    np.save(tmp_path / "rect.npy", np.random.default_rng(0).random((24, 40)).astype(np.float32))
    problem = ct(views=10, image=str(tmp_path / "rect.npy"))
    assert problem.x_shape == (1, 1, 24, 40) and problem.y.shape == (1, 1, 10, 47)  # ceil(hypot(24, 40))
    assert problem.op.fbp(problem.y).shape == problem.x_shape


def test_inpaint_and_sr_of_an_image_file_at_its_own_size(tmp_path):
    rgb = (np.random.default_rng(0).random((12, 20, 3)) * 255).astype(np.uint8)
    Image.fromarray(rgb).save(tmp_path / "photo.png")
    path = str(tmp_path / "photo.png")
    assert inpaint(size=64, channels=3, image=path, mask="box", box=4).x_shape == (1, 3, 12, 20)
    problem = sr(size=64, factor=4, channels=1, image=path)
    assert problem.x_shape == (1, 1, 12, 20) and problem.y.shape == (1, 1, 3, 5)
    with pytest.raises(ValueError, match=r"photo.png is 12 x 20; .*factor=8"):
        sr(factor=8, image=path)
