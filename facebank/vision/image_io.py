"""Image bytes in and out: decode anything a face source gives us to RGB uint8, encode PNG.

Every decoding failure becomes a `FaceRejected` with a reason code, never a Pillow exception:
`unreadable` (corrupt, truncated, not an image at all, absurdly large) or `unsupported_format`
(an image Pillow recognises but facebank does not take, e.g. GIF or PDF).
"""

from __future__ import annotations

import io
import warnings

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from facebank.errors import FaceRejected, InputError

__all__ = ["SUPPORTED_FORMATS", "MAX_PIXELS", "decode_image", "encode_png", "image_format"]

# Pillow format names we accept. The file name's extension is never trusted: a ".jpg"
# that is really WebP decodes as WebP.
SUPPORTED_FORMATS = frozenset({"JPEG", "PNG", "WEBP", "BMP", "TIFF"})

# Refuse decompression bombs well before they exhaust memory. Decoding costs ~7 bytes a pixel at
# the peak (Pillow's 4-byte pixels + our RGB array): a whole ingest of a 50 MP image peaked at
# 580 MB resident, so 40 MP keeps a margin under ~600 MB. Pillow's own bomb check
# (Image.MAX_IMAGE_PIXELS, its warning made an error in _open) is kept too.
MAX_PIXELS = 40_000_000


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
    return image if image.mode == "RGB" else image.convert("RGB")


_STRIP_PIXELS = 1 << 22  # rows copied out per step: ~12 MB of RGB at a time


def _as_array(rgb: Image.Image) -> np.ndarray:
    """(H, W, 3) uint8 of an RGB image, copied out in strips of rows.

    np.asarray(image) goes through tobytes(), which holds its chunks and their join at once: two
    more full copies at the peak. Strips keep the peak at the image plus the array.
    """
    w, h = rgb.size
    out = np.empty((h, w, 3), dtype=np.uint8)
    step = max(1, _STRIP_PIXELS // max(w, 1))
    for y in range(0, h, step):
        out[y:y + step] = np.asarray(rgb.crop((0, y, w, min(h, y + step))), dtype=np.uint8)
    return out


_EXIF_ORIENTATION = 0x0112
_JPEG_EOI = b"\xff\xd9"


def _decode_jpeg(data: bytes, image: Image.Image) -> np.ndarray | None:
    """A JPEG straight into an RGB array by OpenCV, or None where Pillow's path must do it.

    Both decode with libjpeg-turbo (same IDCT, same chroma upsampling, EXIF orientation applied):
    the pixels are identical (tests/vision/test_photo_fast_path.py), but Pillow's copy out to numpy
    costs more than its decoding (2.6 MP at quality 90: 10 ms to decode, 31 ms with the copy). Only
    plain RGB / grey files that end as a JPEG should take this path; CMYK, truncated files and
    anything OpenCV refuses go through Pillow, which gives the rejection its reason.
    """
    if image.format != "JPEG" or image.mode not in ("RGB", "L") or _JPEG_EOI not in bytes(data[-64:]):
        return None
    array = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR_RGB)
    if array is None:
        return None
    turned = image.getexif().get(_EXIF_ORIENTATION) in (5, 6, 7, 8)
    if array.shape[:2] != ((image.width, image.height) if turned else (image.height, image.width)):
        return None  # an orientation OpenCV read otherwise than Pillow: Pillow's path decides
    return array


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
    fast = _decode_jpeg(data, image)
    if fast is not None:
        return fast
    try:
        image.load()
        # Rotate/flip as the camera recorded it, so landmarks are upright. In place, and no
        # convert() of an image that is RGB already: each copy of a large image is W*H*3 bytes
        # more at the peak (4 copies took a 236 KB 9000x9000 PNG to 1.1 GB resident).
        ImageOps.exif_transpose(image, in_place=True)
        rgb = _to_rgb(image)
        del image
        array = _as_array(rgb)
        del rgb
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
