"""dlib's offline face models (from the `face-recognition-models` package, run by `dlib-bin`).

Landmarks: the ArcFace 5 points come from dlib's 68-point predictor (eye centres = mean of
points 36-41 / 42-47, nose tip = 30, mouth corners = 48 / 54). The 5-point predictor is not
used for them because it has no mouth points (it marks eye corners and the nose *base*);
the 68-point model costs ~1 ms more per face. The 5-point predictor is still what the
descriptor network was trained with, so DlibEmbedder uses it for dlib's own chip alignment.

Not thread-safe: use one instance per thread or process.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import cv2
import numpy as np

from facebank.errors import InputError, ModelError
from facebank.vision.model_files import file_sha256
from facebank.vision.types import Detection, ModelInfo

try:
    import dlib
except ImportError:  # pragma: no cover - dlib-bin is a dependency
    dlib = None

__all__ = ["DLIB_BOX_112", "DlibDetector", "DlibEmbedder", "dlib_model_path"]

# dlib's face box in the 112 ArcFace crop (left, top, right, bottom): the mean of dlib's HOG boxes of
# the 61 `deepface_faces` photos mapped into their aligned crops. A face known only by its 5 points
# gets a box dlib's shape predictors and descriptor expect from this.
DLIB_BOX_112 = (10.3, 24.3, 101.4, 119.7)

_FILES = {
    "shape_5": "shape_predictor_5_face_landmarks.dat",
    "shape_68": "shape_predictor_68_face_landmarks.dat",
    "resnet": "dlib_face_recognition_resnet_model_v1.dat",
    "mmod": "mmod_human_face_detector.dat",
}


def _require_dlib():
    if dlib is None:
        raise ModelError("dlib is not installed (pip install dlib-bin)")
    return dlib


def dlib_model_path(kind: str, models_dir: str | os.PathLike[str] | None = None) -> Path:
    """Path of one dlib model file ('shape_5', 'shape_68', 'resnet', 'mmod').

    Found in `models_dir`, else in the installed `face_recognition_models` package, located
    without importing it (its __init__ needs pkg_resources, gone from new setuptools).
    """
    if kind not in _FILES:
        raise InputError(f"unknown dlib model {kind!r}; known: {', '.join(_FILES)}")
    if models_dir is None:
        spec = importlib.util.find_spec("face_recognition_models")
        if spec is None or spec.origin is None:
            raise ModelError("dlib models not found: install face-recognition-models or pass models_dir")
        models_dir = Path(spec.origin).parent / "models"
    path = Path(models_dir) / _FILES[kind]
    if not path.is_file():
        raise ModelError(f"dlib model file missing: {path}")
    return path


def _load(factory, path: Path, what: str):
    try:
        return factory(str(path))
    except RuntimeError as exc:
        first = (str(exc).strip().splitlines() or [""])[0]
        raise ModelError(f"{path} is not a dlib {what}: {first[:200]}") from exc


def _check_image(image: np.ndarray) -> np.ndarray:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise InputError(f"image must be RGB uint8 (H, W, 3), got {getattr(image, 'shape', type(image))}")
    return np.ascontiguousarray(image)


def _arcface_points(shape) -> np.ndarray:
    """The 5 ArcFace points (image-left eye first) from a 68-point dlib shape."""
    parts = np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float32)
    return np.stack(
        [parts[36:42].mean(axis=0), parts[42:48].mean(axis=0), parts[30], parts[48], parts[54]]
    ).astype(np.float32)


class DlibDetector:
    """dlib face detector with 68-point landmarks mapped to the ArcFace 5 points.

    Detection runs on a copy scaled so its longer side is at most `max_side`: HOG cost grows
    with pixels and faces in a bank image are large (on 512 px generated.photos faces, 256
    finds all 596 faces at ~11 ms CPU against ~29 ms at full size). The smallest face found
    is then ~80/256 of the longer side; when nothing is found, it retries once at up to
    `fallback_max_side`. Landmarks are always predicted at full
    resolution. Boxes are in original pixels and may extend past the image edge.
    """

    def __init__(
        self,
        *,
        model: str = "hog",  # 'hog' (fast, frontal) or 'cnn' (dlib's MMOD CNN: slow on CPU, more poses)
        upsample: int = 0,  # dlib pyramid upsampling steps (finds smaller faces, ~4x cost each)
        max_side: int | None = 256,  # detect on a copy at most this long; None = full size
        fallback_max_side: int | None = 1280,  # retry size when nothing is found; None = no retry
        models_dir: str | os.PathLike[str] | None = None,  # None = face_recognition_models
    ):
        lib = _require_dlib()
        if model not in ("hog", "cnn"):
            raise InputError(f"dlib detector model must be 'hog' or 'cnn', got {model!r}")
        if int(upsample) < 0:
            raise InputError(f"upsample must be >= 0, got {upsample}")
        self.model = model
        self.upsample = int(upsample)
        self.max_side = max_side
        self.fallback_max_side = fallback_max_side
        shape_path = dlib_model_path("shape_68", models_dir)
        self._predictor = _load(lib.shape_predictor, shape_path, "shape predictor")
        if model == "hog":
            self._detector = lib.get_frontal_face_detector()
            sha = file_sha256(shape_path)
            name = "dlib_hog+shape68"
        else:
            mmod_path = dlib_model_path("mmod", models_dir)
            self._detector = _load(lib.cnn_face_detection_model_v1, mmod_path, "MMOD detector")
            sha = file_sha256(mmod_path) + ":" + file_sha256(shape_path)
            name = "dlib_mmod+shape68"
        self.info = ModelInfo(name=name, sha256=sha, version=f"dlib {lib.__version__}")

    def __repr__(self) -> str:
        return f"DlibDetector(model={self.model!r}, upsample={self.upsample}, max_side={self.max_side})"

    def _raw(self, image: np.ndarray) -> list[tuple[tuple[float, float, float, float], float]]:
        """(box l,t,r,b exclusive, score) on `image` as given."""
        if self.model == "hog":
            rects, scores, _ = self._detector.run(image, self.upsample, 0.0)
            return [((r.left(), r.top(), r.right() + 1, r.bottom() + 1), float(s)) for r, s in zip(rects, scores)]
        found = self._detector(image, self.upsample)
        return [
            ((d.rect.left(), d.rect.top(), d.rect.right() + 1, d.rect.bottom() + 1), float(d.confidence))
            for d in found
        ]

    def _detect_scaled(self, image: np.ndarray, max_side: int | None):
        height, width = image.shape[:2]
        scale = 1.0 if max_side is None else min(1.0, max_side / max(height, width))
        if scale < 1.0:
            small = cv2.resize(
                image, (max(1, round(width * scale)), max(1, round(height * scale))), interpolation=cv2.INTER_AREA
            )
            sx, sy = small.shape[1] / width, small.shape[0] / height
        else:
            small, sx, sy = image, 1.0, 1.0
        raw = self._raw(small)
        return [((l / sx, t / sy, r / sx, b / sy), s) for (l, t, r, b), s in raw], scale

    def detect(self, image: np.ndarray) -> list[Detection]:
        """All faces in an RGB uint8 image, best (highest detector score) first."""
        image = _check_image(image)
        found, scale = self._detect_scaled(image, self.max_side)
        if not found and scale < 1.0 and self.fallback_max_side != self.max_side:
            found, _ = self._detect_scaled(image, self.fallback_max_side)
        found.sort(key=lambda item: -item[1])
        detections = []
        for (left, top, right, bottom), score in found:
            rect = dlib.rectangle(round(left), round(top), round(right) - 1, round(bottom) - 1)
            landmarks = _arcface_points(self._predictor(image, rect))
            box = np.array([left, top, right, bottom], dtype=np.float32)
            detections.append(Detection(box=box, landmarks=landmarks, score=score))
        return detections


class DlibEmbedder:
    """dlib's 128-d ResNet face descriptor ('dlib' space), L2-normalised.

    The face chip is aligned the way the network was trained: dlib's 5-point predictor run
    in the detection box, then dlib's own chip extraction (150 px, padding 0.25). The
    ArcFace landmarks of the detection are not used; boxes from dlib's detector work best.
    """

    space = "dlib"
    dim = 128

    def __init__(
        self,
        *,
        num_jitters: int = 0,  # extra randomly jittered forward passes averaged (0 = one plain pass)
        models_dir: str | os.PathLike[str] | None = None,  # None = face_recognition_models
    ):
        lib = _require_dlib()
        if int(num_jitters) < 0:
            raise InputError(f"num_jitters must be >= 0, got {num_jitters}")
        self.num_jitters = int(num_jitters)
        resnet_path = dlib_model_path("resnet", models_dir)
        shape_path = dlib_model_path("shape_5", models_dir)
        self._network = _load(lib.face_recognition_model_v1, resnet_path, "face recognition model")
        self._predictor = _load(lib.shape_predictor, shape_path, "shape predictor")
        self.info = ModelInfo(
            name="dlib_resnet_v1", sha256=file_sha256(resnet_path), version=f"dlib {lib.__version__}"
        )

    def __repr__(self) -> str:
        return f"DlibEmbedder(num_jitters={self.num_jitters})"

    def _shape(self, image: np.ndarray, detection: Detection):
        box = np.asarray(detection.box, dtype=np.float64)
        if box.shape != (4,) or not np.isfinite(box).all() or box[2] <= box[0] or box[3] <= box[1]:
            raise InputError(f"detection box must be finite (left, top, right, bottom), got {box}")
        rect = dlib.rectangle(round(box[0]), round(box[1]), round(box[2]) - 1, round(box[3]) - 1)
        return self._predictor(image, rect)

    def embed(self, image: np.ndarray, detection: Detection) -> np.ndarray:
        """Unit-norm float32 (128,) descriptor of the face in `detection.box`."""
        return self.embed_many(image, [detection])[0]

    def embed_many(self, image: np.ndarray, detections: list[Detection]) -> np.ndarray:
        """Unit-norm float32 (N, 128) descriptors of the faces of one image, in one network call.

        The ResNet is most of a photo's cost in this space (~130 ms a face on one core of
        this dlib build, which has no BLAS): one call for all faces saves its per-call setup.
        """
        image = _check_image(image)
        if not detections:
            return np.zeros((0, self.dim), np.float32)
        shapes = dlib.full_object_detections()
        for d in detections:
            shapes.append(self._shape(image, d))
        vectors = np.asarray([np.asarray(v) for v in self._network.compute_face_descriptor(image, shapes,
                                                                                           self.num_jitters)],
                             dtype=np.float32)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True) if vectors.ndim == 2 else np.zeros(1)
        if vectors.shape != (len(detections), self.dim) or not np.isfinite(norms).all() or (norms == 0).any():
            raise ModelError(f"dlib descriptor is invalid (shape {vectors.shape})")
        return vectors / norms
