"""Adapters both ways between these operators and deepinv's ``Physics`` / ``LinearPhysics``.

deepinv is imported when an adapter is called, so importing :mod:`operators` stays light.
"""

from __future__ import annotations

from torch import Tensor

from operators.base import LinearOperator, Operator


def to_deepinv(op: Operator, noise_model=None):
    """Wrap an operator as a deepinv physics.

    Args:
        op: a :class:`LinearOperator` (gives ``LinearPhysics`` with ``A_adjoint = op.AT``) or any
            :class:`Operator` (gives ``Physics``).
        noise_model: a deepinv noise model for ``physics(x)``; none by default.

    Returns:
        A ``deepinv.physics.LinearPhysics`` or ``deepinv.physics.Physics``.
    """
    import deepinv

    kwargs = {} if noise_model is None else {"noise_model": noise_model}
    if isinstance(op, LinearOperator):
        return deepinv.physics.LinearPhysics(
            A=lambda x, **_: op.A(x), A_adjoint=lambda y, **_: op.AT(y), **kwargs
        )
    if isinstance(op, Operator):
        return deepinv.physics.Physics(A=lambda x, **_: op.A(x), **kwargs)
    raise ValueError(f"op: expected an operators.Operator, got {type(op).__name__}")


class DeepinvOperator(Operator):
    """A deepinv ``Physics`` as a (nonlinear) operator: ``A = physics.A``."""

    def __init__(self, physics):
        self.physics = physics

    def A(self, x: Tensor) -> Tensor:
        return self.physics.A(x)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({type(self.physics).__name__})"


class DeepinvLinearOperator(DeepinvOperator, LinearOperator):
    """A deepinv ``LinearPhysics`` as a linear operator: ``AT = physics.A_adjoint``."""

    def AT(self, y: Tensor) -> Tensor:
        return self.physics.A_adjoint(y)

    def normal(self, x: Tensor) -> Tensor:
        return self.physics.A_adjoint_A(x)


def from_deepinv(physics) -> Operator:
    """Wrap a deepinv physics: ``LinearPhysics`` becomes a :class:`LinearOperator`.

    The physics' noise model is not applied; noise stays separate from the operator.
    """
    import deepinv

    if isinstance(physics, deepinv.physics.LinearPhysics):
        return DeepinvLinearOperator(physics)
    if isinstance(physics, deepinv.physics.Physics):
        return DeepinvOperator(physics)
    raise ValueError(f"physics: expected a deepinv Physics, got {type(physics).__name__}")
