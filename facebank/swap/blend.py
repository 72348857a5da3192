"""Putting a warped face into a photo: colour match, Poisson blending, feathered paste-back.

Every function works on a region of interest cut from the photo with a reflected border, so a
face at the photo's edge or a mask touching it still has a frame of known pixels around it for
the Poisson solve, and pixels outside the mask come back exactly as they were.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

__all__ = ["Roi", "colour_match", "feather_paste", "paste_back", "poisson_paste", "roi_around"]

MIN_CLONE_PIXELS = 64  # below this a Poisson solve has too little inside to be worth it: alpha blend


@dataclass(frozen=True)
class Roi:
    """A window of the photo, padded: `canvas[pad:pad+h', ...]` is `photo[y0:y1, x0:x1]`."""

    x0: int
    y0: int
    x1: int
    y1: int
    left: int  # how far the window reaches past the photo's left edge (filled by reflection)
    top: int

    def cut(self, image: np.ndarray) -> np.ndarray:
        """The window of `image`, reflected where it reaches past the photo."""
        h, w = image.shape[:2]
        inner = image[max(self.y0, 0):min(self.y1, h), max(self.x0, 0):min(self.x1, w)]
        return cv2.copyMakeBorder(inner, self.top, max(self.y1 - h, 0), self.left, max(self.x1 - w, 0),
                                  cv2.BORDER_REFLECT_101 if min(inner.shape[:2]) > 1 else cv2.BORDER_REPLICATE)

    def put(self, image: np.ndarray, canvas: np.ndarray) -> None:
        """Write the part of `canvas` that lies inside the photo back into `image` (in place)."""
        h, w = image.shape[:2]
        ys, xs = max(self.y0, 0), max(self.x0, 0)
        image[ys:min(self.y1, h), xs:min(self.x1, w)] = canvas[ys - self.y0:min(self.y1, h) - self.y0,
                                                               xs - self.x0:min(self.x1, w) - self.x0]

    def shift(self, points: np.ndarray) -> np.ndarray:
        """Photo coordinates -> window coordinates."""
        return np.asarray(points, dtype=np.float64) - np.array([self.x0, self.y0], dtype=np.float64)


def roi_around(points: np.ndarray, image_shape: tuple[int, ...], margin: float = 0.3) -> Roi:
    """A window around `points` grown by `margin` of their extent (and at least 8 px) on every side."""
    pts = np.asarray(points, dtype=np.float64)
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    grow = max(float((hi - lo).max()) * margin, 8.0)
    x0, y0 = (np.floor(lo - grow)).astype(int)
    x1, y1 = (np.ceil(hi + grow)).astype(int) + 1
    h, w = image_shape[:2]
    # The window keeps at least one photo pixel, or reflection has nothing to reflect.
    x0, y0 = min(x0, w - 1), min(y0, h - 1)
    x1, y1 = max(x1, 1), max(y1, 1)
    return Roi(int(x0), int(y0), int(x1), int(y1), max(-int(x0), 0), max(-int(y0), 0))


def colour_match(src: np.ndarray, dst: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """`src` with its Lab mean and spread inside `mask` moved to those of `dst` (Reinhard transfer)."""
    sel = mask > 0
    if sel.sum() < 16:
        return src
    s = cv2.cvtColor(src, cv2.COLOR_RGB2LAB).astype(np.float32)
    d = cv2.cvtColor(dst, cv2.COLOR_RGB2LAB).astype(np.float32)
    s_mean, s_std = s[sel].mean(axis=0), s[sel].std(axis=0)
    d_mean, d_std = d[sel].mean(axis=0), d[sel].std(axis=0)
    gain = np.clip(d_std / np.maximum(s_std, 1e-3), 0.5, 2.0)  # a flat patch must not blow up
    out = (s - s_mean) * gain + d_mean
    return cv2.cvtColor(np.clip(out, 0, 255).astype(np.uint8), cv2.COLOR_LAB2RGB)


def feather_paste(dst: np.ndarray, src: np.ndarray, mask: np.ndarray, feather: float) -> np.ndarray:
    """`src` over `dst` through `mask` blurred by `feather` px (alpha blend)."""
    alpha = mask.astype(np.float32) / 255.0
    if feather > 0:
        k = int(2 * round(feather) + 1)
        alpha = cv2.GaussianBlur(alpha, (k, k), 0)
    alpha = alpha[..., None]
    out = src.astype(np.float32) * alpha + dst.astype(np.float32) * (1.0 - alpha)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _poisson_solve(dst: np.ndarray, guide_x: np.ndarray, guide_y: np.ndarray) -> np.ndarray:
    """The float image equal to `dst` on its 1 px frame whose gradients best follow the guide (least squares).

    Solves the 5-point Poisson equation lap(f) = div(guide) inside the frame exactly with a
    type-I discrete sine transform (one FFT-sized pass per channel, deterministic).
    """
    from scipy.fft import dstn, idstn

    div = np.zeros_like(guide_x)
    div[:, 1:] += guide_x[:, 1:] - guide_x[:, :-1]
    div[1:, :] += guide_y[1:, :] - guide_y[:-1, :]
    bound = dst.astype(np.float64).copy()
    bound[1:-1, 1:-1] = 0.0
    lap_b = np.zeros_like(bound)  # lap of the frame values, seen from the interior
    lap_b[1:-1, 1:-1] = bound[2:, 1:-1] + bound[:-2, 1:-1] + bound[1:-1, 2:] + bound[1:-1, :-2]
    rhs = (div - lap_b)[1:-1, 1:-1]
    h, w = rhs.shape[:2]
    eig = (2 * np.cos(np.pi * np.arange(1, h + 1) / (h + 1)) - 2)[:, None] + \
          (2 * np.cos(np.pi * np.arange(1, w + 1) / (w + 1)) - 2)[None, :]
    out = bound
    for c in range(rhs.shape[2]):
        out[1:-1, 1:-1, c] = idstn(dstn(rhs[..., c], type=1) / eig, type=1)
    return out


def poisson_paste(dst: np.ndarray, src: np.ndarray, mask: np.ndarray, feather: float) -> np.ndarray:
    """`src` cloned into `dst` inside `mask` (Poisson image editing, gradients of `src` inside);
    pixels outside the mask kept exactly.

    The three arrays are one window of the same size. Not `cv2.seamlessClone`: OpenCV 5.0.0's
    gives a different result from call to call on the same arrays (measured: mean change inside
    the mask 2.6, 16.7 or 27.1 grey levels), and the swap must be deterministic. Too small a mask
    falls back to a feathered alpha blend.
    """
    m = (mask > 0).astype(np.uint8)
    m[:2], m[-2:], m[:, :2], m[:, -2:] = 0, 0, 0, 0  # the solve's fixed frame lies outside the mask
    if int(m.sum()) < MIN_CLONE_PIXELS:
        return feather_paste(dst, src, m * 255, feather)
    ys, xs = np.nonzero(m)
    y0, y1, x0, x1 = int(ys.min()) - 2, int(ys.max()) + 3, int(xs.min()) - 2, int(xs.max()) + 3
    d = dst[y0:y1, x0:x1].astype(np.float64)
    s = src[y0:y1, x0:x1].astype(np.float64)
    inside = m[y0:y1, x0:x1].astype(bool)
    # A difference takes the source's gradient when either of its two pixels is inside the mask.
    in_x = (inside[:, 1:] | inside[:, :-1])[..., None]
    in_y = (inside[1:, :] | inside[:-1, :])[..., None]
    gx = np.zeros_like(d)
    gy = np.zeros_like(d)
    gx[:, :-1] = np.where(in_x, s[:, 1:] - s[:, :-1], d[:, 1:] - d[:, :-1])
    gy[:-1, :] = np.where(in_y, s[1:, :] - s[:-1, :], d[1:, :] - d[:-1, :])
    solved = _poisson_solve(d, gx, gy)
    out = dst.copy()
    window = out[y0:y1, x0:x1]
    window[inside] = np.clip(np.rint(solved[inside]), 0, 255).astype(np.uint8)
    return out


def paste_back(image: np.ndarray, crop: np.ndarray, matrix: np.ndarray, border: float = 0.1) -> np.ndarray:
    """A copy of `image` with `crop` (taken from it by the (2, 3) `matrix`) warped back in place.

    The crop is blended through a mask that is 1 inside, 0 on a frame of `border` x its side and
    smooth between, so the crop's square edge never shows. Only pixels under the crop change.
    """
    size = crop.shape[0]
    inv = cv2.invertAffineTransform(np.asarray(matrix, np.float64))
    corners = np.array([[0, 0], [size, 0], [0, size], [size, size]], np.float64) @ inv[:, :2].T + inv[:, 2]
    h, w = image.shape[:2]
    x0, y0 = np.floor(corners.min(axis=0)).astype(int)
    x1, y1 = np.ceil(corners.max(axis=0)).astype(int) + 1
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    out = image.copy()
    if x1 <= x0 or y1 <= y0:
        return out
    pad = max(int(round(border * size)), 1)
    mask = np.zeros((size, size), np.float32)
    mask[pad:-pad, pad:-pad] = 1.0
    k = 2 * pad + 1
    mask = cv2.GaussianBlur(mask, (k, k), 0)
    shifted = inv.copy()
    shifted[:, 2] -= (x0, y0)
    back = cv2.warpAffine(crop, shifted, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    alpha = cv2.warpAffine(mask, shifted, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    region = out[y0:y1, x0:x1].astype(np.float32)
    blended = back.astype(np.float32) * alpha[..., None] + region * (1.0 - alpha[..., None])
    out[y0:y1, x0:x1] = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
    return out
