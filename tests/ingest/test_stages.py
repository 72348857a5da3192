"""Ingest, annotate and embed with the offline default models on real faces."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from facebank.bank import copy_bank
from facebank.bank import open_bank
from facebank.config import SpaceConfig, VisionConfig
from facebank.ingest import annotate_bank, combine_attributes, embed_bank, ingest
from facebank.sources.base import SourceItem
from facebank.labels import AGE_CATEGORIES, metadata_attributes
from facebank.vision.types import Attributes


def test_small_bank_is_annotated_with_metadata_policy(small_bank, gp_items):
    with open_bank(small_bank) as bank:
        assert len(bank) == len(gp_items) == 40
        assert (bank.column("status") == 1).all()
        genders, meta_g = bank.column("gender"), bank.column("meta_gender")
        np.testing.assert_array_equal(genders, meta_g)  # the export's label wins
        ages, cats = bank.column("age"), bank.column("meta_age_category")
        model_ages = bank.column("model_age")
        for age, cat, m in zip(ages, cats, model_ages):
            low, high = AGE_CATEGORIES[cat]
            assert low <= age < high  # the category bounds the age ...
            assert age == np.float32(np.clip(m, low, high - 1e-3))  # ... the model picks the point
        agree = (bank.column("model_gender") == meta_g).mean()
        assert agree >= 0.7, f"model and metadata agree on gender for only {agree:.0%}"
        children = cats == "child"
        assert np.median(model_ages[children]) < np.median(model_ages[cats == "adult"])
        vecs = bank.vectors("dlib")
        np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
        face = bank.face(bank.ids[0])
        assert face.crop.shape == (112, 112, 3) and face.crop.std() > 10


def test_combine_attributes_policy():
    model = Attributes(age=41.0, age_confidence=0.5, gender="male", gender_confidence=0.8, source="m")
    meta = metadata_attributes({"gender": "female", "age": "young-adult"})
    out = combine_attributes(model, meta)
    assert out["gender"] == 0 and out["gender_source"] == "metadata"
    assert abs(out["gender_confidence"] - 0.2) < 1e-9  # the model's belief in the metadata's label
    assert 35.9 < out["age"] < 36.0 and out["age_source"] == "m+metadata"
    assert combine_attributes(model, {})["gender"] == 1
    assert combine_attributes(None, meta)["age"] == 26.0


def _png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.slow
def test_rejections_are_recorded_with_reasons(tmp_path, gp_items):
    face = np.asarray(Image.open(io.BytesIO(gp_items[25].data)).convert("RGB"))
    two = np.concatenate([face, np.asarray(Image.open(io.BytesIO(gp_items[26].data)).convert("RGB"))], axis=1)
    items = [
        SourceItem("folder", "corrupt.jpg", data=gp_items[0].data[:200]),
        SourceItem("folder", "flat.png", data=_png(np.full((256, 256, 3), 128, np.uint8))),
        SourceItem("folder", "two.png", data=_png(two)),
        SourceItem("folder", "tiny.png", data=_png(np.asarray(Image.fromarray(face).resize((60, 60))))),
        SourceItem("folder", "note.gif", rejection=("unsupported_format", "suffix .gif")),
        SourceItem("folder", "ok.jpg", data=gp_items[30].data),
    ]
    bank = tmp_path / "b.h5"
    s = ingest(str(bank), items)
    assert s.added == 1
    assert dict(s.rejected) == {"unreadable": 1, "no_face": 2, "multiple_faces": 1, "unsupported_format": 1} or \
        dict(s.rejected) == {"unreadable": 1, "no_face": 1, "face_too_small": 1, "multiple_faces": 1,
                             "unsupported_format": 1}
    with open_bank(bank) as b:
        assert len(b) == 1
        assert sorted(r["source_id"] for r in b.rejections()) == ["corrupt.jpg", "flat.png", "note.gif", "tiny.png",
                                                                 "two.png"]
    again = ingest(str(bank), items)  # resumable: nothing new, nothing duplicated
    assert again.added == 0 and again.already_in_bank == 1
    with open_bank(bank) as b:
        assert len(b) == 1 and len(b.rejections()) == 5


@pytest.mark.slow
def test_embed_and_annotate_resume(small_bank, tmp_path):
    bank = tmp_path / "b.h5"
    copy_bank(small_bank, bank)  # a bank is its file and its fragments folder
    s = embed_bank(str(bank), SpaceConfig("dlib"))
    assert s.embedded == 0 and s.already_in_bank == 40
    before = open_bank(bank).column("age")
    a = annotate_bank(str(bank), VisionConfig())
    assert a.added == 0  # every face already carries this model's estimate
    a = annotate_bank(str(bank), VisionConfig(), force=True, workers=2)
    assert a.added == 40
    np.testing.assert_array_equal(open_bank(bank).column("age"), before)  # deterministic models, any process


@pytest.mark.slow
def test_worker_processes_give_the_same_bank(small_bank, gp_items, tmp_path):
    bank = tmp_path / "b.h5"
    s = ingest(str(bank), gp_items[:12], spaces=[SpaceConfig("dlib")], workers=2)
    assert s.added == 12
    with open_bank(bank) as got, open_bank(small_bank) as ref:
        rows = [ref.row(i) for i in got.ids]
        assert list(got.ids) == [ref.ids[r] for r in rows] and rows == sorted(rows)  # input order kept
        np.testing.assert_array_equal(got.vectors("dlib"), ref.vectors("dlib")[rows])
        np.testing.assert_array_equal(got.column("age"), ref.column("age")[rows])
