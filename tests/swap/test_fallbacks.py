"""The blur and pixelate fallbacks on a real photo: only the face's region changes, the input is
left as it was, and the face is gone for the detector."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from facebank.errors import InputError
from facebank.swap import get_swapper
from facebank.vision.image_io import decode_image
from facebank.vision.registry import load_detector


@pytest.mark.parametrize("name", ["blur", "pixelate"])
def test_fallback_covers_the_face_and_nothing_else(assets, name):
    image = decode_image((assets / "deepface_faces" / "img1.jpg").read_bytes())
    before = image.copy()
    det = load_detector("dlib")
    box = det.detect(image)[0].box
    face = SimpleNamespace(box=[float(v) for v in box])
    out = get_swapper(name).swap(image, face, None)
    assert np.array_equal(image, before) and out.shape == image.shape and out.dtype == np.uint8
    x0, y0, x1, y1 = (int(v) for v in box)
    w, h = x1 - x0, y1 - y0
    outside = np.ones(image.shape[:2], bool)
    outside[max(0, y0 - h // 4 - 1):y1 + h // 4 + 2, max(0, x0 - w // 4 - 1):x1 + w // 4 + 2] = False
    assert np.array_equal(out[outside], image[outside])  # beyond the grown box: untouched
    inner = (slice(y0 + h // 4, y1 - h // 4), slice(x0 + w // 4, x1 - w // 4))
    assert np.abs(out[inner].astype(int) - image[inner]).mean() > 5
    assert det.detect(out) == []


def test_fallback_options_are_checked():
    with pytest.raises(InputError, match="strength"):
        get_swapper("blur", strength=0)
    with pytest.raises(InputError, match="blocks"):
        get_swapper("pixelate", blocks=1)
    with pytest.raises(InputError, match="RGB uint8"):
        get_swapper("blur").swap(np.zeros((4, 4), np.uint8), SimpleNamespace(box=[0, 0, 2, 2]), None)
