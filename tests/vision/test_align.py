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


# -- swapper crops on real faces: the re-detected landmarks land on the template --

def _redetect(det, crop: np.ndarray) -> np.ndarray | None:
    """dlib's 5 points on a crop: upscaled and centred on a black canvas, since HOG misses a face
    that fills its image."""
    import cv2

    s = crop.shape[0]
    k = max(1, 400 // s)
    big = cv2.resize(crop, (s * k, s * k), interpolation=cv2.INTER_CUBIC)
    canvas = np.zeros((2 * s * k, 2 * s * k, 3), np.uint8)
    o = s * k // 2
    canvas[o:o + s * k, o:o + s * k] = big
    found = det.detect(canvas)
    return None if not found else (found[0].landmarks - o) / k


@pytest.fixture(scope="module")
def real_faces(assets):
    from facebank.vision.dlib_models import DlibDetector
    from facebank.vision.image_io import decode_image

    det = DlibDetector(max_side=None, fallback_max_side=None)
    paths = [assets / "deepface_faces" / "img10.jpg", assets / "deepface_faces" / "img11.jpg",
             *sorted((assets / "generated_photos" / "age_adult").glob("*_512.jpg"))[:2]]
    faces = []
    for p in paths:
        image = decode_image(p.read_bytes())
        faces.append((p.name, image, det.detect(image)[0].landmarks))
    return det, faces


@pytest.mark.parametrize("size,template", [(112, "arcface"), (128, "arcface"), (224, "simswap"), (256, "ffhq")])
def test_swapper_crops_put_real_landmarks_on_the_template(real_faces, size, template):
    from facebank.vision.align import FFHQ_MEAN_POINTS, SIMSWAP_TEMPLATES, align_to_swapper, arcface_template, \
        swapper_matrix

    det, faces = real_faces
    for name, image, landmarks in faces:
        crop = align_to_swapper(image, landmarks, size)  # the size's default template
        assert crop.shape == (size, size, 3)
        np.testing.assert_array_equal(crop, align_to_swapper(image, landmarks, size, template))
        m = swapper_matrix(landmarks, size, template)
        mapped = landmarks @ m[:, :2].T + m[:, 2]
        if template == "arcface":
            ref = arcface_template(size)
        elif template == "simswap":  # the pose template the fit chose
            ref = min(SIMSWAP_TEMPLATES * 2, key=lambda t: np.linalg.norm(mapped - t, axis=1).sum())
        else:
            ref = FFHQ_MEAN_POINTS * (size / 512)
        found = _redetect(det, crop)
        assert found is not None, name
        # The pixels moved where the matrix says (warp convention), and the face sits on the template:
        # the 5-point fit leaves 1-3.5% of the crop for real faces (measured: 0.6-3.9 px mean at 112).
        assert np.linalg.norm(found - mapped, axis=1).max() < 2.5, name
        assert np.linalg.norm(found - ref, axis=1).mean() < 0.04 * size, (name, found, ref)


def test_simswap_and_ffhq_facts():
    from facebank.vision.align import ARCFACE_TEMPLATE, SIMSWAP_TEMPLATES, ffhq_matrix, swapper_matrix

    # SimSwap's frontal template is not arcface_dst: its 224 crop is not ArcFace's 112 crop scaled.
    assert np.abs(SIMSWAP_TEMPLATES[2] - ARCFACE_TEMPLATE).max() > 3
    assert SIMSWAP_TEMPLATES.shape == (5, 5, 2)
    # A frontal face on the frontal template, at 224: the fit picks it and lands exactly on it.
    m = swapper_matrix(SIMSWAP_TEMPLATES[2] * 1.7 + 30, 224, "simswap")
    back = (SIMSWAP_TEMPLATES[2] * 1.7 + 30) @ m[:, :2].T + m[:, 2]
    assert np.abs(back - SIMSWAP_TEMPLATES[2] * 2).max() < 1e-3
    # FFHQ: the crop centre is eye midpoint + 0.1 * eye-to-mouth, its half side max(2 eye distance,
    # 1.8 eye-to-mouth), upright for an upright face.
    lm = np.array([[100, 120], [160, 120], [130, 150], [108, 190], [152, 190]], np.float64)
    m = ffhq_matrix(lm, 256)
    centre = np.array([130, 120 + 0.1 * 70])
    np.testing.assert_allclose(centre @ m[:, :2].T + m[:, 2], [127.5, 127.5], atol=1e-6)
    half = max(2 * 60, 1.8 * 70)
    np.testing.assert_allclose(m[:, :2], np.eye(2) * 128 / half, atol=1e-9)
    with pytest.raises(InputError, match="template must be one of"):
        swapper_matrix(lm, 256, "bogus")
