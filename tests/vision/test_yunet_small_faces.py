"""YuNet decoding on real photos, and small faces in a 1080p frame: which detectors find them."""

from __future__ import annotations

import numpy as np
import pytest

from facebank.vision.image_io import decode_image
from facebank.vision.registry import load_detector


def _photo(assets, name: str) -> np.ndarray:
    return decode_image((assets / "deepface_faces" / name).read_bytes())


@pytest.mark.parametrize("model", ["face_detection_yunet_2023mar.onnx", "yunet_s_dynamic.onnx"])
def test_yunet_finds_the_face_with_landmarks_in_arcface_order(assets, model):
    image = _photo(assets, "img1.jpg")
    det = load_detector("yunet", assets / "yunet" / model)
    faces = det.detect(image)
    ref = load_detector("dlib").detect(image)
    assert len(faces) == 1 and len(ref) == 1, (faces, ref)
    box, pts = faces[0].box, faces[0].landmarks
    assert faces[0].score > 0.6 and pts.shape == (5, 2)
    # Same face as an independent detector: its centre within a fifth of the face's width.
    centre, ref_centre = (box[:2] + box[2:]) / 2, (ref[0].box[:2] + ref[0].box[2:]) / 2
    assert np.linalg.norm(centre - ref_centre) < 0.2 * (ref[0].box[2] - ref[0].box[0])
    # ArcFace order: image-left eye, image-right eye, nose, image-left and image-right mouth corner.
    assert pts[0, 0] < pts[2, 0] < pts[1, 0] and pts[3, 0] < pts[4, 0]
    assert max(pts[0, 1], pts[1, 1]) < pts[2, 1] < min(pts[3, 1], pts[4, 1])
    assert all(box[0] <= x <= box[2] and box[1] <= y <= box[3] for x, y in pts)


def test_yunet_on_the_dynamic_model_reads_any_size(assets):
    det = load_detector("yunet", assets / "yunet")  # a folder: its yunet*.onnx
    small = _photo(assets, "img1.jpg")[::3, ::3].copy()  # 623 x 461: not a multiple of 32
    faces = det.detect(small)
    assert len(faces) == 1 and faces[0].box[2] <= small.shape[1] + 5


@pytest.fixture(scope="module")
def frame_with_small_faces(assets):
    """A 1920x1080 frame with three real faces about 40 px wide, and where each one is."""
    import cv2

    dlib = load_detector("dlib")
    frame = np.random.default_rng(0).integers(70, 110, (1080, 1920, 3)).astype(np.uint8)
    where = []
    for (x, y), name in zip([(300, 500), (900, 300), (1500, 700)], ["img1.jpg", "img11.jpg", "img20.jpg"]):
        image = _photo(assets, name)
        b = dlib.detect(image)[0].box
        side = b[2] - b[0]
        scale = 40.0 / side
        x0, y0 = int(max(0, b[0] - side)), int(max(0, b[1] - side))
        x1, y1 = int(min(image.shape[1], b[2] + side)), int(min(image.shape[0], b[3] + side))
        crop = cv2.resize(image[y0:y1, x0:x1], None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        frame[y:y + crop.shape[0], x:x + crop.shape[1]] = crop
        where.append((x + ((b[0] + b[2]) / 2 - x0) * scale, y + ((b[1] + b[3]) / 2 - y0) * scale))
    return frame, np.array(where)


def _found(detections, where) -> int:
    """How many of the placed faces have a detection centred within 20 px (half a face)."""
    centres = np.array([(d.box[:2] + d.box[2:]) / 2 for d in detections]).reshape(-1, 2)
    return sum(bool(len(centres)) and np.linalg.norm(centres - w, axis=1).min() < 20 for w in where)


@pytest.mark.slow
def test_scrfd_2_5g_finds_three_40px_faces_in_1080p_and_dlib_does_not(assets, frame_with_small_faces):
    frame, where = frame_with_small_faces
    model = assets / "insightface_scrfd" / "det_2.5g.onnx"
    # At its default 640 input the frame shrinks 3x: a 40 px face is 13 px there.
    at_1280 = load_detector("scrfd", model, input_size=(1280, 1280)).detect(frame)
    assert _found(at_1280, where) == 3 and len(at_1280) == 3, [d.box for d in at_1280]
    assert all(30 <= d.box[2] - d.box[0] <= 55 for d in at_1280)
    # What `facebank anonymize --detector scrfd` uses: 640 for large faces, plus 1280 for small ones.
    two_pass = load_detector("scrfd", model, fine_size=1280)
    assert _found(two_pass.detect(frame), where) == 3 and len(two_pass.detect(frame)) == 3
    dynamic = load_detector("yunet", assets / "yunet" / "yunet_s_dynamic.onnx", fine_size=1920)
    assert _found(dynamic.detect(frame), where) == 3
    # dlib's HOG detector (an 80 px window) misses all three: the reason --detector exists.
    assert _found(load_detector("dlib").detect(frame), where) == 0


@pytest.mark.slow
@pytest.mark.parametrize("name", ["img3.jpg", "img33.jpg"])  # close-up portraits, 2048 px, the face ~700 px
def test_two_passes_keep_a_close_up_portrait_as_one_face(assets, name):
    image = _photo(assets, name)
    scrfd = load_detector("scrfd", assets / "insightface_scrfd" / "det_2.5g.onnx", fine_size=1280)
    yunet = load_detector("yunet", assets / "yunet" / "yunet_s_dynamic.onnx", fine_size=1920)
    for det in (scrfd, yunet):
        faces = det.detect(image)
        assert len(faces) == 1 and faces[0].box[2] - faces[0].box[0] > 400, (det, [f.box for f in faces])
