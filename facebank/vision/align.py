"""5-point similarity alignment to the ArcFace 112x112 template.

Every 112 crop facebank stores or embeds comes from here, whichever detector found the
landmarks, so crops from different detectors (and from InsightFace itself) are comparable.
"""

from __future__ import annotations

import cv2
import numpy as np
from skimage.transform import SimilarityTransform

from facebank.errors import FaceRejected, InputError

__all__ = ["ARCFACE_TEMPLATE", "align_face", "align_to_swapper", "arcface_template", "estimate_similarity"]

# InsightFace's `arcface_dst` (utils/face_align.py) for a 112x112 crop: left eye, right eye,
# nose tip, left mouth corner, right mouth corner, as x, y in pixels.
ARCFACE_TEMPLATE = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float32,
)
ARCFACE_TEMPLATE.flags.writeable = False


def _points(landmarks: np.ndarray, what: str) -> np.ndarray:
    points = np.asarray(landmarks, dtype=np.float64)
    if points.shape != (5, 2):
        raise InputError(f"{what} must have shape (5, 2), got {points.shape}")
    if not np.isfinite(points).all():
        raise InputError(f"{what} contains NaN or infinity")
    return points


def estimate_similarity(landmarks: np.ndarray, template: np.ndarray = ARCFACE_TEMPLATE) -> np.ndarray:
    """The (2, 3) float64 similarity (rotation, uniform scale, shift) taking `landmarks` to `template`.

    Least squares (Umeyama) over the 5 point pairs, as InsightFace's `estimate_norm`.

    Raises:
        InputError: either array is not (5, 2) finite.
        FaceRejected('landmarks_failed'): the points are degenerate (e.g. all equal).
    """
    src = _points(landmarks, "landmarks")
    dst = _points(template, "template")
    if hasattr(SimilarityTransform, "from_estimate"):  # scikit-image >= 0.26
        transform = SimilarityTransform.from_estimate(src, dst)
        ok = bool(transform)
    else:
        transform = SimilarityTransform()
        ok = transform.estimate(src, dst)
    matrix = transform.params[:2] if ok else np.full((2, 3), np.nan)
    if not ok or not np.isfinite(matrix).all() or abs(np.linalg.det(matrix[:, :2])) < 1e-12:
        raise FaceRejected("landmarks_failed", "degenerate landmarks, no similarity transform")
    return matrix.copy()


def arcface_template(size: int) -> np.ndarray:
    """The 5 ArcFace points for a `size` crop, by InsightFace's rule for swappers' inputs.

    Multiples of 112 scale the 112 template (224: twice the resolution); other sizes scale it
    by size/128 and shift it right by 8*size/128 px, as InsightFace aligns inswapper's 128 input.
    """
    if size % 112 == 0:
        return ARCFACE_TEMPLATE * (size / 112.0)
    ratio = size / 128.0
    return ARCFACE_TEMPLATE * ratio + np.array([8.0 * ratio, 0.0], dtype=np.float32)


def align_to_swapper(image: np.ndarray, landmarks: np.ndarray, size: int = 112) -> np.ndarray:
    """The face warped to the ArcFace-family crop a swapper expects at `size` (112, 128, 224, ...)."""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise InputError(f"image must be uint8 (H, W, 3), got {getattr(image, 'shape', type(image))}")
    if not isinstance(size, (int, np.integer)) or size < 16:
        raise InputError(f"size must be an integer >= 16, got {size!r}")
    matrix = estimate_similarity(landmarks, arcface_template(int(size)))
    return cv2.warpAffine(image, matrix, (int(size), int(size)), flags=cv2.INTER_LINEAR, borderValue=0.0)


def align_face(image: np.ndarray, landmarks: np.ndarray, size: int = 112) -> np.ndarray:
    """The face warped onto the ArcFace template: uint8 (size, size, 3), same channel order.

    `size` scales the 112 template (224 gives the same crop at twice the resolution).
    Pixels outside the image are black, as in InsightFace's `norm_crop`.
    """
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise InputError(f"image must be uint8 (H, W, 3), got {getattr(image, 'shape', type(image))}")
    if not isinstance(size, (int, np.integer)) or size < 16:
        raise InputError(f"size must be an integer >= 16, got {size!r}")
    matrix = estimate_similarity(landmarks, ARCFACE_TEMPLATE * (size / 112.0))
    return cv2.warpAffine(image, matrix, (int(size), int(size)), flags=cv2.INTER_LINEAR, borderValue=0.0)
