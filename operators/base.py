r"""Operator base classes.

An operator is a small object fixed at construction (mask, coil maps, angles) and never
mutated by a call. Linear operators expose

* ``A(x)``: the forward model,
* ``AT(y)``: the adjoint (conjugate transpose), so that
  :math:`\operatorname{Re}\langle A x, y\rangle = \operatorname{Re}\langle x, A^T y\rangle`,
* ``normal(x)``: :math:`A^T A x`, in closed form where one exists,
* ``pinv(y)``: the minimum-norm least-squares solution (closed form or conjugate gradient).

Operators compose with ``@`` (the adjoint of a composition reverses its parts), add, subtract
and scale by scalars. Tensors are batch-first, ``(B, C, H, W)``; buffers follow the device and
precision of the input, so an operator built on the CPU in float32 applies to a float64 or a
CUDA tensor without being rebuilt (``op.to(device, dtype)`` moves the buffers once instead).
Half-precision input (float16, bfloat16, complex32) to the FFT-based operators, the
pseudo-inverses, :class:`Matrix` and compositions is computed in float32 / complex64 and cast
back (:func:`half_in_single_precision`). Inputs that are empty, and to ``pinv`` non-finite, are
errors that name the argument (:func:`check_tensor`, :func:`check_finite`).
"""

from __future__ import annotations

import copy
import functools
import math
import numbers
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

_COMPLEX_OF = {
    torch.float16: torch.complex32,
    torch.float32: torch.complex64,
    torch.float64: torch.complex128,
}
_REAL_OF = {c: r for r, c in _COMPLEX_OF.items()}


def complex_dtype(dtype: torch.dtype) -> torch.dtype:
    """The complex dtype with the precision of ``dtype`` (complex dtypes map to themselves;
    bfloat16 maps to complex64, as torch has no complex bfloat16)."""
    if dtype == torch.bfloat16:
        return torch.complex64
    return dtype if dtype.is_complex else _COMPLEX_OF[dtype]


def real_dtype(dtype: torch.dtype) -> torch.dtype:
    """The real dtype with the precision of ``dtype`` (real dtypes map to themselves)."""
    return _REAL_OF[dtype] if dtype.is_complex else dtype


HALF_PRECISION = (torch.float16, torch.bfloat16, torch.complex32)
"""Dtypes that :func:`half_in_single_precision` computes in float32 / complex64."""


def _in_precision_of(t: Tensor, dtype: torch.dtype) -> Tensor:
    """``t`` cast back to the half precision ``dtype``: float16 and complex32 give float16 or
    complex32, bfloat16 gives bfloat16 or, for complex ``t``, complex64 (no complex bfloat16)."""
    if t.is_complex():
        return t if dtype == torch.bfloat16 else t.to(torch.complex32)
    return t.to(torch.float16 if dtype == torch.complex32 else dtype)


def in_single_precision(fn: Callable[[Tensor], Tensor], t: Tensor) -> Tensor:
    """``fn(t)``, computed in float32 / complex64 when ``t`` is float16, bfloat16 or complex32 and
    cast back to ``t``'s precision (see :func:`half_in_single_precision`); ``fn(t)`` otherwise."""
    if t.dtype not in HALF_PRECISION:
        return fn(t)
    return _in_precision_of(fn(t.to(torch.complex64 if t.is_complex() else torch.float32)), t.dtype)


def half_in_single_precision(method: Callable) -> Callable:
    """Run an operator method in single precision for half-precision input.

    ``torch.fft`` has no float16 or bfloat16 kernels on the CPU (and on CUDA float16 only for
    power-of-two sizes), complex32 lacks most CPU kernels (sums, divisions, matrix products), and
    half-precision inner products overflow in conjugate gradient. A float16, bfloat16 or
    complex32 input is therefore computed in float32 / complex64 and the result cast back to the
    input's precision (complex results of bfloat16 input stay complex64: torch has no complex
    bfloat16). Any other input takes ``method`` unchanged, so float32, float64 and their complex
    dtypes keep their results bit for bit. Used by the FFT-based operators, the pseudo-inverses,
    :class:`Matrix` and compositions (which then run their parts in single precision throughout).

    Args:
        method: ``method(self, t, *args, **kwargs)`` with ``t`` the tensor input.

    Returns:
        the wrapped method.
    """

    @functools.wraps(method)
    def wrapped(self, t, *args, **kwargs):
        if not isinstance(t, Tensor) or t.dtype not in HALF_PRECISION:
            return method(self, t, *args, **kwargs)
        return in_single_precision(lambda u: method(self, u, *args, **kwargs), t)

    return wrapped


def cast_like(t: Tensor, like: Tensor) -> Tensor:
    """``t`` on ``like``'s device at ``like``'s precision; real stays real, complex stays complex.

    Integer and boolean tensors only change device. A no-op (no copy) when nothing changes.
    """
    if t.is_complex():
        dtype = complex_dtype(like.dtype) if like.is_floating_point() or like.is_complex() else t.dtype
    elif t.is_floating_point():
        dtype = real_dtype(like.dtype) if like.is_floating_point() or like.is_complex() else t.dtype
    else:
        dtype = t.dtype
    return t.to(device=like.device, dtype=dtype)


def check_tensor(
    x: Tensor,
    name: str,
    *,
    ndim: int | None = None,
    shape: Sequence[int | None] | None = None,
    complex_: bool | None = None,
) -> None:
    """Raise a ``ValueError`` naming ``name`` when ``x`` is not the expected kind of tensor.

    Args:
        x: the tensor to check.
        name: the argument name used in the message.
        ndim: the required number of dimensions.
        shape: the required trailing shape; ``None`` entries match any size.
        complex_: ``True`` requires a complex dtype, ``False`` a real floating dtype.

    Every tensor must also be non-empty: a batch of 0 samples, 0 coils or 0 pixels is an error.
    """
    if not isinstance(x, Tensor):
        raise ValueError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    if ndim is not None and x.ndim != ndim:
        raise ValueError(f"{name}: expected {ndim} dimensions, got shape {tuple(x.shape)}")
    if shape is not None:
        tail = tuple(x.shape[x.ndim - len(shape) :]) if x.ndim >= len(shape) else tuple(x.shape)
        if len(tail) != len(shape) or any(s is not None and s != t for s, t in zip(shape, tail)):
            want = "(..., " + ", ".join("*" if s is None else str(s) for s in shape) + ")"
            raise ValueError(f"{name}: expected shape {want}, got {tuple(x.shape)}")
    if complex_ is True and not x.is_complex():
        raise ValueError(f"{name}: expected a complex tensor, got dtype {x.dtype}")
    if complex_ is False and not x.is_floating_point():
        raise ValueError(f"{name}: expected a real floating-point tensor, got dtype {x.dtype}")
    if x.numel() == 0:
        raise ValueError(
            f"{name}: expected a non-empty tensor (every dimension at least 1), got shape {tuple(x.shape)}"
        )


def check_finite(x: Tensor, name: str) -> None:
    """Raise a ``ValueError`` naming ``name`` when ``x`` holds NaN or infinite values.

    One reduction and one host synchronisation per call; the bad values are counted only when
    there are some. Complex tensors are checked on both parts.

    Args:
        x: the tensor to check.
        name: the argument name used in the message.
    """
    if not bool(torch.isfinite(x).all()):
        bad = int((~torch.isfinite(x)).sum())
        raise ValueError(
            f"{name}: contains {bad} NaN or infinite values (of {x.numel()}); they would spread to "
            f"every result, so replace them (e.g. torch.nan_to_num) or mask them out first"
        )


def check_weights(w: Tensor, name: str, *, at_most: float | None = None, hint: str = "") -> None:
    """Raise a ``ValueError`` naming ``name`` unless the real mask or weights ``w`` are finite,
    non-negative and, with ``at_most``, no larger than it. Boolean masks always pass.

    Meant for constructors (one check per operator, not per call).

    Args:
        w: a real or boolean tensor.
        name: the argument name used in the message.
        at_most: the largest value allowed, e.g. 1 for a mask of observed pixels.
        hint: appended to the message for values above ``at_most``.
    """
    if w.dtype == torch.bool:
        return
    check_finite(w, name)
    low, high = (float(v) for v in torch.stack((w.min(), w.max())).tolist())
    if low < 0:
        raise ValueError(
            f"{name}: expected non-negative values (0 where not sampled or missing), got "
            f"{int((w < 0).sum())} negative values (the smallest {low:g})"
        )
    if at_most is not None and high > at_most:
        raise ValueError(
            f"{name}: expected values in [0, {at_most:g}], got {int((w > at_most).sum())} above "
            f"{at_most:g} (the largest {high:g}){hint}"
        )


def regulariser(lam: float | Tensor, b: Tensor, name: str = "lam") -> float | Tensor:
    r"""``lam`` checked (finite, ``> 0``) and shaped to broadcast against ``b``, ``(B, ...)``:
    a Python float, or for a ``(B,)`` tensor a ``(B, 1, ..., 1)`` one in ``b``'s real dtype."""
    if isinstance(lam, Tensor) and lam.numel() != 1:
        if lam.ndim != 1 or lam.shape[0] != b.shape[0] or lam.is_complex():
            raise ValueError(
                f"{name}: expected a positive number or a real (B,) tensor with B = {b.shape[0]}, "
                f"got shape {tuple(lam.shape)}"
            )
        lam = lam.to(device=b.device, dtype=real_dtype(b.dtype))
        if not bool(((lam > 0) & torch.isfinite(lam)).all()):
            raise ValueError(f"{name}: expected finite values > 0, got {lam.tolist()}")
        return lam.reshape(-1, *([1] * (b.ndim - 1)))
    value = float(lam) if isinstance(lam, (numbers.Real, Tensor)) and not isinstance(lam, bool) else math.nan
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name}: expected a finite number > 0 or a (B,) tensor, got {lam!r}")
    return value


def _move(value, device, dtype):
    if isinstance(value, Tensor):
        if dtype is None or not (value.is_floating_point() or value.is_complex()):
            return value.to(device=device)
        target = complex_dtype(dtype) if value.is_complex() else real_dtype(dtype)
        return value.to(device=device, dtype=target)
    if isinstance(value, Operator):
        return value.to(device=device, dtype=dtype)
    if isinstance(value, (list, tuple)):
        return type(value)(_move(v, device, dtype) for v in value)
    return value


class Operator:
    """A forward model ``y = A(x)``, linear or not. Subclasses implement :meth:`A`."""

    def A(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def __call__(self, x: Tensor) -> Tensor:
        return self.A(x)

    def __matmul__(self, other: Operator) -> Operator:
        if not isinstance(other, Operator):
            return NotImplemented
        if isinstance(self, LinearOperator) and isinstance(other, LinearOperator):
            return LinearComposition(self, other)
        return Composition(self, other)

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> Operator:
        """A copy whose tensors live on ``device`` at the precision of ``dtype``.

        Real buffers take the real dtype of that precision and complex buffers the complex one.
        """
        new = copy.copy(self)
        for key, value in vars(self).items():
            setattr(new, key, _move(value, device, dtype))
        return new


class Composition(Operator):
    """``(f @ g)(x) = f(g(x))`` for operators that may be nonlinear; differentiable by autograd."""

    def __init__(self, *ops: Operator):
        self.ops = tuple(_flatten(ops, type(self)))

    @half_in_single_precision
    def A(self, x: Tensor) -> Tensor:
        for op in reversed(self.ops):
            x = op.A(x)
        return x

    def __repr__(self) -> str:
        return " @ ".join(repr(op) for op in self.ops)


def _flatten(ops: Sequence[Operator], cls: type) -> list[Operator]:
    flat = []
    for op in ops:
        flat.extend(op.ops if isinstance(op, cls) else [op])
    return flat


class LinearOperator(Operator):
    """A linear forward model with its adjoint. Subclasses implement :meth:`A` and :meth:`AT`."""

    def AT(self, y: Tensor) -> Tensor:
        raise NotImplementedError

    def normal(self, x: Tensor) -> Tensor:
        """:math:`A^T A x`."""
        return self.AT(self.A(x))

    @half_in_single_precision
    def pinv(self, y: Tensor, *, max_iter: int = 100, tol: float = 1e-6) -> Tensor:
        r"""Minimum-norm least-squares solution :math:`\arg\min_x \|A x - y\|`.

        The default runs conjugate gradient on the normal equations from zero, which converges
        to the minimum-norm solution (in float32 for half-precision ``y``, whose inner products
        would overflow); operators with a closed form override it. Every ``pinv`` raises a
        ``ValueError`` for a ``y`` holding NaN or infinite values.
        """
        from operators.cg import conjugate_gradient

        check_finite(y, "y")
        x, _ = conjugate_gradient(self.normal, self.AT(y), max_iter=max_iter, tol=tol)
        return x

    @half_in_single_precision
    def solve_normal(self, b: Tensor, lam: float | Tensor, *, max_iter: int = 100, tol: float = 1e-6) -> Tensor:
        r"""Solve :math:`(A^H A + \lambda I)\, x = b` per sample: the regularised normal equations
        behind proximal data steps, Gaussian conditioning and Woodbury identities.

        The default runs conjugate gradient from zero (``max_iter``, ``tol`` as in
        :func:`operators.cg.conjugate_gradient`); operators whose normal operator is diagonal in a
        known basis override it with a closed form (:attr:`has_closed_form_solve`), which ignores
        ``max_iter`` and ``tol``.

        Args:
            b: the right-hand side, the unknown's shape ``(B, ...)``, finite.
            lam: :math:`\lambda > 0`, a number or a ``(B,)`` tensor (one per sample).
            max_iter, tol: conjugate gradient's iteration limit and relative tolerance.

        Returns:
            ``x``, the shape of ``b``.

        Raises:
            ValueError: ``lam`` is not positive and finite, or not one value per sample; ``b``
                holds NaN or infinite values.
        """
        from operators.cg import conjugate_gradient

        check_finite(b, "b")
        shift = regulariser(lam, b)
        x, _ = conjugate_gradient(lambda v: self.normal(v) + shift * v, b, max_iter=max_iter, tol=tol)
        return x

    @property
    def has_closed_form_solve(self) -> bool:
        """Whether :meth:`solve_normal` is a closed form (``False``: conjugate gradient)."""
        return False

    @property
    def adjoint(self) -> LinearOperator:
        """The adjoint as an operator: ``op.adjoint.A == op.AT``."""
        return Adjoint(self)

    def __add__(self, other: LinearOperator) -> LinearOperator:
        if not isinstance(other, LinearOperator):
            return NotImplemented
        return Sum(self, other)

    def __sub__(self, other: LinearOperator) -> LinearOperator:
        if not isinstance(other, LinearOperator):
            return NotImplemented
        return Sum(self, Scaled(other, -1.0))

    def __neg__(self) -> LinearOperator:
        return Scaled(self, -1.0)

    def __mul__(self, scalar: numbers.Number) -> LinearOperator:
        if not isinstance(scalar, numbers.Number):
            return NotImplemented
        return Scaled(self, scalar)

    __rmul__ = __mul__


class LinearComposition(LinearOperator, Composition):
    """``(A1 @ A2)``: applies ``A2`` then ``A1``; the adjoint applies ``A1^T`` then ``A2^T``."""

    @half_in_single_precision
    def AT(self, y: Tensor) -> Tensor:
        for op in self.ops:
            y = op.AT(y)
        return y

    @half_in_single_precision
    def normal(self, x: Tensor) -> Tensor:
        # The outermost operator's own normal (often closed form) sits in the middle.
        outer, inner = self.ops[0], self.ops[1:]
        for op in reversed(inner):
            x = op.A(x)
        x = outer.normal(x)
        for op in inner:
            x = op.AT(x)
        return x


    def solve_normal(self, b: Tensor, lam: float | Tensor, **kwargs) -> Tensor:
        r"""Closed form when every operator but the outermost is a real isometric bijection
        (:class:`RealToComplex`, :class:`Identity`) and the outermost has one:
        :math:`(R^T M R + \lambda I)^{-1} = R^T (M + \lambda I)^{-1} R`; conjugate gradient otherwise."""
        if not self.has_closed_form_solve:
            return super().solve_normal(b, lam, **kwargs)
        outer, inner = self.ops[0], self.ops[1:]
        for op in reversed(inner):
            b = op.A(b)
        x = outer.solve_normal(b, lam, **kwargs)
        for op in inner:
            x = op.AT(x)
        return x

    @property
    def has_closed_form_solve(self) -> bool:
        outer, inner = self.ops[0], self.ops[1:]
        return outer.has_closed_form_solve and all(getattr(op, "is_bijective_isometry", False) for op in inner)


class Sum(LinearOperator):
    """``A1 + A2 + ...``: all terms take the same input and give outputs of the same shape."""

    def __init__(self, *ops: LinearOperator):
        self.ops = tuple(_flatten(ops, Sum))

    def A(self, x: Tensor) -> Tensor:
        return sum(op.A(x) for op in self.ops)

    def AT(self, y: Tensor) -> Tensor:
        return sum(op.AT(y) for op in self.ops)

    def __repr__(self) -> str:
        return " + ".join(repr(op) for op in self.ops)


class Scaled(LinearOperator):
    """``c * A`` for a real or complex scalar ``c``; the adjoint is ``A^T(conj(c) y)``.

    Scaling on the output side keeps the adjoint right for operators that are only linear over
    the reals (such as :class:`RealToComplex`).
    """

    def __init__(self, op: LinearOperator, scalar: numbers.Number):
        self.op = op
        self.scalar = scalar

    def A(self, x: Tensor) -> Tensor:
        return self.scalar * self.op.A(x)

    def AT(self, y: Tensor) -> Tensor:
        return self.op.AT(self.scalar.conjugate() * y)

    def normal(self, x: Tensor) -> Tensor:
        return abs(self.scalar) ** 2 * self.op.normal(x)

    def solve_normal(self, b: Tensor, lam: float | Tensor, **kwargs) -> Tensor:
        r""":math:`(|c|^2 A^H A + \lambda)^{-1} b = (A^H A + \lambda/|c|^2)^{-1} b / |c|^2`."""
        c2 = abs(self.scalar) ** 2
        if c2 == 0:
            return b / regulariser(lam, b)
        return self.op.solve_normal(b, regulariser(lam, b) / c2, **kwargs) / c2

    @property
    def has_closed_form_solve(self) -> bool:
        return abs(self.scalar) == 0 or self.op.has_closed_form_solve

    def __repr__(self) -> str:
        return f"{self.scalar} * {self.op!r}"


class Adjoint(LinearOperator):
    """The adjoint of a linear operator, as an operator."""

    def __init__(self, op: LinearOperator):
        self.op = op

    def A(self, x: Tensor) -> Tensor:
        return self.op.AT(x)

    def AT(self, y: Tensor) -> Tensor:
        return self.op.A(y)

    @property
    def adjoint(self) -> LinearOperator:
        return self.op

    def __repr__(self) -> str:
        return f"{self.op!r}.adjoint"


class Identity(LinearOperator):
    """The identity."""

    def A(self, x: Tensor) -> Tensor:
        return x

    def AT(self, y: Tensor) -> Tensor:
        return y

    def pinv(self, y: Tensor, **kwargs) -> Tensor:
        check_finite(y, "y")
        return y

    is_bijective_isometry = True
    has_closed_form_solve = True

    def solve_normal(self, b: Tensor, lam: float | Tensor, **kwargs) -> Tensor:
        check_finite(b, "b")
        return b / (1 + regulariser(lam, b))

    def __repr__(self) -> str:
        return "Identity()"


class Multiply(LinearOperator):
    """Pointwise multiplication by fixed weights (real or complex), broadcast against the input.

    Args:
        weights: a tensor broadcastable to the input's shape, e.g. ``(H, W)`` or ``(1, C, H, W)``.
    """

    def __init__(self, weights: Tensor):
        check_tensor(weights, "weights")
        check_finite(weights, "weights")
        self.weights = weights

    def A(self, x: Tensor) -> Tensor:
        return cast_like(self.weights, x) * x

    def AT(self, y: Tensor) -> Tensor:
        return cast_like(self.weights, y).conj() * y

    def normal(self, x: Tensor) -> Tensor:
        return cast_like(self.weights, x).abs().square() * x

    @half_in_single_precision
    def pinv(self, y: Tensor, **kwargs) -> Tensor:
        check_finite(y, "y")
        w = cast_like(self.weights, y)
        safe = torch.where(w != 0, w, torch.ones_like(w))
        return torch.where(w != 0, y / safe, torch.zeros_like(y))

    has_closed_form_solve = True

    @half_in_single_precision
    def solve_normal(self, b: Tensor, lam: float | Tensor, **kwargs) -> Tensor:
        check_finite(b, "b")
        return b / (cast_like(self.weights, b).abs().square() + regulariser(lam, b))

    def __repr__(self) -> str:
        return f"Multiply(shape={tuple(self.weights.shape)})"


class RealToComplex(LinearOperator):
    r"""Embeds a real image with channels as (real, imaginary) pairs into a complex image.

    ``A``: ``(B, 2C, H, W)`` real, channels ``2k, 2k+1`` the real and imaginary parts of channel
    ``k``, to ``(B, C, H, W)`` complex. It is linear over the reals; its adjoint under the real
    inner product :math:`\operatorname{Re}\langle\cdot,\cdot\rangle` splits a complex image back
    into its parts, and :math:`A^T A = I`. Lets a 2-channel real prior drive a complex operator:
    ``MultiCoilMRI(maps, mask) @ RealToComplex()``. A bfloat16 input gives complex64 (torch has
    no complex bfloat16), float16 gives complex32.
    """

    def A(self, x: Tensor) -> Tensor:
        check_tensor(x, "x", complex_=False)
        if x.dtype == torch.bfloat16:
            # No complex bfloat16 exists: the parts are widened to float32 (exactly).
            x = x.float()
        if x.ndim < 2 or x.shape[1] % 2:
            raise ValueError(
                f"x: expected (B, 2C, ...) with an even number of channels (real, imaginary pairs), "
                f"got shape {tuple(x.shape)}"
            )
        parts = x.unflatten(1, (x.shape[1] // 2, 2))
        return torch.complex(parts[:, :, 0], parts[:, :, 1])

    def AT(self, y: Tensor) -> Tensor:
        check_tensor(y, "y", complex_=True)
        return torch.stack((y.real, y.imag), dim=2).flatten(1, 2)

    def normal(self, x: Tensor) -> Tensor:
        return x

    def pinv(self, y: Tensor, **kwargs) -> Tensor:
        check_finite(y, "y")
        return self.AT(y)

    is_bijective_isometry = True
    """:math:`A^T A = I` and :math:`A A^T = I`: compositions through it keep closed-form solves."""
    has_closed_form_solve = True
    solve_normal = Identity.solve_normal  # the normal operator is the identity

    def __repr__(self) -> str:
        return "RealToComplex()"


def _check_size(size, name: str) -> tuple[int, int]:
    valid = isinstance(size, (tuple, list, torch.Size)) and len(size) == 2
    if not valid or any(isinstance(s, bool) or not isinstance(s, numbers.Integral) or s < 1 for s in size):
        raise ValueError(f"{name}: expected (H, W) as two positive integers, got {size!r}")
    return int(size[0]), int(size[1])


class CenterCrop(LinearOperator):
    r"""The centre ``out_size`` window of an image; the adjoint zero-pads it back.

    The window starts at ``((H2 - H) // 2, (W2 - W) // 2)``, fastMRI's ``center_crop``
    convention, so an odd margin leaves the extra row (column) at the end. :math:`A A^T = I`,
    :math:`A^T A` zeroes everything outside the window, and ``pinv`` is the adjoint. Lets a prior
    that needs sizes divisible by 8 or 32 work on a padded unknown:
    ``MultiCoilMRI(maps, mask) @ CenterCrop((320, 376), (320, 372))``. Real and complex inputs.

    Args:
        in_size: ``(H2, W2)``, the size of the input.
        out_size: ``(H, W)``, the size of the crop, at most ``in_size`` along each axis.

    Shapes:
        ``x``: ``(B, C, H2, W2)``; ``y``: ``(B, C, H, W)``.
    """

    def __init__(self, in_size: tuple[int, int], out_size: tuple[int, int]):
        self.in_size = _check_size(in_size, "in_size")
        self.out_size = _check_size(out_size, "out_size")
        (H2, W2), (H, W) = self.in_size, self.out_size
        if H > H2 or W > W2:
            raise ValueError(
                f"out_size: expected at most in_size = {self.in_size} along each axis, got {self.out_size}"
            )
        top, left = (H2 - H) // 2, (W2 - W) // 2
        self._rows, self._cols = slice(top, top + H), slice(left, left + W)
        self._pad = (left, W2 - W - left, top, H2 - H - top)

    def A(self, x: Tensor) -> Tensor:
        check_tensor(x, "x", ndim=4, shape=self.in_size)
        return x[..., self._rows, self._cols].clone()

    def AT(self, y: Tensor) -> Tensor:
        check_tensor(y, "y", ndim=4, shape=self.out_size)
        return torch.nn.functional.pad(y, self._pad)

    def normal(self, x: Tensor) -> Tensor:
        check_tensor(x, "x", ndim=4, shape=self.in_size)
        return torch.nn.functional.pad(x[..., self._rows, self._cols], self._pad)

    def pinv(self, y: Tensor, **kwargs) -> Tensor:
        check_finite(y, "y")
        return self.AT(y)

    has_closed_form_solve = True

    def solve_normal(self, b: Tensor, lam: float | Tensor, **kwargs) -> Tensor:
        check_tensor(b, "b", ndim=4, shape=self.in_size)
        check_finite(b, "b")
        shift = regulariser(lam, b)
        inside = torch.nn.functional.pad(torch.ones_like(b[..., self._rows, self._cols]), self._pad)
        return b / (inside + shift)

    def __repr__(self) -> str:
        return f"CenterCrop(in_size={self.in_size}, out_size={self.out_size})"


def _vdot(a: Tensor, b: Tensor) -> Tensor:
    """:math:`\\langle a, b\\rangle = \\sum \\bar a b`, accumulated in double precision."""
    a = a.to(complex_dtype(torch.float64) if a.is_complex() else torch.float64)
    b = b.to(complex_dtype(torch.float64) if b.is_complex() else torch.float64)
    return (a.conj() * b).sum() if a.is_complex() else (a * b).sum()


def adjointness_error(
    op: LinearOperator,
    x: Tensor,
    *,
    generator: torch.Generator | None = None,
) -> float:
    r"""Relative error of the dot-product test :math:`\langle A u, v\rangle = \langle u, A^T v\rangle`.

    ``u`` and ``v`` are standard normal tensors with the shape and dtype of ``x`` and ``A(x)``.
    Where either side is real, only real parts are compared (the operator is then linear over
    the reals). Inner products accumulate in double precision, so the error reflects the
    operator, not the summation.

    Args:
        op: the operator.
        x: an example input, ``(B, C, H, W)``; only its shape, dtype and device are used.
        generator: the source of randomness for ``u`` and ``v``.

    Returns:
        :math:`|\langle A u, v\rangle - \langle u, A^T v\rangle| / |\langle A u, v\rangle|`.
    """
    y_like = op.A(x)
    u = torch.randn(x.shape, dtype=x.dtype, device=x.device, generator=generator)
    v = torch.randn(y_like.shape, dtype=y_like.dtype, device=y_like.device, generator=generator)
    lhs = _vdot(op.A(u), v)
    rhs = _vdot(u, op.AT(v))
    if not (u.is_complex() and v.is_complex()):
        lhs, rhs = lhs.real, rhs.real
    return float((lhs - rhs).abs() / lhs.abs().clamp_min(torch.finfo(torch.float64).tiny))


def as_linear_operator(
    A: Callable[[Tensor], Tensor],
    AT: Callable[[Tensor], Tensor],
    name: str = "FunctionOperator",
) -> LinearOperator:
    """A linear operator from a pair of functions (forward and adjoint)."""
    return _FunctionOperator(A, AT, name)


class _FunctionOperator(LinearOperator):
    def __init__(self, A, AT, name):
        self._A, self._AT, self.name = A, AT, name

    def A(self, x: Tensor) -> Tensor:
        return self._A(x)

    def AT(self, y: Tensor) -> Tensor:
        return self._AT(y)

    def __repr__(self) -> str:
        return f"{self.name}()"


class Matrix(LinearOperator):
    """A dense matrix acting on flattened samples: ``y = x.flatten(1) @ M^T``.

    Args:
        matrix: ``(m, n)``, real or complex.
        in_shape: the shape of one input sample, ``n`` elements in all (default ``(n,)``).

    Shapes:
        ``x``: ``(B, *in_shape)``; ``y``: ``(B, m)``.
    """

    def __init__(self, matrix: Tensor, in_shape: Sequence[int] | None = None):
        check_tensor(matrix, "matrix", ndim=2)
        check_finite(matrix, "matrix")
        self.matrix = matrix
        self.in_shape = tuple(in_shape) if in_shape is not None else (matrix.shape[1],)
        if math.prod(self.in_shape) != matrix.shape[1]:
            raise ValueError(f"in_shape: expected {matrix.shape[1]} elements, got {self.in_shape}")

    @half_in_single_precision
    def A(self, x: Tensor) -> Tensor:
        check_tensor(x, "x", shape=self.in_shape)
        M = cast_like(self.matrix, x)
        dtype = torch.promote_types(x.dtype, M.dtype)
        return x.reshape(x.shape[0], -1).to(dtype) @ M.to(dtype).T

    @half_in_single_precision
    def AT(self, y: Tensor) -> Tensor:
        check_tensor(y, "y", ndim=2, shape=(self.matrix.shape[0],))
        M = cast_like(self.matrix, y)
        dtype = torch.promote_types(y.dtype, M.dtype)
        return (y.to(dtype) @ M.to(dtype).conj()).reshape(y.shape[0], *self.in_shape)

    has_closed_form_solve = True

    @half_in_single_precision
    def solve_normal(self, b: Tensor, lam: float | Tensor, **kwargs) -> Tensor:
        r"""A dense solve: :math:`(M^H M + \lambda I)^{-1}` directly for ``n <= m``, else by
        Woodbury, :math:`(b - M^H (M M^H + \lambda I)^{-1} M b) / \lambda` (an ``m × m`` system)."""
        check_tensor(b, "b", shape=self.in_shape)
        check_finite(b, "b")
        shift = regulariser(lam, b)
        shift = shift.reshape(-1, 1, 1) if isinstance(shift, Tensor) else shift
        M = cast_like(self.matrix, b)
        dtype = torch.promote_types(b.dtype, M.dtype)
        M, flat = M.to(dtype), b.reshape(b.shape[0], -1, 1).to(dtype)
        m, n = M.shape
        real_unknown = not b.is_complex() and M.is_complex()
        if n > m and not real_unknown:
            z = torch.linalg.solve(M @ M.mH + shift * torch.eye(m, dtype=dtype, device=b.device), M @ flat)
            return ((flat - M.mH @ z) / shift).reshape(b.shape)
        gram, rhs = M.mH @ M, flat
        if real_unknown:
            # A real unknown: the normal operator is Re(M^H M), linear over the reals.
            gram, rhs = gram.real, b.reshape(b.shape[0], -1, 1)
        return torch.linalg.solve(gram + shift * torch.eye(n, dtype=gram.dtype, device=b.device), rhs).reshape(b.shape)

    def __repr__(self) -> str:
        return f"Matrix({tuple(self.matrix.shape)})"
