r"""How a denoiser's network is evaluated: bfloat16 or float16 autocast, and ``torch.compile``.

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

:func:`with_compile` runs the forward pass through ``torch.compile`` (:class:`CompiledDenoiser`):
kernels fused for the device, and with ``"reduce-overhead"`` CUDA graphs that replay a step's
launches at once. Compiling costs tens of seconds to minutes once per shape, so it pays over a
run of many network evaluations on a GPU.
"""

from __future__ import annotations

import torch
from torch import Tensor

from invdiff.priors.base import Denoiser, as_sigma

PRECISIONS = ("fp32", "bf16", "fp16")
"""Names accepted by :func:`with_precision`."""

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class WrappedDenoiser(Denoiser):
    """A denoiser around another one, ``self.denoiser``, that changes how it is evaluated.

    ``shape``, ``sigma_min``, ``sigma_max``, ``size_multiple``, ``source``, ``data_scale`` and
    ``clip_range`` are the wrapped denoiser's; ``.to()`` moves it (it is a submodule).
    """

    def __init__(self, denoiser: Denoiser):
        super().__init__()
        self.denoiser = denoiser

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


class AutocastDenoiser(WrappedDenoiser):
    """A denoiser evaluated under ``torch.autocast`` to bfloat16 or float16 (a :class:`WrappedDenoiser`).

    Args:
        denoiser: the full-precision denoiser.
        precision: ``"bf16"`` or ``"fp16"``.

    Shapes:
        ``forward(x: (B, C, H, W), sigma: float | () | (B,)) -> (B, C, H, W)`` in ``x``'s dtype.

    Raises:
        ValueError: ``precision`` is not ``"bf16"`` or ``"fp16"``.
    """

    def __init__(self, denoiser: Denoiser, precision: str):
        if precision not in _DTYPES:
            raise ValueError(f"precision: expected one of {', '.join(_DTYPES)}, got {precision!r}")
        super().__init__(denoiser)
        self.precision = precision
        self.dtype = _DTYPES[precision]

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


COMPILE_MODES = ("off", "default", "reduce-overhead", "max-autotune")
"""``torch.compile`` modes accepted by :func:`with_compile`; ``"reduce-overhead"`` adds CUDA graphs."""


class CompiledDenoiser(WrappedDenoiser):
    """A denoiser whose forward pass runs through ``torch.compile`` (a :class:`WrappedDenoiser`).

    The noise level reaches the compiled function as a ``(B,)`` tensor on ``x``'s device, so a new
    level each step is new data, not a new graph; a new batch size or image size compiles once
    more (``dynamic=False``: static shapes, the fastest kernels). Under ``"reduce-overhead"`` the
    output is copied out of the CUDA graph's memory, which the next call overwrites. Compiling the
    autocast wrapper of :func:`with_precision` traces the autocast region as well.

    Args:
        denoiser: the denoiser to compile (its network's weights are shared, not copied).
        mode: ``"default"``, ``"reduce-overhead"`` or ``"max-autotune"``.
        backend: ``torch.compile``'s backend; ``"inductor"`` generates kernels (on the CPU it needs
            a C++ compiler), ``"aot_eager"`` traces without generating code (for tests).

    Shapes:
        ``forward(x: (B, C, H, W), sigma: float | () | (B,)) -> (B, C, H, W)``.
    """

    def __init__(self, denoiser: Denoiser, mode: str = "default", backend: str = "inductor"):
        if mode not in COMPILE_MODES[1:]:
            raise ValueError(f"compile: expected one of {', '.join(COMPILE_MODES[1:])}, got {mode!r}")
        super().__init__(denoiser)
        self.mode, self.backend = mode, backend
        # a compiled bound method, not a module attribute: the weights stay registered once
        options = {"mode": mode} if backend == "inductor" else {}
        object.__setattr__(self, "_compiled", torch.compile(denoiser.forward, backend=backend, dynamic=False,
                                                           **options))

    def forward(self, x: Tensor, sigma: Tensor | float) -> Tensor:
        out = self._compiled(x, as_sigma(sigma, x).contiguous())  # one stride for every form of sigma
        return out.clone() if self.mode == "reduce-overhead" else out

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}, backend={self.backend!r}"


def compile_mode_name(mode: str | bool) -> str:
    """``mode`` as one of :data:`COMPILE_MODES`: ``False`` is ``"off"``, ``True`` ``"default"``
    (YAML booleans in a config).

    Raises:
        ValueError: ``mode`` is not one of :data:`COMPILE_MODES` or a boolean.
    """
    if isinstance(mode, bool):
        return "default" if mode else "off"
    if mode not in COMPILE_MODES:
        raise ValueError(f"compile: expected one of {', '.join(COMPILE_MODES)} or a boolean, got {mode!r}")
    return mode


def with_compile(denoiser: Denoiser, mode: str | bool = "off") -> Denoiser:
    """``denoiser`` with its forward pass compiled by ``torch.compile`` in ``mode``.

    Args:
        denoiser: any denoiser; one already compiled by this function is unwrapped first.
        mode: one of :data:`COMPILE_MODES`; ``False`` is ``"off"`` and ``True`` ``"default"``
            (YAML booleans in a config).

    Returns:
        ``denoiser`` itself for ``"off"`` (the uncompiled one if it was compiled), otherwise a
        :class:`CompiledDenoiser` around it.

    Raises:
        ValueError: ``mode`` is not one of :data:`COMPILE_MODES` or a boolean.
    """
    mode = compile_mode_name(mode)
    if isinstance(denoiser, CompiledDenoiser):
        denoiser = denoiser.denoiser
    return denoiser if mode == "off" else CompiledDenoiser(denoiser, mode)
