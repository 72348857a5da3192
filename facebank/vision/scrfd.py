"""InsightFace SCRFD face detector (ONNX), with 5 keypoints per face.

Facts from InsightFace's own runner (model_zoo/scrfd.py) that this follows:
- the network sees RGB: InsightFace passes a BGR cv2 image with swapRB=True, so our RGB
  arrays go in unchanged; pixels are (x - 127.5) / 128;
- the image is letterboxed: resized to fit the input keeping its aspect ratio, placed top-left,
  the rest zero. Unlike InsightFace we fit it into `fill` (0.75) of the input by default:
  SCRFD's largest anchors are too small for close-up portraits filling a 640 input (scores
  drop from ~0.85 to ~0.5 on generated.photos faces, the 2.5g model then misses them);
- outputs are scores (N, 1), box distances (N, 4) and keypoint offsets (N, 10) per stride,
  in stride units, around anchor centres laid out row-major with `num_anchors` per location.
Outputs are matched to strides by their shapes, not their order, so exports that list them
differently still decode.
"""

from __future__ import annotations

import os

import cv2
import numpy as np

from facebank.errors import InputError, ModelError
from facebank.vision.model_files import file_sha256, onnx_session
from facebank.vision.types import Detection, ModelInfo

__all__ = ["ScrfdDetector", "nms"]

_STRIDES = (8, 16, 32, 64, 128)
# Black kept below and right of the image on a tight canvas: without it a face cut by the frame's
# edge meets the network's own (grey) padding instead of the black it was trained with, and on the
# deepface photos one such face was lost (img62). With 96 px its box stays within IoU 0.96 of the
# square canvas's and its embedding within cosine 0.994 (64 px: 0.93 and 0.974).
_TIGHT_PAD = 96


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Indices kept by greedy non-maximum suppression, highest score first.

    boxes: float (N, 4) left, top, right, bottom; scores: (N,).
    """
    order = np.argsort(-scores, kind="stable")
    areas = np.maximum(boxes[:, 2] - boxes[:, 0], 0) * np.maximum(boxes[:, 3] - boxes[:, 1], 0)
    keep = []
    while order.size:
        best, rest = order[0], order[1:]
        keep.append(best)
        width = np.clip(np.minimum(boxes[best, 2], boxes[rest, 2]) - np.maximum(boxes[best, 0], boxes[rest, 0]), 0, None)
        height = np.clip(np.minimum(boxes[best, 3], boxes[rest, 3]) - np.maximum(boxes[best, 1], boxes[rest, 1]), 0, None)
        inter = width * height
        iou = inter / np.maximum(areas[best] + areas[rest] - inter, 1e-9)
        order = rest[iou <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)


class ScrfdDetector:
    """SCRFD detector from an .onnx file (e.g. buffalo_l/det_10g.onnx, det_500m.onnx)."""

    def __init__(
        self,
        model_path: str | os.PathLike[str],  # the .onnx file
        *,
        input_size: tuple[int, int] = (640, 640),  # (width, height); ignored for fixed-size models
        fill: float = 0.75,  # the image's longer side fills at most this fraction of the input (1 = InsightFace)
        score_threshold: float = 0.5,  # minimum face score, as InsightFace's default
        nms_threshold: float = 0.4,  # IoU above which a lower-scored box is dropped
        threads: int | None = None,  # onnxruntime intra-op threads; None = facebank.vision.model_files' default
        canvas: str = "tight",  # "tight": the fitted image padded to the coarsest stride; "full": input_size
    ):
        self._session = onnx_session(model_path, what="SCRFD detector", threads=threads)
        inputs = self._session.get_inputs()
        outputs = self._session.get_outputs()
        if len(inputs) != 1 or len(inputs[0].shape) != 4 or inputs[0].shape[1] not in (3, "?", None):
            raise ModelError(f"{model_path} is not an SCRFD detector: expects one (N, 3, H, W) input")
        if len(outputs) not in (9, 15):
            raise ModelError(
                f"{model_path} is not an SCRFD detector with keypoints: {len(outputs)} outputs, expected 9 or 15"
            )
        self._input_name = inputs[0].name
        self._output_names = [o.name for o in outputs]
        height, width = inputs[0].shape[2:4]
        self._fixed = isinstance(height, int) and isinstance(width, int)
        if self._fixed:
            self.input_size = (width, height)  # the model fixes it
        else:
            self.input_size = (int(input_size[0]), int(input_size[1]))
        if min(self.input_size) < 32 or any(side % 32 for side in self.input_size):
            raise InputError(f"SCRFD input size must be multiples of 32, got {self.input_size}")
        if not 0.1 <= fill <= 1.0:
            raise InputError(f"fill must be in [0.1, 1], got {fill}")
        self.fill = float(fill)
        if canvas not in ("tight", "full"):
            raise InputError(f"canvas must be 'tight' or 'full', got {canvas!r}")
        # A fixed-size model takes only its own input; a dynamic one gets the fitted image padded to
        # a multiple of its coarsest stride: the same scale (so the same faces) at ~half the pixels
        # of a square 640 canvas for a 4:3 photo.
        self.canvas = "full" if self._fixed else canvas
        self._align = _STRIDES[len(outputs) // 3 - 1]
        self.score_threshold = float(score_threshold)
        self.nms_threshold = float(nms_threshold)
        self._centres: dict[tuple[int, int, int, int], np.ndarray] = {}
        name = os.path.splitext(os.path.basename(str(model_path)))[0]
        self.info = ModelInfo(name=f"scrfd:{name}", sha256=file_sha256(model_path), version="onnx")

    def __repr__(self) -> str:
        return f"ScrfdDetector({self.info.name!r}, input_size={self.input_size})"

    def _anchor_centres(self, rows: int, cols: int, stride: int, anchors: int) -> np.ndarray:
        key = (rows, cols, stride, anchors)
        if key not in self._centres:
            ys, xs = np.mgrid[:rows, :cols]
            centres = np.stack([xs, ys], axis=-1).reshape(-1, 2).astype(np.float32) * stride
            self._centres[key] = np.repeat(centres, anchors, axis=0)
        return self._centres[key]

    def _letterbox(self, image: np.ndarray) -> tuple[np.ndarray, float, float]:
        height, width = image.shape[:2]
        in_w, in_h = self.input_size
        scale = min(in_w / width, in_h / height) * self.fill
        new_w, new_h = max(1, int(width * scale)), max(1, int(height * scale))
        resized = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
        if self.canvas == "tight":
            pad = _TIGHT_PAD + self._align - 1
            in_w, in_h = (new_w + pad) // self._align * self._align, (new_h + pad) // self._align * self._align
        canvas = np.zeros((in_h, in_w, 3), dtype=np.uint8)
        canvas[:new_h, :new_w] = resized
        return canvas, new_w / width, new_h / height

    def _split_outputs(self, outs: list[np.ndarray]):
        """Group raw outputs by kind (last dim 1/4/10) and assign strides by row count."""
        by_kind: dict[int, list[np.ndarray]] = {1: [], 4: [], 10: []}
        for out in outs:
            array = out.reshape(-1, out.shape[-1])
            if array.shape[1] not in by_kind:
                raise ModelError(f"unexpected SCRFD output shape {out.shape}")
            by_kind[array.shape[1]].append(array)
        levels = len(by_kind[1])
        if not levels or any(len(v) != levels for v in by_kind.values()):
            raise ModelError("SCRFD outputs do not form score/box/keypoint triples")
        # More rows = finer stride; order each kind the same way.
        for kind in by_kind:
            by_kind[kind].sort(key=lambda a: -a.shape[0])
        return list(zip(_STRIDES[:levels], by_kind[1], by_kind[4], by_kind[10]))

    def detect(self, image: np.ndarray) -> list[Detection]:
        """All faces in an RGB uint8 image, best (highest score) first, in original pixels."""
        if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise InputError(f"image must be RGB uint8 (H, W, 3), got {getattr(image, 'shape', type(image))}")
        canvas, sx, sy = self._letterbox(image)
        # (x - 127.5) / 128 and HWC -> NCHW in one pass (1/128 is exact: the same floats as numpy's)
        blob = cv2.dnn.blobFromImage(canvas, 1.0 / 128.0, mean=(127.5, 127.5, 127.5), swapRB=False)
        try:
            outs = self._session.run(self._output_names, {self._input_name: blob})
        except Exception as exc:  # onnxruntime's errors are untyped
            raise ModelError(f"SCRFD inference failed: {str(exc).splitlines()[0][:300]}") from exc
        in_h, in_w = canvas.shape[:2]
        all_scores, all_boxes, all_kps = [], [], []
        for stride, scores, dists, kps in self._split_outputs(outs):
            rows, cols = in_h // stride, in_w // stride
            anchors = scores.shape[0] // (rows * cols)
            if anchors < 1 or anchors * rows * cols != scores.shape[0]:
                raise ModelError(f"SCRFD output with {scores.shape[0]} rows does not fit stride {stride}")
            keep = np.flatnonzero(scores[:, 0] >= self.score_threshold)
            if keep.size == 0:
                continue
            centres = self._anchor_centres(rows, cols, stride, anchors)[keep]
            d = dists[keep] * stride
            all_boxes.append(np.concatenate([centres - d[:, :2], centres + d[:, 2:]], axis=1))
            all_kps.append(np.tile(centres, 5) + kps[keep] * stride)
            all_scores.append(scores[keep, 0])
        if not all_scores:
            return []
        scores = np.concatenate(all_scores)
        boxes = np.concatenate(all_boxes)
        points = np.concatenate(all_kps).reshape(-1, 5, 2)
        # Back to original pixels (the letterbox is anchored top-left, so no offset).
        boxes = boxes / np.array([sx, sy, sx, sy], dtype=np.float32)
        points = points / np.array([sx, sy], dtype=np.float32)
        return [
            Detection(box=boxes[i].astype(np.float32), landmarks=points[i].astype(np.float32), score=float(scores[i]))
            for i in nms(boxes, scores, self.nms_threshold)
        ]
