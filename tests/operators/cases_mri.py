"""MRI cases for the generic operator tests (see cases.py).

Each case covers one code path of :mod:`operators.mri`: 2D masks, line masks along columns
(fastMRI) and along rows (whose normal operators run on 1D FFTs), odd and even sizes (both
branches of the centring), weighted and per-sample masks, the real 2-channel embedding and a
padded unknown (a centre crop before the operator).
Sizes stay small so the generic tests run in a blink.
"""

import torch

from operators.base import CenterCrop, RealToComplex
from operators.masks import fastmri_mask, poisson_disc_mask
from operators.mri import MultiCoilMRI, SingleCoilMRI

_COMPLEX = {torch.float32: torch.complex64, torch.float64: torch.complex128}


def _randn(shape, dtype, device, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, dtype=dtype, generator=g).to(device)


def _maps(coils, H, W, dtype, device, seed=1):
    """Random complex coil maps away from zero, ``(coils, H, W)``."""
    return _randn((coils, H, W), _COMPLEX[dtype], device, seed) + 1.0


def single(dtype, device):
    """Single-coil, 2 channels, odd non-square, a weighted 2D random mask."""
    H, W = 25, 19
    mask = (_randn((H, W), dtype, device, 2) > 0).to(dtype) * (1 + _randn((H, W), dtype, device, 3).abs())
    return SingleCoilMRI(mask), _randn((2, 2, H, W), _COMPLEX[dtype], device, 4)


def multicoil_lines(dtype, device):
    """fastMRI random line mask at 4x on an odd size."""
    H, W = 25, 19
    mask = fastmri_mask((H, W), 4, 0.1, seed=0).to(device=device, dtype=dtype)
    return MultiCoilMRI(_maps(4, H, W, dtype, device), mask), _randn((2, 1, H, W), _COMPLEX[dtype], device, 5)


def multicoil_lines_even(dtype, device):
    """fastMRI equispaced line mask at 4x on an even size."""
    H, W = 20, 24
    mask = fastmri_mask((H, W), 4, 0.1, kind="equispaced", seed=1).to(device=device, dtype=dtype)
    return MultiCoilMRI(_maps(3, H, W, dtype, device), mask), _randn((2, 1, H, W), _COMPLEX[dtype], device, 6)


def multicoil_poisson(dtype, device):
    """Poisson-disc 2D mask on an even, non-square size."""
    H, W = 24, 20
    mask = poisson_disc_mask((H, W), 3, calib=(6, 6), seed=0).to(device=device, dtype=dtype)
    return MultiCoilMRI(_maps(4, H, W, dtype, device), mask), _randn((3, 1, H, W), _COMPLEX[dtype], device, 7)


def multicoil_per_sample(dtype, device):
    """A distinct weighted row mask and coil maps per sample."""
    H, W = 19, 25
    rows = (_randn((2, H), dtype, device, 8) > 0.8).to(dtype) * (1 + _randn((2, H), dtype, device, 9).abs())
    mask = rows[:, :, None].expand(2, H, W).contiguous()
    maps = torch.stack([_maps(3, H, W, dtype, device, seed) for seed in (13, 14)])
    return MultiCoilMRI(maps, mask), _randn((2, 1, H, W), _COMPLEX[dtype], device, 10)


def multicoil_real2ch(dtype, device):
    """``MultiCoilMRI @ RealToComplex``: a real 2-channel image through a multi-coil operator."""
    H, W = 25, 19
    mask = (_randn((H, W), dtype, device, 11) > -0.3).to(dtype)
    op = MultiCoilMRI(_maps(3, H, W, dtype, device), mask) @ RealToComplex()
    return op, _randn((2, 2, H, W), dtype, device, 12)


def single_real2ch(dtype, device):
    """``SingleCoilMRI @ RealToComplex`` on a weighted 2D mask: closed-form solves through the embedding."""
    H, W = 16, 15
    mask = (_randn((H, W), dtype, device, 16) > 0).to(dtype) * (1 + _randn((H, W), dtype, device, 17).abs())
    return SingleCoilMRI(mask) @ RealToComplex(), _randn((3, 4, H, W), dtype, device, 18)


def multicoil_padded(dtype, device):
    """``MultiCoilMRI @ CenterCrop``: an unknown padded to (24, 24) measured on its (19, 21) centre."""
    H, W = 19, 21
    mask = fastmri_mask((H, W), 4, 0.15, seed=3).to(device=device, dtype=dtype)
    op = MultiCoilMRI(_maps(3, H, W, dtype, device), mask) @ CenterCrop((24, 24), (H, W))
    return op, _randn((2, 1, 24, 24), _COMPLEX[dtype], device, 15)


CASES = {
    "mri_single": single,
    "mri_single_real2ch": single_real2ch,
    "mri_multicoil_lines": multicoil_lines,
    "mri_multicoil_lines_even": multicoil_lines_even,
    "mri_multicoil_poisson": multicoil_poisson,
    "mri_multicoil_per_sample": multicoil_per_sample,
    "mri_multicoil_real2ch": multicoil_real2ch,
    "mri_multicoil_padded": multicoil_padded,
}
"""Linear-operator cases for the generic tests (see cases.py)."""
