"""Real photos -> faces (box, landmarks, age, gender, an embedding per space), models loaded once.

`FaceAnalyser` follows insightface's prepare-once / get-many: the detector, the age/gender model
and the embedders load on the first `get` (or an explicit `prepare`) and are reused for every
later image, so a pipeline pays model loading once per session, not once per photo.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Union

import numpy as np

from facebank.errors import FaceRejected, InputError, ModelError

# What a caller may hand over as a photo: RGB pixels, a file path, or the file's bytes.
ImageInput = Union[np.ndarray, str, os.PathLike, bytes, bytearray, memoryview]


@dataclass(frozen=True)
class PhotoFace:
    """One real face of a photo, as a swapper and the picker need it."""

    box: list[float]  # left, top, right, bottom in pixels of the photo
    age: float
    gender: str  # "female" | "male"
    embeddings: dict[str, np.ndarray] = field(repr=False)
    landmarks: list[list[float]] = field(default_factory=list)  # the 5 ArcFace points, (x, y) in pixels
    score: float = float("nan")  # detector confidence, detector-specific scale

    def to_dict(self) -> dict:
        """JSON-ready: box, landmarks, age, gender, score (embeddings left out: they are the identity)."""
        return {"box": self.box, "landmarks": self.landmarks, "age": round(self.age, 1), "gender": self.gender,
                "score": None if np.isnan(self.score) else round(self.score, 4)}


def as_rgb(image: ImageInput, *, name: str | None = None) -> np.ndarray:
    """An RGB uint8 (H, W, 3) array from pixels, a path or encoded bytes; bad input is an InputError."""
    from facebank.vision.image_io import decode_image

    if isinstance(image, np.ndarray):
        arr = image
        if arr.ndim == 2:
            arr = np.repeat(arr[:, :, None], 3, axis=2)
        elif arr.ndim == 3 and arr.shape[2] == 4:
            arr = arr[:, :, :3]  # RGBA: the alpha channel carries no face
        if arr.ndim != 3 or arr.shape[2] != 3 or min(arr.shape[:2]) < 1:
            raise InputError(f"an image array must be (H, W, 3) RGB, got shape {image.shape}")
        if arr.dtype != np.uint8:
            raise InputError(f"an image array must be uint8 RGB, got dtype {arr.dtype}")
        return np.ascontiguousarray(arr)
    if isinstance(image, (bytes, bytearray, memoryview)):
        data, label = bytes(image), name or "<bytes>"
    elif isinstance(image, (str, os.PathLike)):
        path = Path(image)
        if not path.is_file():
            raise InputError(f"photo {path} does not exist")
        data, label = path.read_bytes(), str(path)
    else:
        raise InputError(f"an image is an RGB array, a path or bytes, got {type(image).__name__}")
    try:
        return decode_image(data, name=label)
    except FaceRejected as exc:
        raise InputError(f"cannot read photo {label}: {exc.detail or exc.reason}") from exc


class FaceAnalyser:
    """Detect, annotate and embed every face of a photo; models load once, on first use.

    Args:
        spaces: identity spaces to embed in ("dlib" needs no model file).
        models: the model path of each non-dlib space, e.g. {"arcface": "buffalo_l/"}.
        detector, detector_path: "dlib" (default), or "scrfd" or "yunet" with its ONNX file or folder.
        detector_options: keywords for the detector's constructor (e.g. SCRFD's input_size).
        min_face_px: faces whose box is smaller on either side are left out.
        expected_sha256: space -> the model checksum the embeddings must come from (a build's
            manifest); a model file with another checksum is refused, since the build's
            thresholds hold only for the model they were calibrated for.
    """

    def __init__(self, spaces: Sequence[str], *, models: Mapping[str, str | os.PathLike] | None = None,
                 detector: str = "dlib", detector_path: str | os.PathLike | None = None, min_face_px: int = 20,
                 expected_sha256: Mapping[str, str | None] | None = None,
                 detector_options: Mapping[str, object] | None = None):
        self.spaces = list(spaces)
        self.models = dict(models or {})
        for s in self.spaces:
            if s != "dlib" and s not in self.models:
                raise InputError(f"space {s!r} needs its model: pass models={{{s!r}: PATH}} (CLI: --model {s}=PATH)")
        self.detector_name, self.detector_path = detector, detector_path
        self.detector_options = dict(detector_options or {})
        self.min_face_px = min_face_px
        self.expected_sha256 = dict(expected_sha256 or {})
        self._models: tuple | None = None
        self._lock = threading.Lock()

    @property
    def prepared(self) -> bool:
        return self._models is not None

    def prepare(self) -> FaceAnalyser:
        """Load the detector, attribute model and embedders now (otherwise the first `get` does)."""
        with self._lock:
            if self._models is None:
                self._models = self._load()
        return self

    def _load(self) -> tuple:
        from facebank.vision.registry import load_attribute_model, load_detector, load_embedder

        det = load_detector(self.detector_name, self.detector_path, **self.detector_options)
        attr = load_attribute_model()
        embedders = {}
        for s in self.spaces:
            e = load_embedder(s, self.models.get(s))
            want = self.expected_sha256.get(s)
            got = getattr(getattr(e, "info", None), "sha256", None)
            if want and got and want != got:
                raise ModelError(f"space {s!r}: model {self.models.get(s, s)} has sha256 {got[:12]}, the build was "
                                 f"made with {want[:12]}; its thresholds do not apply to this model")
            embedders[s] = e
        return det, attr, embedders

    def get(self, image: ImageInput) -> list[PhotoFace]:
        """Every face of `image` (an RGB array, a path or bytes), in the detector's order."""
        rgb = as_rgb(image)
        det, attr, embedders = self.prepare()._models
        with self._lock:  # dlib's detector and shape predictor are not documented as thread-safe
            dets = [d for d in det.detect(rgb)
                    if min(float(d.box[2] - d.box[0]), float(d.box[3] - d.box[1])) >= self.min_face_px]
            # every face of the photo through each model at once: one call, one batch
            attrs = estimate_faces(attr, rgb, dets)
            vectors = {s: embed_faces(e, rgb, dets) for s, e in embedders.items()}
        return [PhotoFace(box=[round(float(v), 1) for v in d.box], age=float(a.age), gender=a.gender,
                          embeddings={s: v[k] for s, v in vectors.items()},
                          landmarks=[[round(float(x), 1), round(float(y), 1)] for x, y in np.asarray(d.landmarks)],
                          score=float(d.score))
                for k, (d, a) in enumerate(zip(dets, attrs))]


def estimate_faces(model, rgb: np.ndarray, dets: list) -> list:
    """Age and gender of each face; in one call where the model takes them all (`estimate_many`)."""
    if not dets:
        return []
    many = getattr(model, "estimate_many", None)
    return list(many(rgb, dets)) if many is not None else [model.estimate(rgb, d) for d in dets]


def embed_faces(embedder, rgb: np.ndarray, dets: list) -> list[np.ndarray]:
    """One vector per face; in one batch where the embedder takes them all (`embed_many`)."""
    if not dets:
        return []
    many = getattr(embedder, "embed_many", None)
    return list(many(rgb, dets)) if many is not None else [embedder.embed(rgb, d) for d in dets]


def analyse_photo(image: ImageInput, *, spaces: list[str], models: dict[str, str] | None = None,
                  detector: str = "dlib", min_face_px: int = 20) -> list[PhotoFace]:
    """One-shot `FaceAnalyser(...).get(image)`: loads the models for this call only.

    Pipelines that analyse many photos should keep a FaceAnalyser (or a FaceBank) instead.
    """
    return FaceAnalyser(spaces, models=models, detector=detector, min_face_px=min_face_px).get(image)
