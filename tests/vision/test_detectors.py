"""dlib and SCRFD detectors on real generated.photos faces, and single-face selection."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.metrics import structural_similarity

from facebank.errors import FaceRejected, InputError, ModelError
from facebank.vision.align import align_face
from facebank.vision.image_io import decode_image
from facebank.vision.registry import load_detector
from facebank.vision.scrfd import nms
from facebank.vision.select import select_single_face
from facebank.vision.types import Detection, Detector

SCRFD_MODELS = ("det_500m.onnx", "det_2.5g.onnx", "scrfd_500m_bnkps.onnx")


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


@pytest.fixture(scope="session")
def gp_images(assets):
    """4 generated.photos faces from each of the 6 query folders (24), decoded."""
    root = assets / "generated_photos"
    paths = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        paths += sorted(folder.glob("*_512.jpg"))[:: 25][:4]
    return [(p, decode_image(p.read_bytes(), name=p.name)) for p in paths]


@pytest.fixture(scope="session")
def dlib_detector():
    return load_detector("dlib")


@pytest.fixture(scope="session")
def scrfd_detectors(assets):
    return {name: load_detector("scrfd", assets / "insightface_scrfd" / name) for name in SCRFD_MODELS}


def _plausible(detection: Detection) -> None:
    left, top, right, bottom = detection.box
    pts = detection.landmarks
    assert pts.shape == (5, 2) and pts.dtype == np.float32
    assert ((pts[:, 0] > left) & (pts[:, 0] < right) & (pts[:, 1] > top) & (pts[:, 1] < bottom)).all()
    assert pts[0, 0] < pts[1, 0] and pts[3, 0] < pts[4, 0]  # image-left eye / mouth corner first
    assert max(pts[0, 1], pts[1, 1]) < pts[2, 1] < min(pts[3, 1], pts[4, 1])  # eyes, nose, mouth


def test_protocol(dlib_detector, scrfd_detectors):
    for detector in (dlib_detector, *scrfd_detectors.values()):
        assert isinstance(detector, Detector)
        assert len(detector.info.sha256) >= 64


def test_dlib_finds_exactly_one_plausible_face(gp_images, dlib_detector):
    for path, image in gp_images:
        detections = dlib_detector.detect(image)
        assert len(detections) == 1, path
        _plausible(detections[0])
        assert select_single_face(detections, image.shape) is detections[0]


@pytest.mark.parametrize("name", SCRFD_MODELS)
def test_scrfd_finds_exactly_one_plausible_face(gp_images, scrfd_detectors, name):
    for path, image in gp_images[::2]:
        detections = scrfd_detectors[name].detect(image)
        assert len(detections) == 1, path
        assert detections[0].score > 0.6
        _plausible(detections[0])


def test_fixed_size_model_keeps_its_input_size(scrfd_detectors):
    assert scrfd_detectors["scrfd_500m_bnkps.onnx"].input_size == (640, 640)


@pytest.mark.slow
def test_scrfd_and_dlib_agree(gp_images, dlib_detector, scrfd_detectors):
    scrfd = scrfd_detectors["det_2.5g.onnx"]
    ious, ssims, shifts = [], [], []
    for _, image in gp_images[::2]:
        a, b = dlib_detector.detect(image)[0], scrfd.detect(image)[0]
        ious.append(_iou(a.box, b.box))
        eye_distance = np.linalg.norm(a.landmarks[1] - a.landmarks[0])
        shifts.append(np.abs(a.landmarks - b.landmarks).max() / eye_distance)
        crop_a, crop_b = align_face(image, a.landmarks), align_face(image, b.landmarks)
        ssims.append(structural_similarity(crop_a, crop_b, channel_axis=2))
    # Measured on this sample: IoU 0.69-0.80 (SCRFD boxes include more forehead and chin),
    # landmark shift <= ~6% of the eye distance, crop SSIM 0.77-0.99 (mean ~0.87).
    assert min(ious) > 0.55 and np.mean(ious) > 0.65
    assert max(shifts) < 0.15
    assert min(ssims) > 0.6 and np.mean(ssims) > 0.75


def test_same_models_give_same_results(gp_images, scrfd_detectors):
    # det_500m and the fixed-size scrfd_500m_bnkps are the same weights.
    image = gp_images[0][1]
    a = scrfd_detectors["det_500m.onnx"].detect(image)[0]
    b = scrfd_detectors["scrfd_500m_bnkps.onnx"].detect(image)[0]
    assert np.abs(a.box - b.box).max() < 0.5 and abs(a.score - b.score) < 1e-3


def test_boxes_scale_back_to_original_pixels(gp_images, scrfd_detectors, dlib_detector):
    _, image = gp_images[1]
    big = np.ascontiguousarray(np.repeat(np.repeat(image, 2, axis=0), 2, axis=1))
    for detector in (scrfd_detectors["det_500m.onnx"], dlib_detector):
        small_box = detector.detect(image)[0].box
        big_box = detector.detect(big)[0].box
        assert _iou(small_box * 2, big_box) > 0.85


def test_no_face_in_plain_images(dlib_detector, scrfd_detectors):
    rng = np.random.default_rng(0)
    for image in (np.full((300, 400, 3), 128, np.uint8), rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)):
        for detector in (dlib_detector, scrfd_detectors["det_500m.onnx"]):
            detections = detector.detect(image)
            with pytest.raises(FaceRejected) as info:
                select_single_face(detections, image.shape)
            assert info.value.reason == "no_face"


def test_bad_image_is_input_error(dlib_detector, scrfd_detectors):
    for detector in (dlib_detector, scrfd_detectors["det_500m.onnx"]):
        with pytest.raises(InputError):
            detector.detect(np.zeros((10, 10), np.uint8))


def test_corrupt_or_wrong_model_is_model_error(tmp_path, assets):
    corrupt = tmp_path / "det.onnx"
    corrupt.write_bytes(b"\x08\x07garbage" * 100)
    with pytest.raises(ModelError) as info:
        load_detector("scrfd", corrupt)
    assert "\n" not in str(info.value)
    with pytest.raises(ModelError, match="not an SCRFD"):
        load_detector("scrfd", assets / "onnx_embedders" / "mobilefacenet_128d.onnx")
    with pytest.raises(ModelError):
        load_detector("scrfd", tmp_path / "missing.onnx")
    with pytest.raises(ModelError):
        load_detector("scrfd")
    with pytest.raises(ModelError, match="no SCRFD"):
        load_detector("scrfd", tmp_path)  # a directory without a detector


def test_unknown_detector_lists_known():
    with pytest.raises(InputError, match="dlib, scrfd"):
        load_detector("yolo")


def _det(box, score=1.0):
    box = np.asarray(box, np.float32)
    cx, cy, w = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2, box[2] - box[0]
    pts = np.array([[cx - w / 5, cy - w / 8], [cx + w / 5, cy - w / 8], [cx, cy], [cx - w / 6, cy + w / 5], [cx + w / 6, cy + w / 5]])
    return Detection(box=box, landmarks=pts.astype(np.float32), score=score)


def test_select_single_face_rules():
    shape = (1000, 1000, 3)
    main, small, big2 = _det([100, 100, 400, 400]), _det([700, 700, 760, 760]), _det([500, 100, 750, 350])
    assert select_single_face([small, main], shape) is main  # a small background face is tolerated
    with pytest.raises(FaceRejected) as info:
        select_single_face([main, big2], shape)
    assert info.value.reason == "multiple_faces"
    with pytest.raises(FaceRejected) as info:
        select_single_face([_det([0, 0, 40, 40])], shape)
    assert info.value.reason == "face_too_small"
    broken = Detection(box=main.box, landmarks=np.full((5, 2), 2000, np.float32), score=1.0)
    with pytest.raises(FaceRejected) as info:
        select_single_face([broken], shape)
    assert info.value.reason == "landmarks_failed"
    with pytest.raises(FaceRejected) as info:
        select_single_face([], shape)
    assert info.value.reason == "no_face"


def test_nms_matches_brute_force():
    rng = np.random.default_rng(1)
    xy = rng.uniform(0, 100, (60, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(10, 40, (60, 2))], axis=1)
    scores = rng.uniform(size=60)
    kept = nms(boxes, scores, 0.4)
    # Brute force: walk by score, keep a box unless it overlaps a kept one by > 0.4.
    expected = []
    for i in np.argsort(-scores):
        if all(_iou(boxes[i], boxes[j]) <= 0.4 for j in expected):
            expected.append(i)
    assert list(kept) == expected


def test_dlib_cnn_detector_agrees_with_hog(gp_images, dlib_detector):
    cnn = load_detector("dlib", model="cnn")
    assert cnn.info.name == "dlib_mmod+shape68"
    _, image = gp_images[0]
    detections = cnn.detect(image)
    assert len(detections) == 1
    _plausible(detections[0])
    assert _iou(detections[0].box, dlib_detector.detect(image)[0].box) > 0.5
