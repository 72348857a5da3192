"""Pixel-space similarity of aligned crops (SSIM, RMSE, PSNR), as in the paper's supplement.

Crops are RGB uint8 arrays (H, W, 3), e.g. the bank's 112x112 aligned crops; pixel values are on
a 0..255 scale (data_range 255). Direction per metric:

    ssim  in [-1, 1], 1 = identical         higher = more similar
    psnr  in dB, +inf = identical           higher = more similar
    rmse  in 0..255, 0 = identical          higher = more DISSIMILAR

A pick threshold therefore means "ssim <= t", "psnr <= t" or "rmse >= t" for a target to be
dissimilar enough.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.ndimage import uniform_filter
from skimage.metrics import mean_squared_error, peak_signal_noise_ratio, structural_similarity

from facebank.errors import InputError, NoEligibleTarget

__all__ = [
    "HIGHER_IS_SIMILAR",
    "METRICS",
    "PixelPick",
    "pick_by_pixel_metric",
    "pixel_similarity_matrix",
    "psnr",
    "rmse",
    "ssim",
]

DATA_RANGE = 255.0
METRICS = ("ssim", "rmse", "psnr")
HIGHER_IS_SIMILAR = {"ssim": True, "rmse": False, "psnr": True}
# skimage's SSIM defaults that the batched version below reproduces.
_WIN = 7
_K1, _K2 = 0.01, 0.03
_SSIM_CHUNK = 128  # targets per batched SSIM step


def _crops(x: Any, name: str, *, batch: bool) -> np.ndarray:
    x = np.asarray(x)
    want = 4 if batch else 3
    if x.dtype != np.uint8:
        raise InputError(f"{name} must be uint8, got {x.dtype}")
    if x.ndim != want or x.shape[-1] != 3:
        shape = "(n, H, W, 3)" if batch else "(H, W, 3)"
        raise InputError(f"{name} must have shape {shape}, got {x.shape}")
    if x.shape[-3] < _WIN or x.shape[-2] < _WIN:
        raise InputError(f"{name}: crops must be at least {_WIN}x{_WIN} for SSIM, got {x.shape[-3:-1]}")
    return x


def _same_shape(a: np.ndarray, b: np.ndarray) -> None:
    if a.shape[-3:] != b.shape[-3:]:
        raise InputError(f"crops differ in shape: {a.shape[-3:]} vs {b.shape[-3:]}")


def _metric(metric: str) -> str:
    if metric not in METRICS:
        raise InputError(f"metric must be one of {METRICS}, got {metric!r}")
    return metric


def ssim(a: Any, b: Any) -> float:
    """SSIM of two (H, W, 3) uint8 crops (skimage, channel_axis=-1, data_range=255)."""
    a, b = _crops(a, "a", batch=False), _crops(b, "b", batch=False)
    _same_shape(a, b)
    return float(structural_similarity(a, b, channel_axis=-1, data_range=DATA_RANGE))


def rmse(a: Any, b: Any) -> float:
    """Root mean squared error of two (H, W, 3) uint8 crops, on the 0..255 scale."""
    a, b = _crops(a, "a", batch=False), _crops(b, "b", batch=False)
    _same_shape(a, b)
    return float(np.sqrt(mean_squared_error(a, b)))


def psnr(a: Any, b: Any) -> float:
    """PSNR in dB of two (H, W, 3) uint8 crops, 10 log10(255^2 / MSE); +inf when identical."""
    a, b = _crops(a, "a", batch=False), _crops(b, "b", batch=False)
    _same_shape(a, b)
    if np.array_equal(a, b):
        return float("inf")  # skimage would divide by zero (and warn)
    return float(peak_signal_noise_ratio(a, b, data_range=DATA_RANGE))


def _mse_matrix(q: np.ndarray, t: np.ndarray) -> np.ndarray:
    # ||a-b||^2 = ||a||^2 + ||b||^2 - 2 a.b on float64 integers: every partial sum is an integer
    # below 2**53 (112*112*3 * 255**2 ~ 2.4e9), so this is exact, not an approximation.
    qf = q.reshape(q.shape[0], -1).astype(np.float64)
    tf = t.reshape(t.shape[0], -1).astype(np.float64)
    sq = (qf * qf).sum(1)[:, None] + (tf * tf).sum(1)[None, :] - 2.0 * (qf @ tf.T)
    return np.maximum(sq, 0.0) / qf.shape[1]


def _ssim_matrix(q: np.ndarray, t: np.ndarray) -> np.ndarray:
    """skimage's SSIM (uniform 7x7 window, sample covariance, reflect padding, border cropped,
    mean over channels) for every (query, target) pair, batched over targets."""
    size = (1, _WIN, _WIN, 1)  # filter spatially only, never across crops or channels

    def filt(x: np.ndarray) -> np.ndarray:
        return uniform_filter(x, size=size)

    cov_norm = _WIN * _WIN / (_WIN * _WIN - 1)
    c1, c2 = (_K1 * DATA_RANGE) ** 2, (_K2 * DATA_RANGE) ** 2
    pad = (_WIN - 1) // 2
    tf = t.astype(np.float64)
    uy, uyy = filt(tf), filt(tf * tf)
    vy = cov_norm * (uyy - uy * uy)
    out = np.empty((q.shape[0], t.shape[0]), dtype=np.float64)
    for k in range(q.shape[0]):
        xf = q[k : k + 1].astype(np.float64)
        ux, uxx = filt(xf), filt(xf * xf)
        vx = cov_norm * (uxx - ux * ux)
        vxy = cov_norm * (filt(xf * tf) - ux * uy)
        s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
        out[k] = s[:, pad:-pad, pad:-pad, :].mean(axis=(1, 2, 3))
    return out


def pixel_similarity_matrix(query_crops: Any, target_crops: Any, metric: str = "ssim") -> np.ndarray:
    """Metric of every (query, target) pair.

    Args:
        query_crops: (q, H, W, 3) uint8.
        target_crops: (t, H, W, 3) uint8, same H, W.
        metric: "ssim", "rmse" or "psnr" (directions in the module docstring).
    Returns:
        float64 (q, t). Equals the single-pair functions (ssim within 1e-12; rmse, psnr exact).
    """
    metric = _metric(metric)
    q = _crops(query_crops, "query_crops", batch=True)
    t = _crops(target_crops, "target_crops", batch=True)
    _same_shape(q, t)
    if metric == "ssim":
        # Chunks of targets bound memory: ~8 float64 copies of each chunk are alive at once.
        step = _SSIM_CHUNK
        parts = [_ssim_matrix(q, t[s : s + step]) for s in range(0, t.shape[0], step)]
        return np.concatenate(parts, axis=1) if parts else np.empty((q.shape[0], 0))
    mse = _mse_matrix(q, t)
    if metric == "rmse":
        return np.sqrt(mse)
    with np.errstate(divide="ignore"):
        return 10.0 * np.log10(DATA_RANGE**2 / mse)  # mse 0 -> +inf, as psnr()


@dataclass(frozen=True)
class PixelPick:
    """A target picked by a pixel metric."""

    index: int  # row of candidate_crops
    value: float  # the metric between query and the picked candidate
    metric: str
    n_eligible: int  # candidates beyond the threshold


def pick_by_pixel_metric(
    query_crop: Any,
    candidate_crops: Any,
    *,
    metric: str = "ssim",
    mode: str = "random",
    threshold: float | None = None,
    rng: np.random.Generator | int | None = None,
) -> PixelPick:
    """Pick a candidate that is dissimilar to the query in pixel space.

    Args:
        query_crop: (H, W, 3) uint8.
        candidate_crops: (n, H, W, 3) uint8.
        metric: "ssim" | "rmse" | "psnr".
        mode: "random" (uniform among eligible) or "furthest" (the most dissimilar: lowest
            ssim/psnr, highest rmse; lowest index on a tie).
        threshold: eligible when ssim <= t, psnr <= t, or rmse >= t; None = all eligible.
        rng: Generator or seed for mode "random".
    Raises:
        NoEligibleTarget: no candidate is beyond the threshold.
    """
    metric = _metric(metric)
    if mode not in ("random", "furthest"):
        raise InputError(f"mode must be 'random' or 'furthest', got {mode!r}")
    q = _crops(query_crop, "query_crop", batch=False)
    values = pixel_similarity_matrix(q[None], candidate_crops, metric)[0]
    if values.size == 0:
        raise NoEligibleTarget("no candidates given", group_size=0, too_similar=0)
    # Dissimilarity where larger = further, so both modes read the same for every metric.
    dis = -values if HIGHER_IS_SIMILAR[metric] else values
    if threshold is None:
        eligible = np.ones(values.size, dtype=bool)
    else:
        t = -float(threshold) if HIGHER_IS_SIMILAR[metric] else float(threshold)
        eligible = dis >= t
    idx = np.flatnonzero(eligible)
    if idx.size == 0:
        op = ">=" if not HIGHER_IS_SIMILAR[metric] else "<="
        raise NoEligibleTarget(
            f"no candidate has {metric} {op} {threshold} (all {values.size} too similar)",
            group_size=int(values.size), too_similar=int(values.size),
        )
    if mode == "furthest":
        k = int(idx[np.argmax(dis[idx])])
    else:
        k = int(np.random.default_rng(rng).choice(idx))
    return PixelPick(index=k, value=float(values[k]), metric=metric, n_eligible=int(idx.size))
