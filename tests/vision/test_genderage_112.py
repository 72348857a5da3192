"""InsightFace's 2018 gender-age model (genderage_112.onnx) as an attribute model, on real faces."""

from __future__ import annotations

import numpy as np
import pytest

from facebank.errors import InputError
from facebank.vision.attributes import InsightFaceGenderAge112
from facebank.vision.registry import load_attribute_model


def test_registry_loads_the_112_model_by_its_outputs(assets):
    m = load_attribute_model("insightface", assets / "insightface_genderage")
    assert isinstance(m, InsightFaceGenderAge112) and m.info.name == "insightface_genderage_112"


def test_genders_and_ages_of_real_adult_faces_against_their_metadata(gp_items, assets):
    from facebank.vision.image_io import decode_image
    from facebank.vision.registry import load_detector

    model = InsightFaceGenderAge112(assets / "insightface_genderage")
    det = load_detector("dlib")
    adults = [i for i in gp_items if i.metadata.get("age") == "adult" and i.metadata.get("gender")][:12]
    agree, ages = 0, []
    for item in adults:
        image = decode_image(item.data, name=item.source_id)
        d = max(det.detect(image), key=lambda d: (d.box[2] - d.box[0]) * (d.box[3] - d.box[1]))
        a = model.estimate(image, d)
        assert a.gender in ("female", "male") and 0.5 <= a.gender_confidence <= 1.0
        agree += a.gender == item.metadata["gender"]
        ages.append(a.age)
    # Measured on all 122 adults of the export: 95.9% agree, mean age 44 (docs/labels.md).
    assert agree >= 0.75 * len(adults)
    assert 25 <= float(np.mean(ages)) <= 65


def test_crops_must_be_aligned_112_rgb(assets):
    model = InsightFaceGenderAge112(assets / "insightface_genderage" / "genderage_112.onnx")
    with pytest.raises(InputError):
        model.estimate_crops(np.zeros((1, 96, 96, 3), np.uint8))
