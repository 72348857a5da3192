"""Labelled folders for calibration: aligned crops (dlib given a fixed rectangle), photos, pooling."""

from __future__ import annotations

import csv
import shutil

import numpy as np
import pytest

from facebank import audit
from facebank.audit.labelled import LabelledSet, embed_crop, load_labelled
from facebank.errors import InputError


@pytest.fixture(scope="module")
def dlib_pair():
    from facebank.vision.registry import load_detector, load_embedder

    return load_detector("dlib"), load_embedder("dlib")


def test_dlib_on_an_aligned_crop_matches_the_photo(assets, dlib_pair):
    """The documented choice: a photo's aligned crop, embedded through the fixed rectangle, gives
    nearly the photo's own dlib descriptor (61 photos measured: median 0.995, min 0.982)."""
    from facebank.vision.align import align_face
    from facebank.vision.image_io import decode_image

    detector, emb = dlib_pair
    rows = list(csv.DictReader(open(assets / "deepface_faces" / "identities.csv")))[:8]
    cos = []
    for r in rows:
        image = decode_image((assets / "deepface_faces" / r["file"]).read_bytes(), name=r["file"])
        d = max(detector.detect(image), key=lambda d: (d.box[2] - d.box[0]) * (d.box[3] - d.box[1]))
        crop = align_face(image, d.landmarks, 112)
        cos.append(float(emb.embed(image, d) @ embed_crop(crop, "dlib", emb)))
    assert min(cos) > 0.97 and np.median(cos) > 0.99


def test_aligned_folder_calibration_counts(assets, tmp_path, dlib_pair):
    src = assets / "labelled_aligned112"
    rows = list(csv.DictReader(open(src / "identities.csv")))[:40]
    for r in rows:
        shutil.copy(src / r["file"], tmp_path / r["file"])
    with open(tmp_path / "identities.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["file", "identity_id"])
        w.writeheader()
        w.writerows(rows)
    _, emb = dlib_pair
    rep = audit.calibrate(tmp_path, aligned=True, embedders={"dlib": emb}, fars=(1e-1,))
    ids = [r["identity_id"] for r in rows]
    _, counts = np.unique(ids, return_counts=True)
    n_gen = int(sum(c * (c - 1) // 2 for c in counts))
    s = rep.spaces["dlib"]
    assert (rep.n_faces, s.n_genuine, s.n_impostor) == (40, n_gen, 40 * 39 // 2 - n_gen)
    assert s.genuine.mean > s.impostor.mean + 0.1  # the crops are real faces, embedded sensibly
    assert rep.data[0]["files"] == 40 and rep.data[0]["aligned"] and len(rep.data[0]["sha256"]) == 64
    # Pooled with itself as a second set, no cross-set pair is scored: counts double exactly.
    both = audit.calibrate([LabelledSet(tmp_path, aligned=True)] * 2, embedders={"dlib": emb}, fars=(1e-1,))
    assert both.spaces["dlib"].n_impostor == 2 * s.n_impostor and both.spaces["dlib"].n_genuine == 2 * n_gen


def test_photos_without_a_face_are_skipped(assets, tmp_path, dlib_pair):
    detector, emb = dlib_pair
    shutil.copy(assets / "deepface_faces" / "img1.jpg", tmp_path / "a.jpg")
    (tmp_path / "b.jpg").write_bytes(b"not an image")
    (tmp_path / "identities.csv").write_text("file,identity_id\na.jpg,x\nb.jpg,y\n")
    faces = load_labelled(LabelledSet(tmp_path), {"dlib": emb}, detector=detector)
    assert faces.files == ["a.jpg"] and faces.skipped[0]["photo"] == "b.jpg"
    (tmp_path / "identities.csv").write_text("file,identity_id\nmissing.jpg,x\n")
    with pytest.raises(InputError, match="not in"):
        load_labelled(LabelledSet(tmp_path), {"dlib": emb}, detector=detector)
