"""Linear-operator cases for the generic tests (see cases.py): parallel- and fan-beam CT.

Odd, non-square images (23 x 31) with a batch of two, small enough that the whole CT suite
stays fast.
"""

import math

import torch

from operators.ct import FanBeamCT, ParallelBeamCT, limited_angle, sparse_view_angles

SHAPE = (23, 31)


def _x(dtype, device, channels=2):
    g = torch.Generator().manual_seed(2)
    return torch.randn((2, channels, *SHAPE), generator=g, dtype=dtype).to(device)


def parallel(dtype, device):
    return ParallelBeamCT(SHAPE, 17), _x(dtype, device)


def parallel_sparse(dtype, device):
    return ParallelBeamCT(SHAPE, sparse_view_angles(6)), _x(dtype, device)


def limited(dtype, device):
    return ParallelBeamCT(SHAPE, limited_angle(15, 2 * math.pi / 3)), _x(dtype, device)


def parallel_spacing(spacing):
    def build(dtype, device):
        return ParallelBeamCT(SHAPE, 13, detector_spacing=spacing), _x(dtype, device)

    return build


def parallel_irregular(dtype, device):
    """Unsorted angles beyond [0, pi), a detector narrower than the image, small chunks."""
    angles = torch.tensor([2.1, -0.4, 0.0, math.pi / 4, 3.9, 1.3, math.pi / 2, 5.5, 0.77])
    return ParallelBeamCT(SHAPE, angles, n_detectors=20, angle_chunk=2), _x(dtype, device, channels=1)


def fan(dtype, device):
    return FanBeamCT(SHAPE, 16), _x(dtype, device)


def fan_short(dtype, device):
    """Close source, long detector arm, fine bins that don't cover the whole fan."""
    op = FanBeamCT(SHAPE, limited_angle(11, math.pi) * 1.3, source_distance=30, detector_distance=15,
                   n_detectors=41, detector_spacing=0.8, angle_chunk=3)
    return op, _x(dtype, device, channels=1)


CASES = {
    "ct_parallel": parallel,
    "ct_parallel_sparse": parallel_sparse,
    "ct_limited_angle": limited,
    "ct_parallel_spacing_fine": parallel_spacing(0.7),
    "ct_parallel_spacing_coarse": parallel_spacing(1.6),
    "ct_parallel_irregular": parallel_irregular,
    "ct_fan": fan,
    "ct_fan_short": fan_short,
}
"""Linear-operator cases for the generic tests (see cases.py)."""
