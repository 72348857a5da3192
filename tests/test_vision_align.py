"""ArcFace 5-point alignment against known transforms."""

from __future__ import annotations

import numpy as np
import pytest

from facebank.errors import FaceRejected, InputError
from facebank.vision.align import ARCFACE_TEMPLATE, align_face, estimate_similarity


def _similarity(scale: float, angle: float, shift: tuple[float, float]) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[scale * c, -scale * s, shift[0]], [scale * s, scale * c, shift[1]]])


def test_template_is_insightface_arcface_dst():
    assert ARCFACE_TEMPLATE.shape == (5, 2)
    assert np.allclose(ARCFACE_TEMPLATE[0], [38.2946, 51.6963])
    assert np.allclose(ARCFACE_TEMPLATE[4], [70.7299, 92.2041])


@pytest.mark.parametrize("scale,angle,shift", [(1.0, 0.0, (0, 0)), (2.7, 0.3, (140, 75)), (0.6, -1.2, (-10, 300))])
def test_recovers_the_inverse_of_a_known_similarity(scale, angle, shift):
    forward = _similarity(scale, angle, shift)
    landmarks = ARCFACE_TEMPLATE @ forward[:, :2].T + forward[:, 2]
    matrix = estimate_similarity(landmarks)
    back = landmarks @ matrix[:, :2].T + matrix[:, 2]
    # Exact up to float32 rounding of the template (5 points, no noise).
    assert np.abs(back - ARCFACE_TEMPLATE).max() < 1e-3


def test_align_face_maps_the_landmarks_onto_the_template():
    # Put bright dots at landmark positions in a big image, at 3x scale and rotated.
    forward = _similarity(3.0, 0.25, (200, 120))
    landmarks = ARCFACE_TEMPLATE @ forward[:, :2].T + forward[:, 2]
    image = np.zeros((800, 800, 3), np.uint8)
    for x, y in np.round(landmarks).astype(int):
        image[y - 4 : y + 5, x - 4 : x + 5] = 255
    crop = align_face(image, landmarks)
    assert crop.shape == (112, 112, 3) and crop.dtype == np.uint8
    for x, y in np.round(ARCFACE_TEMPLATE).astype(int):
        assert crop[y, x].min() > 200  # each dot lands on its template point
    big = align_face(image, landmarks, size=224)
    for x, y in np.round(ARCFACE_TEMPLATE * 2).astype(int):
        assert big[y, x].min() > 200


def test_degenerate_landmarks_are_rejected():
    with pytest.raises(FaceRejected) as info:
        align_face(np.zeros((50, 50, 3), np.uint8), np.full((5, 2), 10.0))
    assert info.value.reason == "landmarks_failed"


def test_bad_inputs():
    with pytest.raises(InputError):
        estimate_similarity(np.zeros((4, 2)))
    with pytest.raises(InputError):
        estimate_similarity(np.full((5, 2), np.nan))
    with pytest.raises(InputError):
        align_face(np.zeros((50, 50), np.uint8), ARCFACE_TEMPLATE)
