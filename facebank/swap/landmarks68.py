"""dlib's 68 landmarks of a face given by its 5 ArcFace points, for the classical swapper.

The 68-point predictor needs a face rectangle in dlib's detector convention. Detectors differ
in how they draw boxes (SCRFD's and YuNet's are taller than dlib's), so the rectangle is made
from the 5 points instead: DLIB_BOX_112, the mean dlib HOG box in the 112 ArcFace crop, mapped
back into the photo. The same rectangle serves a real face (any detector) and a bank target
(stored 5 points), so both sides are fitted alike.
"""

from __future__ import annotations

import functools

import numpy as np

from facebank.errors import FaceRejected, InputError, ModelError
from facebank.vision.align import ARCFACE_TEMPLATE, estimate_similarity
from facebank.vision.dlib_models import DLIB_BOX_112, dlib_model_path

__all__ = ["JAW", "landmarks68", "rect_from_points"]

JAW = slice(0, 17)  # the face outline; 17-26 brows, 27-35 nose, 36-47 eyes, 48-67 mouth


@functools.lru_cache(maxsize=2)
def _predictor(models_dir: str | None):
    try:
        import dlib
    except ImportError as exc:  # pragma: no cover - dlib-bin is a dependency
        raise ModelError("dlib is not installed (pip install dlib-bin)") from exc
    path = dlib_model_path("shape_68", models_dir)
    try:
        return dlib.shape_predictor(str(path))
    except RuntimeError as exc:
        raise ModelError(f"{path} is not a dlib shape predictor: {str(exc).splitlines()[0][:200]}") from exc


def rect_from_points(points5: np.ndarray) -> tuple[float, float, float, float]:
    """(left, top, right, bottom) of dlib's usual face box for a face with these 5 ArcFace points."""
    m = estimate_similarity(np.asarray(points5, dtype=np.float64), ARCFACE_TEMPLATE)  # photo -> 112 crop
    scale = float(np.hypot(m[0, 0], m[0, 1]))
    inv = np.linalg.inv(np.vstack([m, [0.0, 0.0, 1.0]]))[:2]
    l, t, r, b = DLIB_BOX_112
    cx, cy = inv @ np.array([(l + r) / 2, (t + b) / 2, 1.0])
    hw, hh = (r - l) / 2 / scale, (b - t) / 2 / scale
    return cx - hw, cy - hh, cx + hw, cy + hh


def landmarks68(image: np.ndarray, points5, models_dir: str | None = None) -> np.ndarray:
    """(68, 2) float64 landmarks of the face whose 5 ArcFace points are `points5`, in `image` pixels.

    Raises FaceRejected('landmarks_failed') for degenerate 5 points, InputError for a bad image.
    """
    import dlib

    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise InputError(f"image must be RGB uint8 (H, W, 3), got {getattr(image, 'shape', type(image))}")
    pts = np.asarray(points5, dtype=np.float64)
    if pts.shape != (5, 2) or not np.isfinite(pts).all():
        raise FaceRejected("landmarks_failed", f"need 5 finite (x, y) landmarks, got shape {pts.shape}")
    l, t, r, b = rect_from_points(pts)
    rect = dlib.rectangle(int(round(l)), int(round(t)), int(round(r)) - 1, int(round(b)) - 1)
    shape = _predictor(None if models_dir is None else str(models_dir))(np.ascontiguousarray(image), rect)
    return np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)
