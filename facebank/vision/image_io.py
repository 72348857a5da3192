"""Image bytes in and out: decode anything a face source gives us to RGB uint8, encode PNG.

Every decoding failure becomes a `FaceRejected` with a reason code, never a Pillow exception:
`unreadable` (corrupt, truncated, not an image at all, absurdly large) or `unsupported_format`
(an image Pillow recognises but facebank does not take, e.g. GIF or PDF).
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from facebank.errors import FaceRejected, InputError

__all__ = ["SUPPORTED_FORMATS", "MAX_PIXELS", "decode_image", "encode_png", "image_format"]

# Pillow format names we accept. The file name's extension is never trusted: a ".jpg"
# that is really WebP decodes as WebP.
SUPPORTED_FORMATS = frozenset({"JPEG", "PNG", "WEBP", "BMP", "TIFF"})

# Refuse decompression bombs well before they exhaust memory (about 0.3 GB as RGB).
MAX_PIXELS = 100_000_000


def _label(name: str) -> str:
    return f"{name}: " if name else ""


def _open(data: bytes, name: str) -> Image.Image:
    """Identify the format (reads the header only); map Pillow's failures to rejections."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise InputError(f"image data must be bytes, got {type(data).__name__}")
    if len(data) == 0:
        raise FaceRejected("unreadable", f"{_label(name)}empty file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(bytes(data)))
    except UnidentifiedImageError as exc:
        raise FaceRejected("unreadable", f"{_label(name)}not a recognised image") from exc
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise FaceRejected("unreadable", f"{_label(name)}image too large") from exc
    except (OSError, ValueError, SyntaxError) as exc:
        raise FaceRejected("unreadable", f"{_label(name)}{exc}") from exc
    if image.format not in SUPPORTED_FORMATS:
        raise FaceRejected(
            "unsupported_format",
            f"{_label(name)}{image.format} (supported: {', '.join(sorted(SUPPORTED_FORMATS))})",
        )
    return image


def image_format(data: bytes, *, name: str = "") -> str:
    """The real format of `data` from its content ('jpeg', 'png', 'webp', 'bmp', 'tiff').

    Raises FaceRejected('unreadable' | 'unsupported_format') like `decode_image`.
    """
    return _open(data, name).format.lower()


def _to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow mode to 8-bit RGB; transparency is composited onto white."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16/32-bit grey: scale to 8 bits rather than letting convert() clip at 255.
        values = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if image.mode.startswith("I;16") or values.max() > 255 else 255.0
        grey = np.clip(values / peak * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(grey, "L").convert("RGB")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def decode_image(data: bytes, *, name: str = "") -> np.ndarray:
    """Decode image bytes to an RGB uint8 array (H, W, 3), EXIF orientation applied.

    Args:
        data: the file's bytes (JPEG, PNG, WebP, BMP or TIFF; the format is read from the
            content, not from `name`).
        name: where the bytes came from, only used in rejection details.

    Raises:
        FaceRejected: 'unreadable' for corrupt, truncated, empty or oversized data;
            'unsupported_format' for an image format facebank does not take.
        InputError: `data` is not bytes.
    """
    image = _open(data, name)
    if image.width * image.height > MAX_PIXELS:
        raise FaceRejected("unreadable", f"{_label(name)}{image.width}x{image.height} too large")
    try:
        image.load()
        # Rotate/flip as the camera recorded it, so landmarks are upright.
        image = ImageOps.exif_transpose(image)
        rgb = _to_rgb(image)
        array = np.asarray(rgb, dtype=np.uint8)
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise FaceRejected("unreadable", f"{_label(name)}{exc}") from exc
    if array.ndim != 3 or array.shape[2] != 3 or array.shape[0] == 0 or array.shape[1] == 0:
        raise FaceRejected("unreadable", f"{_label(name)}decoded to shape {array.shape}")
    return np.ascontiguousarray(array)


def encode_png(image: np.ndarray) -> bytes:
    """Lossless PNG bytes of an RGB uint8 (H, W, 3) array (deterministic: no timestamps)."""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
        raise InputError(f"image must be a uint8 numpy array, got {getattr(image, 'dtype', type(image))}")
    if image.ndim != 3 or image.shape[2] != 3 or image.shape[0] == 0 or image.shape[1] == 0:
        raise InputError(f"image must have shape (H, W, 3), got {image.shape}")
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image), "RGB").save(buffer, format="PNG", compress_level=6)
    return buffer.getvalue()
