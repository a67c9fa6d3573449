"""Measurement units: candidates, per-unit sums, and the operator restricted to acquired units."""

from __future__ import annotations

import pytest
import torch

from operators import (
    FanBeamCT,
    Inpainting,
    Matrix,
    MultiCoilMRI,
    ParallelBeamCT,
    RealToComplex,
    SingleCoilMRI,
    adjointness_error,
    center_lines,
    fastmri_mask,
    line_budget,
    measurement_units,
)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _cases():
    g = _gen()
    mask = fastmri_mask((8, 8), 2, 0.25, kind="equispaced", seed=0).double()
    maps = torch.randn(3, 8, 8, dtype=torch.complex128, generator=g)
    pixels = (torch.rand(8, 8, generator=g) > 0.3).double()
    return {
        "multicoil": (MultiCoilMRI(maps, mask) @ RealToComplex(), (2, 2, 8, 8), "lines"),
        "singlecoil": (SingleCoilMRI(mask), (2, 1, 8, 8), "lines"),
        "ct": (ParallelBeamCT((8, 8), 6), (2, 1, 8, 8), "views"),
        "pixels": (Inpainting(pixels), (2, 1, 8, 8), "pixels"),
        "blocks": (Inpainting(pixels), (2, 1, 8, 8), "blocks"),
        "elements": (Matrix(torch.randn(5, 4, dtype=torch.float64, generator=g), (1, 1, 4)), (2, 1, 1, 4), "elements"),
    }


CASES = _cases()


def _input(shape, op, seed=1):
    x = torch.randn(shape, dtype=torch.float64, generator=_gen(seed))
    return x.to(torch.complex128) if isinstance(op, SingleCoilMRI) else x


@pytest.mark.parametrize("name", sorted(CASES))
def test_restricted_operator_is_the_masked_measurement_and_adjoint(name):
    op, shape, kind = CASES[name]
    x = _input(shape, op)
    y = op.A(x)
    units = measurement_units(op, kind, block=3, shape=tuple(y.shape))
    assert units.kind == kind
    acquired = torch.rand(2, units.num_units, generator=_gen(2)) > 0.5
    restricted = units.operator(acquired)
    mask = units.element_mask(acquired)
    torch.testing.assert_close(restricted.A(x), mask * y)
    assert adjointness_error(restricted, x, generator=_gen(3)) < 1e-10
    # particles: each problem's units for its rows
    rows = units.operator(acquired, repeat=3)
    torch.testing.assert_close(rows.A(x.repeat_interleave(3, 0)), (mask * y).repeat_interleave(3, 0))


@pytest.mark.parametrize("name", sorted(CASES))
def test_per_unit_sums_over_each_units_elements(name):
    op, shape, kind = CASES[name]
    y = op.A(_input(shape, op))
    units = measurement_units(op, kind, block=3, shape=tuple(y.shape))
    values = y.abs().square()
    sums = units.per_unit(values)
    for u in torch.randperm(units.num_units, generator=_gen(4))[:5].tolist():
        one = torch.zeros(2, units.num_units, dtype=torch.bool)
        one[:, u] = True
        torch.testing.assert_close(sums[:, u], (units.element_mask(one) * values).flatten(1).sum(1))
    torch.testing.assert_close(sums.sum(1), values.flatten(1).sum(1))


def test_candidates_are_the_measured_units():
    op, _, _ = CASES["multicoil"]
    units = measurement_units(op)
    mask = fastmri_mask((8, 8), 2, 0.25, kind="equispaced", seed=0)
    assert units.grid == (8,) and units.candidates[0].tolist() == (mask[0] > 0).tolist()
    pixels = measurement_units(CASES["pixels"][0])
    assert torch.equal(pixels.candidates[0], CASES["pixels"][0].mask.flatten() > 0)
    blocks = measurement_units(CASES["blocks"][0], "blocks", block=3)
    assert blocks.grid == (3, 3)
    ct = measurement_units(CASES["ct"][0])
    assert ct.grid == (6,) and bool(ct.candidates.all())


def test_bad_units_name_the_argument():
    op, _, _ = CASES["multicoil"]
    with pytest.raises(ValueError, match=r"unit: 'views' does not fit"):
        measurement_units(op, "views")
    with pytest.raises(ValueError, match=r"unit: expected 'auto' or one of lines, views, pixels, blocks, elements"):
        measurement_units(op, "rows")
    with pytest.raises(ValueError, match=r"shape: the measurement's shape is needed"):
        measurement_units(CASES["elements"][0])
    with pytest.raises(ValueError, match=r"block: expected a positive integer"):
        measurement_units(CASES["blocks"][0], "blocks", block=0)
    with pytest.raises(ValueError, match=r"acquired: expected \(B, 8\) booleans"):
        measurement_units(op).operator(torch.ones(1, 5, dtype=torch.bool))


def test_line_budget_is_the_equispaced_masks():
    for acceleration, centre in ((4, 5), (8, 3)):
        lines, band = line_budget((64, 64), acceleration, seed=(1, 2, 3))
        mask = fastmri_mask((64, 64), acceleration, kind="equispaced", seed=(1, 2, 3))
        assert lines == int((mask[0] > 0).sum()) and band == centre == center_lines(64, acceleration)


@pytest.mark.parametrize("projector", [ParallelBeamCT((8, 8), 12), FanBeamCT((8, 8), 12)])
def test_views_shared_by_the_batch_give_a_projector_over_those_angles(projector):
    x = torch.rand(2, 1, 8, 8, dtype=torch.float64, generator=_gen(0))
    y = projector.A(x)
    units = measurement_units(projector)
    acquired = torch.zeros(2, 12, dtype=torch.bool)
    acquired[:, [1, 5, 6]] = True
    op, y_views = units.subset(acquired, y)
    assert type(op) is type(projector) and op.angles.tolist() == projector.angles[[1, 5, 6]].tolist()
    torch.testing.assert_close(op.A(x), y[:, :, [1, 5, 6]])
    torch.testing.assert_close(y_views, y[:, :, [1, 5, 6]])
    acquired[1, 1] = False
    assert units.subset(acquired, y) is None  # the problems acquired different views
    assert measurement_units(CASES["multicoil"][0]).subset(torch.ones(1, 8, dtype=torch.bool), y) is None
