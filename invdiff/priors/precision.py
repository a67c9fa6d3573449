r"""Reduced-precision evaluation of a denoiser: bfloat16 or float16 autocast around its network.

:func:`with_precision` wraps a :class:`~invdiff.priors.base.Denoiser` so that each call runs
under ``torch.autocast(device_type=x.device.type, dtype=...)``. The weights stay in float32;
autocast runs matrix products and convolutions (the network) in the low-precision dtype, while
elementwise arithmetic keeps its inputs' precision, so an adapter's preconditioning,
:math:`c_{skip} x + c_{out} F(c_{in} x, c_{noise})`, adds the low-precision network output to the
float32 skip term. The result is returned in ``x``'s dtype, and gradients flow to ``x`` (guided
samplers differentiate through the wrapper).

Speed. Reduced precision pays on GPUs. On a CPU whose oneDNN has no bfloat16/float16 kernels
(``torch.ops.mkldnn._is_mkldnn_bf16_supported()`` is ``False``, e.g. AVX2-only CPUs), convolutions
fall back to ``aten::_slow_conv2d_forward``: one forward of the shipped ``mri_brain_64`` prior at
``2 x 2 x 320 x 320`` on one thread took 214 s in bf16 and 252 s in fp16 against 9 s in fp32.
torch 2.14 does support both dtypes in CPU autocast; where torch disables autocast for a
device/dtype pair (it warns and would run float32), the wrapper raises instead.

Exact priors gain nothing from it: :class:`~invdiff.priors.gmm.GaussianMixture` computes in
float64, which autocast leaves alone, and the matrix products of
:class:`~invdiff.priors.gaussian.LowRankGaussian` would only lose accuracy.
"""

from __future__ import annotations

import torch
from torch import Tensor

from invdiff.priors.base import Denoiser

PRECISIONS = ("fp32", "bf16", "fp16")
"""Names accepted by :func:`with_precision`."""

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class AutocastDenoiser(Denoiser):
    """A denoiser evaluated under ``torch.autocast`` to bfloat16 or float16.

    ``shape``, ``sigma_min``, ``sigma_max``, ``size_multiple``, ``source``, ``data_scale`` and
    ``clip_range`` are the wrapped denoiser's; ``.to()`` moves it (it is a submodule).

    Args:
        denoiser: the full-precision denoiser.
        precision: ``"bf16"`` or ``"fp16"``.

    Shapes:
        ``forward(x: (B, C, H, W), sigma: float | () | (B,)) -> (B, C, H, W)`` in ``x``'s dtype.

    Raises:
        ValueError: ``precision`` is not ``"bf16"`` or ``"fp16"``.
    """

    def __init__(self, denoiser: Denoiser, precision: str):
        super().__init__()
        if precision not in _DTYPES:
            raise ValueError(f"precision: expected one of {', '.join(_DTYPES)}, got {precision!r}")
        self.denoiser = denoiser
        self.precision = precision
        self.dtype = _DTYPES[precision]

    @property
    def shape(self) -> tuple[int, int, int] | None:
        return self.denoiser.shape

    @property
    def sigma_min(self) -> float:
        return self.denoiser.sigma_min

    @property
    def sigma_max(self) -> float:
        return self.denoiser.sigma_max

    @property
    def size_multiple(self) -> int | None:
        return self.denoiser.size_multiple

    @property
    def source(self) -> str | None:
        return self.denoiser.source

    @property
    def data_scale(self) -> float:
        return getattr(self.denoiser, "data_scale", 1.0)

    @property
    def clip_range(self) -> tuple[float, float] | None:
        return getattr(self.denoiser, "clip_range", None)

    def forward(self, x: Tensor, sigma: Tensor | float) -> Tensor:
        """``D(x, sigma)`` with the network in :attr:`dtype`.

        Raises:
            RuntimeError: autocast to :attr:`dtype` is not available on ``x``'s device (torch
                disables it with a warning rather than failing; this wrapper refuses to run in
                float32 silently).
        """
        device_type = x.device.type
        with torch.autocast(device_type=device_type, dtype=self.dtype):
            if not torch.is_autocast_enabled(device_type):
                raise RuntimeError(
                    f"precision {self.precision}: torch {torch.__version__} does not support autocast to "
                    f"{self.dtype} on device {x.device}; use precision fp32 there"
                )
            out = self.denoiser(x, sigma)
        return out.to(x.dtype)

    def extra_repr(self) -> str:
        return f"precision={self.precision!r}"


def with_precision(denoiser: Denoiser, precision: str) -> Denoiser:
    """``denoiser`` evaluated in ``precision``.

    Args:
        denoiser: any denoiser; one already wrapped by this function is unwrapped first, so the
            last precision asked for is the one used.
        precision: one of :data:`PRECISIONS`: ``"fp32"`` (the network's own float32),
            ``"bf16"`` or ``"fp16"`` (autocast, see :class:`AutocastDenoiser`).

    Returns:
        ``denoiser`` itself for ``"fp32"`` (the unwrapped one if it was wrapped), otherwise an
        :class:`AutocastDenoiser` around it.

    Raises:
        ValueError: ``precision`` is not one of :data:`PRECISIONS`.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision: expected one of {', '.join(PRECISIONS)}, got {precision!r}")
    if isinstance(denoiser, AutocastDenoiser):
        denoiser = denoiser.denoiser
    if precision == "fp32":
        return denoiser
    return AutocastDenoiser(denoiser, precision)
