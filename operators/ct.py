r"""X-ray CT: parallel- and fan-beam ray transforms with matched adjoints, FBP, ellipse phantoms.

Coordinates
-----------
Lengths are in pixel units (pixel size 1). An image ``(..., H, W)`` holds samples of a
function on the pixel centres

.. math:: x_j = j - (W - 1) / 2, \qquad y_i = (H - 1) / 2 - i,

so ``x`` points right along the columns, ``y`` points *up* (row 0 is the top row as displayed)
and the origin, the centre of rotation, is the centre of the image (a pixel centre when the
size is odd, a pixel corner when it is even). Angles are radians measured from the ``+x`` axis
towards ``+y``, i.e. counter-clockwise as displayed.

*Parallel beam.* The view at angle :math:`\theta` has the detector axis
:math:`e_\theta = (\cos\theta, \sin\theta)` and rays along
:math:`e_\theta^\perp = (-\sin\theta, \cos\theta)`; bin ``d`` holds the line integral over
:math:`\{p : p \cdot e_\theta = s_d\}` with :math:`s_d = (d - (n_{det} - 1)/2)\,\Delta`
(detector coordinate zero at the centre of the array, increasing along :math:`e_\theta`):

.. math:: y(\theta, s) = \int f(s\, e_\theta + \tau\, e_\theta^\perp)\, d\tau .

At :math:`\theta = 0` the rays run along ``+y`` (column sums) and :math:`s = x`.

*Fan beam (flat detector).* At view angle :math:`\beta` the source sits at
:math:`S = -D_s\, e_\beta^\perp` and the detector is the line through :math:`D_d\, e_\beta^\perp`
parallel to :math:`e_\beta`; bin ``d`` at :math:`u_d = (d - (n_{det} - 1)/2)\,\Delta` along
:math:`e_\beta` receives the ray from ``S`` through :math:`D_d e_\beta^\perp + u_d e_\beta`. The
central ray of view :math:`\beta` is the parallel-beam ray :math:`(\theta, s) = (\beta, 0)`, and
as :math:`D_s \to \infty` the fan sinogram tends to the parallel one with the same angles.

Discretisation
--------------
The projector is Joseph's ray-driven method: each ray steps along its dominant axis (rows when
:math:`|{\rm dir}_y| \ge |{\rm dir}_x|`, columns otherwise), interpolates linearly between the
two nearest pixels of each row (column), outside the image counting as zero, and scales the sum
by the path length per step, :math:`|{\rm dir}| / \max(|{\rm dir}_x|, |{\rm dir}_y|)`. The
weight of pixel ``q`` in a ray through ``P`` with direction ``dir`` is therefore

.. math:: a_{\rm ray, q} = \frac{|{\rm dir}|}{m}\,
   \operatorname{tri}\Big(\frac{(q - P) \times {\rm dir}}{m}\Big), \qquad
   m = \max(|{\rm dir}_x|, |{\rm dir}_y|), \quad \operatorname{tri}(u) = \max(0, 1 - |u|),

which for parallel beams is :math:`\operatorname{tri}((s_d - t_q)/c)/c` with
:math:`t_q = q \cdot e_\theta` and :math:`c = \max(|\cos\theta|, |\sin\theta|)`. ``A`` gathers
two pixels per ray and step; ``AT`` evaluates the same weights pixel by pixel, gathering the few
detector bins whose weight can be non-zero, so it is the exact transpose of ``A`` (to rounding)
without scatter or autograd. Both run over chunks of angles, so work memory is bounded by the
chunk, and ``A``/``AT`` are wrapped in an autograd function whose backward is the other one.

Sample positions and ray geometry are computed in float64 whatever the data's dtype (float32
positions of a few hundred pixels would carry errors of ~1e-5 pixel); the data themselves stay
in the input's dtype, except half precision, which is computed in float32. Buffers follow the
input's device.

:func:`fbp` inverts both geometries approximately (ramp-filtered back-projection), and
:func:`shepp_logan_ellipses`, :func:`ellipse_image` and :func:`ellipse_sinogram` give phantoms
with closed-form projections in the same coordinates.

Batches and volumes
-------------------
Images are ``(B, C, H, W)`` and sinograms ``(B, C, n_angles, n_detectors)``, all real. Every
``(b, c)`` slice is transformed on its own, so a 3D volume is handled slice by slice by putting
its slices in the batch (or channel) dimension, e.g. ``volume.reshape(-1, 1, H, W)``.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from operators.base import LinearOperator, check_finite, check_tensor

_WORK_ELEMENTS = 2**19
"""Default work size of one angle chunk, in elements of the largest per-chunk tensor."""


# --- angles -----------------------------------------------------------------------------------


def uniform_angles(n: int, span: float = math.pi) -> Tensor:
    """``n`` equispaced angles ``k * span / n`` in ``[0, span)``.

    Args:
        n: the number of angles, ``>= 1``.
        span: the angular range in radians, ``> 0``; ``pi`` for parallel beam, ``2 pi`` for a
            full fan-beam scan.

    Returns:
        ``(n,)`` float64 radians.
    """
    n = _positive_int(n, "n", "number of angles")
    span = _positive(span, "span", "angular range in radians")
    return torch.arange(n, dtype=torch.float64) * (span / n)


def sparse_view_angles(n_views: int) -> Tensor:
    """``n_views`` equispaced parallel-beam views over ``[0, pi)`` (sparse-view CT).

    Returns:
        ``(n_views,)`` float64 radians.
    """
    return uniform_angles(_positive_int(n_views, "n_views", "number of views"), math.pi)


def limited_angle(n: int, max_angle: float) -> Tensor:
    """``n`` equispaced angles over the wedge ``[0, max_angle)`` (limited-angle CT).

    Args:
        n: the number of angles, ``>= 1``.
        max_angle: the angular range covered, radians in ``(0, pi]``.

    Returns:
        ``(n,)`` float64 radians.
    """
    if not (isinstance(max_angle, numbers.Real) and math.isfinite(max_angle) and 0 < max_angle <= math.pi):
        raise ValueError(f"max_angle: expected an angular range in (0, pi] radians, got {max_angle!r}")
    return uniform_angles(n, max_angle)


def _as_angles(angles: int | Sequence[float] | Tensor, span: float) -> Tensor:
    """Validated ``(n,)`` float64 angles; an int ``n`` means ``n`` equispaced angles over ``span``."""
    if isinstance(angles, bool):
        raise ValueError(f"angles: expected a number of angles or a 1D sequence of radians, got {angles!r}")
    if isinstance(angles, int):
        if angles < 1:
            raise ValueError(f"angles: expected a positive number of angles, got {angles}")
        return uniform_angles(angles, span)
    try:
        t = angles if isinstance(angles, Tensor) else torch.as_tensor(np.asarray(angles))
    except (TypeError, ValueError, RuntimeError) as err:
        raise ValueError(f"angles: expected a 1D sequence of radians, got {type(angles).__name__}") from err
    if t.is_complex() or not (t.is_floating_point() or t.dtype in (torch.int32, torch.int64)):
        raise ValueError(f"angles: expected real radians, got dtype {t.dtype}")
    if t.ndim != 1:
        raise ValueError(f"angles: expected a 1D sequence of radians, got shape {tuple(t.shape)}")
    if t.numel() == 0:
        raise ValueError("angles: expected at least one angle, got an empty sequence")
    t = t.detach().to(torch.float64)
    if not bool(torch.isfinite(t).all()):
        raise ValueError("angles: expected finite radians, got inf or nan")
    return t.clone()


def _as_img_shape(img_shape: Sequence[int]) -> tuple[int, int]:
    try:
        shape = tuple(int(s) for s in img_shape)
        ok = len(shape) == 2 and all(s >= 1 and s == t for s, t in zip(shape, img_shape))
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"img_shape: expected (H, W) with two positive integers, got {img_shape!r}")
    return shape


def _positive(value: float, name: str, what: str) -> float:
    real = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if not (real and math.isfinite(value) and value > 0):
        raise ValueError(f"{name}: expected a positive, finite {what}, got {value!r}")
    return float(value)


def _positive_int(value: int, name: str, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or value != int(value) or value < 1:
        raise ValueError(f"{name}: expected a positive integer {what}, got {value!r}")
    return int(value)


def angular_weights(angles: Tensor, period: float) -> Tensor:
    r"""Quadrature weights :math:`\Delta\theta_k` for integrating over angles, one per view.

    Each view gets half the gap to each of its neighbours on the circle of circumference
    ``period`` (angles are taken modulo ``period``). The gap that closes the circle counts only
    up to the largest gap between neighbours, so a wedge of views (limited angle) is not
    credited with the missing range. Equispaced angles over the whole period all get
    ``period / n``; a view repeated (or at ``theta + pi`` for ``period = pi``) shares its weight.

    Args:
        angles: ``(n,)`` radians.
        period: ``pi`` for parallel beams, ``2 pi`` for fan beams.

    Returns:
        ``(n,)`` float64 weights, in the order of ``angles``.
    """
    a = torch.remainder(angles.to(torch.float64), period)
    sorted_, order = torch.sort(a)
    n = sorted_.numel()
    if n == 1:
        return torch.full_like(sorted_, period)
    gaps = sorted_.diff()
    wrap = period - (sorted_[-1] - sorted_[0])
    wrap = torch.where(gaps.max() > 0, torch.minimum(wrap, gaps.max()), wrap)
    before = torch.cat([wrap[None], gaps])
    after = torch.cat([gaps, wrap[None]])
    weights = torch.empty_like(sorted_)
    weights[order] = (before + after) / 2
    return weights


# --- shared machinery -------------------------------------------------------------------------


def _work_dtype(dtype: torch.dtype) -> torch.dtype:
    """Data are computed in at least single precision: half inputs in float32."""
    return torch.promote_types(dtype, torch.float32)


def _chunks(n: int, size: int):
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


def _chunk_size(angle_chunk: int | None, per_angle: int) -> int:
    if angle_chunk is not None:
        return angle_chunk
    return max(1, _WORK_ELEMENTS // max(per_angle, 1))


class _Workspace:
    """Flat buffers reused by every chunk of a call, so chunks do not allocate (and, for large
    blocks, page-fault) afresh."""

    def __init__(self, device: torch.device):
        self.device = device
        self.buffers: dict[str, Tensor] = {}

    def __call__(self, name: str, shape: Sequence[int], dtype: torch.dtype) -> Tensor:
        numel = math.prod(shape)
        buf = self.buffers.get(name)
        if buf is None or buf.numel() < numel or buf.dtype != dtype:
            buf = self.buffers[name] = torch.empty(numel, dtype=dtype, device=self.device)
        return buf[:numel].view(*shape)


def _index_and_fraction(p: Tensor, work: _Workspace, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """``floor(p)`` as int64 and ``p - floor(p)`` in ``dtype``, for float64 ``p >= 0`` (overwritten)."""
    idx = work("idx", p.shape, torch.int64)
    idx.copy_(p)
    frac = work("frac", p.shape, dtype)
    frac.copy_(p.frac_())
    return idx, frac


def _interp_lines(lines: Tensor, p: Tensor, work: _Workspace, *, clamp: bool) -> Tensor:
    """Sum over lines of each line linearly interpolated at positions ``p``.

    Args:
        lines: ``(N, L, n)`` zero-padded lines (sample ``k`` of line ``l`` at ``lines[:, l, k]``).
        p: ``(n_angles, L, m)`` float64 positions in sample units; they must lie in
            ``[0, n - 2]`` unless ``clamp``, which clamps them there (the lines then need one
            zero sample before and two after). Overwritten.
        work: the buffers to compute in.
        clamp: clamp ``p`` first.

    Returns:
        ``(N, n_angles, m)``: ``sum_l lerp(lines[:, l], p[:, l])`` in the dtype of ``lines``.
    """
    N, n = lines.shape[0], p.shape[0]
    if clamp:
        p.clamp_(0, lines.shape[-1] - 2)
    idx, frac = _index_and_fraction(p, work, lines.dtype)
    idx = idx.unsqueeze(0).expand(N, -1, -1, -1)
    src = lines.unsqueeze(1).expand(-1, n, -1, -1)
    left = torch.gather(src[..., :-1], 3, idx, out=work("left", idx.shape, lines.dtype))
    right = torch.gather(src[..., 1:], 3, idx, out=work("right", idx.shape, lines.dtype))
    return left.lerp_(right, frac).sum(2)


def _pixel_centres(img_shape: tuple[int, int], device: torch.device) -> tuple[Tensor, Tensor]:
    """``(x_j, y_i)``: float64 centres of the columns ``(W,)`` and rows ``(H,)``."""
    H, W = img_shape
    xs = torch.arange(W, dtype=torch.float64, device=device) - (W - 1) / 2
    ys = (H - 1) / 2 - torch.arange(H, dtype=torch.float64, device=device)
    return xs, ys


class _RayTransformFn(torch.autograd.Function):
    """``A`` (``adjoint=False``) or ``AT``; the backward of each is the other."""

    @staticmethod
    def forward(ctx, t: Tensor, op: _RayTransform, adjoint: bool) -> Tensor:
        ctx.op, ctx.adjoint = op, adjoint
        return op._apply(t, adjoint)

    @staticmethod
    def backward(ctx, grad: Tensor):
        return _RayTransformFn.apply(grad, ctx.op, not ctx.adjoint), None, None


class _RayTransform(LinearOperator):
    """Shared validation, batching and autograd of the CT operators."""

    img_shape: tuple[int, int]
    angles: Tensor
    n_detectors: int

    @property
    def sinogram_shape(self) -> tuple[int, int]:
        """``(n_angles, n_detectors)``."""
        return (self.angles.numel(), self.n_detectors)

    def A(self, x: Tensor) -> Tensor:
        """Project images.

        Args:
            x: ``(B, C, H, W)`` real images.

        Returns:
            ``(B, C, n_angles, n_detectors)`` sinograms, same dtype and device as ``x``.
        """
        check_tensor(x, "x", ndim=4, shape=self.img_shape, complex_=False)
        return _RayTransformFn.apply(x, self, False)

    def AT(self, y: Tensor) -> Tensor:
        """Back-project sinograms with the exact adjoint of :meth:`A`.

        Args:
            y: ``(B, C, n_angles, n_detectors)`` real sinograms.

        Returns:
            ``(B, C, H, W)`` images, same dtype and device as ``y``.
        """
        check_tensor(y, "y", ndim=4, shape=self.sinogram_shape, complex_=False)
        return _RayTransformFn.apply(y, self, True)

    def _apply(self, t: Tensor, adjoint: bool) -> Tensor:
        B, C = t.shape[:2]
        flat = t.reshape(B * C, *t.shape[2:]).to(_work_dtype(t.dtype))
        out = self._backproject(flat) if adjoint else self._project(flat)
        return out.to(t.dtype).reshape(B, C, *out.shape[1:])

    def fbp(self, y: Tensor, filter: str = "ramp") -> Tensor:
        """Filtered back-projection of ``y``; see :func:`fbp`."""
        return fbp(y, self, filter)

    def _geometry(self, device: torch.device) -> Tensor:
        return self.angles.to(device=device, dtype=torch.float64)

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> _RayTransform:
        """A copy whose angles (and index buffers) live on ``device``; the angles stay float64 whatever
        ``dtype`` says, since the geometry is computed in double precision for every data dtype."""
        return super().to(device=device)


class _ParallelPass:
    """The host side of one pass of :meth:`ParallelBeamCT._project`: the views it takes, their sample
    positions and the bins they reach, on the CPU, so that a call sizes its loops without reading
    anything back from the device.

    Args:
        ids: the views of the pass, ascending.
        start: ``(len(ids), L)`` float64, the sample position of bin 0 on each line.
        step: ``(len(ids),)`` float64, the position's change per bin.
        first, last: the first and last bin each view (all views, by index) reaches.
        length: the number of samples per line.
    """

    def __init__(
        self, ids: list[int], start: Tensor, step: Tensor, first: list[int], last: list[int], length: int
    ):
        self.ids, self.start, self.step = ids, start, step
        self.first, self.last, self.length = first, last, length

    def spans(self, chunk: int) -> tuple[list[tuple[slice, int, int]], int, int]:
        """``(spans, pad_lo, pad_hi)``: per chunk of ``chunk`` views the slice of :attr:`ids` and the
        range of bins ``a .. b`` it reaches, and the zero padding of the lines that keeps every
        sample position of those bins in range."""
        spans = []
        for sl in _chunks(len(self.ids), chunk):
            members = self.ids[sl]
            spans.append((sl, min(self.first[i] for i in members), max(self.last[i] for i in members)))
        ends = torch.tensor([(a, b) for sl, a, b in spans for _ in range(sl.stop - sl.start)])
        ends = self.start[:, None, :] + ends[:, :, None].to(self.start) * self.step[:, None, None]
        pad_lo = max(1, math.ceil(-float(ends.min())) + 1)
        pad_hi = max(2, math.ceil(float(ends.max()) - (self.length - 1)) + 2)
        return spans, pad_lo, pad_hi


# --- parallel beam ----------------------------------------------------------------------------


class ParallelBeamCT(_RayTransform):
    r"""2D parallel-beam ray transform (Joseph projector, matched pixel-driven adjoint).

    See the module docstring for the coordinate convention and the discretisation.

    Args:
        img_shape: ``(H, W)``, any positive sizes.
        angles: view angles in radians, a 1D tensor or sequence (sparse view, limited angle and
            irregular sets are all fine), or an int ``n`` for ``n`` equispaced angles in
            ``[0, pi)``.
        n_detectors: the number of detector bins; default enough to cover the image diagonal,
            ``ceil(hypot(H, W) / detector_spacing)``.
        detector_spacing: the bin width :math:`\Delta` in pixel units, ``> 0``.
        angle_chunk: angles processed together; bounds the work memory (a few buffers of about
            ``angle_chunk * B * C * max(H, W) * n_detectors`` elements for ``A`` and ``angle_chunk
            * B * C * H * W`` for ``AT``). Default: chunks of about ``2**19`` such elements, which
            suits CPU caches.

    Shapes:
        ``x``: ``(B, C, H, W)`` real; ``y``: ``(B, C, n_angles, n_detectors)`` real.
    """

    def __init__(
        self,
        img_shape: tuple[int, int],
        angles: int | Sequence[float] | Tensor,
        n_detectors: int | None = None,
        detector_spacing: float = 1.0,
        *,
        angle_chunk: int | None = None,
    ):
        self.img_shape = _as_img_shape(img_shape)
        self.angles = _as_angles(angles, math.pi)
        self.detector_spacing = _positive(detector_spacing, "detector_spacing", "bin width in pixels")
        if n_detectors is None:
            n_detectors = math.ceil(math.hypot(*self.img_shape) / self.detector_spacing)
        self.n_detectors = _positive_int(n_detectors, "n_detectors", "number of detector bins")
        if angle_chunk is not None:
            angle_chunk = _positive_int(angle_chunk, "angle_chunk", "number of angles per chunk")
        self.angle_chunk = angle_chunk
        self._plan()

    def with_angles(self, angles: Tensor) -> ParallelBeamCT:
        """The same geometry over other projection ``angles`` (radians)."""
        return ParallelBeamCT(self.img_shape, angles, self.n_detectors, self.detector_spacing,
                              angle_chunk=self.angle_chunk)

    def _plan(self) -> None:
        """The host side of both passes and of the adjoint, from the angles on the CPU.

        Which views step over rows, the bins each view reaches and the paddings are fixed by the
        geometry; working them out here, once, leaves no host synchronisation in :meth:`A` and
        :meth:`AT` on a device. The views of each pass are also kept as index tensors, which
        :meth:`to` moves with the angles.
        """
        (H, W), nd, dl = self.img_shape, self.n_detectors, self.detector_spacing
        theta = self.angles.detach().cpu()
        cos, sin = theta.cos(), theta.sin()
        xs, ys = _pixel_centres(self.img_shape, theta.device)
        centre = (nd - 1) / 2
        # 1. Bins a view can reach: pixel centres project within +-T of zero and weigh on bins
        #    within c of their projection; the others stay zero.
        reach = (cos.abs() * (W - 1) + sin.abs() * (H - 1)) / 2 + torch.maximum(cos.abs(), sin.abs())
        first = (centre - reach / dl - 1e-9).ceil().clamp(0, nd - 1).long().tolist()
        last = (centre + reach / dl + 1e-9).floor().clamp(0, nd - 1).long().tolist()
        # 2. Rays closer to the y axis step over rows (the first pass), the others over columns.
        rows = cos.abs() >= sin.abs()
        passes = []
        for over_rows, mask in ((True, rows), (False, ~rows)):
            ids = mask.nonzero().flatten()
            start, step, _ = self._lines(cos[ids], sin[ids], xs, ys, over_rows)
            passes.append(_ParallelPass(ids.tolist(), start, step, first, last, W if over_rows else H))
        self._passes = tuple(passes)
        self._pass_ids = tuple(torch.tensor(p.ids, dtype=torch.long) for p in passes)
        # 3. The adjoint's taps per pixel and the padding of the sinogram.
        c = torch.maximum(cos.abs(), sin.abs())
        K = self._adjoint_taps = max(1, math.ceil(float(c.max()) / dl - 1e-9))
        u_x = xs[None, :] * cos[:, None] / dl
        u_y = ys[None, :] * sin[:, None] / dl + (nd - 1) / 2
        u_min = float((u_x.min(1).values + u_y.min(1).values).min())
        u_max = float((u_x.max(1).values + u_y.max(1).values).max())
        self._sinogram_pad = (K + 1 + max(0, math.ceil(-u_min)), K + 1 + max(0, math.ceil(u_max) - nd + 1))

    def _lines(
        self, cos: Tensor, sin: Tensor, xs: Tensor, ys: Tensor, over_rows: bool
    ) -> tuple[Tensor, Tensor, Tensor]:
        """``(start, step, weight)`` of the views with ``cos``, ``sin`` in a pass: bin d's sample on
        line l is ``start_l + d step`` (column ``(s_d - y_i sin) / cos + (W - 1) / 2`` over rows,
        row ``(H - 1) / 2 - (s_d - x_j cos) / sin`` over columns), float64, and the path length
        per step ``weight`` is ``1 / |cos|`` or ``1 / |sin|``."""
        (H, W), dl, centre = self.img_shape, self.detector_spacing, (self.n_detectors - 1) / 2
        if over_rows:
            start = (-centre * dl - ys[None, :] * sin[:, None]) / cos[:, None] + (W - 1) / 2
            return start, dl / cos, (1 / cos).abs()
        start = (H - 1) / 2 + (centre * dl + xs[None, :] * cos[:, None]) / sin[:, None]
        return start, -dl / sin, (1 / sin).abs()

    @property
    def detector_positions(self) -> Tensor:
        """``(n_detectors,)`` float64 bin centres :math:`s_d` in pixel units."""
        d = torch.arange(self.n_detectors, dtype=torch.float64)
        return (d - (self.n_detectors - 1) / 2) * self.detector_spacing

    def _project(self, x: Tensor) -> Tensor:
        N, nd = x.shape[0], self.n_detectors
        theta = self._geometry(x.device)
        cos, sin = theta.cos(), theta.sin()
        xs, ys = _pixel_centres(self.img_shape, x.device)
        out = x.new_zeros(N, len(theta), nd)
        work = _Workspace(x.device)
        # 1. Rays closer to the y axis step over rows and interpolate along x; the others step
        #    over the columns of the transposed image and interpolate along y (_lines). Which
        #    views take which pass, and the bins they reach, come from the plan (_plan).
        for plan, ids, img in zip(self._passes, self._pass_ids, (x, x.transpose(1, 2))):
            if not plan.ids:
                continue
            ids = ids.to(x.device)
            start, step, weight = self._lines(cos[ids], sin[ids], xs, ys, over_rows=img is x)
            weight = weight.to(x.dtype)
            # 2. Chunks of views, the bins each reaches, and the padding that keeps every sample
            #    position of those bins in range.
            spans, pad_lo, pad_hi = plan.spans(_chunk_size(self.angle_chunk, N * img.shape[1] * nd))
            lines = F.pad(img, (pad_lo, pad_hi))
            start = start + pad_lo
            for sl, a, b in spans:
                # 3. Positions of every (ray, step) in float64, then the interpolated sums.
                bins = torch.arange(a, b + 1, dtype=torch.float64, device=x.device)
                p = work("p", (sl.stop - sl.start, img.shape[1], b + 1 - a), torch.float64)
                torch.addcmul(start[sl, :, None], step[sl, None, None], bins, out=p)
                proj = _interp_lines(lines, p, work, clamp=False).mul_(weight[sl, None])
                out[:, :, a : b + 1].index_copy_(1, ids[sl], proj)
        return out

    def _backproject(self, y: Tensor) -> Tensor:
        N, (H, W), nd, dl = y.shape[0], self.img_shape, self.n_detectors, self.detector_spacing
        theta = self._geometry(y.device)
        cos, sin = theta.cos(), theta.sin()
        c = torch.maximum(cos.abs(), sin.abs())
        rho = dl / c
        xs, ys = _pixel_centres(self.img_shape, y.device)
        # 1. Bins within c of a pixel's projection t_q can weigh on it: at most 2K of them.
        K = self._adjoint_taps
        # 2. Fractional bin of each pixel, u_q = (t_q - s_0) / dl, separable in rows and columns;
        #    pad the sinogram so that all taps floor(u_q) + k, k = 1 - K .. K, are in range
        #    (the padding is the plan's), and shift u so that tap m is padded bin floor(u) + m.
        u_x = xs[None, :] * cos[:, None] / dl
        u_y = ys[None, :] * sin[:, None] / dl + (nd - 1) / 2
        pad_lo, pad_hi = self._sinogram_pad
        u_y = u_y + (pad_lo + 1 - K)
        yp = F.pad(y * (1 / c).to(y.dtype)[:, None], (pad_lo, pad_hi))
        # 3. Tap at offset k from floor(u) weighs tri(rho (frac - k)) / c (1 / c is in yp).
        rho_w = rho.to(y.dtype)[:, None]
        taps = [(1 + rho_w * k, -rho_w) if k <= 0 else (1 - rho_w * k, rho_w) for k in range(1 - K, K + 1)]
        out = y.new_zeros(N, H * W)
        work = _Workspace(y.device)
        chunk = _chunk_size(self.angle_chunk, N * H * W)
        for sl in _chunks(len(theta), chunk):
            n = sl.stop - sl.start
            u = work("u", (n, H, W), torch.float64)
            torch.add(u_y[sl, :, None], u_x[sl, None, :], out=u)
            idx, frac = _index_and_fraction(u.view(n, H * W), work, y.dtype)
            idx = idx.unsqueeze(0).expand(N, -1, -1)
            src = yp[:, sl]
            w = work("w", (n, H * W), y.dtype)
            tap = work("tap", (N, n, H * W), y.dtype)
            acc = work("acc", (N, n, H * W), y.dtype)
            for m, (const, slope) in enumerate(taps):
                torch.addcmul(const[sl], frac, slope[sl], out=w).clamp_min_(0)
                torch.gather(src[..., m:], 2, idx, out=tap)
                if m == 0:
                    torch.mul(tap, w, out=acc)
                else:
                    acc.addcmul_(tap, w)
            out += acc.sum(1)
        return out.view(N, H, W)

    def __repr__(self) -> str:
        return (
            f"ParallelBeamCT(img_shape={self.img_shape}, n_angles={self.angles.numel()}, "
            f"n_detectors={self.n_detectors}, detector_spacing={self.detector_spacing})"
        )


# --- fan beam ---------------------------------------------------------------------------------


class FanBeamCT(_RayTransform):
    r"""2D fan-beam ray transform on a flat detector (Joseph projector, matched adjoint).

    See the module docstring for the geometry. Each ray chooses its own stepping axis, so within
    one view some rays step over rows and others over columns; ``A`` evaluates both passes and
    keeps, ray by ray, the one that applies. ``AT`` evaluates the exact ray-pixel weights for the
    few bins around each pixel's projection.

    Args:
        img_shape: ``(H, W)``.
        angles: source angles :math:`\beta` in radians, a 1D tensor or sequence, or an int ``n``
            for ``n`` equispaced angles in ``[0, 2 pi)`` (a full scan).
        source_distance: :math:`D_s`, source to rotation centre in pixels; the source must lie
            outside the image and its interpolation margin, ``> hypot(H, W) / 2 + 1``. Default
            ``hypot(H, W)``.
        detector_distance: :math:`D_d`, rotation centre to detector in pixels, ``> 0``. Default
            ``source_distance``.
        n_detectors: the number of bins; default enough to cover the fan that just contains the
            image's circumscribed circle.
        detector_spacing: the bin width on the detector in pixels; default the magnification
            :math:`(D_s + D_d) / D_s`, i.e. one pixel at the rotation centre.
        angle_chunk: views processed together (bounds the work memory, as for
            :class:`ParallelBeamCT`).

    Shapes:
        ``x``: ``(B, C, H, W)`` real; ``y``: ``(B, C, n_angles, n_detectors)`` real.
    """

    def __init__(
        self,
        img_shape: tuple[int, int],
        angles: int | Sequence[float] | Tensor,
        source_distance: float | None = None,
        detector_distance: float | None = None,
        n_detectors: int | None = None,
        detector_spacing: float | None = None,
        *,
        angle_chunk: int | None = None,
    ):
        self.img_shape = _as_img_shape(img_shape)
        self.angles = _as_angles(angles, 2 * math.pi)
        half_diagonal = math.hypot(*self.img_shape) / 2
        if source_distance is None:
            source_distance = 2 * half_diagonal
        self.source_distance = _positive(source_distance, "source_distance", "distance in pixels")
        if not self.source_distance > half_diagonal + 1:
            raise ValueError(
                f"source_distance: expected the source outside the image, > half the image diagonal "
                f"plus one pixel = {half_diagonal + 1:.4g}, got {source_distance!r}"
            )
        if detector_distance is None:
            detector_distance = self.source_distance
        self.detector_distance = _positive(detector_distance, "detector_distance", "distance in pixels")
        magnification = (self.source_distance + self.detector_distance) / self.source_distance
        if detector_spacing is None:
            detector_spacing = magnification
        self.detector_spacing = _positive(detector_spacing, "detector_spacing", "bin width in pixels")
        if n_detectors is None:
            ds, r = self.source_distance, half_diagonal
            u_max = (ds + self.detector_distance) * r / math.sqrt(ds**2 - r**2)
            n_detectors = math.ceil(2 * u_max / self.detector_spacing)
        self.n_detectors = _positive_int(n_detectors, "n_detectors", "number of detector bins")
        if angle_chunk is not None:
            angle_chunk = _positive_int(angle_chunk, "angle_chunk", "number of angles per chunk")
        self.angle_chunk = angle_chunk
        # Which rays step over rows, from the angles on the CPU: a buffer that moves with the angles
        # (:meth:`to`), and per view whether it has rays of each kind, so that :meth:`A` skips the
        # chunks of views without asking the device.
        _, _, dir_x, dir_y = self._rays(self.angles.detach().cpu())
        self._rows = dir_y.abs() >= dir_x.abs()
        self._views_with = (self._rows.any(1).tolist(), (~self._rows).any(1).tolist())

    def with_angles(self, angles: Tensor) -> FanBeamCT:
        """The same geometry over other projection ``angles`` (radians)."""
        return FanBeamCT(self.img_shape, angles, self.source_distance, self.detector_distance, self.n_detectors,
                         self.detector_spacing, angle_chunk=self.angle_chunk)

    @property
    def detector_positions(self) -> Tensor:
        """``(n_detectors,)`` float64 bin centres :math:`u_d` on the detector, in pixels."""
        return self._detector_positions(torch.device("cpu"))

    def _detector_positions(self, device: torch.device) -> Tensor:
        d = torch.arange(self.n_detectors, dtype=torch.float64, device=device)
        return (d - (self.n_detectors - 1) / 2) * self.detector_spacing

    def _rays(self, angles: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Source ``(S_x, S_y)``, each ``(n,)``; ray directions ``(dir_x, dir_y)``, each ``(n, n_det)``,
        for float64 ``angles`` ``(n,)``, on their device."""
        cos, sin = angles.cos()[:, None], angles.sin()[:, None]
        ds, dd = self.source_distance, self.detector_distance
        u = self._detector_positions(angles.device)[None, :]
        # dir = (D_s + D_d) e_perp + u e with e = (cos, sin), e_perp = (-sin, cos); S = -D_s e_perp
        dir_x = -(ds + dd) * sin + u * cos
        dir_y = (ds + dd) * cos + u * sin
        return ds * sin[:, 0], -ds * cos[:, 0], dir_x, dir_y

    def line_parameters(self) -> tuple[Tensor, Tensor]:
        r"""The parallel-beam coordinates of every ray.

        Returns:
            ``(theta, s)``, each ``(n_angles, n_detectors)`` float64: ray ``(k, d)`` is the line
            :math:`\{p : p \cdot e_\theta = s\}`, so its line integral is the parallel-beam
            projection at ``(theta, s)`` (e.g. :func:`ellipse_sinogram` of ``theta, s``).
        """
        sx, sy, dir_x, dir_y = self._rays(self._geometry(self.angles.device))
        norm = torch.hypot(dir_x, dir_y)
        vx, vy = dir_x / norm, dir_y / norm
        theta = torch.atan2(-vx, vy)
        s = sx[:, None] * vy - sy[:, None] * vx
        return theta, s

    def _project(self, x: Tensor) -> Tensor:
        N, (H, W), nd = x.shape[0], self.img_shape, self.n_detectors
        sx, sy, dir_x, dir_y = self._rays(self._geometry(x.device))
        xs, ys = _pixel_centres(self.img_shape, x.device)
        norm = torch.hypot(dir_x, dir_y)
        rows = self._rows.to(x.device)
        zero = torch.zeros_like(dir_x)
        out = x.new_zeros(N, len(sx), nd)
        work = _Workspace(x.device)
        # 1. Row-stepping rays cross row y_i at column S_x + (y_i - S_y) dir_x / dir_y + (W - 1) / 2;
        #    column-stepping rays cross column x_j at row (H - 1) / 2 - S_y - (x_j - S_x) dir_y / dir_x.
        #    Each pass gives the rays of the other kind slope 0 and weight 0.
        passes = (
            (x, rows, sx + (W - 1) / 2, ys[None, :] - sy[:, None], dir_x / dir_y, norm / dir_y.abs()),
            (x.transpose(1, 2), ~rows, (H - 1) / 2 - sy, sx[:, None] - xs[None, :], dir_y / dir_x,
             norm / dir_x.abs()),
        )
        for (img, mask, base, along, slope, weight), views in zip(passes, self._views_with):
            slope = torch.where(mask, slope, zero)
            weight = torch.where(mask, weight, zero).to(x.dtype)
            lines = F.pad(img, (1, 2))
            base = base + 1
            chunk = _chunk_size(self.angle_chunk, N * img.shape[1] * nd)
            for sl in _chunks(len(sx), chunk):
                if not any(views[sl]):
                    continue
                # 2. Positions of every (ray, step) in float64, then the weighted interpolated sums.
                p = torch.addcmul(base[sl, None, None], along[sl, :, None], slope[sl, None, :])
                out[:, sl] += _interp_lines(lines, p, work, clamp=True).mul_(weight[sl])
        return out

    def _taps(self) -> int:
        """Half the number of bins that can weigh on one pixel in one view (an upper bound).

        Rays with non-zero weight on pixel ``q`` pass within one pixel of its centre, at a radius
        at most ``r = R_c + 1`` from the centre (``R_c`` the largest pixel-centre radius). With
        ``L = D_s + p . e_perp >= D_s - r`` and ``|p . e| <= r`` there, the detector coordinate
        ``u = (D_s + D_d) (p . e) / L`` has a gradient of norm at most
        ``(D_s + D_d) sqrt(L^2 + r^2) / L^2``, so those rays lie within that many pixels of ``u_q``.
        """
        H, W = self.img_shape
        r = math.hypot(H - 1, W - 1) / 2 + 1
        low = self.source_distance - r
        grad = (self.source_distance + self.detector_distance) * math.sqrt(low**2 + r**2) / low**2
        return max(1, math.ceil(grad / self.detector_spacing))

    def _backproject(self, y: Tensor) -> Tensor:
        N, (H, W), nd, dl = y.shape[0], self.img_shape, self.n_detectors, self.detector_spacing
        ds, dd = self.source_distance, self.detector_distance
        sx, sy, dir_x, dir_y = self._rays(self._geometry(y.device))
        beta = self._geometry(y.device)
        cos, sin = beta.cos()[:, None, None], beta.sin()[:, None, None]
        xs, ys = _pixel_centres(self.img_shape, y.device)
        xs, ys = xs[None, None, :], ys[None, :, None]
        K = self._taps()
        # 1. Per ray, the weight on pixel q is g tri(a v_x - b v_y) with v = q - S,
        #    m = max(|dir_x|, |dir_y|), a = dir_y / m, b = dir_x / m and g = |dir| / m (in yp).
        m = torch.maximum(dir_x.abs(), dir_y.abs())
        pad = (2 * K, 2 * K)
        yp = F.pad(y * (torch.hypot(dir_x, dir_y) / m).to(y.dtype), pad)
        ap, bp = F.pad(dir_y / m, pad), F.pad(dir_x / m, pad)
        out = y.new_zeros(N, H * W)
        chunk = _chunk_size(self.angle_chunk, N * H * W)
        for sl in _chunks(len(sx), chunk):
            # 2. Detector coordinate of each pixel centre, u_q = (D_s + D_d) t_q / (D_s + r_q), as a
            #    fractional padded bin shifted so that tap k is bin floor(u) + k.
            t = xs * cos[sl] + ys * sin[sl]
            r = ys * cos[sl] - xs * sin[sl]
            u = (ds + dd) * t / (ds + r) / dl + (nd - 1) / 2 + K + 1
            idx = u.flatten(1).clamp_(0, nd + 2 * K).long()
            vx, vy = xs - sx[sl, None, None], ys - sy[sl, None, None]
            idx_n = idx.unsqueeze(0).expand(N, -1, -1)
            acc = None
            # 3. Exact weights of the 2K bins around u_q.
            for k in range(2 * K):
                a = torch.gather(ap[sl, k:], 1, idx).view(-1, H, W)
                b = torch.gather(bp[sl, k:], 1, idx).view(-1, H, W)
                w = (vx * a - vy * b).abs_().neg_().add_(1).clamp_min_(0).flatten(1).to(y.dtype)
                tap = torch.gather(yp[:, sl, k:], 2, idx_n)
                acc = tap.mul_(w) if acc is None else acc.addcmul_(tap, w)
            out += acc.sum(1)
        return out.view(N, H, W)

    def __repr__(self) -> str:
        return (
            f"FanBeamCT(img_shape={self.img_shape}, n_angles={self.angles.numel()}, "
            f"source_distance={self.source_distance}, detector_distance={self.detector_distance}, "
            f"n_detectors={self.n_detectors}, detector_spacing={self.detector_spacing})"
        )


# --- filtered back-projection -----------------------------------------------------------------

FILTERS = {
    "ramp": lambda f: torch.ones_like(f),
    "shepp-logan": lambda f: torch.sinc(f),
    "cosine": lambda f: torch.cos(math.pi * f),
    "hann": lambda f: 0.5 * (1 + torch.cos(2 * math.pi * f)),
}
"""Apodisation windows of the ramp filter, functions of the frequency in cycles per bin (<= 1/2)."""


def ramp_filter(sinogram: Tensor, filter: str = "ramp") -> Tensor:
    r"""Filter along the detector axis with the band-limited ramp, :math:`|\nu|` in cycles per bin.

    The ramp is the DFT of the band-limited spatial kernel (``1/4`` at 0, ``-1/(pi n)^2`` at
    odd ``n``, Kak & Slaney), applied with zero padding to at least twice the detector length,
    times the chosen window. Divide by the bin width to get the ramp in cycles per pixel.

    Args:
        sinogram: ``(..., n_detectors)`` real.
        filter: one of :data:`FILTERS`.

    Returns:
        The filtered sinogram, same shape and dtype.
    """
    if filter not in FILTERS:
        raise ValueError(f"filter: expected one of {sorted(FILTERS)}, got {filter!r}")
    n, device = sinogram.shape[-1], sinogram.device
    size = max(64, 2 ** math.ceil(math.log2(2 * n)))
    odd = torch.arange(1, size // 2 + 1, 2, device=device)
    k = torch.cat([odd, torch.arange(size // 2 - 1, 0, -2, device=device)])
    kernel = torch.zeros(size, dtype=torch.float64, device=device)
    kernel[:1] = 0.25  # a slice is filled on the device; kernel[0] = 0.25 would copy the value from the host
    kernel[1::2] = -1 / (math.pi * k.to(torch.float64)) ** 2
    response = torch.fft.rfft(kernel).real
    response = response * FILTERS[filter](torch.fft.rfftfreq(size, dtype=torch.float64, device=device))
    response = response.to(dtype=_work_dtype(sinogram.dtype))
    spectrum = torch.fft.rfft(sinogram.to(response.dtype), n=size, dim=-1)
    return torch.fft.irfft(spectrum * response, n=size, dim=-1)[..., :n].to(sinogram.dtype)


def fbp(sinogram: Tensor, op: ParallelBeamCT | FanBeamCT, filter: str = "ramp") -> Tensor:
    r"""Filtered back-projection: an approximate inverse of ``op.A``.

    *Parallel beam*: :math:`\hat f = A^T(w \cdot (y \ast h))`, the ramp-filtered sinogram
    back-projected with ``op.AT`` and weighted per view by its angular spacing
    (:func:`angular_weights`, ``pi / n`` for ``n`` equispaced angles over ``pi``). The bin width
    cancels: the ramp in cycles per pixel is ``1 / Delta`` times the one in cycles per bin, and
    ``AT`` sums about ``1 / Delta`` bins per unit length.

    *Fan beam* (flat detector, full scan): the weighted FBP of Kak & Slaney (3.4.2), on the
    virtual detector through the rotation centre, :math:`s = u D_s / (D_s + D_d)`: pre-weight by
    :math:`D_s / \sqrt{D_s^2 + s^2}` (the cosine of the fan angle), ramp-filter and halve (each
    line is measured twice over :math:`2\pi`), then back-project pixel by pixel with linear
    interpolation at the pixel's virtual coordinate and the distance weight :math:`1 / U^2`,
    :math:`U = (D_s + q \cdot e_\beta^\perp) / D_s`, each view weighted by its angular spacing
    over :math:`2\pi`. Short scans would need Parker weights, which this does not apply.

    Args:
        sinogram: ``(B, C, n_angles, n_detectors)`` real.
        op: the operator that produced it.
        filter: ``"ramp"``, ``"shepp-logan"``, ``"cosine"`` or ``"hann"`` (see :data:`FILTERS`).

    Returns:
        ``(B, C, H, W)`` reconstructions, same dtype as ``sinogram``.

    Raises:
        ValueError: ``op`` or ``filter`` is not one of the above, or ``sinogram`` has the wrong
            shape or holds NaN or infinite values.
    """
    if not isinstance(op, (ParallelBeamCT, FanBeamCT)):
        raise ValueError(f"op: expected a ParallelBeamCT or FanBeamCT, got {type(op).__name__}")
    if filter not in FILTERS:
        raise ValueError(f"filter: expected one of {sorted(FILTERS)}, got {filter!r}")
    check_tensor(sinogram, "sinogram", ndim=4, shape=op.sinogram_shape, complex_=False)
    check_finite(sinogram, "sinogram")
    if isinstance(op, ParallelBeamCT):
        # 1. Ramp filter per view, 2. angular quadrature weights, 3. matched back-projection.
        weights = angular_weights(op.angles, math.pi).to(device=sinogram.device, dtype=sinogram.dtype)
        return op.AT(ramp_filter(sinogram, filter) * weights[:, None])
    return _fan_fbp(sinogram, op, filter)


def _fan_fbp(sinogram: Tensor, op: FanBeamCT, filter: str) -> Tensor:
    B, C, n_angles, nd = sinogram.shape
    H, W = op.img_shape
    dtype, device = _work_dtype(sinogram.dtype), sinogram.device
    ds, dd = op.source_distance, op.detector_distance
    # 1. Virtual detector at the rotation centre, cosine pre-weighting, ramp filter (halved).
    s = op._detector_positions(device) * ds / (ds + dd)
    spacing = op.detector_spacing * ds / (ds + dd)
    pre = (ds / torch.sqrt(ds**2 + s**2)).to(dtype)
    q = ramp_filter(sinogram.to(dtype) * pre, filter) / (2 * spacing)
    weights = angular_weights(op.angles, 2 * math.pi).to(device=device, dtype=dtype)
    q = F.pad(q * weights[:, None], (1, 2)).reshape(B * C, n_angles, nd + 3)
    # 2. Pixel-driven back-projection with linear interpolation and the 1 / U^2 weight.
    beta = op._geometry(device)
    cos, sin = beta.cos()[:, None, None], beta.sin()[:, None, None]
    xs, ys = _pixel_centres(op.img_shape, device)
    xs, ys = xs[None, None, :], ys[None, :, None]
    out = torch.zeros(B * C, H * W, dtype=dtype, device=device)
    chunk = _chunk_size(op.angle_chunk, B * C * H * W)
    for sl in _chunks(n_angles, chunk):
        t = xs * cos[sl] + ys * sin[sl]
        dist = ds + ys * cos[sl] - xs * sin[sl]
        pos = (ds * t / dist / spacing + (nd - 1) / 2 + 1).flatten(1).clamp_(0, nd + 1)
        idx = pos.long().unsqueeze(0).expand(B * C, -1, -1)
        frac = pos.frac_().to(dtype)
        src = q[:, sl]
        value = torch.lerp(torch.gather(src[..., :-1], 2, idx), torch.gather(src[..., 1:], 2, idx), frac)
        out += (value * (ds / dist).square().flatten(1).to(dtype)).sum(1)
    return out.reshape(B, C, H, W).to(sinogram.dtype)


# --- ellipse phantoms -------------------------------------------------------------------------

_SHEPP_LOGAN = (
    # value, semi-axis a, semi-axis b, centre x, centre y, rotation (degrees); unit square [-1, 1]^2
    (2.00, 0.6900, 0.9200, 0.00, 0.0000, 0.0),
    (-0.98, 0.6624, 0.8740, 0.00, -0.0184, 0.0),
    (-0.02, 0.1100, 0.3100, 0.22, 0.0000, -18.0),
    (-0.02, 0.1600, 0.4100, -0.22, 0.0000, 18.0),
    (0.01, 0.2100, 0.2500, 0.00, 0.3500, 0.0),
    (0.01, 0.0460, 0.0460, 0.00, 0.1000, 0.0),
    (0.01, 0.0460, 0.0460, 0.00, -0.1000, 0.0),
    (0.01, 0.0460, 0.0230, -0.08, -0.6050, 0.0),
    (0.01, 0.0230, 0.0230, 0.00, -0.6060, 0.0),
    (0.01, 0.0230, 0.0460, 0.06, -0.6050, 0.0),
)
_MODIFIED_VALUES = (1.0, -0.8, -0.2, -0.2, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1)


def shepp_logan_ellipses(img_shape: tuple[int, int], *, modified: bool = True) -> Tensor:
    """The Shepp–Logan ellipses in pixel units, scaled so the unit square fills ``min(H, W)``.

    Args:
        img_shape: ``(H, W)``; the phantom's ``[-1, 1]`` maps to ``+-min(H, W) / 2`` pixels.
        modified: the higher-contrast values of Toft's modified phantom (as in MATLAB's
            ``phantom``) instead of the original ones.

    Returns:
        ``(10, 6)`` float64 rows ``(value, a, b, x0, y0, phi)``: semi-axis ``a`` lies along
        the direction ``phi`` (radians from ``+x`` towards ``+y``), ``b`` across it, and the
        centre is ``(x0, y0)`` in the module's coordinates.
    """
    H, W = _as_img_shape(img_shape)
    table = torch.tensor(_SHEPP_LOGAN, dtype=torch.float64)
    if modified:
        table[:, 0] = torch.tensor(_MODIFIED_VALUES, dtype=torch.float64)
    scale = min(H, W) / 2
    table[:, 1:5] *= scale
    table[:, 5] = torch.deg2rad(table[:, 5])
    return table


def _check_ellipses(ellipses: Tensor) -> Tensor:
    check_tensor(ellipses, "ellipses", ndim=2, shape=(6,), complex_=False)
    if not bool((ellipses[:, 1:3] > 0).all()):
        raise ValueError("ellipses: expected positive semi-axes in columns 1 and 2")
    return ellipses.to(torch.float64)


def ellipse_image(
    ellipses: Tensor,
    img_shape: tuple[int, int],
    *,
    supersample: int = 1,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
) -> Tensor:
    """Rasterise a sum of constant ellipses on the pixel grid.

    Args:
        ellipses: ``(E, 6)`` rows ``(value, a, b, x0, y0, phi)`` as from
            :func:`shepp_logan_ellipses`.
        img_shape: ``(H, W)``.
        supersample: each pixel is the mean over ``supersample x supersample`` evenly spread
            points (``1``: the value at the pixel centre), approximating the area average.
        dtype: the output dtype.
        device: the output device.

    Returns:
        ``(H, W)`` image.
    """
    ellipses = _check_ellipses(ellipses).to(device)
    H, W = _as_img_shape(img_shape)
    n = _positive_int(supersample, "supersample", "number of points per pixel side")
    sub = (torch.arange(n, dtype=torch.float64, device=device) + 0.5) / n - 0.5
    xs = (torch.arange(W, dtype=torch.float64, device=device) - (W - 1) / 2)[:, None] + sub
    ys = ((H - 1) / 2 - torch.arange(H, dtype=torch.float64, device=device))[:, None] - sub
    x, y = xs.reshape(1, -1), ys.reshape(-1, 1)
    image = torch.zeros(H * n, W * n, dtype=torch.float64, device=device)
    for value, a, b, x0, y0, phi in ellipses:
        dx, dy = x - x0, y - y0
        along = dx * torch.cos(phi) + dy * torch.sin(phi)
        across = -dx * torch.sin(phi) + dy * torch.cos(phi)
        image += value * ((along / a) ** 2 + (across / b) ** 2 <= 1)
    return image.reshape(H, n, W, n).mean((1, 3)).to(dtype)


def ellipse_sinogram(ellipses: Tensor, angles: Tensor, positions: Tensor) -> Tensor:
    r"""Closed-form parallel-beam projections of a sum of constant ellipses.

    For an ellipse of value :math:`\mu`, semi-axes ``a`` (along :math:`\phi`) and ``b``, centre
    :math:`c`: with :math:`s' = s - c \cdot e_\theta` and
    :math:`m^2 = a^2\cos^2(\theta - \phi) + b^2 \sin^2(\theta - \phi)`, the line integral is
    :math:`2 \mu a b \sqrt{m^2 - s'^2} / m^2` where :math:`|s'| < m`, else 0.

    Args:
        ellipses: ``(E, 6)`` rows ``(value, a, b, x0, y0, phi)``.
        angles: line angles :math:`\theta` in radians.
        positions: signed distances ``s`` of the lines, pixels (the module's convention).
            A 1D ``angles (n,)`` with a 1D ``positions (m,)`` gives the sinogram ``(n, m)``;
            otherwise the two broadcast elementwise (e.g. the ``(theta, s)`` of every fan-beam
            ray from :meth:`FanBeamCT.line_parameters`).

    Returns:
        float64 line integrals: ``(n, m)``, or the broadcast shape.
    """
    ellipses = _check_ellipses(ellipses)
    theta = torch.as_tensor(angles, dtype=torch.float64)
    s = torch.as_tensor(positions, dtype=torch.float64)
    if theta.ndim == 1 and s.ndim == 1:
        theta, s = theta[:, None], s[None, :]
    ellipses = ellipses.to(theta.device)
    out = torch.zeros_like(theta + s)
    cos, sin = theta.cos(), theta.sin()
    for value, a, b, x0, y0, phi in ellipses:
        shift = s - (x0 * cos + y0 * sin)
        m2 = (a * torch.cos(theta - phi)) ** 2 + (b * torch.sin(theta - phi)) ** 2
        out += 2 * value * a * b * torch.sqrt((m2 - shift**2).clamp_min(0)) / m2
    return out
