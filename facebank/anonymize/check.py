"""The result check: find the face again in the swapped photo and compare it with the real one.

The picker guarantees the *target* is dissimilar to the real face; the swapped result carries
the real face's shape, skin and surroundings, so it is checked on its own: re-detected at its
box (in a crop around it, so the check costs one small detection), embedded in every space of
the build, and compared with the real face's embedding against the result thresholds.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from facebank.anonymize.report import ResultCheck
from facebank.pick.analyse import FaceAnalyser, PhotoFace

__all__ = ["check_result", "cosine", "iou", "crop_around", "redetect"]

_PAD = 0.6  # the crop around the box: this much of the face's size on every side
_MIN_IOU = 0.3  # a detection in the crop is the same face when it overlaps the box this much


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    n = math.sqrt(float(a @ a) * float(b @ b))
    return float(a @ b) / n if n > 0 else 0.0


def iou(a, b) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def crop_around(shape: tuple[int, ...], box, pad: float = _PAD) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1): the box grown by `pad` of its size on every side, clipped to the image."""
    h, w = shape[:2]
    x0, y0, x1, y1 = box
    side = max(x1 - x0, y1 - y0)
    return (max(0, int(x0 - pad * side)), max(0, int(y0 - pad * side)),
            min(w, int(math.ceil(x1 + pad * side))), min(h, int(math.ceil(y1 + pad * side))))


def redetect(analyser: FaceAnalyser, result: np.ndarray, box) -> PhotoFace | None:
    """The face found again in `result` (RGB) at `box`, its box in the image's pixels; None when none overlaps it."""
    x0, y0, x1, y1 = crop_around(result.shape, box)
    found = analyser.get(np.ascontiguousarray(result[y0:y1, x0:x1]))
    local = [box[0] - x0, box[1] - y0, box[2] - x0, box[3] - y0]
    best = max(found, key=lambda f: iou(f.box, local), default=None)
    if best is None or iou(best.box, local) < _MIN_IOU:
        return None
    return replace(best, box=[round(best.box[0] + x0, 1), round(best.box[1] + y0, 1),
                              round(best.box[2] + x0, 1), round(best.box[3] + y0, 1)])


def check_result(analyser: FaceAnalyser, result: np.ndarray, face: PhotoFace, thresholds: dict[str, float],
                 *, need_face: bool = True, found: list | None = None) -> ResultCheck:
    """Re-detect `face` in `result` (RGB) near its box and compare it with the real face in every space.

    need_face: a swap must leave a detectable face (otherwise it failed); a fallback need not
    (a blurred face nobody detects is not matched either).
    found: a list the re-detected face (a PhotoFace, with its embeddings) is appended to.
    """
    best = redetect(analyser, result, face.box)
    if best is None:
        return ResultCheck(redetected=False, similarities={}, thresholds=dict(thresholds), passed=not need_face)
    if found is not None:
        found.append(best)
    sims = {s: cosine(best.embeddings[s], face.embeddings[s]) for s in thresholds}
    passed = all(sims[s] <= t for s, t in thresholds.items())
    return ResultCheck(redetected=True, similarities=sims, thresholds=dict(thresholds), passed=passed,
                       age=best.age, gender=best.gender, box=best.box)
