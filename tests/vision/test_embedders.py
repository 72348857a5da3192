"""Identity embedders: dlib and MobileFaceNet on real identity-labelled photos, the ONNX
contract path with a small ArcFace-shaped model whose output is computable."""

from __future__ import annotations

import csv
import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from facebank.errors import ConfigError, InputError, ModelError
from facebank.vision.align import align_face
from facebank.vision.image_io import decode_image
from facebank.vision.onnx_embedder import PRESETS, EmbedderContract, OnnxEmbedder
from facebank.vision.registry import load_detector, load_embedder
from facebank.vision.select import select_single_face
from facebank.vision.types import Detection, Embedder


@pytest.fixture(scope="session")
def mobilefacenet_path(assets):
    return assets / "onnx_embedders" / "mobilefacenet_128d.onnx"


@pytest.fixture(scope="session")
def identity_faces(assets):
    """(identity, image, detection) for every photo in deepface_faces (61 photos, 13 people)."""
    root = assets / "deepface_faces"
    detector = load_detector("dlib")
    with open(root / "identities.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    faces = []
    for row in rows:
        image = decode_image((root / row["file"]).read_bytes(), name=row["file"])
        faces.append((row["identity_id"], image, select_single_face(detector.detect(image), image.shape)))
    return faces


def _verification(ids: list[str], vectors: np.ndarray) -> tuple[float, float, float]:
    """(mean genuine cosine, mean impostor cosine, AUC) over all pairs, AUC by brute force."""
    sims = vectors @ vectors.T
    upper = np.triu_indices(len(ids), 1)
    labels = np.asarray(ids)
    same = (labels[:, None] == labels[None, :])[upper]
    genuine, impostor = sims[upper][same], sims[upper][~same]
    auc = (genuine[:, None] > impostor[None, :]).mean() + 0.5 * (genuine[:, None] == impostor[None, :]).mean()
    return float(genuine.mean()), float(impostor.mean()), float(auc)


@pytest.mark.slow
def test_dlib_space_separates_identities(identity_faces):
    embedder = load_embedder("dlib")
    assert isinstance(embedder, Embedder) and (embedder.space, embedder.dim) == ("dlib", 128)
    vectors = np.stack([embedder.embed(image, det) for _, image, det in identity_faces])
    assert vectors.dtype == np.float32 and vectors.shape == (61, 128)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    genuine, impostor, auc = _verification([i for i, _, _ in identity_faces], vectors)
    # Measured: genuine 0.966, impostor 0.833 (dlib vectors all lie in a narrow cone), AUC 1.0.
    assert genuine > impostor + 0.08
    assert auc > 0.97


def test_mobilefacenet_space_separates_identities(identity_faces, mobilefacenet_path):
    embedder = load_embedder("mobilefacenet_128d", mobilefacenet_path)
    assert (embedder.space, embedder.dim, embedder.batch_fixed) == ("mobilefacenet", 128, 1)
    vectors = np.stack([embedder.embed(image, det) for _, image, det in identity_faces])
    genuine, impostor, auc = _verification([i for i, _, _ in identity_faces], vectors)
    # Measured: genuine 0.733, impostor 0.024, AUC 1.0 (the asset notes ~0.6 / ~0.03 / 0.99).
    assert genuine > 0.5 and impostor < 0.15
    assert auc > 0.97


def test_fixed_batch_model_loops_and_matches_single(identity_faces, mobilefacenet_path):
    embedder = load_embedder("mobilefacenet", mobilefacenet_path)  # the preset found by its space
    assert embedder.contract == PRESETS["mobilefacenet_128d"]
    crops = np.stack([align_face(image, det.landmarks) for _, image, det in identity_faces[:3]])
    batched = embedder.embed_crops(crops)
    single = np.stack([embedder.embed_crops(c[None])[0] for c in crops])
    assert np.allclose(batched, single, atol=1e-6)
    assert embedder.embed_crops(np.zeros((0, 112, 112, 3), np.uint8)).shape == (0, 128)


def test_contract_mismatch_is_model_error(mobilefacenet_path):
    base = PRESETS["mobilefacenet_128d"]
    for wrong in (
        EmbedderContract(space="m", output_dim=512),
        EmbedderContract(space="m", input_size=96),
        EmbedderContract(space="m", input_name="data"),
        EmbedderContract(space="m", output_name="fc1"),
        EmbedderContract(space="m", batch_fixed=8),
    ):
        with pytest.raises(ModelError):
            OnnxEmbedder(mobilefacenet_path, wrong)
    assert OnnxEmbedder(mobilefacenet_path, base).dim == 128


def test_contract_validation():
    with pytest.raises(ConfigError):
        EmbedderContract(space="x", color_order="GBR")
    with pytest.raises(ConfigError):
        EmbedderContract(space="x", std=0.0)
    with pytest.raises(ConfigError):
        EmbedderContract(space="x", alignment="ffhq")
    with pytest.raises(ConfigError, match="unknown contract keys"):
        EmbedderContract.from_dict({"space": "x", "colour": "RGB"})
    contract = EmbedderContract(space="x", mean=[1, 2, 3], std=[4, 5, 6])
    assert contract.mean == (1.0, 2.0, 3.0) and hash(contract)


# --- the ArcFace path with a small model built here ----------------------------------------

RNG = np.random.default_rng(7)
W = RNG.normal(size=(512, 3)).astype(np.float32)
B = RNG.normal(size=512).astype(np.float32)


def _arcface_like(path) -> None:
    """w600k_r50's interface (input.1 [N,3,112,112] -> 683 [N,512]): per-channel means -> W m + B."""
    nodes = [
        helper.make_node("GlobalAveragePool", ["input.1"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["flat"]),
        helper.make_node("Gemm", ["flat", "W", "B"], ["683"], transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "arcface_like",
        [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, ["None", 3, 112, 112])],
        [helper.make_tensor_value_info("683", TensorProto.FLOAT, ["None", 512])],
        [numpy_helper.from_array(W, "W"), numpy_helper.from_array(B, "B")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def _expected(crops: np.ndarray, mean: float, std: float) -> np.ndarray:
    means = ((crops.astype(np.float64) - mean) / std).mean(axis=(1, 2))  # (N, 3) in RGB
    out = means @ W.T.astype(np.float64) + B
    return out / np.linalg.norm(out, axis=1, keepdims=True)


@pytest.fixture
def arcface_dir(tmp_path):
    _arcface_like(tmp_path / "w600k_r50.onnx")
    return tmp_path


def test_arcface_path_is_computable(arcface_dir):
    embedder = load_embedder("arcface", arcface_dir)  # an InsightFace model directory
    assert (embedder.space, embedder.dim, embedder.batch_fixed) == ("arcface", 512, None)
    assert isinstance(embedder, Embedder) and embedder.info.name == "arcface_w600k_r50"
    # Channels with different levels, so that a channel swap would change the output.
    crops = RNG.integers(0, 256, (5, 112, 112, 3), dtype=np.uint8)
    crops[..., 0] //= 3
    crops[..., 2] = 255 - crops[..., 2] // 3
    vectors = embedder.embed_crops(crops)
    assert vectors.dtype == np.float32 and vectors.shape == (5, 512)
    # (x - 127.5) / 127.5 in RGB, as InsightFace feeds w600k_r50; float32 vs float64 only.
    assert np.abs(vectors - _expected(crops, 127.5, 127.5)).max() < 1e-4
    assert np.abs(vectors - _expected(crops[..., ::-1], 127.5, 127.5)).max() > 1e-2  # RGB, not BGR


def test_arcface_embed_aligns_first(arcface_dir):
    embedder = load_embedder("arcface", arcface_dir / "w600k_r50.onnx")
    image = RNG.integers(0, 256, (300, 300, 3), dtype=np.uint8)
    landmarks = np.array([[110, 120], [180, 118], [146, 160], [115, 200], [178, 198]], np.float32)
    detection = Detection(box=np.array([70, 60, 230, 250], np.float32), landmarks=landmarks, score=0.9)
    vector = embedder.embed(image, detection)
    crop = align_face(image, landmarks)
    assert np.abs(vector - _expected(crop[None], 127.5, 127.5)[0]).max() < 1e-4


def test_contract_file_beside_the_model(arcface_dir):
    model = arcface_dir / "w600k_r50.onnx"
    (arcface_dir / "w600k_r50.contract.toml").write_text(
        'space = "myface"\ncolor_order = "BGR"\nmean = [0.0, 0.0, 0.0]\nstd = 255.0\noutput_dim = 512\n'
    )
    embedder = load_embedder("myface", model)
    assert embedder.space == "myface" and embedder.contract.color_order == "BGR"
    crops = RNG.integers(0, 256, (2, 112, 112, 3), dtype=np.uint8)
    crops[..., 0] //= 3
    assert np.abs(embedder.embed_crops(crops) - _expected(crops[..., ::-1], 0.0, 255.0)).max() < 1e-4
    json_contract = arcface_dir / "c.json"
    json_contract.write_text(json.dumps({"space": "other", "output_dim": 256}))
    with pytest.raises(ModelError, match="output dim 512"):
        load_embedder("other", model, contract=json_contract)
    (arcface_dir / "bad.toml").write_text("space = [")
    with pytest.raises(ConfigError):
        load_embedder("other", model, contract=arcface_dir / "bad.toml")


def test_registry_errors(tmp_path, arcface_dir):
    with pytest.raises(ModelError, match="needs a model path"):
        load_embedder("arcface")
    with pytest.raises(InputError, match="dlib"):
        load_embedder("facenet")
    with pytest.raises(ModelError, match="no contract"):
        load_embedder("facenet", arcface_dir / "w600k_r50.onnx")
    with pytest.raises(ConfigError, match="does not match"):
        load_embedder("facenet", arcface_dir / "w600k_r50.onnx", contract="mobilefacenet_128d")
    with pytest.raises(ModelError):
        load_embedder("arcface", tmp_path / "nowhere")
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x00\x01 not onnx")
    with pytest.raises(ModelError):
        load_embedder("arcface", corrupt)


def test_bad_crops_are_input_error(arcface_dir):
    embedder = load_embedder("arcface", arcface_dir)
    with pytest.raises(InputError):
        embedder.embed_crops(np.zeros((2, 96, 96, 3), np.uint8))
    with pytest.raises(InputError):
        embedder.embed_crops(np.zeros((2, 112, 112, 3), np.float32))
