"""`pick_for_image` on real photos: models loaded once per session, every face gets a distinct,
dissimilar target, the results carry what a swapper needs; cached sessions survive `with`."""

from __future__ import annotations

import numpy as np
import pytest

import facebank
from facebank import FaceBank, build_index
from facebank.errors import InputError

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def build(small_bank, tmp_path_factory):
    return build_index(small_bank, out=tmp_path_factory.mktemp("builds"))


@pytest.fixture(scope="module")
def photo(assets):
    return assets / "deepface_faces" / "img1.jpg"


def _count_loads(monkeypatch) -> dict:
    from facebank.vision import registry

    calls = {"detector": 0}
    real = registry.load_detector

    def counting(*a, **k):
        calls["detector"] += 1
        return real(*a, **k)

    monkeypatch.setattr(registry, "load_detector", counting)
    return calls


def test_pick_for_image_loads_models_once_and_returns_what_a_swapper_needs(build, photo, monkeypatch):
    from facebank.vision.image_io import decode_image

    calls = _count_loads(monkeypatch)
    with FaceBank(build) as fb:
        picks = fb.pick_for_image(photo, rng=np.random.default_rng(0))
        assert calls["detector"] == 1 and len(picks) >= 1
        again = fb.pick_for_image(photo.read_bytes(), rng=np.random.default_rng(0))
        pixels = fb.pick_for_image(decode_image(photo.read_bytes()), rng=np.random.default_rng(0))
        assert calls["detector"] == 1  # the second and third photo cost inference only
        assert [p.target.id for p in again] == [p.target.id for p in pixels] == [p.target.id for p in picks]
        ids = [p.target.id for p in picks]
        assert len(set(ids)) == len(ids)
        vectors = fb.bank.vectors("dlib")
        for face, target in picks:  # unpacks as (face, target)
            assert len(face.box) == 4 and np.asarray(face.landmarks).shape == (5, 2)
            x0, y0, x1, y1 = face.box
            assert all(x0 - 5 <= x <= x1 + 5 and y0 - 5 <= y <= y1 + 5 for x, y in face.landmarks)
            assert face.gender in ("female", "male") and 0 <= face.age <= 120
            # Dissimilar to every face of the photo, not only its own, recomputed here.
            for other in picks:
                q = other.face.embeddings["dlib"]
                sim = float(vectors[target.row] @ q / np.linalg.norm(q) / np.linalg.norm(vectors[target.row]))
                assert sim <= target.thresholds["dlib"] + 1e-6
            stored = fb.bank.face(target.row)
            assert target.source_id == stored.source_id != ""
            assert target.crop().shape == (112, 112, 3)
            assert target.image().shape == stored.image().shape and target.image_bytes() == stored.image_bytes()
            d = face.to_dict()
            assert set(d) >= {"box", "landmarks", "age", "gender"} and "embeddings" not in d


def test_module_level_pick_for_image_and_analyse(build, photo):
    picks = facebank.pick_for_image(photo, build=build, rng=np.random.default_rng(1))
    assert picks and all(isinstance(p, facebank.ImagePick) for p in picks)
    faces = facebank.analyse(photo)
    assert [f.box for f in faces] == [p.face.box for p in picks]
    np.testing.assert_allclose(faces[0].embeddings["dlib"], picks[0].face.embeddings["dlib"], rtol=1e-6)


def test_no_face_gives_no_pick_and_bad_options_are_refused_before_any_model(build, monkeypatch):
    blank = np.full((200, 200, 3), 127, np.uint8)
    with FaceBank(build) as fb:
        assert fb.pick_for_image(blank) == []
        calls = _count_loads(monkeypatch)
        fresh = FaceBank(build)
        with pytest.raises(InputError, match="mode"):
            fresh.pick_for_image(blank, mode="bogus")
        assert calls["detector"] == 0
        fresh.close()
        for bad in (np.zeros((10, 10, 2), np.uint8), np.zeros((10, 10, 3), np.float32), 3.0, b"not an image"):
            with pytest.raises(InputError):
                fb.pick_for_image(bad)


def test_a_space_without_its_model_is_refused(build):
    from facebank.pick.analyse import FaceAnalyser

    with pytest.raises(InputError, match="arcface"):
        FaceAnalyser(["dlib", "arcface"])


def test_leaving_with_on_a_cached_session_evicts_it(build, small_bank):
    q = facebank.open_bank(small_bank).vectors("dlib")[0]
    with facebank.open_facebank(build) as fb:
        first = fb.pick_target(q, rng=np.random.default_rng(0))
    assert first.id
    later = facebank.pick_target(q, build=build, rng=np.random.default_rng(0))
    assert later.crop().shape == (112, 112, 3)  # a fresh session, not the closed one
    assert facebank.open_facebank(build) is not fb


def test_target_aligned_reproduces_the_stored_crop_and_scales(build, small_bank):
    from facebank.vision.align import arcface_template

    with FaceBank(build) as fb:
        t = fb.pick_target(fb.bank.vectors("dlib")[5], rng=np.random.default_rng(3))
        a112 = t.aligned(112)
        # The bank's crop was aligned from the same image and landmarks at ingest.
        assert np.abs(a112.astype(int) - t.crop().astype(int)).mean() < 1.0
        assert t.aligned(128).shape == (128, 128, 3) and t.aligned(224).shape == (224, 224, 3)
        from facebank.vision.align import align_to_swapper

        face = t.face()
        for size, template in ((224, "simswap"), (256, "ffhq"), (224, "arcface")):
            np.testing.assert_array_equal(t.aligned(size, template),
                                          align_to_swapper(face.image(), face.landmarks, size, template))
        assert not np.array_equal(t.aligned(224), t.aligned(224, "arcface"))  # SimSwap's crop is its own
        np.testing.assert_allclose(arcface_template(224), arcface_template(112) * 2)
        np.testing.assert_allclose(arcface_template(128)[:, 0], arcface_template(112)[:, 0] + 8,
                                   rtol=0, atol=1e-4)
        with pytest.raises(InputError):
            t.aligned(3)
