"""Linear-operator cases for the generic tests (see cases.py): base, inpainting, super-resolution."""

import torch

from operators.base import CenterCrop, Identity, Matrix, Multiply, RealToComplex, complex_dtype
from operators.inpainting import Inpainting, box_mask, freeform_mask, random_pixel_mask
from operators.linalg import FiniteDifference
from operators.interop import from_deepinv, to_deepinv
from operators.superres import SuperResolution


def _gen():
    return torch.Generator().manual_seed(1)


def _x(shape, dtype, device, complex_=False):
    g = _gen()
    dt = complex_dtype(dtype) if complex_ else dtype
    return torch.randn(shape, generator=g, dtype=dt).to(device)


def identity(dtype, device):
    return Identity(), _x((2, 3, 7, 5), dtype, device)


def multiply_complex(dtype, device):
    w = torch.randn(1, 3, 7, 5, dtype=complex_dtype(dtype), generator=_gen()).to(device)
    return Multiply(w), _x((2, 3, 7, 5), dtype, device, complex_=True)


def matrix_real(dtype, device):
    M = torch.randn(5, 3 * 7, dtype=dtype, generator=_gen()).to(device)
    return Matrix(M, (1, 3, 7)), _x((4, 1, 3, 7), dtype, device)


def matrix_complex(dtype, device):
    M = torch.randn(6, 10, dtype=complex_dtype(dtype), generator=_gen()).to(device)
    return Matrix(M), _x((3, 10), dtype, device, complex_=True)


def real_to_complex(dtype, device):
    return RealToComplex(), _x((3, 4, 9, 7), dtype, device)


def center_crop(dtype, device):
    """Odd margins on both axes (the extra row and column left at the end)."""
    return CenterCrop((17, 24), (12, 19)), _x((2, 3, 17, 24), dtype, device)


def center_crop_complex(dtype, device):
    """Even margin along H, none along W."""
    return CenterCrop((20, 9), (14, 9)), _x((3, 2, 20, 9), dtype, device, complex_=True)


def inpaint_random(dtype, device):
    mask = random_pixel_mask((17, 23), 0.3, generator=_gen()).to(device)
    return Inpainting(mask), _x((2, 3, 17, 23), dtype, device)


def inpaint_box_per_sample(dtype, device):
    masks = torch.stack([box_mask((17, 23), (5, 9), generator=_gen()), box_mask((17, 23), (7, 3))])
    return Inpainting(masks[:, None].to(device)), _x((2, 3, 17, 23), dtype, device)


def inpaint_freeform_complex(dtype, device):
    mask = freeform_mask((21, 15), generator=_gen()).to(device)
    return Inpainting(mask), _x((3, 1, 21, 15), dtype, device, complex_=True)


def sr(kernel, factor, complex_=False):
    def build(dtype, device):
        return SuperResolution(factor, kernel), _x((2, 3, 9 * factor, 5 * factor), dtype, device, complex_)

    return build


def deepinv_roundtrip(dtype, device):
    """One of ours through deepinv's LinearPhysics and back."""
    op = from_deepinv(to_deepinv(SuperResolution(3, "gaussian")))
    return op, _x((2, 1, 15, 21), dtype, device)


def finite_difference(dim, circular, complex_=False):
    def build(dtype, device):
        return FiniteDifference(dim, circular), _x((2, 3, 7, 5), dtype, device, complex_)

    return build


CASES = {
    "identity": identity,
    "multiply_complex": multiply_complex,
    "matrix_real": matrix_real,
    "matrix_complex": matrix_complex,
    "real_to_complex": real_to_complex,
    "center_crop": center_crop,
    "center_crop_complex": center_crop_complex,
    "inpaint_random": inpaint_random,
    "inpaint_box_per_sample": inpaint_box_per_sample,
    "inpaint_freeform_complex": inpaint_freeform_complex,
    "sr_box_x3": sr("box", 3),
    "sr_bicubic_x2": sr("bicubic", 2),
    "sr_bicubic_x3": sr("bicubic", 3),
    "sr_gaussian_x4": sr("gaussian", 4),
    "sr_bicubic_x2_complex": sr("bicubic", 2, complex_=True),
    "deepinv_roundtrip": deepinv_roundtrip,
    "finite_difference_h": finite_difference(-2, False),
    "finite_difference_w_circular": finite_difference(3, True),
    "finite_difference_c_complex": finite_difference(1, False, complex_=True),
    "finite_difference_h_circular_complex": finite_difference(2, True, complex_=True),
}
