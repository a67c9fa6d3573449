import pytest
import torch

from operators.inpainting import Inpainting, box_mask, freeform_mask, random_pixel_mask


def test_random_mask_fraction_and_seed():
    m = random_pixel_mask((101, 77), 0.25, generator=torch.Generator().manual_seed(3))
    assert abs(float(m.mean()) - 0.25) < 0.02
    assert torch.equal(m, random_pixel_mask((101, 77), 0.25, generator=torch.Generator().manual_seed(3)))
    assert not torch.equal(m, random_pixel_mask((101, 77), 0.25, generator=torch.Generator().manual_seed(4)))


def test_box_mask_size_and_position():
    m = box_mask((31, 40), (10, 12))
    assert float((m == 0).sum()) == 120
    assert float(m[10:20, 14:26].sum()) == 0  # centred
    g1, g2 = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    r = box_mask((31, 40), (10, 12), generator=g1, margin=2)
    assert torch.equal(r, box_mask((31, 40), (10, 12), generator=g2, margin=2))
    rows, cols = torch.nonzero(r == 0, as_tuple=True)
    assert rows.min() >= 2 and rows.max() <= 28 and cols.min() >= 2 and cols.max() <= 37


def test_freeform_mask_strokes():
    m = freeform_mask((64, 48), generator=torch.Generator().manual_seed(0))
    missing = float((m == 0).float().mean())
    assert 0.01 < missing < 0.9
    assert torch.equal(m, freeform_mask((64, 48), generator=torch.Generator().manual_seed(0)))
    assert float(freeform_mask((64, 48), generator=None, strokes=0).min()) == 1.0


def test_inpainting_keeps_observed_pixels_and_pinv_fills_zero(generator):
    mask = random_pixel_mask((9, 11), 0.5, generator=generator)
    x = torch.randn(2, 3, 9, 11, generator=generator)
    op = Inpainting(mask)
    y = op.A(x)
    torch.testing.assert_close(y, x * mask)
    torch.testing.assert_close(op.pinv(y), x * mask)
    torch.testing.assert_close(op.A(op.pinv(y)), y)


def test_bad_input():
    mask = torch.ones(9, 11)
    with pytest.raises(ValueError, match="x: expected spatial size"):
        Inpainting(mask).A(torch.zeros(1, 1, 9, 10))
    with pytest.raises(ValueError, match="x: expected 4 dimensions"):
        Inpainting(mask).A(torch.zeros(9, 11))
    with pytest.raises(ValueError, match="mask: expected a real"):
        Inpainting(torch.ones(9, 11, dtype=torch.complex64))
    with pytest.raises(ValueError, match="mask: expected"):
        Inpainting(torch.ones(3, 9, 11))
    with pytest.raises(ValueError, match="does not fit batch"):
        Inpainting(torch.ones(2, 1, 9, 11)).A(torch.zeros(3, 1, 9, 11))
    with pytest.raises(ValueError, match="observed"):
        random_pixel_mask((4, 4), 1.5, generator=None)
    with pytest.raises(ValueError, match="box"):
        box_mask((8, 8), (9, 2))
    with pytest.raises(ValueError, match="shape"):
        box_mask((8, 0), (2, 2))
