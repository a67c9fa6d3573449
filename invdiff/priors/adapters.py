r"""Adapters: every kind of network becomes a :class:`~invdiff.priors.base.Denoiser` here, once.

Three kinds of network are adapted:

* :class:`VPDenoiser`: a variance-preserving network ``model(x_vp, t)`` on discrete timesteps
  (DDPM, guided-diffusion/ADM, diffusers) that predicts :math:`\epsilon`, :math:`x_0` or
  :math:`v`. With :math:`\bar\alpha = 1 / (1 + \sigma^2)` the VP and VE variables are related by

  .. math:: x_{vp} = \sqrt{\bar\alpha}\, x = x / \sqrt{1 + \sigma^2}, \qquad
            \sigma_t = \sqrt{(1 - \bar\alpha_t) / \bar\alpha_t}.

* :class:`EDMDenoiser`: a raw network ``F(x, c_noise)`` under EDM preconditioning (Karras et al.
  2022, table 1): :math:`D(x, \sigma) = c_{skip} x + c_{out} F(c_{in} x, c_{noise})`.
* :class:`ScaledDenoiser`: a network that already is a denoiser ``model(x, sigma) -> x0_hat``
  (e.g. deepinv's EDM networks), only in another data range.

Data range. A prior models images in the range it was trained on; most public checkpoints use
:math:`[-1, 1]`. Every adapter takes an affine map from the caller's data to the network's,
``x_net = data_scale * x + data_shift``; noise levels scale with it
(``sigma_net = data_scale * sigma``) and the estimate is mapped back,
``x0_hat = (x0_net - data_shift) / data_scale``. The default ``(1, 0)`` serves data in the
network's own range; :func:`range_affine` computes the pair for two ranges, e.g.
``range_affine((0, 1), (-1, 1)) == (2.0, -1.0)`` lets a :math:`[-1, 1]` model serve
:math:`[0, 1]` images. ``sigma_min``/``sigma_max`` are reported in the caller's units.

Image size. An adapter's ``size_multiple`` comes from the wrapped network
(:func:`network_size_multiple`): the spatial sizes it accepts are multiples of it, whatever its
training size ``shape``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from invdiff.priors.base import Denoiser, as_sigma
from invdiff.schedules import vp_alphas_cumprod, vp_sigmas


def range_affine(
    data_range: tuple[float, float], model_range: tuple[float, float] = (-1.0, 1.0)
) -> tuple[float, float]:
    """The ``(data_scale, data_shift)`` that maps ``data_range`` onto ``model_range``.

    Args:
        data_range: ``(lo, hi)`` of the caller's images, e.g. ``(0, 1)``.
        model_range: ``(lo, hi)`` the network was trained on; default ``(-1, 1)``.

    Returns:
        ``(scale, shift)`` with ``scale * lo + shift = model_lo`` and ``scale * hi + shift = model_hi``.
    """
    lo, hi = (float(v) for v in data_range)
    mlo, mhi = (float(v) for v in model_range)
    if not hi > lo:
        raise ValueError(f"data_range: expected (lo, hi) with hi > lo, got {data_range}")
    if not mhi > mlo:
        raise ValueError(f"model_range: expected (lo, hi) with hi > lo, got {model_range}")
    scale = (mhi - mlo) / (hi - lo)
    return scale, mlo - scale * lo


def network_size_multiple(model: nn.Module | Callable) -> int:
    """The number every spatial size a network accepts must be a multiple of.

    * A network that declares ``size_multiple`` (an ``int``): that number. invdiff's
      :class:`~invdiff.priors.unet.UNet` and :class:`~invdiff.priors.adm.ADMUNet` declare
      ``2 ** (len(channel_mult) - 1)``; the diffusers wrapper of
      :func:`~invdiff.priors.checkpoints.load_diffusers` ``2 ** (len(block_out_channels) - 1)``.
    * An EDM-layout network (deepinv's ``ADMUNet`` and ``NCSNpp``, NVlabs' ``SongUNet`` and
      ``DhariwalUNet``), recognised by its ``enc`` dict with one ``"<res>x<res>_down"`` block per
      level after the first: ``2 ** (len(channel_mult) - 1)``, counted from those blocks.
    * Anything else (a plain callable, an unknown network): 1, any size; set the adapter's
      ``size_multiple`` by hand when that is wrong.

    Args:
        model: the wrapped network.

    Returns:
        A positive integer.
    """
    declared = getattr(model, "size_multiple", None)
    if isinstance(declared, int) and not isinstance(declared, bool):
        return declared
    enc = getattr(model, "enc", None)
    if isinstance(enc, nn.ModuleDict):
        return 2 ** sum(1 for name in enc if name.endswith("_down") and "aux" not in name)
    return 1


def _expand(v: Tensor, x: Tensor) -> Tensor:
    """``(B,)`` -> ``(B, 1, ..., 1)`` broadcastable against ``x``."""
    return v.view(-1, *([1] * (x.ndim - 1)))


class _Adapter(Denoiser):
    """Shared part of the adapters: the wrapped network and the affine data-range map."""

    kind: str = ""

    def __init__(
        self,
        model: nn.Module | Callable,
        *,
        data_scale: float = 1.0,
        data_shift: float = 0.0,
        shape: tuple[int, int, int] | None = None,
    ):
        super().__init__()
        if not float(data_scale) > 0:
            raise ValueError(f"data_scale: expected a positive number, got {data_scale}")
        self.model = model
        self.data_scale = float(data_scale)
        self.data_shift = float(data_shift)
        self.shape = tuple(int(s) for s in shape) if shape is not None else None
        self.size_multiple = network_size_multiple(model)

    def _to_model(self, x: Tensor, sigma: Tensor) -> tuple[Tensor, Tensor]:
        """Caller's ``(x, sigma)`` -> the network's range; ``sigma`` is ``(B,)``."""
        if self.data_scale == 1.0 and self.data_shift == 0.0:
            return x, sigma
        return self.data_scale * x + self.data_shift, self.data_scale * sigma

    def _from_model(self, x0: Tensor) -> Tensor:
        if self.data_scale == 1.0 and self.data_shift == 0.0:
            return x0
        return (x0 - self.data_shift) / self.data_scale

    @property
    def config(self) -> dict:
        """The adapter's JSON-able constructor arguments (without the network)."""
        return {
            "data_scale": self.data_scale,
            "data_shift": self.data_shift,
            "shape": list(self.shape) if self.shape is not None else None,
        }


class VPDenoiser(_Adapter):
    r"""A variance-preserving network on discrete timesteps, as a denoiser.

    ``model(x_vp, t)`` takes ``x_vp: (B, C, H, W)`` and timesteps ``t: (B,)`` (real-valued, in
    ``x``'s dtype) and returns ``(B, C, H, W)``, or ``(B, 2C, H, W)`` for networks with learned
    variance (guided-diffusion's ``learn_sigma``), of which the first ``C`` channels are used.

    Timesteps. A noise level is mapped to a timestep by interpolating linearly in
    :math:`\log\sigma` between the two neighbouring timesteps, as k-diffusion's
    ``DiscreteSchedule.sigma_to_t``: on the grid this gives the integer ``t`` exactly, in between
    a fractional ``t`` (``timesteps="continuous"``, the default); ``timesteps="nearest"`` rounds
    to the nearest timestep in :math:`\log\sigma` instead. Noise levels outside the grid are
    clamped to ``t = 0`` or ``t = T - 1`` for the network; the conversion to :math:`x_0` always
    uses the true ``sigma``.

    Args:
        model: the network, ``model(x_vp, t) -> eps | x0 | v``.
        alphas_cumprod: :math:`\bar\alpha_t`, ``(T,)``, decreasing in ``(0, 1]``; default DDPM's
            linear-β schedule with ``T = 1000`` (:func:`invdiff.schedules.vp_alphas_cumprod`).
        prediction: ``"eps"``, ``"x0"`` or ``"v"``
            (:math:`v = \sqrt{\bar\alpha}\,\epsilon - \sqrt{1 - \bar\alpha}\, x_0`).
        timesteps: ``"continuous"`` or ``"nearest"``, see above.
        data_scale, data_shift: the affine map from the caller's data to the network's range
            (see the module docstring).
        shape: ``(C, H, W)`` the prior was trained at, if known (it runs at other sizes too, see
            ``size_multiple``).

    ``alphas_cumprod`` is a float64 buffer; ``.to(device)`` moves it, but ``.float()`` or
    ``.half()`` on the adapter would round it too: cast ``denoiser.model`` instead.

    Shapes:
        ``forward(x: (B, C, H, W), sigma: float | () | (B,)) -> (B, C, H, W)``.
    """

    kind = "vp"
    PREDICTIONS = ("eps", "x0", "v")
    TIMESTEPS = ("continuous", "nearest")

    def __init__(
        self,
        model: nn.Module | Callable,
        alphas_cumprod: Tensor | None = None,
        prediction: str = "eps",
        *,
        timesteps: str = "continuous",
        data_scale: float = 1.0,
        data_shift: float = 0.0,
        shape: tuple[int, int, int] | None = None,
    ):
        super().__init__(model, data_scale=data_scale, data_shift=data_shift, shape=shape)
        if prediction not in self.PREDICTIONS:
            raise ValueError(f"prediction: expected one of {self.PREDICTIONS}, got {prediction!r}")
        if timesteps not in self.TIMESTEPS:
            raise ValueError(f"timesteps: expected one of {self.TIMESTEPS}, got {timesteps!r}")
        ac = vp_alphas_cumprod() if alphas_cumprod is None else alphas_cumprod
        ac = torch.as_tensor(ac, dtype=torch.float64).detach().cpu()
        if ac.ndim != 1 or ac.numel() < 2:
            raise ValueError(f"alphas_cumprod: expected shape (T,) with T >= 2, got {tuple(ac.shape)}")
        if not (bool((ac > 0).all()) and bool((ac <= 1).all()) and bool((ac[1:] < ac[:-1]).all())):
            raise ValueError("alphas_cumprod: expected strictly decreasing values in (0, 1]")
        self.prediction = prediction
        self.timesteps = timesteps
        # Not persistent: the schedule travels in ``config``, the state dict holds only weights.
        self.register_buffer("alphas_cumprod", ac, persistent=False)
        sigmas = vp_sigmas(ac)
        self.sigma_min = float(sigmas[0]) / self.data_scale
        self.sigma_max = float(sigmas[-1]) / self.data_scale

    @property
    def num_timesteps(self) -> int:
        return self.alphas_cumprod.shape[0]

    @property
    def config(self) -> dict:
        return {
            **super().config,
            "prediction": self.prediction,
            "timesteps": self.timesteps,
            "alphas_cumprod": self.alphas_cumprod.double().tolist(),
        }

    def sigma_to_t(self, sigma: Tensor) -> Tensor:
        r"""The (fractional) timestep of a noise level in the network's units.

        Args:
            sigma: ``(B,)`` noise levels, :math:`\ge 0`.

        Returns:
            ``(B,)`` float64 timesteps in ``[0, T - 1]``.
        """
        log_sigmas = vp_sigmas(self.alphas_cumprod.double()).log()
        log_sigma = sigma.detach().double().to(log_sigmas.device).log()
        if self.timesteps == "nearest":
            return (log_sigma[:, None] - log_sigmas[None]).abs().argmin(dim=1).double()
        low = (torch.searchsorted(log_sigmas, log_sigma, right=True) - 1).clamp(0, log_sigmas.shape[0] - 2)
        w = ((log_sigma - log_sigmas[low]) / (log_sigmas[low + 1] - log_sigmas[low])).clamp(0, 1)
        return low.double() + w

    def forward(self, x: Tensor, sigma: Tensor | float) -> Tensor:
        sigma = as_sigma(sigma, x)
        # 1. Into the network's data range, then VE -> VP: x_vp = x / sqrt(1 + sigma^2).
        x_net, sigma_net = self._to_model(x, sigma)
        s = _expand(sigma_net, x)
        c = (1 + s.square()).rsqrt()
        t = self.sigma_to_t(sigma_net).to(device=x.device, dtype=sigma.dtype)
        out = self.model(c * x_net, t)
        # 2. Learned variance: keep the mean's channels.
        channels = x.shape[1]
        if out.shape[1] == 2 * channels:
            out = out[:, :channels]
        elif out.shape[1] != channels:
            raise ValueError(
                f"model: expected {channels} or {2 * channels} output channels, got {out.shape[1]}"
            )
        # 3. Tweedie estimate from the parameterisation.
        if self.prediction == "eps":
            x0 = x_net - s * out
        elif self.prediction == "x0":
            x0 = out
        else:
            x0 = c.square() * x_net - s * c * out
        return self._from_model(x0)


class EDMDenoiser(_Adapter):
    r"""EDM preconditioning of a raw network ``F(x, c_noise)`` (Karras et al. 2022, table 1).

    .. math::
        D(x, \sigma) = c_{skip} x + c_{out} F(c_{in} x, c_{noise}), \quad
        c_{skip} = \frac{\sigma_d^2}{\sigma^2 + \sigma_d^2},\
        c_{out} = \frac{\sigma \sigma_d}{\sqrt{\sigma^2 + \sigma_d^2}},\
        c_{in} = \frac{1}{\sqrt{\sigma^2 + \sigma_d^2}},\
        c_{noise} = \tfrac14 \ln \sigma,

    all in the network's data range. ``sigma`` must be positive.

    Args:
        model: ``F(x: (B, C, H, W), c_noise: (B,)) -> (B, C, H, W)``.
        sigma_data: :math:`\sigma_d`, the data's standard deviation in the network's range.
        data_scale, data_shift: the affine map from the caller's data to the network's range.
        shape: ``(C, H, W)`` the prior was trained at, if known (it runs at other sizes too, see
            ``size_multiple``).
        sigma_min, sigma_max: the trained noise range, in the network's units.
        patches: ``shape`` is the size of the random windows the network was trained on
            (:attr:`~invdiff.priors.base.Denoiser.patches`); recorded in :attr:`config` only when
            true, so whole-image priors describe themselves as before.
    """

    kind = "edm"

    def __init__(
        self,
        model: nn.Module | Callable,
        sigma_data: float = 0.5,
        *,
        data_scale: float = 1.0,
        data_shift: float = 0.0,
        shape: tuple[int, int, int] | None = None,
        sigma_min: float = 0.002,
        sigma_max: float = 80.0,
        patches: bool = False,
    ):
        super().__init__(model, data_scale=data_scale, data_shift=data_shift, shape=shape)
        if not isinstance(patches, bool):
            raise ValueError(f"patches: expected true or false, got {patches!r}")
        self.patches = patches
        if not float(sigma_data) > 0:
            raise ValueError(f"sigma_data: expected a positive number, got {sigma_data}")
        self.sigma_data = float(sigma_data)
        self.sigma_min = float(sigma_min) / self.data_scale
        self.sigma_max = float(sigma_max) / self.data_scale

    @property
    def config(self) -> dict:
        return {
            **super().config,
            "sigma_data": self.sigma_data,
            "sigma_min": self.sigma_min * self.data_scale,
            "sigma_max": self.sigma_max * self.data_scale,
            **({"patches": True} if self.patches else {}),
        }

    def forward(self, x: Tensor, sigma: Tensor | float) -> Tensor:
        sigma = as_sigma(sigma, x)
        x_net, sigma_net = self._to_model(x, sigma)
        # 1. Preconditioning coefficients.
        s = _expand(sigma_net, x)
        sd2 = self.sigma_data**2
        c_skip = sd2 / (s.square() + sd2)
        c_out = s * self.sigma_data * (s.square() + sd2).rsqrt()
        c_in = (s.square() + sd2).rsqrt()
        c_noise = sigma_net.log() / 4
        # 2. D = c_skip x + c_out F(c_in x, c_noise).
        x0 = c_skip * x_net + c_out * self.model(c_in * x_net, c_noise)
        return self._from_model(x0)


class ScaledDenoiser(_Adapter):
    """A network that already is a denoiser, ``model(x, sigma) -> x0_hat``, in its own data range.

    Args:
        model: ``model(x: (B, C, H, W), sigma: (B,)) -> (B, C, H, W)``.
        data_scale, data_shift: the affine map from the caller's data to the network's range.
        shape: ``(C, H, W)`` the prior was trained at, if known (it runs at other sizes too, see
            ``size_multiple``).
        sigma_min, sigma_max: the trained noise range, in the network's units.
    """

    kind = "scaled"

    def __init__(
        self,
        model: nn.Module | Callable,
        *,
        data_scale: float = 1.0,
        data_shift: float = 0.0,
        shape: tuple[int, int, int] | None = None,
        sigma_min: float = 0.002,
        sigma_max: float = 80.0,
    ):
        super().__init__(model, data_scale=data_scale, data_shift=data_shift, shape=shape)
        self.sigma_min = float(sigma_min) / self.data_scale
        self.sigma_max = float(sigma_max) / self.data_scale

    @property
    def config(self) -> dict:
        return {
            **super().config,
            "sigma_min": self.sigma_min * self.data_scale,
            "sigma_max": self.sigma_max * self.data_scale,
        }

    def forward(self, x: Tensor, sigma: Tensor | float) -> Tensor:
        x_net, sigma_net = self._to_model(x, as_sigma(sigma, x))
        return self._from_model(self.model(x_net, sigma_net))


ADAPTERS = {"vp": VPDenoiser, "edm": EDMDenoiser, "scaled": ScaledDenoiser}
