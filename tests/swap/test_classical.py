"""The classical swapper on real photos (deepface_faces) and real bank targets (generated.photos)."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from facebank.errors import FaceRejected, InputError
from facebank.swap import get_swapper
from facebank.swap.blend import poisson_paste, roi_around
from facebank.swap.classical import ClassicalSwapper, warp_triangles
from facebank.swap.landmarks68 import landmarks68
from facebank.vision.image_io import decode_image

GEOMETRIES = ("similarity", "warp")
PHOTO, OTHER = "img30.jpg", "img31.jpg"  # two photos of one person (identities.csv)


def _photo(assets, name):
    return decode_image((assets / "deepface_faces" / name).read_bytes(), name=name)


@pytest.fixture(scope="module")
def session(small_build):
    from facebank.pick.session import FaceBank

    # a fixed secret: keyed picks are the same targets on every run (a build's own secret is random)
    with FaceBank(small_build[2], secret=b"classical-test-secret") as fb:
        yield fb


@pytest.fixture(scope="module")
def picked(session, assets):
    """(photo, its face, the target) for PHOTO."""
    image = _photo(assets, PHOTO)
    (pick,) = session.pick_for_image(image, key="classical-test", fallback="widen_age")
    return image, pick.face, pick.target


@pytest.fixture(scope="module")
def dlib_models():
    from facebank.vision.dlib_models import DlibDetector, DlibEmbedder

    return DlibDetector(), DlibEmbedder()


def _same_person(assets, a, b):
    with open(assets / "deepface_faces" / "identities.csv", newline="") as fh:
        who = {r["file"]: r["identity_id"] for r in csv.DictReader(fh)}
    return who[a] == who[b]


def _largest(det, image):
    faces = det.detect(image)
    assert faces, "no face found"
    return max(faces, key=lambda d: (d.box[2] - d.box[0]) * (d.box[3] - d.box[1]))


def _iou(a, b):
    l, t = max(a[0], b[0]), max(a[1], b[1])
    r, bt = min(a[2], b[2]), min(a[3], b[3])
    inter = max(r - l, 0) * max(bt - t, 0)
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_swap_changes_the_face_only_and_is_deterministic(picked, geometry):
    image, face, target = picked
    before = image.copy()
    swapper = ClassicalSwapper(geometry=geometry)
    out = swapper.swap(image, face, target)
    again = swapper.swap(image, face, target)
    assert out.shape == image.shape and out.dtype == np.uint8
    assert np.array_equal(image, before), "the input photo was modified"
    assert out.tobytes() == again.tobytes(), "two runs differ"
    l, t, r, b = np.asarray(face.box)
    inner = out[int(t + 0.3 * (b - t)):int(b - 0.2 * (b - t)), int(l + 0.25 * (r - l)):int(r - 0.25 * (r - l))]
    orig = image[int(t + 0.3 * (b - t)):int(b - 0.2 * (b - t)), int(l + 0.25 * (r - l)):int(r - 0.25 * (r - l))]
    assert np.abs(inner.astype(int) - orig).mean() > 10, "the face barely changed"
    # Nothing outside the real face's 68-point hull (grown by the blend's window) changes.
    pts = landmarks68(image, face.landmarks)
    roi = roi_around(pts, image.shape)
    changed = (out != image).any(axis=2)
    outside = np.ones_like(changed)
    outside[max(roi.y0, 0):roi.y1, max(roi.x0, 0):roi.x1] = False
    assert changed.sum() > 0.3 * (r - l) * (b - t)
    assert not changed[outside].any(), "pixels outside the face window changed"
    ys, xs = np.nonzero(changed)
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    assert xs.min() >= lo[0] - 2 and xs.max() <= hi[0] + 2 and ys.min() >= lo[1] - 2 and ys.max() <= hi[1] + 2


@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_swapped_face_is_found_again_and_leaves_the_person(picked, assets, dlib_models, geometry):
    """The result is still a face at the real face's box, and less like the person's other photo."""
    det, emb = dlib_models
    image, face, target = picked
    out = ClassicalSwapper(geometry=geometry).swap(image, face, target)
    found = _largest(det, out)
    assert _iou(found.box, face.box) > 0.6
    assert _same_person(assets, PHOTO, OTHER)
    other_img = _photo(assets, OTHER)
    other = emb.embed(other_img, _largest(det, other_img))
    real = emb.embed(image, _largest(det, image))
    swapped = emb.embed(out, found)
    tgt_img = target.image()
    tgt = emb.embed(tgt_img, _largest(det, tgt_img))
    assert float(swapped @ other) < float(real @ other) - 0.02, "the result is as like the person as the photo"
    assert float(swapped @ tgt) > float(real @ tgt) + 0.02, "the result did not move towards the target"


def test_similarity_leaves_less_of_the_person_than_warp(picked, session, assets, dlib_models):
    det, emb = dlib_models
    image, face, target = picked
    other_img = _photo(assets, OTHER)
    other = emb.embed(other_img, _largest(det, other_img))
    sims = {g: [] for g in GEOMETRIES}
    targets = [target] + [session.pick_for_image(image, key=f"classical-test-{k}", fallback="widen_age")[0].target
                          for k in range(2)]
    for t in targets:  # the mean over three targets: one target alone may happen to favour either
        for g in GEOMETRIES:
            out = ClassicalSwapper(geometry=g).swap(image, face, t)
            sims[g].append(float(emb.embed(out, _largest(det, out)) @ other))
    assert np.mean(sims["similarity"]) < np.mean(sims["warp"]), sims


def test_region_real_pastes_over_the_whole_real_hull(picked):
    """region="real" covers at least what "both" covers (the real hull contains their intersection)."""
    image, face, target = picked
    both = (ClassicalSwapper(region="both").swap(image, face, target) != image).any(axis=2)
    real = (ClassicalSwapper(region="real").swap(image, face, target) != image).any(axis=2)
    assert real.sum() >= both.sum() > 0


def test_closed_mouth_degenerate_triangles_are_skipped(picked):
    """Coincident inner-lip points (a closed mouth) make zero-area triangles: skipped, no hang."""
    image, face, target = picked
    real = landmarks68(image, face.landmarks)
    tgt_img = target.image()
    tgt = landmarks68(tgt_img, target.face().landmarks)
    closed = tgt.copy()
    closed[[61, 62, 63]] = closed[[67, 66, 65]]  # upper inner lip onto the lower one
    closed[60] = closed[64] = closed[62]  # and the inner corners with them: collinear, zero area
    canvas = np.zeros((image.shape[0], image.shape[1], 3), np.uint8)
    filled = warp_triangles(tgt_img, closed, canvas, real)
    from scipy.spatial import Delaunay

    assert 0 < filled < len(Delaunay(real).simplices)
    # The same on the real side (its own mouth closed), through the whole swap.
    real_closed = real.copy()
    real_closed[[61, 62, 63]] = real_closed[[67, 66, 65]]
    out = ClassicalSwapper(geometry="warp").swap_landmarks(image, real_closed, tgt_img, closed)
    assert out.shape == image.shape
    with pytest.raises(FaceRejected):
        ClassicalSwapper().swap_landmarks(image, real, tgt_img, np.full((68, 2), 5.0))


@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_face_cut_by_the_photo_edge(picked, geometry):
    """A face half outside the photo (left edge through its nose): swapped, nothing else changes."""
    image, face, target = picked
    nose_x = int(np.asarray(face.landmarks)[2][0])
    cut = np.ascontiguousarray(image[:, nose_x:])
    points = np.asarray(face.landmarks) - [nose_x, 0]
    out = ClassicalSwapper(geometry=geometry).swap_images(cut, points, target.image(), target.face().landmarks)
    assert out.shape == cut.shape
    changed = (out != cut).any(axis=2)
    assert changed[:, :40].any(), "nothing changed at the edge the face touches"
    l, t, r, b = np.asarray(face.box) - [nose_x, 0, nose_x, 0]
    assert not changed[:, int(r + (r - l)):].any()


def test_tiny_face(picked, dlib_models):
    """A ~24 px face: still swapped (alpha blend below the Poisson size), shape kept."""
    import cv2

    image, face, target = picked
    scale = 24.0 / (face.box[2] - face.box[0])
    small = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    out = ClassicalSwapper().swap_images(small, np.asarray(face.landmarks) * scale, target.image(),
                                         target.face().landmarks)
    assert out.shape == small.shape and out.dtype == np.uint8
    assert (out != small).any()


def test_poisson_paste_of_the_photo_onto_itself_is_the_photo(picked):
    image, face, _ = picked
    l, t, r, b = (int(v) for v in face.box)
    window = np.ascontiguousarray(image[t:b, l:r])
    mask = np.full(window.shape[:2], 255, np.uint8)  # touches every edge of the window
    out = poisson_paste(window, window, mask, 3.0)
    assert np.abs(out.astype(int) - window).max() <= 1


def test_options_and_registry():
    assert isinstance(get_swapper("classical", geometry="warp"), ClassicalSwapper)
    assert get_swapper("classical").geometry == "similarity"
    with pytest.raises(InputError, match="geometry"):
        ClassicalSwapper(geometry="morph")
    with pytest.raises(InputError, match="region"):
        ClassicalSwapper(region="target")
    with pytest.raises(InputError, match="blend"):
        ClassicalSwapper(blend="seamless")
    with pytest.raises(InputError, match="RGB uint8"):
        ClassicalSwapper().swap_landmarks(np.zeros((10, 10), np.uint8), np.zeros((68, 2)),
                                          np.zeros((10, 10, 3), np.uint8), np.zeros((68, 2)))
