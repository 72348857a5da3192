"""Two detection passes, for photos whose faces span from 40 px to the whole frame.

One input size cannot serve both: SCRFD at 640 shrinks a 1080p frame 4x, so a 40 px face
becomes 10 px and one in three is lost; at 1280, close-up portraits outgrow its largest anchors
and 11 of the 61 deepface photos lose their only face (docs/anonymize.md). The coarse pass finds
the large faces, the fine pass the small ones; a fine face is kept only when it is small (where
the coarse pass is weak) and no coarse face overlaps it.
"""

from __future__ import annotations

import numpy as np

from facebank.vision.scrfd import nms
from facebank.vision.types import Detection, ModelInfo

__all__ = ["TwoPassDetector"]


class TwoPassDetector:
    """`coarse` for every face, plus `fine`'s faces smaller than `small_px` that `coarse` did not find."""

    def __init__(self, coarse, fine, *, small_px: float = 96.0, iou_threshold: float = 0.3):
        self.coarse, self.fine = coarse, fine
        self.small_px, self.iou_threshold = float(small_px), float(iou_threshold)
        info = coarse.info
        self.info = ModelInfo(name=f"{info.name}+fine", sha256=info.sha256, version=info.version)

    def __repr__(self) -> str:
        return f"TwoPassDetector({self.coarse!r}, {self.fine!r}, small_px={self.small_px})"

    def detect(self, image: np.ndarray) -> list[Detection]:
        found = list(self.coarse.detect(image))
        small = [d for d in self.fine.detect(image) if max(d.box[2] - d.box[0], d.box[3] - d.box[1]) < self.small_px]
        if not small:
            return found
        every = found + small
        boxes = np.array([d.box for d in every], dtype=np.float32)
        # Coarse faces first in the order: on overlap the coarse face wins, whatever the scores.
        rank = np.concatenate([np.full(len(found), 2.0), np.clip([d.score for d in small], 0, 1)])
        return [every[i] for i in sorted(nms(boxes, rank, self.iou_threshold).tolist())]
