"""CT operators against independent references: a literal Joseph projector, closed-form Radon
transforms of ellipses, FBP reconstructions; plus batching, autograd and input validation."""

import functools
import math

import numpy as np
import pytest
import torch

from operators.ct import (
    FILTERS,
    FanBeamCT,
    ParallelBeamCT,
    angular_weights,
    ellipse_image,
    ellipse_sinogram,
    fbp,
    limited_angle,
    shepp_logan_ellipses,
    sparse_view_angles,
    uniform_angles,
)

# An asymmetric pair of ellipses (value, a, b, x0, y0, phi): pins the orientation conventions,
# which the nearly left-right symmetric Shepp-Logan phantom would not.
ASYMMETRIC = torch.tensor(
    [[1.0, 30.0, 15.0, 20.0, -10.0, 0.5], [0.5, 10.0, 20.0, -25.0, 20.0, -0.3]], dtype=torch.float64
)


@functools.lru_cache(maxsize=None)
def _phantom(shape, asymmetric=False):
    """``(ellipses, image)``: the modified Shepp-Logan (or the asymmetric pair), 4x4 supersampled."""
    ellipses = ASYMMETRIC if asymmetric else shepp_logan_ellipses(shape)
    return ellipses, ellipse_image(ellipses, shape, supersample=4)


def _rel(a, b):
    return float((a - b).norm() / b.norm())


def _psnr(x, ref):
    return float(10 * torch.log10(ref.max() ** 2 / ((x - ref) ** 2).mean()))


def _away_from_outer_edge(ellipses, theta, s, margin=2.0):
    """Bins whose line passes at least ``margin`` pixels inside the first (outer) ellipse."""
    _, a, b, x0, y0, phi = ellipses[0]
    m = torch.sqrt((a * torch.cos(theta - phi)) ** 2 + (b * torch.sin(theta - phi)) ** 2)
    return (s - (x0 * torch.cos(theta) + y0 * torch.sin(theta))).abs() < m - margin


# --- a literal Joseph projector (loops, numpy) ------------------------------------------------


def _joseph_matrix(shape, rays):
    """Dense system matrix of Joseph's method for rays given as (point, direction) pairs."""
    H, W = shape
    M = np.zeros((len(rays), H * W))
    for r, ((px, py), (dx, dy)) in enumerate(rays):
        if abs(dy) >= abs(dx):  # step over rows, interpolate along x
            for i in range(H):
                y = (H - 1) / 2 - i
                col = px + (y - py) * dx / dy + (W - 1) / 2
                j = math.floor(col)
                for jj, w in ((j, 1 - (col - j)), (j + 1, col - j)):
                    if 0 <= jj < W:
                        M[r, i * W + jj] += w * math.hypot(dx, dy) / abs(dy)
        else:  # step over columns, interpolate along y
            for j in range(W):
                x = j - (W - 1) / 2
                row = (H - 1) / 2 - (py + (x - px) * dy / dx)
                i = math.floor(row)
                for ii, w in ((i, 1 - (row - i)), (i + 1, row - i)):
                    if 0 <= ii < H:
                        M[r, ii * W + j] += w * math.hypot(dx, dy) / abs(dx)
    return torch.from_numpy(M)


def _parallel_rays(op):
    rays = []
    for t in op.angles.tolist():
        for s in op.detector_positions.tolist():
            rays.append(((s * math.cos(t), s * math.sin(t)), (-math.sin(t), math.cos(t))))
    return rays


def _fan_rays(op):
    rays = []
    ds, dd = op.source_distance, op.detector_distance
    for b in op.angles.tolist():
        e, e_perp = (math.cos(b), math.sin(b)), (-math.sin(b), math.cos(b))
        source = (-ds * e_perp[0], -ds * e_perp[1])
        for u in op.detector_positions.tolist():
            target = (dd * e_perp[0] + u * e[0], dd * e_perp[1] + u * e[1])
            rays.append((source, (target[0] - source[0], target[1] - source[1])))
    return rays


@pytest.mark.parametrize(
    "op",
    [
        ParallelBeamCT((9, 12), 7),
        ParallelBeamCT((11, 8), [0.0, math.pi / 4, 3 * math.pi / 4, 2.0, -1.0, 4.4], detector_spacing=0.7),
        ParallelBeamCT((10, 10), 5, n_detectors=9, detector_spacing=1.6, angle_chunk=2),
        FanBeamCT((9, 12), 8),
        FanBeamCT((11, 8), 6, source_distance=12, detector_distance=20, detector_spacing=0.9, n_detectors=31),
    ],
    ids=repr,
)
def test_matches_literal_joseph_and_its_transpose(op, generator):
    rays = _parallel_rays(op) if isinstance(op, ParallelBeamCT) else _fan_rays(op)
    M = _joseph_matrix(op.img_shape, rays)
    x = torch.randn(2, 1, *op.img_shape, generator=generator, dtype=torch.float64)
    y = torch.randn(2, 1, *op.sinogram_shape, generator=generator, dtype=torch.float64)
    torch.testing.assert_close(op.A(x).flatten(2), x.flatten(2) @ M.T, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(op.AT(y).flatten(2), y.flatten(2) @ M, rtol=1e-12, atol=1e-12)


def test_axis_aligned_views_are_column_and_row_sums(generator):
    # With unit bins and n_detectors - W, n_detectors - H even, bins sit on pixel centres.
    op = ParallelBeamCT((23, 31), [0.0, math.pi / 2], n_detectors=41)
    x = torch.randn(2, 3, 23, 31, generator=generator, dtype=torch.float64)
    y = op.A(x)
    torch.testing.assert_close(y[..., 0, 5:36], x.sum(-2))  # theta = 0: s = x
    torch.testing.assert_close(y[..., 1, 9:32], x.sum(-1).flip(-1))  # theta = pi/2: s = y, y up
    assert y[..., 0, :5].abs().max() == 0 and y[..., 1, 32:].abs().max() == 0


def test_orientation_of_image_and_sinogram():
    disk = torch.tensor([[1.0, 2.0, 2.0, 10.0, 5.0, 0.0]], dtype=torch.float64)
    img = ellipse_image(disk, (41, 41))
    rows, cols = torch.meshgrid(torch.arange(41.0), torch.arange(41.0), indexing="ij")
    centroid = [float((img * grid).sum() / img.sum()) for grid in (rows, cols)]
    assert centroid == pytest.approx([20 - 5, 20 + 10])  # y points up, x right
    op = ParallelBeamCT((41, 41), [0.0, math.pi / 2, math.pi / 4])
    y = op.A(img[None, None])[0, 0]
    s = op.detector_positions
    peaks = torch.tensor([10.0, 5.0, 15 / math.sqrt(2)], dtype=torch.float64)  # s = x cos + y sin
    assert torch.allclose(s[y.argmax(-1)], peaks, atol=0.8)


# --- closed-form Radon transforms -------------------------------------------------------------


@pytest.mark.parametrize("shape", [(128, 128), (129, 161)])
@pytest.mark.parametrize("spacing", [1.0, 0.7, 1.6])
def test_parallel_projection_matches_closed_form(shape, spacing):
    for asymmetric in (False, True):
        ellipses, img = _phantom(shape, asymmetric)
        op = ParallelBeamCT(shape, 90, detector_spacing=spacing)
        y = op.A(img[None, None])[0, 0]
        theta, s = op.angles[:, None], op.detector_positions[None, :]
        ref = ellipse_sinogram(ellipses, op.angles, op.detector_positions)
        keep = _away_from_outer_edge(ellipses, theta, s)
        assert _rel(y[keep], ref[keep]) < 0.025
        assert _rel(y, ref) < 0.04
        # The conventions matter: mirrored angles give a different sinogram.
        mirrored = ellipse_sinogram(ellipses, -op.angles, op.detector_positions)
        if asymmetric:
            assert _rel(y, mirrored) > 0.3


@pytest.mark.parametrize(
    "geometry",
    [{}, {"source_distance": 200, "detector_distance": 100, "detector_spacing": 1.0},
     {"source_distance": 120, "detector_distance": 300}],
    ids=["default", "far", "near"],
)
def test_fan_projection_matches_closed_form(geometry):
    shape = (97, 131)
    for asymmetric in (False, True):
        ellipses, img = _phantom(shape, asymmetric)
        op = FanBeamCT(shape, 120, **geometry)
        y = op.A(img[None, None])[0, 0]
        theta, s = op.line_parameters()
        ref = ellipse_sinogram(ellipses, theta, s)
        keep = _away_from_outer_edge(ellipses, theta, s)
        assert _rel(y[keep], ref[keep]) < 0.025
        assert _rel(y, ref) < 0.05


def test_fan_tends_to_parallel(generator):
    shape = (23, 31)
    far = FanBeamCT(shape, 12, source_distance=1e6, detector_distance=1.0, n_detectors=39)
    parallel = ParallelBeamCT(shape, far.angles, n_detectors=39)
    x = torch.rand(2, 1, *shape, generator=generator, dtype=torch.float64)
    assert _rel(far.A(x), parallel.A(x)) < 1e-3
    theta, s = far.line_parameters()
    wrapped = torch.remainder(theta - far.angles[:, None] + math.pi, 2 * math.pi) - math.pi
    assert wrapped.abs().max() < 1e-4
    assert torch.allclose(s, parallel.detector_positions.expand_as(s), atol=1e-4)


# --- filtered back-projection -----------------------------------------------------------------


def _interior(ellipses, shape):
    inner = ellipses[:1].clone()
    inner[0, 1:3] *= 0.9
    return ellipse_image(inner, shape) > 0


@pytest.mark.parametrize("shape", [(128, 128), (121, 147)])
@pytest.mark.parametrize("filter", sorted(FILTERS))
def test_parallel_fbp_reconstructs_phantom(shape, filter):
    ellipses, img = _phantom(shape)
    op = ParallelBeamCT(shape, 180)
    y = ellipse_sinogram(ellipses, op.angles, op.detector_positions).to(torch.float32)[None, None]
    rec = fbp(y, op, filter)[0, 0].double()
    inside = _interior(ellipses, shape)
    assert _rel(rec[inside], img[inside]) < 0.1
    assert _psnr(rec, img) > 23
    torch.testing.assert_close(op.fbp(y, filter), fbp(y, op, filter))


def test_parallel_fbp_of_its_own_projections_and_irregular_angles(generator):
    shape = (128, 128)
    ellipses, img = _phantom(shape)
    inside = _interior(ellipses, shape)
    irregular = torch.sort(torch.rand(240, generator=generator, dtype=torch.float64) * math.pi).values
    for angles in (180, irregular, uniform_angles(360, 2 * math.pi)):
        op = ParallelBeamCT(shape, angles)
        rec = op.fbp(op.A(img[None, None]))[0, 0]
        assert _rel(rec[inside], img[inside]) < 0.08
        assert _psnr(rec, img) > 27


@pytest.mark.parametrize(
    "geometry",
    [{}, {"source_distance": 200, "detector_distance": 100, "detector_spacing": 1.0}],
    ids=["default", "far"],
)
def test_fan_fbp_reconstructs_phantom(geometry):
    shape = (128, 128)
    ellipses, img = _phantom(shape)
    op = FanBeamCT(shape, 240, **geometry)
    rec = op.fbp(op.A(img[None, None]))[0, 0]
    inside = _interior(ellipses, shape)
    assert _rel(rec[inside], img[inside]) < 0.1
    assert _psnr(rec, img) > 24


def test_angular_weights():
    def full(n, value):
        return torch.full((n,), value, dtype=torch.float64)

    torch.testing.assert_close(angular_weights(uniform_angles(8), math.pi), full(8, math.pi / 8))
    wedge = limited_angle(10, math.pi / 2)
    torch.testing.assert_close(angular_weights(wedge, math.pi), full(10, math.pi / 20))
    twice = angular_weights(uniform_angles(12, 2 * math.pi), math.pi)  # every line twice
    torch.testing.assert_close(twice.sum(), torch.tensor(math.pi, dtype=torch.float64))
    shuffled = torch.tensor([0.3, 0.1, 0.2], dtype=torch.float64)
    torch.testing.assert_close(angular_weights(shuffled, 2 * math.pi), full(3, 0.1))
    doubled_wedge = torch.cat([wedge, wedge + math.pi])  # the same lines twice
    total = angular_weights(doubled_wedge, math.pi).sum()
    torch.testing.assert_close(total, torch.tensor(math.pi / 2, dtype=torch.float64))


# --- geometry helpers, shapes, batches, dtypes --------------------------------------------------


def test_angle_helpers():
    quarter = torch.tensor([0, 1, 2, 3], dtype=torch.float64) * math.pi / 4
    torch.testing.assert_close(uniform_angles(4), quarter)
    assert uniform_angles(5, 2 * math.pi).dtype == torch.float64
    assert sparse_view_angles(6).shape == (6,) and float(sparse_view_angles(6).max()) < math.pi
    wedge = limited_angle(30, math.radians(120))
    assert wedge.shape == (30,) and float(wedge.max()) < math.radians(120) and float(wedge.min()) == 0


def test_sinogram_shapes():
    x = torch.zeros(3, 2, 23, 31)
    sparse = ParallelBeamCT((23, 31), sparse_view_angles(8))
    assert sparse.A(x).shape == (3, 2, 8, math.ceil(math.hypot(23, 31)))
    limited = ParallelBeamCT((23, 31), limited_angle(20, 2.0), detector_spacing=0.5)
    assert limited.A(x).shape == (3, 2, 20, math.ceil(math.hypot(23, 31) / 0.5))
    fan = FanBeamCT((23, 31), 16, n_detectors=50)
    assert fan.A(x).shape == (3, 2, 16, 50)
    assert fan.AT(fan.A(x)).shape == x.shape


@pytest.mark.parametrize("op", [ParallelBeamCT((17, 21), 11), FanBeamCT((17, 21), 9)], ids=repr)
def test_volume_is_transformed_slice_by_slice(op, generator):
    volume = torch.randn(2, 5, 17, 21, generator=generator, dtype=torch.float64)  # (B, depth, H, W)
    slices = volume.reshape(-1, 1, 17, 21)
    y = op.A(slices)
    for k in range(slices.shape[0]):
        torch.testing.assert_close(y[k : k + 1], op.A(slices[k : k + 1]), rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(op.A(volume).reshape_as(y), y, rtol=1e-13, atol=1e-13)  # depth as channels
    back = op.AT(y)
    for k in range(slices.shape[0]):
        torch.testing.assert_close(back[k : k + 1], op.AT(y[k : k + 1]), rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("cls", [ParallelBeamCT, FanBeamCT])
def test_chunking_does_not_change_results(cls, generator):
    x = torch.randn(2, 3, 19, 25, generator=generator, dtype=torch.float64)
    whole, single = cls((19, 25), 14), cls((19, 25), 14, angle_chunk=1)
    torch.testing.assert_close(single.A(x), whole.A(x), rtol=1e-13, atol=1e-13)
    y = whole.A(x)
    torch.testing.assert_close(single.AT(y), whole.AT(y), rtol=1e-13, atol=1e-13)


def test_half_precision_is_computed_in_single(generator):
    op = ParallelBeamCT((19, 25), 10)
    x = torch.rand(1, 1, 19, 25, generator=generator)
    y = op.A(x.half())
    assert y.dtype == torch.float16
    torch.testing.assert_close(y.float(), op.A(x), rtol=2e-3, atol=2e-2)
    assert op.AT(y).dtype == torch.float16


# --- autograd ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "op", [ParallelBeamCT((5, 7), 4, detector_spacing=0.8), FanBeamCT((5, 7), 5)], ids=repr
)
def test_gradcheck(op, generator):
    x = torch.randn(2, 1, 5, 7, generator=generator, dtype=torch.float64, requires_grad=True)
    y = torch.randn(2, 1, *op.sinogram_shape, generator=generator, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(op.A, (x,))
    assert torch.autograd.gradcheck(op.AT, (y,))
    assert torch.autograd.gradgradcheck(op.A, (x,))


def test_gradient_of_data_fit_is_the_adjoint(generator):
    op = ParallelBeamCT((23, 31), 12)
    x = torch.randn(2, 1, 23, 31, generator=generator, dtype=torch.float64, requires_grad=True)
    target = torch.randn(2, 1, *op.sinogram_shape, generator=generator, dtype=torch.float64)
    loss = 0.5 * (op.A(x) - target).square().sum()
    (grad,) = torch.autograd.grad(loss, x)
    torch.testing.assert_close(grad, op.AT(op.A(x.detach()) - target), rtol=1e-12, atol=1e-12)


# --- bad input --------------------------------------------------------------------------------

SHAPE = (23, 31)


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: ParallelBeamCT(SHAPE, []), "angles"),
        (lambda: ParallelBeamCT(SHAPE, torch.zeros(0)), "angles"),
        (lambda: ParallelBeamCT(SHAPE, torch.zeros(3, 2)), "angles"),
        (lambda: ParallelBeamCT(SHAPE, [0.0, float("nan")]), "angles"),
        (lambda: ParallelBeamCT(SHAPE, [0.0, float("inf")]), "angles"),
        (lambda: ParallelBeamCT(SHAPE, torch.tensor([0.1j])), "angles"),
        (lambda: ParallelBeamCT(SHAPE, 0), "angles"),
        (lambda: FanBeamCT(SHAPE, []), "angles"),
        (lambda: ParallelBeamCT((23,), 10), "img_shape"),
        (lambda: ParallelBeamCT((0, 31), 10), "img_shape"),
        (lambda: ParallelBeamCT(SHAPE, 10, n_detectors=0), "n_detectors"),
        (lambda: FanBeamCT(SHAPE, 10, n_detectors=0), "n_detectors"),
        (lambda: ParallelBeamCT(SHAPE, 10, detector_spacing=0), "detector_spacing"),
        (lambda: ParallelBeamCT(SHAPE, 10, detector_spacing=-1.0), "detector_spacing"),
        (lambda: ParallelBeamCT(SHAPE, 10, detector_spacing=float("nan")), "detector_spacing"),
        (lambda: FanBeamCT(SHAPE, 10, detector_spacing=0), "detector_spacing"),
        (lambda: FanBeamCT(SHAPE, 10, source_distance=math.hypot(*SHAPE) / 2), "source_distance"),
        (lambda: FanBeamCT(SHAPE, 10, source_distance=5.0), "source_distance"),
        (lambda: FanBeamCT(SHAPE, 10, detector_distance=0.0), "detector_distance"),
        (lambda: ParallelBeamCT(SHAPE, 10, angle_chunk=0), "angle_chunk"),
        (lambda: uniform_angles(0), "n"),
        (lambda: sparse_view_angles(0), "n_views"),
        (lambda: limited_angle(10, 4.0), "max_angle"),
        (lambda: limited_angle(10, 0.0), "max_angle"),
        (lambda: ellipse_image(torch.zeros(3, 5), SHAPE), "ellipses"),
        (lambda: ellipse_sinogram(torch.zeros(2, 6), uniform_angles(3), torch.zeros(4)), "ellipses"),
    ],
)
def test_bad_construction_raises(build, match):
    with pytest.raises(ValueError, match=match):
        build()


@pytest.mark.parametrize("op", [ParallelBeamCT(SHAPE, 10), FanBeamCT(SHAPE, 10)], ids=repr)
def test_bad_tensors_raise(op):
    x = torch.zeros(2, 1, *SHAPE)
    y = op.A(x)
    bad_x = [
        torch.zeros(*SHAPE),
        torch.zeros(1, *SHAPE),
        torch.zeros(2, 1, 31, 23),
        torch.zeros(2, 1, 23, 30),
        torch.zeros(2, 1, *SHAPE, dtype=torch.complex64),
        torch.zeros(2, 1, *SHAPE, dtype=torch.int64),
    ]
    for bad in bad_x:
        with pytest.raises(ValueError, match="x"):
            op.A(bad)
    bad_y = [y[0], y[..., :-1], y[..., :-1, :], torch.zeros_like(y, dtype=torch.complex64), y.flatten(2)]
    for bad in bad_y:
        with pytest.raises(ValueError, match="y"):
            op.AT(bad)
        with pytest.raises(ValueError, match="sinogram"):
            fbp(bad, op)
    with pytest.raises(ValueError, match="filter"):
        fbp(y, op, "butterworth")
    with pytest.raises(ValueError, match="op"):
        fbp(y, "not an operator")
