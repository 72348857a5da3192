"""A StyleGAN2-ADA generator written from the published facts (docs/STYLEGAN2_ADA_FORMAT.md).

Reads top to bottom (the elementwise helpers and resampling are in ops.py): the mapping network, the synthesis layers, blocks, network, and
the Generator that joins them. Parameter and buffer names and their order match the official
network pickles, so a state dict taken from one loads with `load_state_dict(strict=True)`.

Shapes: z [N, z_dim], c [N, c_dim], ws [N, num_ws, w_dim], images [N, img_channels, R, R]
float32 in about [-1, 1] (not clamped). Everything runs in float32 on the CPU; on CUDA the
highest `num_fp16_res` resolutions run in float16 unless `force_fp32=True`.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import torch

from facebank.sources.stylegan.ops import (
    _ACT_GAIN,
    _activation,
    _conv,
    modulated_conv2d,
    normalize_2nd_moment,
    setup_filter,
    upsample2d,
)

__all__ = [
    "Conv2dLayer",
    "FullyConnectedLayer",
    "Generator",
    "MappingNetwork",
    "SynthesisBlock",
    "SynthesisLayer",
    "SynthesisNetwork",
    "ToRGBLayer",
]

NOISE_MODES = ("random", "const", "none")
ARCHITECTURES = ("orig", "skip", "resnet")


# ------------------------------------------------------------------------------------------------
# Mapping network.


class FullyConnectedLayer(torch.nn.Module):
    """y = activation(x @ (weight * lr / sqrt(in)).T + bias * lr), the equalised-lr dense layer."""

    def __init__(
        self,
        in_features: int,  # input width
        out_features: int,  # output width
        bias: bool = True,  # False: no bias parameter
        activation: str = "linear",  # 'linear' or 'lrelu' (slope 0.2, gain sqrt 2)
        lr_multiplier: float = 1.0,  # equalised learning-rate factor, scales weight and bias
        bias_init: float = 0.0,  # initial bias (1 for the style affines)
    ):
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.activation = activation
        self.weight = torch.nn.Parameter(torch.randn([out_features, in_features]) / lr_multiplier)
        self.bias = torch.nn.Parameter(torch.full([out_features], float(bias_init))) if bias else None
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight.to(x.dtype) * self.weight_gain
        if self.bias is None:
            x = x.matmul(w.t())
        else:
            b = self.bias.to(x.dtype)
            if self.bias_gain != 1:
                b = b * self.bias_gain
            x = torch.addmm(b.unsqueeze(0), x, w.t())
        return _activation(x, self.activation, _ACT_GAIN[self.activation], None)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, activation={self.activation}"


class MappingNetwork(torch.nn.Module):
    """z (+ embedded class label) -> w, broadcast to num_ws rows, optionally truncated."""

    def __init__(
        self,
        z_dim: int,  # latent width, 0 = no latent
        c_dim: int,  # class-label width, 0 = unconditional
        w_dim: int,  # intermediate latent width
        num_ws: Optional[int],  # rows of ws to broadcast to, None = return [N, w_dim]
        num_layers: int = 8,  # dense layers after the input
        embed_features: Optional[int] = None,  # label embedding width, None = w_dim (0 when c_dim == 0)
        layer_features: Optional[int] = None,  # hidden width, None = w_dim
        activation: str = "lrelu",  # activation of the dense layers
        lr_multiplier: float = 0.01,  # equalised-lr factor of the dense layers
        w_avg_beta: Optional[float] = 0.995,  # EMA decay of w_avg during training, None = no w_avg
    ):
        super().__init__()
        self.z_dim, self.c_dim, self.w_dim, self.num_ws = z_dim, c_dim, w_dim, num_ws
        self.num_layers = num_layers
        self.w_avg_beta = w_avg_beta
        if embed_features is None:
            embed_features = w_dim
        if c_dim == 0:
            embed_features = 0
        if layer_features is None:
            layer_features = w_dim
        features = [z_dim + embed_features] + [layer_features] * (num_layers - 1) + [w_dim]

        if c_dim > 0:
            self.embed = FullyConnectedLayer(c_dim, embed_features)
        for idx in range(num_layers):
            layer = FullyConnectedLayer(features[idx], features[idx + 1], activation=activation, lr_multiplier=lr_multiplier)
            setattr(self, f"fc{idx}", layer)
        if num_ws is not None and w_avg_beta is not None:
            self.register_buffer("w_avg", torch.zeros([w_dim]))

    def forward(
        self,
        z: Optional[torch.Tensor],
        c: Optional[torch.Tensor],
        truncation_psi: float = 1.0,
        truncation_cutoff: Optional[int] = None,
    ) -> torch.Tensor:
        # Embed, normalise and concatenate the inputs; z comes first.
        parts = []
        if self.z_dim > 0:
            _check_2d(z, "z", self.z_dim)
            parts.append(normalize_2nd_moment(z.to(torch.float32)))
        if self.c_dim > 0:
            _check_2d(c, "c", self.c_dim)
            parts.append(normalize_2nd_moment(self.embed(c.to(torch.float32))))
        x = torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]
        for idx in range(self.num_layers):
            x = getattr(self, f"fc{idx}")(x)
        if self.num_ws is None:
            return x
        x = x.unsqueeze(1).repeat(1, self.num_ws, 1)
        if truncation_psi != 1:
            if not hasattr(self, "w_avg"):
                raise ValueError("truncation needs w_avg, which this mapping network does not have")
            if truncation_cutoff is None:
                x = self.w_avg.lerp(x, truncation_psi)
            else:
                x[:, :truncation_cutoff] = self.w_avg.lerp(x[:, :truncation_cutoff], truncation_psi)
        return x


def _check_2d(t: Optional[torch.Tensor], name: str, width: int) -> None:
    if t is None or t.ndim != 2 or t.shape[1] != width:
        got = None if t is None else list(t.shape)
        raise ValueError(f"{name} must have shape [N, {width}], got {got}")


# ------------------------------------------------------------------------------------------------
# Synthesis network.


class SynthesisLayer(torch.nn.Module):
    """Modulated 3x3 conv (optionally x2 up), per-pixel noise, bias, lrelu, clamp."""

    def __init__(
        self,
        in_channels: int,  # input feature maps
        out_channels: int,  # output feature maps
        w_dim: int,  # width of the w that drives the style affine
        resolution: int,  # output resolution (also the noise_const size)
        kernel_size: int = 3,  # conv kernel width
        up: int = 1,  # 2 = upsample x2 before the conv (conv0 of every block but b4)
        use_noise: bool = True,  # False: no noise_strength / noise_const
        activation: str = "lrelu",  # activation after the bias
        resample_filter: Sequence[float] = (1, 3, 3, 1),  # FIR taps for upsampling
        conv_clamp: Optional[float] = None,  # clamp outputs to +-this, None = no clamp
        channels_last: bool = False,  # accepted for compatibility; memory format is left alone
    ):
        super().__init__()
        self.resolution, self.up, self.use_noise = resolution, up, use_noise
        self.activation, self.conv_clamp = activation, conv_clamp
        self.padding = kernel_size // 2
        self.act_gain = _ACT_GAIN[activation]
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = torch.nn.Parameter(torch.randn([out_channels, in_channels, kernel_size, kernel_size]))
        if use_noise:
            self.noise_strength = torch.nn.Parameter(torch.zeros([]))
        self.bias = torch.nn.Parameter(torch.zeros([out_channels]))
        self.register_buffer("resample_filter", setup_filter(resample_filter))
        if use_noise:
            self.register_buffer("noise_const", torch.randn([resolution, resolution]))

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise_mode: str = "random", fused_modconv: bool = True, gain: float = 1.0) -> torch.Tensor:
        styles = self.affine(w)
        noise = None
        if self.use_noise and noise_mode == "random":
            noise = torch.randn([x.shape[0], 1, self.resolution, self.resolution], device=x.device) * self.noise_strength
        elif self.use_noise and noise_mode == "const":
            noise = self.noise_const * self.noise_strength
        x = modulated_conv2d(x, self.weight, styles, noise=noise, up=self.up, padding=self.padding,
                             resample_filter=self.resample_filter, demodulate=True, fused=fused_modconv)
        x = x.add_(self.bias.to(x.dtype)[None, :, None, None])
        clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return _activation(x, self.activation, self.act_gain * gain, clamp)


class ToRGBLayer(torch.nn.Module):
    """Modulated 1x1 conv to img_channels, no demodulation, linear, clamp."""

    def __init__(
        self,
        in_channels: int,  # input feature maps
        out_channels: int,  # image channels
        w_dim: int,  # width of w
        kernel_size: int = 1,  # conv kernel width
        conv_clamp: Optional[float] = None,  # clamp outputs to +-this, None = no clamp
        channels_last: bool = False,  # accepted for compatibility
    ):
        super().__init__()
        self.conv_clamp = conv_clamp
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = torch.nn.Parameter(torch.randn([out_channels, in_channels, kernel_size, kernel_size]))
        self.bias = torch.nn.Parameter(torch.zeros([out_channels]))
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size**2)

    def forward(self, x: torch.Tensor, w: torch.Tensor, fused_modconv: bool = True) -> torch.Tensor:
        styles = self.affine(w) * self.weight_gain  # the gain scales styles, not the weight
        x = modulated_conv2d(x, self.weight, styles, demodulate=False, fused=fused_modconv)
        x = x.add_(self.bias.to(x.dtype)[None, :, None, None])
        return x.clamp_(-self.conv_clamp, self.conv_clamp) if self.conv_clamp is not None else x


class Conv2dLayer(torch.nn.Module):
    """Plain equalised-lr conv; in G only the 1x1 x2-up skip of 'resnet' blocks."""

    def __init__(
        self,
        in_channels: int,  # input feature maps
        out_channels: int,  # output feature maps
        kernel_size: int,  # conv kernel width
        bias: bool = True,  # False: no bias parameter (the resnet skip)
        activation: str = "linear",  # activation after the bias
        up: int = 1,  # 2 = upsample x2
        resample_filter: Sequence[float] = (1, 3, 3, 1),  # FIR taps for upsampling
        conv_clamp: Optional[float] = None,  # clamp outputs to +-this, None = no clamp
        channels_last: bool = False,  # accepted for compatibility
    ):
        super().__init__()
        if up not in (1, 2):
            raise ValueError(f"up must be 1 or 2, got {up}")
        self.activation, self.up, self.conv_clamp = activation, up, conv_clamp
        self.padding = kernel_size // 2
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size**2)
        self.act_gain = _ACT_GAIN[activation]
        self.register_buffer("resample_filter", setup_filter(resample_filter))
        self.weight = torch.nn.Parameter(torch.randn([out_channels, in_channels, kernel_size, kernel_size]))
        self.bias = torch.nn.Parameter(torch.zeros([out_channels])) if bias else None

    def forward(self, x: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
        w = (self.weight * self.weight_gain).to(x.dtype)
        x = _conv(x, w, self.resample_filter, self.up, self.padding, groups=1)
        if self.bias is not None:
            x = x.add_(self.bias.to(x.dtype)[None, :, None, None])
        clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return _activation(x, self.activation, self.act_gain * gain, clamp)


class SynthesisBlock(torch.nn.Module):
    """One resolution: (conv0 with x2 up,) conv1, and the RGB output of its architecture."""

    # Device types where use_fp16 blocks really run in float16. CPU half convs are slow, so
    # only CUDA by default; tests add "cpu" on an instance to check the fp16 path without a GPU.
    fp16_devices: tuple = ("cuda",)

    def __init__(
        self,
        in_channels: int,  # input feature maps, 0 = first block (starts from `const`)
        out_channels: int,  # output feature maps
        w_dim: int,  # width of w
        resolution: int,  # output resolution of this block
        img_channels: int,  # image channels
        is_last: bool,  # the highest-resolution block
        architecture: str = "skip",  # 'orig', 'skip' (RGB from every block) or 'resnet'
        resample_filter: Sequence[float] = (1, 3, 3, 1),  # FIR taps for upsampling
        conv_clamp: Optional[float] = None,  # clamp for every layer, None = no clamp
        use_fp16: bool = False,  # run in float16 on CUDA (parameters stay float32)
        fp16_channels_last: bool = False,  # accepted for compatibility
        **layer_kwargs,  # use_noise, activation, kernel_size for the SynthesisLayers
    ):
        super().__init__()
        if architecture not in ARCHITECTURES:
            raise ValueError(f"architecture must be one of {ARCHITECTURES}, got {architecture!r}")
        self.in_channels, self.resolution, self.is_last = in_channels, resolution, is_last
        self.architecture, self.use_fp16 = architecture, use_fp16
        self.register_buffer("resample_filter", setup_filter(resample_filter))
        self.num_conv = 0
        self.num_torgb = 0
        if in_channels == 0:
            self.const = torch.nn.Parameter(torch.randn([out_channels, resolution, resolution]))
        else:
            self.conv0 = SynthesisLayer(in_channels, out_channels, w_dim, resolution, up=2,
                                        resample_filter=resample_filter, conv_clamp=conv_clamp, **layer_kwargs)
            self.num_conv += 1
        self.conv1 = SynthesisLayer(out_channels, out_channels, w_dim, resolution,
                                    resample_filter=resample_filter, conv_clamp=conv_clamp, **layer_kwargs)
        self.num_conv += 1
        if is_last or architecture == "skip":
            self.torgb = ToRGBLayer(out_channels, img_channels, w_dim, conv_clamp=conv_clamp)
            self.num_torgb += 1
        if in_channels != 0 and architecture == "resnet":
            # The pickle records this layer's own conv_clamp; the loader copies it over.
            self.skip = Conv2dLayer(in_channels, out_channels, kernel_size=1, bias=False, up=2,
                                    resample_filter=resample_filter)

    def forward(self, x, img, ws, *, noise_mode="random", force_fp32=False, fused_modconv=None):
        w_iter = iter(ws.unbind(dim=1))
        fp16 = self.use_fp16 and not force_fp32 and ws.device.type in self.fp16_devices
        dtype = torch.float16 if fp16 else torch.float32
        if fused_modconv is None:
            fused_modconv = (not self.training) and (dtype == torch.float32 or ws.shape[0] == 1)

        if self.in_channels == 0:
            x = self.const.to(dtype).unsqueeze(0).repeat(ws.shape[0], 1, 1, 1)
            x = self.conv1(x, next(w_iter), noise_mode, fused_modconv)
        elif self.architecture == "resnet":
            x = x.to(dtype)
            y = self.skip(x, gain=math.sqrt(0.5))
            x = self.conv0(x, next(w_iter), noise_mode, fused_modconv)
            x = self.conv1(x, next(w_iter), noise_mode, fused_modconv, gain=math.sqrt(0.5))
            x = y.add_(x)
        else:
            x = x.to(dtype)
            x = self.conv0(x, next(w_iter), noise_mode, fused_modconv)
            x = self.conv1(x, next(w_iter), noise_mode, fused_modconv)

        # RGB: upsample the running image, add this block's contribution in float32.
        if img is not None:
            img = upsample2d(img, self.resample_filter)
        if self.num_torgb:
            y = self.torgb(x, next(w_iter), fused_modconv).to(torch.float32)
            img = img.add_(y) if img is not None else y
        return x, img


class SynthesisNetwork(torch.nn.Module):
    """ws [N, num_ws, w_dim] -> image [N, img_channels, R, R] through blocks b4 ... bR."""

    def __init__(
        self,
        w_dim: int,  # width of w
        img_resolution: int,  # output resolution R, a power of two >= 4
        img_channels: int,  # image channels
        channel_base: int = 32768,  # channels at a resolution: min(channel_base // res, channel_max)
        channel_max: int = 512,  # upper bound on channels
        num_fp16_res: int = 0,  # run the highest this-many resolutions in float16 on CUDA
        **block_kwargs,  # architecture, resample_filter, conv_clamp, use_noise, activation
    ):
        super().__init__()
        log2 = int(round(math.log2(img_resolution))) if img_resolution >= 4 else 0
        if img_resolution < 4 or 2**log2 != img_resolution:
            raise ValueError(f"img_resolution must be a power of two >= 4, got {img_resolution}")
        self.w_dim, self.img_resolution, self.img_channels = w_dim, img_resolution, img_channels
        self.img_resolution_log2 = log2
        self.block_resolutions = [2**i for i in range(2, log2 + 1)]
        channels = {res: min(channel_base // res, channel_max) for res in self.block_resolutions}
        fp16_resolution = max(2 ** (log2 + 1 - num_fp16_res), 8)

        self.num_ws = 0
        for res in self.block_resolutions:
            block = SynthesisBlock(channels[res // 2] if res > 4 else 0, channels[res], w_dim, res, img_channels,
                                   is_last=(res == img_resolution), use_fp16=(res >= fp16_resolution), **block_kwargs)
            self.num_ws += block.num_conv
            if block.is_last:
                self.num_ws += block.num_torgb
            setattr(self, f"b{res}", block)

    def forward(self, ws: torch.Tensor, noise_mode: str = "random", force_fp32: bool = False,
                fused_modconv: Optional[bool] = None) -> torch.Tensor:
        if ws.ndim != 3 or ws.shape[1:] != (self.num_ws, self.w_dim):
            raise ValueError(f"ws must be [N, {self.num_ws}, {self.w_dim}], got {list(ws.shape)}")
        if noise_mode not in NOISE_MODES:
            raise ValueError(f"noise_mode must be one of {NOISE_MODES}, got {noise_mode!r}")
        ws = ws.to(torch.float32)
        # A block's torgb shares its w with the next block's conv0.
        x = img = None
        w_idx = 0
        for res in self.block_resolutions:
            block = getattr(self, f"b{res}")
            block_ws = ws.narrow(1, w_idx, block.num_conv + block.num_torgb)
            x, img = block(x, img, block_ws, noise_mode=noise_mode, force_fp32=force_fp32, fused_modconv=fused_modconv)
            w_idx += block.num_conv
        return img


# ------------------------------------------------------------------------------------------------
# Generator.


class Generator(torch.nn.Module):
    """z, c -> image. `synthesis` is registered before `mapping`, as in the official pickles."""

    def __init__(
        self,
        z_dim: int,  # latent width
        c_dim: int,  # class-label width, 0 = unconditional
        w_dim: int,  # intermediate latent width
        img_resolution: int,  # output resolution
        img_channels: int,  # output channels
        mapping_kwargs: Optional[dict] = None,  # MappingNetwork options, None = defaults
        synthesis_kwargs: Optional[dict] = None,  # SynthesisNetwork/Block/Layer options, None = defaults
    ):
        super().__init__()
        mapping_kwargs = dict(mapping_kwargs or {})
        synthesis_kwargs = dict(synthesis_kwargs or {})
        self.z_dim, self.c_dim, self.w_dim = z_dim, c_dim, w_dim
        self.img_resolution, self.img_channels = img_resolution, img_channels
        self.synthesis = SynthesisNetwork(w_dim, img_resolution, img_channels, **synthesis_kwargs)
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(z_dim, c_dim, w_dim, self.num_ws, **mapping_kwargs)
        self.config = {
            "z_dim": z_dim, "c_dim": c_dim, "w_dim": w_dim, "img_resolution": img_resolution,
            "img_channels": img_channels, "mapping_kwargs": mapping_kwargs, "synthesis_kwargs": synthesis_kwargs,
        }

    def forward(self, z, c, truncation_psi=1.0, truncation_cutoff=None, noise_mode="random",
                force_fp32=False, fused_modconv=None):
        ws = self.mapping(z, c, truncation_psi, truncation_cutoff)
        return self.synthesis(ws, noise_mode=noise_mode, force_fp32=force_fp32, fused_modconv=fused_modconv)
