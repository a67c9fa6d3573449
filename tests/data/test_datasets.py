import json

import numpy as np
import pytest
import torch

from invdiff.data.anatomy import NATIVE_SIZE, SPLITS, split_slices, tissue_maps
from invdiff.data.datasets import (
    CT_SPLITS,
    NATURAL_SPLITS,
    ct,
    ct_slice,
    load_split,
    mri_brain,
    mri_brain_fastmri,
    natural,
    pad_to_common,
)
from invdiff.data.fastmri import load_folder, read_volume, reconstruct_rss
from operators import fastmri_mask, volume_seed


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_splits_share_no_slices_or_neighbours():
    sets = {s: set(split_slices(s)) for s in SPLITS}
    for a in sets:
        for b in sets:
            if a < b:
                gap = min(abs(i - j) for i in sets[a] for j in sets[b])
                assert gap >= 4, (a, b, gap)
    for splits in (NATURAL_SPLITS, CT_SPLITS):
        names = [set(v) for v in splits.values()]
        assert not (names[0] & names[1] or names[0] & names[2] or names[1] & names[2])


def test_mri_brain_dataset_is_built_once_and_reused(tmp_path):
    folder = mri_brain(tmp_path, size=16, variants=(2, 1, 1))
    train = load_split(folder, "train")
    assert train.shape == (2 * len(split_slices("train")), 2, 16, 16)
    magnitude = np.hypot(train[:, 0].astype(np.float32), train[:, 1].astype(np.float32))
    assert 0.9 < magnitude.max() <= 1.01
    stamp = (folder / "train.npy").stat().st_mtime_ns
    assert mri_brain(tmp_path, size=16, variants=(2, 1, 1)) == folder
    assert (folder / "train.npy").stat().st_mtime_ns == stamp
    assert json.loads((folder / "info.json").read_text())["size"] == 16


def test_ct_and_natural_datasets(tmp_path):
    for build, channels in ((ct, 1), (natural, 1)):
        folder = build(tmp_path, size=16, counts=(8, 2, 2))
        for split, n in zip(("train", "val", "test"), (8, 2, 2)):
            x = load_split(folder, split)
            assert x.shape == (n, channels, 16, 16)
            assert 0 <= x.min() and x.max() <= 1


def test_native_brain_slices_are_the_splits_slices_on_the_1mm_grid(tmp_path):
    for split in SPLITS:
        native = tissue_maps(split, None)
        assert native.shape == (len(split_slices(split)), 4, NATIVE_SIZE, NATIVE_SIZE)
        # The resampled maps of a split are the area average of its native maps: the same slices.
        small = torch.nn.functional.interpolate(native, size=(16, 16), mode="area").clamp(0, 1)
        assert torch.equal(small, tissue_maps(split, 16))
    folder = mri_brain(tmp_path, size=None, variants=(1, 1, 1))
    assert folder.name == "mri_brain_native"
    for split in SPLITS:
        x = load_split(folder, split)
        assert x.shape == (len(split_slices(split)), 2, NATIVE_SIZE, NATIVE_SIZE)
    info = json.loads((folder / "info.json").read_text())
    assert info["size"] is None and info["pixel_mm"] == 1.0
    assert info["image_size"] == [NATIVE_SIZE, NATIVE_SIZE]


def test_native_ct_keeps_each_splits_slices_on_their_own_grid(tmp_path):
    folder = ct(tmp_path, size=None)
    assert folder.name == "ct_native"
    slices = {split: [ct_slice(n) for n in names] for split, names in CT_SPLITS.items()}
    for split, images in slices.items():
        x = torch.from_numpy(load_split(folder, split).astype(np.float32))
        assert x.shape == (len(images), 1, *images[0].shape)
        for stored, image in zip(x[:, 0], images):
            assert float((stored - image).abs().max()) < 1e-3  # float16
    train = torch.from_numpy(load_split(folder, "train").astype(np.float32))[:, 0]
    assert all(float((t - slices["test"][0]).abs().max()) > 0.1 for t in train)  # the test slice is held out
    sizes = json.loads((folder / "info.json").read_text())["image_sizes"]
    assert sizes == {"train": [[512, 512], [512, 512]], "val": [[128, 128]], "test": [[512, 512]]}


def test_pad_to_common_centres_images_of_different_sizes():
    a, b = torch.ones(4, 6), 2 * torch.ones(2, 3)
    x = pad_to_common([a, b])
    assert x.shape == (2, 1, 4, 6)
    assert torch.equal(x[0, 0], a)
    assert torch.equal(x[1, 0, 1:3, 1:4], b) and float(x[1].sum()) == 2 * 6


def test_fastmri_brain_volumes_read_back(tmp_path):
    folder = mri_brain_fastmri(tmp_path, size=16, coils=4, slab=8)
    volumes, errors = load_folder(folder)
    assert volumes and not errors
    v = volumes[0]
    assert v.kspace.shape == (8, 4, 32, 16)
    rss = reconstruct_rss(v.kspace, (16, 16))
    assert float((rss - v.reconstruction_rss).norm() / v.reconstruction_rss.norm()) < 0.05


def _numpy_rss_crop(kspace: np.ndarray, h: int, w: int) -> np.ndarray:
    """The centre crop of the RSS of the full (uncropped) coil images, in numpy."""
    axes = (-2, -1)
    images = np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(kspace, axes=axes), norm="ortho"), axes=axes)
    full = np.sqrt((np.abs(images) ** 2).sum(-3))
    top, left = (full.shape[-2] - h) // 2, (full.shape[-1] - w) // 2
    return full[..., top : top + h, left : left + w]


def test_fastmri_brain_volumes_at_a_wider_kspace(tmp_path):
    folder = mri_brain_fastmri(tmp_path, size=16, coils=3, slab=4, width=20, noise_std=0.0)
    assert folder == tmp_path / "mri_brain_fastmri_16_w20_c3_slab4_noise0" / "test"
    volumes, errors = load_folder(folder)
    assert volumes and not errors
    for v in volumes:
        assert v.kspace.shape == (4, 3, 32, 20) and v.reconstruction_rss.shape == (4, 16, 16)
        assert v.header["encoding_size"] == (32, 20, 1) and v.header["recon_size"] == (16, 16, 1)
        assert (v.header["padding_left"], v.header["padding_right"]) == (0, 20)
        reference = _numpy_rss_crop(v.kspace.numpy().astype(np.complex128), 16, 16)
        np.testing.assert_allclose(v.reconstruction_rss.numpy(), reference, rtol=1e-4, atol=1e-5)
        assert v.attrs["max"] == pytest.approx(float(v.reconstruction_rss.max()))
    # The image fills the centre 16 of the 20 columns (and of the 32 rows); the rest is padding.
    images = np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(volumes[0].kspace.numpy(), axes=(-2, -1)),
                                          norm="ortho"), axes=(-2, -1))
    assert np.abs(images[..., :, [0, 1, 18, 19]]).max() < 1e-4 * np.abs(images).max()
    assert np.abs(images[..., :8, :]).max() < 1e-4 * np.abs(images).max()


def test_fastmri_brain_prospective_and_single_coil_variants(tmp_path):
    common = dict(size=16, coils=3, slab=4, width=20)
    full = mri_brain_fastmri(tmp_path, **common)
    test = mri_brain_fastmri(tmp_path, **common, acceleration=4)
    assert test.parent.name == "mri_brain_fastmri_16_w20_c3_slab4_x4_test"
    for path in sorted(test.glob("*.h5")):
        vol, reference = read_volume(path), read_volume(full / path.name)
        lines = fastmri_mask((32, 20), 4, 0.08, kind="equispaced", seed=volume_seed(path.name))[0]
        assert torch.equal(vol.mask, lines)
        assert bool((vol.kspace[..., lines == 0] == 0).all())
        assert bool((vol.kspace[..., lines == 1] != 0).all())
        assert torch.equal(vol.kspace, reference.kspace * lines)  # the same draws as the full volume
        assert vol.reconstruction_rss is None and vol.reconstruction_esc is None
        assert vol.attrs["acceleration"] == 4 and vol.attrs["num_low_frequency"] == 2
        assert "max" not in vol.attrs and "norm" not in vol.attrs
    single = mri_brain_fastmri(tmp_path, size=16, slab=4, width=20, noise_std=0.0, single_coil=True)
    assert single.parent.name == "mri_brain_fastmri_16_w20_slab4_noise0_sc"
    vol = read_volume(next(single.glob("*.h5")))
    assert vol.single_coil and vol.kspace.shape == (4, 1, 32, 20) and vol.reconstruction_rss is None
    reference = _numpy_rss_crop(vol.kspace.numpy().astype(np.complex128), 16, 16)
    np.testing.assert_allclose(vol.reconstruction_esc.numpy(), reference, rtol=1e-4, atol=1e-5)
    single_test = mri_brain_fastmri(tmp_path, size=16, slab=4, width=20, single_coil=True, acceleration=8)
    assert single_test.parent.name == "mri_brain_fastmri_16_w20_slab4_sc_x8_test"
    assert len({full, test, single, single_test}) == 4
    with pytest.raises(ValueError, match="acceleration"):
        mri_brain_fastmri(tmp_path, size=16, acceleration=6)
    with pytest.raises(ValueError, match="width"):
        mri_brain_fastmri(tmp_path, size=16, width=12)


def test_load_split_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="make_data"):
        load_split(tmp_path, "train")
    np.save(tmp_path / "train.npy", np.zeros((3, 4)))
    with pytest.raises(ValueError, match=r"expected an \(N, C, H, W\) array"):
        load_split(tmp_path, "train")
