"""The faster photo path finds the same faces, with the same embeddings, as the path it replaced.

On real photos (the 61 deepface photos, StyleGAN2-ADA 1024 px samples, generated.photos faces):
- JPEGs decoded by OpenCV give Pillow's pixels exactly, EXIF orientation included;
- SCRFD on the tight canvas finds the faces the square 640 canvas found (same count, box IoU >= 0.9)
  and the embeddings aligned on its landmarks have cosine >= 0.99 to the old ones;
- one batched model call for all faces of a photo gives each face's single-call result.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from facebank.errors import FaceRejected, InputError
from facebank.pick.analyse import FaceAnalyser
from facebank.vision import image_io
from facebank.vision.image_io import decode_image
from facebank.vision.registry import load_attribute_model, load_embedder
from facebank.vision.scrfd import ScrfdDetector


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def _pillow_decode(data: bytes) -> np.ndarray:
    """decode_image as it was: every format through Pillow."""
    original = image_io._decode_jpeg
    image_io._decode_jpeg = lambda data, image: None
    try:
        return decode_image(data)
    finally:
        image_io._decode_jpeg = original


@pytest.fixture(scope="module")
def real_photos(assets):
    """(name, bytes) of the deepface photos, the StyleGAN samples and 12 generated.photos faces."""
    paths = sorted((assets / "deepface_faces").glob("img*.jpg"), key=lambda p: int(p.stem[3:]))
    paths += sorted((assets / "stylegan2ada_ffhq_samples").glob("*.png"))
    paths += sorted((assets / "generated_photos" / "age_adult").glob("*_512.jpg"))[::8][:12]
    assert len(paths) >= 61 + 12 + 12
    return [(p.name, p.read_bytes()) for p in paths]


def test_opencv_jpeg_decode_is_pillows_pixels(real_photos):
    jpegs = 0
    for name, data in real_photos:
        fast = decode_image(data, name=name)
        assert np.array_equal(fast, _pillow_decode(data)), name
        jpegs += data[:2] == b"\xff\xd8"
    assert jpegs >= 70  # the fast path was taken, not only Pillow's


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_matches_pillow(assets, orientation):
    face = decode_image((assets / "deepface_faces" / "img25.jpg").read_bytes())[:300, :200]  # not square
    image = Image.fromarray(face)
    exif = image.getexif()
    exif[0x0112] = orientation
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=92, exif=exif.tobytes())
    data = buffer.getvalue()
    assert image_io._decode_jpeg(data, Image.open(io.BytesIO(data))) is not None
    assert np.array_equal(decode_image(data), _pillow_decode(data))


def test_truncated_and_cmyk_jpegs_go_through_pillow(assets):
    data = (assets / "deepface_faces" / "img25.jpg").read_bytes()
    with pytest.raises(FaceRejected) as info:
        decode_image(data[: len(data) * 2 // 3])
    assert info.value.reason == "unreadable"
    buffer = io.BytesIO()
    Image.fromarray(decode_image(data)).convert("CMYK").save(buffer, "JPEG", quality=95)
    cmyk = buffer.getvalue()
    assert image_io._decode_jpeg(cmyk, Image.open(io.BytesIO(cmyk))) is None
    assert decode_image(cmyk).shape == decode_image(data).shape


@pytest.fixture(scope="module")
def scrfd_pair(assets):
    path = assets / "insightface_scrfd" / "det_2.5g.onnx"
    return ScrfdDetector(path, canvas="full"), ScrfdDetector(path)


@pytest.fixture(scope="module")
def mobilefacenet(assets):
    return load_embedder("mobilefacenet_128d", assets / "onnx_embedders" / "mobilefacenet_128d.onnx")


def test_tight_canvas_finds_the_same_faces_with_the_same_embeddings(real_photos, scrfd_pair, mobilefacenet):
    full, tight = scrfd_pair
    faces = 0
    for name, data in real_photos:
        rgb = decode_image(data, name=name)
        old, new = full.detect(rgb), tight.detect(rgb)
        assert len(new) == len(old), name
        for d in old:
            match = max(new, key=lambda n: _iou(d.box, n.box))
            assert _iou(d.box, match.box) >= 0.9, name
            cosine = float(mobilefacenet.embed(rgb, d) @ mobilefacenet.embed(rgb, match))
            assert cosine >= 0.99, (name, cosine)
            faces += 1
    assert faces >= 85  # every photo has a face: the comparison covered them all


def test_tight_canvas_is_smaller_and_fixed_models_keep_theirs(assets, scrfd_pair):
    full, tight = scrfd_pair
    rgb = np.zeros((1868, 1382, 3), np.uint8)
    assert full._letterbox(rgb)[0].shape == (640, 640, 3)
    canvas = tight._letterbox(rgb)[0]
    assert canvas.shape[0] % 32 == 0 and canvas.shape[1] % 32 == 0
    assert canvas.shape[0] * canvas.shape[1] < 0.7 * 640 * 640
    fixed = ScrfdDetector(assets / "insightface_scrfd" / "scrfd_500m_bnkps.onnx")
    assert fixed.canvas == "full" and fixed._letterbox(rgb)[0].shape == (640, 640, 3)
    with pytest.raises(InputError):
        ScrfdDetector(assets / "insightface_scrfd" / "det_2.5g.onnx", canvas="square")


@pytest.fixture(scope="module")
def group_photo(assets):
    rgb = decode_image((assets / "deepface_faces" / "img62.jpg").read_bytes())
    detector = ScrfdDetector(assets / "insightface_scrfd" / "det_2.5g.onnx")
    dets = detector.detect(rgb)
    assert len(dets) == 3
    return rgb, dets


def test_batched_models_give_each_faces_own_result(assets, group_photo, mobilefacenet):
    rgb, dets = group_photo
    ages = load_attribute_model()
    assert ages.estimate_many(rgb, dets) == [ages.estimate(rgb, d) for d in dets]
    genderage = load_attribute_model("insightface", assets / "insightface_genderage" / "genderage_112.onnx")
    many = genderage.estimate_many(rgb, dets)
    assert [(a.age, a.gender) for a in many] == [(genderage.estimate(rgb, d).age, genderage.estimate(rgb, d).gender)
                                                 for d in dets]
    for embedder in (mobilefacenet, load_embedder("dlib")):
        vectors = embedder.embed_many(rgb, dets)
        assert vectors.shape == (3, embedder.dim)
        for d, v in zip(dets, vectors):
            assert float(v @ embedder.embed(rgb, d)) > 0.9999
        assert embedder.embed_many(rgb, []).shape == (0, embedder.dim)


def test_analyser_returns_every_face_of_a_group_photo(assets, group_photo):
    rgb, dets = group_photo
    analyser = FaceAnalyser(["mobilefacenet_128d"], detector="scrfd",
                            models={"mobilefacenet_128d": assets / "onnx_embedders" / "mobilefacenet_128d.onnx"},
                            detector_path=assets / "insightface_scrfd" / "det_2.5g.onnx")
    faces = analyser.get(rgb)
    assert [f.box for f in faces] == [[round(float(v), 1) for v in d.box] for d in dets]
    embedder = analyser._models[2]["mobilefacenet_128d"]
    for f, d in zip(faces, dets):
        assert float(f.embeddings["mobilefacenet_128d"] @ embedder.embed(rgb, d)) > 0.9999
