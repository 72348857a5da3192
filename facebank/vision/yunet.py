"""OpenCV Zoo's YuNet face detector (ONNX), with 5 keypoints per face, decoded here.

Facts this follows (OpenCV's FaceDetectorYN and the model card):
- the network sees BGR, raw 0..255, no normalisation;
- 12 raw heads: cls, obj (probabilities), bbox, kps at strides 8, 16 and 32, one anchor per
  location, row-major; a face's score is sqrt(cls * obj); the box centre is (col + dx, row + dy)
  strides, its size exp(dw), exp(dh) strides; keypoints are (col + kx, row + ky) strides;
- keypoint order: right eye, left eye, nose tip, right and left mouth corner of the subject,
  i.e. image-left eye first: the ArcFace order facebank uses.
The dynamic-size model runs on the image itself (padded to a multiple of 32, shrunk only when its
longer side exceeds `max_side`), so small faces keep their pixels; the fixed 640x640 model gets
the image letterboxed (fitted, top-left, zero padding).
"""

from __future__ import annotations

import os

import cv2
import numpy as np

from facebank.errors import InputError, ModelError
from facebank.vision.model_files import file_sha256, onnx_session
from facebank.vision.scrfd import nms
from facebank.vision.types import Detection, ModelInfo

__all__ = ["YunetDetector"]

_STRIDES = (8, 16, 32)
_HEADS = ("cls", "obj", "bbox", "kps")


class YunetDetector:
    """YuNet from an .onnx file: face_detection_yunet_2023mar.onnx (640x640) or a dynamic-size export."""

    def __init__(
        self,
        model_path: str | os.PathLike[str],
        *,
        score_threshold: float = 0.6,  # OpenCV's sample default
        nms_threshold: float = 0.3,  # idem
        max_side: int = 2048,  # dynamic models: longer sides above this are shrunk to it
        threads: int | None = None,
    ):
        self._session = onnx_session(model_path, what="YuNet detector", threads=threads)
        inputs, outputs = self._session.get_inputs(), self._session.get_outputs()
        names = {o.name for o in outputs}
        want = {f"{h}_{s}" for h in _HEADS for s in _STRIDES}
        if len(inputs) != 1 or len(inputs[0].shape) != 4 or not want <= names:
            raise ModelError(f"{model_path} is not a YuNet detector: expects one (N, 3, H, W) input and outputs "
                             f"{', '.join(sorted(want))}")
        self._input_name = inputs[0].name
        height, width = inputs[0].shape[2:4]
        self.fixed = (width, height) if isinstance(height, int) and isinstance(width, int) else None
        if max_side < 64:
            raise InputError(f"max_side must be >= 64, got {max_side}")
        self.score_threshold, self.nms_threshold, self.max_side = float(score_threshold), float(nms_threshold), int(max_side)
        name = os.path.splitext(os.path.basename(str(model_path)))[0]
        self.info = ModelInfo(name=f"yunet:{name}", sha256=file_sha256(model_path), version="onnx")

    def __repr__(self) -> str:
        return f"YunetDetector({self.info.name!r}, input={'dynamic' if self.fixed is None else self.fixed})"

    def _canvas(self, image: np.ndarray) -> tuple[np.ndarray, float]:
        """The BGR network input and the scale from image pixels to input pixels."""
        h, w = image.shape[:2]
        if self.fixed is not None:
            in_w, in_h = self.fixed
            scale = min(in_w / w, in_h / h)
        else:
            scale = min(1.0, self.max_side / max(h, w))
            in_w, in_h = -(-int(round(w * scale)) // 32) * 32, -(-int(round(h * scale)) // 32) * 32
        new_w, new_h = max(1, int(round(w * scale))), max(1, int(round(h * scale)))
        resized = image if (new_w, new_h) == (w, h) else cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
        canvas = np.zeros((in_h, in_w, 3), dtype=np.uint8)
        canvas[:new_h, :new_w] = resized[:, :, ::-1]  # RGB -> BGR
        return canvas, scale

    def detect(self, image: np.ndarray) -> list[Detection]:
        """All faces in an RGB uint8 image, best first, in image pixels."""
        if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise InputError(f"image must be RGB uint8 (H, W, 3), got {getattr(image, 'shape', type(image))}")
        canvas, scale = self._canvas(image)
        blob = canvas.transpose(2, 0, 1)[None].astype(np.float32)
        names = [f"{h}_{s}" for s in _STRIDES for h in _HEADS]
        try:
            outs = dict(zip(names, self._session.run(names, {self._input_name: np.ascontiguousarray(blob)})))
        except Exception as exc:  # onnxruntime's errors are untyped
            raise ModelError(f"YuNet inference failed: {str(exc).splitlines()[0][:300]}") from exc
        in_h, in_w = canvas.shape[:2]
        all_scores, all_boxes, all_kps = [], [], []
        for s in _STRIDES:
            cols, rows = in_w // s, in_h // s
            cls, obj = outs[f"cls_{s}"].reshape(-1), outs[f"obj_{s}"].reshape(-1)
            if cls.size != rows * cols:
                raise ModelError(f"YuNet head cls_{s} has {cls.size} rows, expected {rows * cols} for {in_w}x{in_h}")
            score = np.sqrt(np.clip(cls, 0, 1) * np.clip(obj, 0, 1))
            keep = np.flatnonzero(score >= self.score_threshold)
            if keep.size == 0:
                continue
            col, row = (keep % cols).astype(np.float32), (keep // cols).astype(np.float32)
            bbox = outs[f"bbox_{s}"].reshape(-1, 4)[keep]
            kps = outs[f"kps_{s}"].reshape(-1, 10)[keep]
            cx, cy = (col + bbox[:, 0]) * s, (row + bbox[:, 1]) * s
            bw, bh = np.exp(bbox[:, 2]) * s, np.exp(bbox[:, 3]) * s
            all_boxes.append(np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], axis=1))
            pts = kps.reshape(-1, 5, 2)
            all_kps.append(np.stack([(pts[:, :, 0] + col[:, None]) * s, (pts[:, :, 1] + row[:, None]) * s], axis=2))
            all_scores.append(score[keep])
        if not all_scores:
            return []
        scores = np.concatenate(all_scores)
        boxes = np.concatenate(all_boxes) / scale
        points = np.concatenate(all_kps) / scale
        return [Detection(box=boxes[i].astype(np.float32), landmarks=points[i].astype(np.float32), score=float(scores[i]))
                for i in nms(boxes, scores, self.nms_threshold)]
