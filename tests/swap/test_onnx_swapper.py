"""The onnx swapper with small face-swap networks built here (inswapper's and SimSwap's inputs and outputs)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from facebank.errors import ConfigError, InputError, ModelError
from facebank.swap import get_swapper
from facebank.swap.onnx_contract import PRESETS, SwapContract
from facebank.swap.onnx_swapper import OnnxSwapper
from facebank.vision.align import swapper_matrix
from facebank.vision.image_io import decode_image

LATENT = 512
MIX = np.random.default_rng(7).normal(0.0, 0.05, (LATENT, 3)).astype(np.float32)  # latent -> colour shift


def _model(path, *, size=128, latent=LATENT, identity_image=False, names=("target", "source", "output")):
    """out = clip(0.5 * target + shift, 0, 1): shift = source @ MIX (embedding) or the mean of the source image."""
    target, source, output = names
    inputs = [helper.make_tensor_value_info(target, TensorProto.FLOAT, [1, 3, size, size])]
    nodes, inits = [], [numpy_helper.from_array(np.array(0.5, np.float32), "half"),
                        numpy_helper.from_array(np.array([1, 3, 1, 1], np.int64), "shape4"),
                        numpy_helper.from_array(np.array(0.0, np.float32), "lo"),
                        numpy_helper.from_array(np.array(1.0, np.float32), "hi")]
    if identity_image:
        inputs.append(helper.make_tensor_value_info(source, TensorProto.FLOAT, [1, 3, 112, 112]))
        nodes.append(helper.make_node("ReduceMean", [source], ["shift"], axes=[2, 3], keepdims=1))
    else:
        inputs.append(helper.make_tensor_value_info(source, TensorProto.FLOAT, [1, latent]))
        inits.append(numpy_helper.from_array(MIX[:latent], "mix"))
        nodes += [helper.make_node("MatMul", [source, "mix"], ["shift3"]),
                  helper.make_node("Reshape", ["shift3", "shape4"], ["shift"])]
    nodes += [helper.make_node("Mul", [target, "half"], ["halved"]),
              helper.make_node("Add", ["halved", "shift"], ["mixed"]),
              helper.make_node("Clip", ["mixed", "lo", "hi"], [output])]
    graph = helper.make_graph(nodes, "toy_swap", inputs,
                              [helper.make_tensor_value_info(output, TensorProto.FLOAT, [1, 3, size, size])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def emap(tmp_path_factory):
    """A fixed (128, 512) map from a 128-d bank space to the model's 512-d latent, as inswapper's emap."""
    path = tmp_path_factory.mktemp("emap") / "emap.npy"
    np.save(path, np.random.default_rng(3).normal(0.0, 1.0, (128, LATENT)))
    return path


@pytest.fixture(scope="module")
def picked(small_build, assets):
    from facebank.pick.session import FaceBank

    image = decode_image((assets / "deepface_faces" / "img30.jpg").read_bytes())
    with FaceBank(small_build[2]) as fb:
        (pick,) = fb.pick_for_image(image, key="onnx-test", fallback="widen_age")
        yield image, pick.face, pick.target


def _expected(crop, identity):
    x = crop.astype(np.float32) / 255.0
    return np.clip(np.rint(np.clip(0.5 * x + identity @ MIX, 0, 1) * 255), 0, 255)


def test_inswapper_layout_end_to_end_on_a_real_photo(tmp_path, picked, emap):
    image, face, target = picked
    model = _model(tmp_path / "toy_inswapper.onnx")
    swapper = OnnxSwapper(model, "inswapper_128", space="dlib", emap=emap)
    before = image.copy()
    out = swapper.swap(image, face, target)
    assert np.array_equal(image, before) and out.shape == image.shape and out.dtype == np.uint8
    assert out.tobytes() == swapper.swap(image, face, target).tobytes()
    # The identity: the bank's dlib vector of the target, through the emap, L2-normalised.
    vec = target.face().embeddings["dlib"].astype(np.float64) @ np.load(emap)
    identity = swapper.identity_of(target)
    np.testing.assert_allclose(identity[0], vec / np.linalg.norm(vec), rtol=1e-5, atol=1e-6)
    # The crop: InsightFace's shifted 128 template; the network's output lands back at the face.
    m = swapper_matrix(np.asarray(face.landmarks), 128, "arcface")
    import cv2

    crop = cv2.warpAffine(image, m, (128, 128), flags=cv2.INTER_LINEAR, borderValue=0.0)
    got = swapper.run_crop(crop, identity)
    assert np.abs(got.astype(np.float32) - _expected(crop, identity[0])).max() <= 1
    nose = np.asarray(face.landmarks)[2]
    inv = cv2.invertAffineTransform(m)
    cx, cy = inv @ np.array([64.0, 64.0, 1.0])
    x, y = int(round(cx)), int(round(cy))
    expected_pixel = _expected(crop, identity[0])[64, 64]
    assert np.abs(out[y, x].astype(np.float32) - expected_pixel).max() <= 12, (out[y, x], expected_pixel, nose)
    # Only pixels under the crop's footprint change.
    changed = (out != image).any(axis=2)
    ys, xs = np.nonzero(changed)
    corners = np.array([[0, 0], [128, 0], [0, 128], [128, 128]], np.float64) @ inv[:, :2].T + inv[:, 2]
    assert xs.min() >= corners[:, 0].min() - 1 and xs.max() <= corners[:, 0].max() + 1
    assert ys.min() >= corners[:, 1].min() - 1 and ys.max() <= corners[:, 1].max() + 1


def test_identity_from_a_named_embedder(tmp_path, picked, assets, emap):
    """The target's identity from the build's ONNX embedder run on its aligned crop (MobileFaceNet, 128-d)."""
    from facebank.vision.registry import load_embedder

    image, face, target = picked
    model = _model(tmp_path / "toy.onnx")
    mfn = assets / "onnx_embedders" / "mobilefacenet_128d.onnx"
    swapper = OnnxSwapper(model, "inswapper_128", space="mobilefacenet_128d", embedder_path=mfn, emap=emap)
    vec = load_embedder("mobilefacenet_128d", mfn).embed_crops(target.aligned(112)[None])[0] @ np.load(emap)
    np.testing.assert_allclose(swapper.identity_of(target)[0], vec / np.linalg.norm(vec), rtol=1e-4, atol=1e-5)
    assert swapper.swap(image, face, target).shape == image.shape


def test_simswap_layout_with_an_image_identity(tmp_path, picked):
    image, face, target = picked
    model = _model(tmp_path / "toy_simswap.onnx", size=224, identity_image=True, names=("img", "id", "out"))
    contract = SwapContract(size=224, template="simswap", identity="image", identity_size=112,
                            image_input="img", identity_input="id", output_name="out")
    swapper = OnnxSwapper(model, contract)
    ident = swapper.identity_of(target)
    assert ident.shape == (1, 3, 112, 112)
    np.testing.assert_allclose(ident[0].transpose(1, 2, 0) * 255.0, target.aligned(112), atol=1e-3)
    out = swapper.swap(image, face, target)
    assert out.shape == image.shape and (out != image).any()


def test_contract_from_a_file_and_beside_the_model(tmp_path, emap):
    model = _model(tmp_path / "mine.onnx", latent=LATENT)
    (tmp_path / "mine.contract.toml").write_text(f'size = 128\nemap = "{emap}"\nname = "mine"\n')
    swapper = OnnxSwapper(model, space="dlib")
    assert swapper.contract.name == "mine" and swapper._emap.shape == (128, LATENT)
    json_file = tmp_path / "c.json"
    json_file.write_text('{"size": 128, "color_order": "BGR", "mean": [0, 0, 0]}')
    assert OnnxSwapper(model, json_file, space="dlib", emap=emap).contract.color_order == "BGR"
    assert isinstance(get_swapper("onnx", model_path=model, contract="inswapper_128", space="dlib", emap=emap),
                      OnnxSwapper)


@pytest.mark.parametrize("contract, message", [
    (SwapContract(size=224), "input 'target' is [1, 3, 128, 128], the contract says ['N', 3, 224, 224]"),
    (SwapContract(identity_dim=256), "input 'source' is [1, 512], the contract says ['N', 256]"),
    (SwapContract(identity_input="latent"), "input 'latent' is not among the model's inputs"),
    (SwapContract(output_name="swapped"), "output 'swapped' is not among"),
    (SwapContract(identity="image"), "input 'source' is [1, 512], the contract says ['N', 3, 112, 112]"),
])
def test_a_model_that_does_not_match_its_contract_is_refused(tmp_path, contract, message):
    model = _model(tmp_path / "toy.onnx")
    with pytest.raises(ModelError) as info:
        OnnxSwapper(model, contract, space="dlib")
    assert message in str(info.value) and "\n" not in str(info.value)


def test_identity_size_mismatches_are_refused(tmp_path, picked, emap):
    model = _model(tmp_path / "toy.onnx")
    with pytest.raises(ModelError, match=r"emap is \[128, 100\]"):
        OnnxSwapper(model, "inswapper_128", space="dlib", emap=np.zeros((128, 100)))
    swapper = OnnxSwapper(model, "inswapper_128", space="dlib")  # no emap: the 128-d dlib vector is not 512-d
    with pytest.raises(ModelError, match="128-d vectors, the contract's identity_dim need 512"):
        swapper.identity_of(picked[2])
    with pytest.raises(InputError, match="no 'arcface' vector"):
        OnnxSwapper(model, "inswapper_128", space="arcface").identity_of(picked[2])
    with pytest.raises(InputError, match="space="):
        OnnxSwapper(model, "inswapper_128")


def test_contract_validation():
    assert set(PRESETS) == {"inswapper_128", "simswap_224"}
    with pytest.raises(ConfigError, match="color_order"):
        SwapContract(color_order="YUV")
    with pytest.raises(ConfigError, match="template"):
        SwapContract(template="dlib")
    with pytest.raises(ConfigError, match="std"):
        SwapContract(std=0)
    with pytest.raises(ConfigError, match="unknown swap contract keys: colour"):
        SwapContract.from_dict({"colour": "RGB"})
    with pytest.raises(ConfigError, match="neither a preset"):
        OnnxSwapper("nothing.onnx", "inswapper_256")
