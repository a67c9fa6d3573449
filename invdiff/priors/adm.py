r"""The guided-diffusion / ADM UNet (Dhariwal & Nichol 2021), with guided-diffusion's state-dict keys.

This is the network of openai/guided-diffusion's ``UNetModel``, the architecture of DPS's
``ffhq_10m.pt`` and of DDS's fastMRI and AAPM checkpoints. Parameter names and shapes are
guided-diffusion's (``time_embed.0.weight``, ``input_blocks.N.M.in_layers.2.weight``,
``middle_block.1.qkv.weight``, ``output_blocks.N.M.out_layers.3.weight``, ``out.2.weight``, ...),
so their state dicts load with strict key matching. It is a variance-preserving ε-network on
discrete timesteps; :func:`invdiff.priors.checkpoints.load_adm` wraps it in a
:class:`~invdiff.priors.adapters.VPDenoiser`.

``attention_resolutions`` are feature-map resolutions in pixels, converted to downsampling
factors as guided-diffusion's ``create_model`` does, ``image_size // res``; a factor that is not
a power of two (DDS's ``image_size=320`` with ``"16"`` gives 20) places no attention outside the
middle block, exactly as in the original.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# Named configurations, in the arguments of :class:`ADMUNet`.
ADM_CONFIGS: dict[str, dict] = {
    # DPS (Chung et al. 2023) ``ffhq_10m.pt``; the same network as deepinv's ``DiffUNet(large_model=False)``.
    "ffhq_256": {
        "image_size": 256,
        "in_channels": 3,
        "out_channels": 3,
        "model_channels": 128,
        "num_res_blocks": 1,
        "attention_resolutions": (16,),
        "channel_mult": (1, 1, 2, 2, 4, 4),
        "num_heads": 4,
        "num_head_channels": 64,
        "use_scale_shift_norm": True,
        "resblock_updown": True,
        "learn_sigma": True,
        "dropout": 0.0,
    },
    # DDS (Chung et al. 2024) ``fastmri_knee_320_complex_1m.pt``, HJ-harry/DDS
    # ``configs/vp/fastmri_knee_320_complex.yml``: real and imaginary parts as 2 channels;
    # ``channel_mult`` is ``create_model``'s default for 320; 320 // 16 = 20 is no downsampling
    # factor, so attention is in the middle block only.
    "dds_fastmri_320": {
        "image_size": 320,
        "in_channels": 2,
        "out_channels": 2,
        "model_channels": 256,
        "num_res_blocks": 1,
        "attention_resolutions": (16,),
        "channel_mult": (1, 1, 2, 2, 4, 4),
        "num_heads": 4,
        "num_head_channels": 64,
        "use_scale_shift_norm": True,
        "resblock_updown": True,
        "learn_sigma": True,
        "dropout": 0.0,
    },
    # DDS ``AAPM256_1M.pt`` (CT), HJ-harry/DDS ``configs/vp/AAPM256.yml``.
    "dds_aapm_256": {
        "image_size": 256,
        "in_channels": 1,
        "out_channels": 1,
        "model_channels": 256,
        "num_res_blocks": 1,
        "attention_resolutions": (16,),
        "channel_mult": (1, 1, 2, 2, 4, 4),
        "num_heads": 4,
        "num_head_channels": 64,
        "use_scale_shift_norm": True,
        "resblock_updown": True,
        "learn_sigma": True,
        "dropout": 0.0,
    },
    # guided-diffusion's unconditional ImageNet 256 model (``256x256_diffusion_uncond.pt``).
    "imagenet_256_uncond": {
        "image_size": 256,
        "in_channels": 3,
        "out_channels": 3,
        "model_channels": 256,
        "num_res_blocks": 2,
        "attention_resolutions": (32, 16, 8),
        "channel_mult": (1, 1, 2, 2, 4, 4),
        "num_heads": 4,
        "num_head_channels": 64,
        "use_scale_shift_norm": True,
        "resblock_updown": True,
        "learn_sigma": True,
        "dropout": 0.0,
    },
}

# ``create_model``'s default channel multipliers by image size.
_DEFAULT_CHANNEL_MULT = {
    512: (0.5, 1, 1, 2, 2, 4, 4),
    320: (1, 1, 2, 2, 4, 4),
    256: (1, 1, 2, 2, 4, 4),
    128: (1, 1, 2, 3, 4),
    64: (1, 2, 3, 4),
}


class _GroupNorm32(nn.GroupNorm):
    """GroupNorm(32, C), computed in at least float32 (guided-diffusion's ``GroupNorm32``)."""

    def __init__(self, channels: int):
        super().__init__(32, channels)

    def forward(self, x: Tensor) -> Tensor:
        if x.dtype in (torch.float16, torch.bfloat16):
            return super().forward(x.float()).to(x.dtype)
        return super().forward(x)


def timestep_embedding(
    t: Tensor, dim: int, max_period: float = 10000.0, dtype: torch.dtype | None = None
) -> Tensor:
    r"""Sinusoidal embedding ``[cos(t f_k), sin(t f_k)]`` with :math:`f_k = P^{-k/h}`, ``h = dim // 2``.

    Args:
        t: ``(B,)`` timesteps, fractional allowed.
        dim: the embedding width.
        max_period: :math:`P`.
        dtype: the computation dtype; default ``t``'s if floating, else float32.

    Returns:
        ``(B, dim)``.
    """
    if dtype is None:
        dtype = t.dtype if t.is_floating_point() else torch.float32
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t[:, None].to(dtype) * freqs[None].to(dtype)
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


class _Resample(nn.Module):
    """Nearest ×2 upsampling or ×2 downsampling, with an optional 3×3 convolution.

    Keys: ``conv`` (upsampling) or ``op`` (downsampling with convolution), as in guided-diffusion.
    """

    def __init__(self, channels: int, up: bool, use_conv: bool):
        super().__init__()
        self.up = up
        self.use_conv = use_conv
        if use_conv and up:
            self.conv = nn.Conv2d(channels, channels, 3, padding=1)
        elif use_conv:
            self.op = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        if self.up:
            x = F.interpolate(x, scale_factor=2, mode="nearest")
            return self.conv(x) if self.use_conv else x
        return self.op(x) if self.use_conv else F.avg_pool2d(x, 2)


class _ResBlock(nn.Module):
    """Residual block conditioned on the timestep embedding (optionally up/downsampling: BigGAN style)."""

    def __init__(
        self,
        channels: int,
        emb_channels: int,
        dropout: float,
        out_channels: int | None = None,
        use_scale_shift_norm: bool = False,
        up: bool = False,
        down: bool = False,
    ):
        super().__init__()
        out_channels = out_channels or channels
        self.use_scale_shift_norm = use_scale_shift_norm
        self.in_layers = nn.Sequential(
            _GroupNorm32(channels), nn.SiLU(), nn.Conv2d(channels, out_channels, 3, padding=1)
        )
        self.updown = up or down
        if self.updown:
            self.h_upd = _Resample(channels, up=up, use_conv=False)
            self.x_upd = _Resample(channels, up=up, use_conv=False)
        self.emb_layers = nn.Sequential(
            nn.SiLU(), nn.Linear(emb_channels, 2 * out_channels if use_scale_shift_norm else out_channels)
        )
        self.out_layers = nn.Sequential(
            _GroupNorm32(out_channels),
            nn.SiLU(),
            nn.Dropout(dropout),
            nn.Conv2d(out_channels, out_channels, 3, padding=1),
        )
        nn.init.zeros_(self.out_layers[3].weight)
        nn.init.zeros_(self.out_layers[3].bias)
        self.skip_connection = (
            nn.Identity() if out_channels == channels else nn.Conv2d(channels, out_channels, 1)
        )

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        if self.updown:
            h = self.in_layers[:-1](x)
            h = self.in_layers[-1](self.h_upd(h))
            x = self.x_upd(x)
        else:
            h = self.in_layers(x)
        emb_out = self.emb_layers(emb).to(h.dtype)[..., None, None]
        if self.use_scale_shift_norm:
            scale, shift = emb_out.chunk(2, dim=1)
            h = self.out_layers[0](h) * (1 + scale) + shift
            h = self.out_layers[1:](h)
        else:
            h = self.out_layers(h + emb_out)
        return self.skip_connection(x) + h


class _Attention(nn.Module):
    """Multi-head self-attention over all positions, with a residual connection.

    ``new_order=False`` is guided-diffusion's legacy layout of ``qkv`` (heads first, then q/k/v),
    ``True`` its ``QKVAttention`` layout (q/k/v first, then heads).
    """

    def __init__(self, channels: int, num_heads: int, num_head_channels: int, new_order: bool):
        super().__init__()
        if num_head_channels == -1:
            self.num_heads = num_heads
        else:
            if channels % num_head_channels:
                raise ValueError(
                    f"num_head_channels: {channels} channels are not divisible by {num_head_channels}"
                )
            self.num_heads = channels // num_head_channels
        self.new_order = new_order
        self.norm = _GroupNorm32(channels)
        self.qkv = nn.Conv1d(channels, 3 * channels, 1)
        self.proj_out = nn.Conv1d(channels, channels, 1)
        nn.init.zeros_(self.proj_out.weight)
        nn.init.zeros_(self.proj_out.bias)

    def forward(self, x: Tensor) -> Tensor:
        b, c, *spatial = x.shape
        x = x.reshape(b, c, -1)
        qkv = self.qkv(self.norm(x))  # (B, 3C, T)
        n, ch, length = self.num_heads, c // self.num_heads, x.shape[-1]
        if self.new_order:
            q, k, v = (z.reshape(b * n, ch, length) for z in qkv.chunk(3, dim=1))
        else:
            q, k, v = qkv.reshape(b * n, 3 * ch, length).split(ch, dim=1)
        h = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        h = self.proj_out(h.transpose(1, 2).reshape(b, c, length))
        return (x + h).reshape(b, c, *spatial)


class _EmbedSequential(nn.Sequential):
    """A sequence of layers; residual blocks also receive the timestep embedding."""

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        for layer in self:
            x = layer(x, emb) if isinstance(layer, _ResBlock) else layer(x)
        return x


class ADMUNet(nn.Module):
    r"""guided-diffusion's ``UNetModel`` with ``create_model``'s arguments.

    Args:
        image_size: the training resolution; places attention (``image_size // res``).
        in_channels: image channels.
        model_channels: base width (``num_channels`` in guided-diffusion's scripts).
        out_channels: channels of the ε prediction; default ``in_channels``. With
            ``learn_sigma`` the network outputs twice as many (ε, then the variance interpolant).
        num_res_blocks: residual blocks per level.
        attention_resolutions: feature-map resolutions (pixels) with self-attention.
        channel_mult: per-level width multipliers; default ``create_model``'s for ``image_size``.
        num_heads: attention heads, if ``num_head_channels == -1``.
        num_head_channels: channels per head (overrides ``num_heads``), or ``-1``.
        num_heads_upsample: heads in the decoder; ``-1`` for ``num_heads``.
        use_scale_shift_norm: FiLM conditioning ``norm(h) (1 + scale) + shift``.
        resblock_updown: BigGAN-style residual up/downsampling blocks.
        learn_sigma: double the output channels.
        dropout: dropout probability in the residual blocks.
        conv_resample: learned convolutions in plain up/downsampling layers.
        num_classes: classes of a class-conditional model (adds ``label_emb``), or ``None``.
        use_new_attention_order: ``QKVAttention`` instead of the legacy ``qkv`` layout.

    Shapes:
        ``forward(x: (B, in_channels, H, W), t: (B,), y: (B,) | None) ->
        (B, out_channels * (1 + learn_sigma), H, W)`` with ``H, W`` divisible by
        ``2 ** (len(channel_mult) - 1)``; ``t`` is the discrete timestep (float allowed).
    """

    arch = "adm"

    def __init__(
        self,
        image_size: int,
        in_channels: int = 3,
        model_channels: int = 128,
        out_channels: int | None = None,
        num_res_blocks: int = 2,
        attention_resolutions: Sequence[int] = (16,),
        channel_mult: Sequence[float] | None = None,
        num_heads: int = 1,
        num_head_channels: int = -1,
        num_heads_upsample: int = -1,
        use_scale_shift_norm: bool = False,
        resblock_updown: bool = False,
        learn_sigma: bool = False,
        dropout: float = 0.0,
        conv_resample: bool = True,
        num_classes: int | None = None,
        use_new_attention_order: bool = False,
    ):
        super().__init__()
        if channel_mult is None:
            if image_size not in _DEFAULT_CHANNEL_MULT:
                raise ValueError(
                    f"channel_mult: no default for image_size={image_size} "
                    f"(known: {sorted(_DEFAULT_CHANNEL_MULT)}); pass it explicitly"
                )
            channel_mult = _DEFAULT_CHANNEL_MULT[image_size]
        out_channels = in_channels if out_channels is None else out_channels
        self.config = {
            "image_size": int(image_size),
            "in_channels": int(in_channels),
            "model_channels": int(model_channels),
            "out_channels": int(out_channels),
            "num_res_blocks": int(num_res_blocks),
            "attention_resolutions": [int(r) for r in attention_resolutions],
            "channel_mult": [float(m) if float(m) != int(m) else int(m) for m in channel_mult],
            "num_heads": int(num_heads),
            "num_head_channels": int(num_head_channels),
            "num_heads_upsample": int(num_heads_upsample),
            "use_scale_shift_norm": bool(use_scale_shift_norm),
            "resblock_updown": bool(resblock_updown),
            "learn_sigma": bool(learn_sigma),
            "dropout": float(dropout),
            "conv_resample": bool(conv_resample),
            "num_classes": None if num_classes is None else int(num_classes),
            "use_new_attention_order": bool(use_new_attention_order),
        }
        self.in_channels = in_channels
        self.model_channels = model_channels
        self.num_classes = num_classes
        self.num_levels = len(channel_mult)
        attention_ds = {image_size // int(r) for r in attention_resolutions}
        heads_up = num_heads if num_heads_upsample == -1 else num_heads_upsample
        emb_ch = 4 * model_channels

        def res(cin, cout=None, **kw):
            return _ResBlock(cin, emb_ch, dropout, cout, use_scale_shift_norm, **kw)

        def attn(ch, heads):
            return _Attention(ch, heads, num_head_channels, use_new_attention_order)

        def resample(ch, up):
            if resblock_updown:
                return res(ch, ch, up=up, down=not up)
            return _Resample(ch, up=up, use_conv=conv_resample)

        self.time_embed = nn.Sequential(
            nn.Linear(model_channels, emb_ch), nn.SiLU(), nn.Linear(emb_ch, emb_ch)
        )
        if num_classes is not None:
            self.label_emb = nn.Embedding(num_classes, emb_ch)

        # 1. Encoder: a stem, then per level residual(+attention) blocks and a downsampling block.
        ch = int(channel_mult[0] * model_channels)
        self.input_blocks = nn.ModuleList([_EmbedSequential(nn.Conv2d(in_channels, ch, 3, padding=1))])
        skip_chs, ds = [ch], 1
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                layers = [res(ch, int(mult * model_channels))]
                ch = int(mult * model_channels)
                if ds in attention_ds:
                    layers.append(attn(ch, num_heads))
                self.input_blocks.append(_EmbedSequential(*layers))
                skip_chs.append(ch)
            if level != len(channel_mult) - 1:
                self.input_blocks.append(_EmbedSequential(resample(ch, up=False)))
                skip_chs.append(ch)
                ds *= 2
        # 2. Middle: residual, attention, residual.
        self.middle_block = _EmbedSequential(res(ch), attn(ch, num_heads), res(ch))
        # 3. Decoder: per level num_res_blocks + 1 blocks on [h, skip], then upsampling.
        self.output_blocks = nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mult))):
            for i in range(num_res_blocks + 1):
                layers = [res(ch + skip_chs.pop(), int(model_channels * mult))]
                ch = int(model_channels * mult)
                if ds in attention_ds:
                    layers.append(attn(ch, heads_up))
                if level and i == num_res_blocks:
                    layers.append(resample(ch, up=True))
                    ds //= 2
                self.output_blocks.append(_EmbedSequential(*layers))
        self.out = nn.Sequential(
            _GroupNorm32(ch), nn.SiLU(), nn.Conv2d(ch, out_channels * (2 if learn_sigma else 1), 3, padding=1)
        )
        nn.init.zeros_(self.out[2].weight)
        nn.init.zeros_(self.out[2].bias)

    @property
    def size_multiple(self) -> int:
        """``2 ** (len(channel_mult) - 1)``: input ``H`` and ``W`` must be multiples of it."""
        return 2 ** (self.num_levels - 1)

    def forward(self, x: Tensor, t: Tensor | float, y: Tensor | None = None) -> Tensor:
        """ε (and the variance interpolant with ``learn_sigma``) at timestep ``t``; see the class doc."""
        factor = self.size_multiple
        if x.ndim != 4 or x.shape[1] != self.in_channels or x.shape[-2] % factor or x.shape[-1] % factor:
            raise ValueError(
                f"x: expected (B, {self.in_channels}, H, W) with H, W divisible by {factor}, "
                f"got {tuple(x.shape)}"
            )
        if (y is None) != (self.num_classes is None):
            raise ValueError("y: class labels are required by, and only by, a class-conditional model")
        t = torch.as_tensor(t, device=x.device)
        t = t.expand(x.shape[0]) if t.ndim == 0 else t
        dtype = self.time_embed[0].weight.dtype
        emb = self.time_embed(timestep_embedding(t, self.model_channels, dtype=dtype))
        if y is not None:
            emb = emb + self.label_emb(y)
        # 1. Encoder, keeping every block's output for the skips.
        h, hs = x, []
        for block in self.input_blocks:
            h = block(h, emb)
            hs.append(h)
        # 2. Middle and decoder.
        h = self.middle_block(h, emb)
        for block in self.output_blocks:
            h = block(torch.cat([h, hs.pop()], dim=1), emb)
        return self.out(h)
