"""How generated pixels become the bytes a bank stores: the image format, chosen once and recorded.

The default is lossless PNG at zlib level 1 through OpenCV: at 1024 px it is about 4x faster than
level 6 (the old default) for about 10% more bytes, and a regenerated seed still matches its stored
image pixel for pixel. WebP lossless is about a third smaller and slower; JPEG q95 is 5x smaller
and 20x faster but lossy. The figures, measured by `tools/bench_build.py`, are in
facebank/bank/SCHEMA.md.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from facebank.errors import InputError

__all__ = ["DEFAULT_IMAGE_FORMAT", "ImageFormat", "encode_image", "parse_image_format"]

_KINDS = {  # kind -> (default setting, valid range, what the setting is)
    "png": (1, (0, 9), "zlib level"),
    "webp": (101, (101, 101), "quality (101 = lossless)"),
    "jpeg": (95, (1, 100), "quality"),
}


@dataclass(frozen=True)
class ImageFormat:
    """One stored image format: `png:1` (default), `png:6`, `webp` (lossless), `jpeg:95`."""

    kind: str = "png"  # png | webp | jpeg: the bank's image_format column
    setting: int = 1  # png: zlib level 0-9; jpeg: quality 1-100; webp: 101 (lossless only)

    @property
    def lossless(self) -> bool:
        return self.kind != "jpeg"

    @property
    def spec(self) -> str:
        """The text form, as `--image-format` takes it and as provenance records it."""
        return "webp" if self.kind == "webp" else f"{self.kind}:{self.setting}"

    def __str__(self) -> str:
        return self.spec


DEFAULT_IMAGE_FORMAT = ImageFormat()


def parse_image_format(text: str | ImageFormat) -> ImageFormat:
    """'png' | 'png:LEVEL' | 'webp' | 'jpeg' | 'jpeg:QUALITY' -> ImageFormat (InputError otherwise)."""
    if isinstance(text, ImageFormat):
        return text
    kind, _, setting = str(text).strip().lower().partition(":")
    kind = {"jpg": "jpeg"}.get(kind, kind)
    if kind not in _KINDS:
        raise InputError(f"image format {text!r}: use one of png[:LEVEL], webp, jpeg[:QUALITY]")
    default, (low, high), what = _KINDS[kind]
    if not setting:
        return ImageFormat(kind, default)
    try:
        value = int(setting)
    except ValueError:
        raise InputError(f"image format {text!r}: {what} must be an integer") from None
    if not low <= value <= high:
        raise InputError(f"image format {text!r}: {kind} {what} must be in {low}..{high}")
    return ImageFormat(kind, value)


def encode_image(pixels: np.ndarray, fmt: ImageFormat = DEFAULT_IMAGE_FORMAT) -> bytes:
    """Encoded bytes of an RGB uint8 (H, W, 3) array; deterministic (no timestamps or metadata)."""
    import cv2  # imported here: worker processes that only encode need nothing else

    if not isinstance(pixels, np.ndarray) or pixels.dtype != np.uint8:
        raise InputError(f"image must be a uint8 numpy array, got {getattr(pixels, 'dtype', type(pixels))}")
    if pixels.ndim != 3 or pixels.shape[2] != 3 or pixels.shape[0] == 0 or pixels.shape[1] == 0:
        raise InputError(f"image must have shape (H, W, 3), got {pixels.shape}")
    params = {
        "png": [cv2.IMWRITE_PNG_COMPRESSION, fmt.setting],
        "webp": [cv2.IMWRITE_WEBP_QUALITY, 101],
        "jpeg": [cv2.IMWRITE_JPEG_QUALITY, fmt.setting, cv2.IMWRITE_JPEG_OPTIMIZE, 0],
    }[fmt.kind]
    ok, buffer = cv2.imencode(f".{fmt.kind}", np.ascontiguousarray(pixels[:, :, ::-1]), params)  # OpenCV is BGR
    if not ok:
        raise InputError(f"could not encode a {pixels.shape} image as {fmt.spec}")
    return buffer.tobytes()
