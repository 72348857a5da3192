"""Image decoding: real files, every colour mode we meet, and every way bytes can be bad."""

from __future__ import annotations

import io

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image

from facebank.errors import FaceRejected, InputError
from facebank.vision.image_io import decode_image, encode_png, image_format


def _save(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def _gradient(width: int = 40, height: int = 30) -> np.ndarray:
    y, x = np.mgrid[:height, :width]
    return np.stack([x * 6, y * 8, (x + y) * 3], axis=-1).astype(np.uint8)


def test_real_jpeg_and_misnamed_webp(assets):
    faces = assets / "deepface_faces"
    jpeg = (faces / "img2.jpg").read_bytes()
    webp = (faces / "img47.jpg").read_bytes()  # a .jpg that is really WebP
    assert image_format(jpeg) == "jpeg"
    assert image_format(webp, name="img47.jpg") == "webp"
    image = decode_image(webp, name="img47.jpg")
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    assert image.shape[:2] == (1800, 1350)
    assert image.flags.c_contiguous


def test_generated_photo_decodes_to_512(assets):
    path = next((assets / "generated_photos" / "age_adult").glob("*_512.jpg"))
    image = decode_image(path.read_bytes())
    assert image.shape == (512, 512, 3)


@pytest.mark.parametrize("mode", ["L", "RGBA", "CMYK", "P", "LA", "I;16"])
def test_modes_convert_to_rgb(mode):
    rgb = Image.fromarray(_gradient(), "RGB")
    if mode == "I;16":
        grey = np.asarray(rgb.convert("L"), dtype=np.uint16) * 257  # full 16-bit range
        source = Image.fromarray(grey)  # uint16 -> mode I;16
    else:
        source = rgb.convert(mode)
    fmt = "JPEG" if mode == "CMYK" else "PNG"
    decoded = decode_image(_save(source, fmt))
    assert decoded.shape == (30, 40, 3) and decoded.dtype == np.uint8
    if mode in ("L", "I;16"):
        expected = np.asarray(rgb.convert("L"))
        # 16-bit grey is scaled down, not clipped at 255.
        assert np.abs(decoded[..., 0].astype(int) - expected).max() <= 1
        assert (decoded[..., 0] == decoded[..., 1]).all()


def test_transparent_pixels_become_white():
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., 0] = 200  # red underneath, fully transparent
    decoded = decode_image(_save(Image.fromarray(rgba, "RGBA"), "PNG"))
    assert (decoded == 255).all()


def test_exif_orientation_is_applied():
    pixels = _gradient(40, 30)
    image = Image.fromarray(pixels, "RGB")
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    decoded = decode_image(_save(image, "JPEG", exif=exif, quality=95))
    assert decoded.shape == (40, 30, 3)  # width and height swapped
    expected = np.rot90(pixels, k=-1)
    assert np.abs(decoded.astype(int) - expected).mean() < 4  # JPEG noise only


def test_corrupt_truncated_and_empty_are_unreadable(assets):
    jpeg = (assets / "deepface_faces" / "img2.jpg").read_bytes()
    for data in (b"", b"not an image at all" * 10, jpeg[: len(jpeg) // 3], b"\x89PNG\r\n\x1a\n" + b"\0" * 50):
        with pytest.raises(FaceRejected) as info:
            decode_image(data, name="bad.jpg")
        assert info.value.reason == "unreadable"


def test_unsupported_format():
    gif = _save(Image.fromarray(_gradient(), "RGB").convert("P"), "GIF")
    with pytest.raises(FaceRejected) as info:
        decode_image(gif, name="x.gif")
    assert info.value.reason == "unsupported_format"
    assert "GIF" in info.value.detail
    with pytest.raises(FaceRejected) as info:
        image_format(gif)
    assert info.value.reason == "unsupported_format"


def test_not_bytes_is_input_error():
    with pytest.raises(InputError):
        decode_image("a path, not bytes")  # type: ignore[arg-type]


def test_encode_png_rejects_bad_arrays():
    with pytest.raises(InputError):
        encode_png(np.zeros((4, 4), np.uint8))
    with pytest.raises(InputError):
        encode_png(np.zeros((4, 4, 3), np.float32))


def test_encode_png_is_deterministic():
    image = _gradient()
    assert encode_png(image) == encode_png(image.copy())
    assert image_format(encode_png(image)) == "png"


@settings(max_examples=25, deadline=None)
@given(arrays(np.uint8, st.tuples(st.integers(1, 24), st.integers(1, 24), st.just(3))))
def test_png_roundtrip_is_lossless(image):
    assert np.array_equal(decode_image(encode_png(image)), image)
