"""The StyleGAN2-ADA network's functional pieces: activations, FIR filters, resampling and the
modulated convolution (facebank.sources.stylegan.network builds its layers from them)."""

from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
import torch.nn.functional as F

_ACT_GAIN = {"linear": 1.0, "lrelu": math.sqrt(2)}  # default gain of each activation
_LRELU_SLOPE = 0.2


# ------------------------------------------------------------------------------------------------
# Elementwise helpers and resampling.


def normalize_2nd_moment(x: torch.Tensor, dim: int = 1, eps: float = 1e-8) -> torch.Tensor:
    """x / sqrt(mean(x^2) + eps) along `dim` (eps inside the root)."""
    return x * (x.square().mean(dim=dim, keepdim=True) + eps).rsqrt()


def _activation(x: torch.Tensor, activation: str, gain: float, clamp: Optional[float]) -> torch.Tensor:
    """activation, then x gain, then clamp to +-clamp; in place on x (callers pass fresh tensors)."""
    if activation == "lrelu":
        x = F.leaky_relu(x, _LRELU_SLOPE, inplace=True)
    elif activation != "linear":
        raise ValueError(f"unsupported activation {activation!r}")
    if gain != 1:
        x = x.mul_(gain)
    if clamp is not None:
        x = x.clamp_(-clamp, clamp)
    return x


def setup_filter(taps: Sequence[float]) -> torch.Tensor:
    """1-D taps -> normalised [k, k] float32 filter (outer product, sums to 1)."""
    f = torch.as_tensor(taps, dtype=torch.float32)
    if f.ndim == 1:
        f = torch.outer(f, f)
    if f.ndim != 2 or f.shape[0] != f.shape[1]:
        raise ValueError(f"resample filter must be 1-D or square 2-D, got shape {tuple(f.shape)}")
    return f / f.sum()


def _depthwise_fir(x: torch.Tensor, f: torch.Tensor, gain: float, pad: int) -> torch.Tensor:
    """True convolution of every channel with f x gain after zero padding `pad` on each side."""
    channels = x.shape[1]
    kernel = (f.flip([0, 1]) * gain).to(x.dtype)[None, None].expand(channels, 1, *f.shape)
    return F.conv2d(x, kernel, padding=pad, groups=channels)


def upsample2d(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """x2 upsampling: zero-insert, pad (2 before, 1 after), FIR x 4. [N, C, H, W] -> [N, C, 2H, 2W].

    One grouped transposed convolution does all three: its full output is the zero-inserted
    signal convolved with f, and padding=1 crops it to the (2, 1)-padded window. Only the
    4-tap filter of every official model is supported; tests check it against the literal
    zero-insert + conv2d recipe.
    """
    if f.shape != (4, 4):
        raise ValueError(f"upsample2d expects a 4x4 filter, got {tuple(f.shape)}")
    channels = x.shape[1]
    kernel = (f * 4).to(x.dtype)[None, None].expand(channels, 1, 4, 4)
    return F.conv_transpose2d(x, kernel, stride=2, padding=1, groups=channels)


def _conv(x: torch.Tensor, w: torch.Tensor, f: torch.Tensor, up: int, padding: int, groups: int) -> torch.Tensor:
    """Convolution, with x2 upsampling when up == 2. w is [O, I/groups, k, k].

    up == 1: plain cross-correlation (F.conv2d). up == 2: transposed convolution (stride 2,
    padding 0, weight as stored, i.e. a true convolution) then FIR x 4 with padding 1.
    """
    if up == 1:
        return F.conv2d(x, w, padding=padding, groups=groups)
    out_ch, in_per_group, kh, kw = w.shape
    if kh == 1 and kw == 1:  # 1x1: conv first, then the cheap resampling on the output
        return upsample2d(F.conv2d(x, w, groups=groups), f)
    wt = w.reshape(groups, out_ch // groups, in_per_group, kh, kw).transpose(1, 2)
    wt = wt.reshape(groups * in_per_group, out_ch // groups, kh, kw)
    x = F.conv_transpose2d(x, wt, stride=2, groups=groups)
    return _depthwise_fir(x, f, gain=4.0, pad=1)


def modulated_conv2d(
    x: torch.Tensor,  # input [N, I, H, W]
    weight: torch.Tensor,  # shared weight [O, I, k, k]
    styles: torch.Tensor,  # per-sample scales of the input channels [N, I]
    noise: Optional[torch.Tensor] = None,  # added after demodulation, broadcastable to the output
    up: int = 1,  # 1, or 2 for x2 upsampling
    padding: int = 0,  # zero padding for the up == 1 case
    resample_filter: Optional[torch.Tensor] = None,  # [4, 4] filter, needed when up == 2
    demodulate: bool = True,  # normalise each output channel of the modulated weight
    fused: bool = True,  # one grouped conv with per-sample weights, or scale x / shared conv
) -> torch.Tensor:
    """Style-modulated convolution; both `fused` settings compute the same thing."""
    batch = x.shape[0]
    out_ch, in_ch, kh, kw = weight.shape
    if styles.shape != (batch, in_ch):
        raise ValueError(f"styles must be [{batch}, {in_ch}], got {list(styles.shape)}")
    if x.dtype == torch.float16 and demodulate:
        # Scale before modulating so fp16 cannot overflow; demodulation cancels it.
        weight = weight * (1 / math.sqrt(in_ch * kh * kw) / weight.norm(float("inf"), dim=[1, 2, 3], keepdim=True))
        styles = styles / styles.norm(float("inf"), dim=1, keepdim=True)

    w = weight[None] * styles[:, None, :, None, None]  # [N, O, I, k, k]
    dcoefs = None
    if demodulate:
        dcoefs = (w.float().square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt()  # [N, O], fp32 for range

    if not fused:
        x = x * styles.to(x.dtype)[:, :, None, None]
        x = _conv(x, weight.to(x.dtype), resample_filter, up, padding, groups=1)
        if dcoefs is not None:
            x = x * dcoefs.to(x.dtype)[:, :, None, None]
        if noise is not None:
            x = x.add_(noise.to(x.dtype))
        return x

    if dcoefs is not None:
        w = w * dcoefs[:, :, None, None, None].to(w.dtype)
    x = x.reshape(1, batch * in_ch, *x.shape[2:])
    w = w.reshape(batch * out_ch, in_ch, kh, kw).to(x.dtype)
    x = _conv(x, w, resample_filter, up, padding, groups=batch)
    x = x.reshape(batch, out_ch, *x.shape[2:])
    if noise is not None:
        x = x.add_(noise.to(x.dtype))
    return x
