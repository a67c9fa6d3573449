import deepinv
import torch

from operators.base import adjointness_error
from operators.inpainting import Inpainting
from operators.interop import DeepinvLinearOperator, DeepinvOperator, from_deepinv, to_deepinv
from operators.nonlinear import PhaseRetrieval
from operators.superres import SuperResolution


def test_ours_in_deepinv(generator):
    physics = to_deepinv(SuperResolution(2, "bicubic"))
    assert isinstance(physics, deepinv.physics.LinearPhysics)
    x = torch.randn(2, 1, 10, 14, generator=generator, dtype=torch.float64)
    assert abs(float(physics.adjointness_test(x))) < 1e-10
    torch.testing.assert_close(physics.A(x), SuperResolution(2, "bicubic").A(x))
    nonlinear = to_deepinv(PhaseRetrieval())
    assert not isinstance(nonlinear, deepinv.physics.LinearPhysics)
    torch.testing.assert_close(nonlinear.A(x), PhaseRetrieval().A(x))


def test_deepinv_in_ours(generator):
    mask = (torch.rand(1, 9, 11, generator=generator) > 0.5).double()
    physics = deepinv.physics.Inpainting(img_size=(1, 9, 11), mask=mask)
    op = from_deepinv(physics)
    assert isinstance(op, DeepinvLinearOperator)
    x = torch.randn(3, 1, 9, 11, generator=generator, dtype=torch.float64)
    torch.testing.assert_close(op.A(x), Inpainting(mask[0]).A(x))
    assert adjointness_error(op, x, generator=generator) < 1e-10
    assert isinstance(from_deepinv(deepinv.physics.Physics(A=torch.square)), DeepinvOperator)
