"""How generated pixels become the bytes a bank stores: the image format, chosen once and recorded.

The default, `png`, is lossless PNG through OpenCV with PNG's row filters and zlib's
Huffman-only coding (no LZ77 search): on 1024-px StyleGAN faces it is about 4-5x faster than PIL
at level 6 (the old default) and within a few percent of its size, because photographic pixels
give LZ77 little to find; a regenerated seed still matches its stored image pixel for pixel.
`png:N` is zlib level N with the usual strategy; WebP lossless is about a third smaller and
slower; JPEG q95 is 5x smaller and much faster but lossy. The figures, measured by
`tools/bench_build.py`, are in facebank/bank/SCHEMA.md.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from facebank.errors import InputError

__all__ = ["DEFAULT_IMAGE_FORMAT", "ImageFormat", "encode_image", "parse_image_format"]

HUFFMAN = -1  # the png setting for zlib's Huffman-only strategy (spec "png" or "png:huffman")
_KINDS = {  # kind -> (default setting, valid range, what the setting is)
    "png": (HUFFMAN, (0, 9), "zlib level"),
    "webp": (101, (101, 101), "quality (101 = lossless)"),
    "jpeg": (95, (1, 100), "quality"),
}


@dataclass(frozen=True)
class ImageFormat:
    """One stored image format: `png` (default: Huffman-only), `png:6`, `webp` (lossless), `jpeg:95`."""

    kind: str = "png"  # png | webp | jpeg: the bank's image_format column
    setting: int = HUFFMAN  # png: zlib level 0-9 or HUFFMAN; jpeg: quality 1-100; webp: 101 (lossless only)

    @property
    def lossless(self) -> bool:
        return self.kind != "jpeg"

    @property
    def spec(self) -> str:
        """The text form, as `--image-format` takes it and as provenance records it."""
        if self.kind == "webp" or (self.kind == "png" and self.setting == HUFFMAN):
            return self.kind
        return f"{self.kind}:{self.setting}"

    def __str__(self) -> str:
        return self.spec


DEFAULT_IMAGE_FORMAT = ImageFormat()


def parse_image_format(text: str | ImageFormat) -> ImageFormat:
    """'png' | 'png:huffman' | 'png:LEVEL' | 'webp' | 'jpeg' | 'jpeg:QUALITY' -> ImageFormat (InputError otherwise)."""
    if isinstance(text, ImageFormat):
        return text
    kind, _, setting = str(text).strip().lower().partition(":")
    kind = {"jpg": "jpeg"}.get(kind, kind)
    if kind not in _KINDS:
        raise InputError(f"image format {text!r}: use one of png, png:LEVEL, webp, jpeg[:QUALITY]")
    default, (low, high), what = _KINDS[kind]
    if not setting or (kind == "png" and setting == "huffman"):
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
        "png": ([cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_HUFFMAN_ONLY]
                if fmt.setting == HUFFMAN else [cv2.IMWRITE_PNG_COMPRESSION, fmt.setting]),
        "webp": [cv2.IMWRITE_WEBP_QUALITY, 101],
        "jpeg": [cv2.IMWRITE_JPEG_QUALITY, fmt.setting, cv2.IMWRITE_JPEG_OPTIMIZE, 0],
    }[fmt.kind]
    ok, buffer = cv2.imencode(f".{fmt.kind}", np.ascontiguousarray(pixels[:, :, ::-1]), params)  # OpenCV is BGR
    if not ok:
        raise InputError(f"could not encode a {pixels.shape} image as {fmt.spec}")
    return buffer.tobytes()
