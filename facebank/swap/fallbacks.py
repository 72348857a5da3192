"""The fallbacks when no swap passes the result check: blur or pixelate the face, no target needed.

Both cover the face's box grown by `margin` on every side (hair line, chin and ears carry
identity too) under an elliptical mask feathered at its edge, so the change does not end in a
hard rectangle. Both ignore `target` (it may be None).
"""

from __future__ import annotations

import cv2
import numpy as np

from facebank.errors import InputError

__all__ = ["BlurSwapper", "PixelateSwapper", "face_region"]


def face_region(shape: tuple[int, ...], box, margin: float) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1): the box grown by `margin` of its size on each side, clipped to the image."""
    h, w = shape[:2]
    x0, y0, x1, y1 = (float(v) for v in box)
    mx, my = (x1 - x0) * margin, (y1 - y0) * margin
    return (max(0, int(x0 - mx)), max(0, int(y0 - my)), min(w, int(np.ceil(x1 + mx))), min(h, int(np.ceil(y1 + my))))


def _check(image: np.ndarray) -> None:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise InputError(f"image must be RGB uint8 (H, W, 3), got {getattr(image, 'shape', type(image))}")


def _blend(image: np.ndarray, region: tuple[int, int, int, int], patch: np.ndarray) -> np.ndarray:
    """`patch` (the region's new pixels) over `image` through a feathered ellipse; a new array."""
    x0, y0, x1, y1 = region
    h, w = y1 - y0, x1 - x0
    # The mask is drawn and feathered (an eighth of the region) at 64 px, then scaled up: smooth anyway.
    f = min(1.0, 64.0 / max(h, w))
    mh, mw = max(2, round(h * f)), max(2, round(w * f))
    mask = np.zeros((mh, mw), np.float32)
    cv2.ellipse(mask, (mw // 2, mh // 2), (max(1, mw // 2), max(1, mh // 2)), 0, 0, 360, 1.0, -1)
    k = max(3, (min(mh, mw) // 8) | 1)
    mask = cv2.resize(cv2.GaussianBlur(mask, (k, k), 0), (w, h), interpolation=cv2.INTER_LINEAR)
    # Full strength inside the face: the feather only softens the outer rim of the ellipse.
    mask = np.clip(mask * 2.0, 0.0, 1.0)[:, :, None]
    out = image.copy()
    old = out[y0:y1, x0:x1].astype(np.float32)
    out[y0:y1, x0:x1] = np.clip(old * (1 - mask) + patch.astype(np.float32) * mask + 0.5, 0, 255).astype(np.uint8)
    return out


class _RegionFallback:
    """What both fallbacks share: the checked margin, the region around the face and the blend;
    a subclass gives `_patch(image, region)`, the region's new pixels."""

    name = ""

    def __init__(self, margin: float):
        if not 0.0 <= float(margin) <= 1.0:
            raise InputError(f"{self.name} margin must be in [0, 1], got {margin}")
        self.margin = float(margin)

    def swap(self, image: np.ndarray, face, target=None) -> np.ndarray:
        _check(image)
        region = face_region(image.shape, face.box, self.margin)
        x0, y0, x1, y1 = region
        if x1 - x0 < 2 or y1 - y0 < 2:
            return image.copy()
        return _blend(image, region, self._patch(image, region))

    def _patch(self, image: np.ndarray, region: tuple[int, int, int, int]) -> np.ndarray:
        raise NotImplementedError


class BlurSwapper(_RegionFallback):
    """A Gaussian blur of the face whose kernel is `strength` of the face's size (0.5: features gone)."""

    name = "blur"

    def __init__(self, strength: float = 0.5, margin: float = 0.25):
        if not 0.05 <= float(strength) <= 2.0:
            raise InputError(f"blur strength must be in [0.05, 2], got {strength}")
        super().__init__(margin)
        self.strength = float(strength)

    def _patch(self, image: np.ndarray, region: tuple[int, int, int, int]) -> np.ndarray:
        x0, y0, x1, y1 = region
        # A kernel of half a face is hundreds of pixels wide: blur at a scale where it is 9 px (the
        # same low-pass, ~1000x less work), then scale back up.
        k = max(x1 - x0, y1 - y0) * self.strength
        f = min(1.0, 9.0 / k)
        pad = int(k / 2)  # blur a frame around the region too, so its edge sees real pixels
        fx0, fy0 = max(0, x0 - pad), max(0, y0 - pad)
        fx1, fy1 = min(image.shape[1], x1 + pad), min(image.shape[0], y1 + pad)
        frame = image[fy0:fy1, fx0:fx1]
        small = cv2.resize(frame, (max(2, round((fx1 - fx0) * f)), max(2, round((fy1 - fy0) * f))),
                           interpolation=cv2.INTER_AREA)
        small = cv2.GaussianBlur(small, (9, 9), 0, borderType=cv2.BORDER_REPLICATE)
        blurred = cv2.resize(small, (fx1 - fx0, fy1 - fy0), interpolation=cv2.INTER_LINEAR)
        return blurred[y0 - fy0:y1 - fy0, x0 - fx0:x1 - fx0]


class PixelateSwapper(_RegionFallback):
    """The face as `blocks` x `blocks` flat squares (8: about the pixels of a 8 px face)."""

    name = "pixelate"

    def __init__(self, blocks: int = 8, margin: float = 0.25):
        if not 2 <= int(blocks) <= 64:
            raise InputError(f"pixelate blocks must be in 2..64, got {blocks}")
        super().__init__(margin)
        self.blocks = int(blocks)

    def _patch(self, image: np.ndarray, region: tuple[int, int, int, int]) -> np.ndarray:
        x0, y0, x1, y1 = region
        small = cv2.resize(image[y0:y1, x0:x1], (self.blocks, self.blocks), interpolation=cv2.INTER_AREA)
        return cv2.resize(small, (x1 - x0, y1 - y0), interpolation=cv2.INTER_NEAREST)
