"""5-point similarity alignment to the ArcFace 112x112 template.

Every 112 crop facebank stores or embeds comes from here, whichever detector found the
landmarks, so crops from different detectors (and from InsightFace itself) are comparable.
"""

from __future__ import annotations

import cv2
import numpy as np
from skimage.transform import SimilarityTransform

from facebank.errors import FaceRejected, InputError

__all__ = ["ARCFACE_TEMPLATE", "FFHQ_MEAN_POINTS", "SIMSWAP_TEMPLATES", "TEMPLATES", "align_face", "align_to_swapper",
           "arcface_template", "estimate_similarity", "ffhq_matrix", "swapper_matrix"]

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

# InsightFace's older five pose templates for a 112 crop (left profile, left, frontal, right, right
# profile; same point order). SimSwap's 224 crop (its "None" mode, every size but 512) scales all
# five by 224/112 and warps with the one the landmarks fit best: not `arcface_dst` twice.
SIMSWAP_TEMPLATES = np.array(
    [
        [[51.642, 50.115], [57.617, 49.990], [35.740, 69.007], [51.157, 89.050], [57.025, 89.702]],
        [[45.031, 50.118], [65.568, 50.872], [39.677, 68.111], [45.177, 86.190], [64.246, 86.758]],
        [[39.730, 51.138], [72.270, 51.138], [56.000, 68.493], [42.463, 87.010], [69.537, 87.010]],
        [[46.845, 50.872], [67.382, 50.118], [72.737, 68.111], [48.167, 86.758], [67.236, 86.190]],
        [[54.796, 49.990], [60.771, 50.115], [76.673, 69.007], [55.388, 89.702], [61.257, 89.050]],
    ],
    dtype=np.float32,
)
SIMSWAP_TEMPLATES.flags.writeable = False

# Where the 5 points lie on average in FFHQ's aligned images, at 512 px (the template SimSwap-512
# and GFPGAN-style restorers use). `ffhq_matrix` does not fit to it: it is the reference its crops
# are checked against.
FFHQ_MEAN_POINTS = np.array(
    [[192.98138, 239.94708], [318.90277, 240.1936], [256.63416, 314.01935], [201.26117, 371.41043],
     [313.08905, 371.15118]],
    dtype=np.float32,
)
FFHQ_MEAN_POINTS.flags.writeable = False

TEMPLATES = ("arcface", "simswap", "ffhq")


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


def ffhq_matrix(landmarks: np.ndarray, size: int) -> np.ndarray:
    """The (2, 3) similarity of FFHQ's alignment: the crop is fixed by the eyes and mouth corners alone.

    As FFHQ's dataset script: c = eye midpoint + 0.1 * (eye midpoint -> mouth midpoint); the crop is
    the square centred on c, with its x axis along (eye to eye) minus (eye to mouth) turned by 90
    degrees, and half-side max(2 * eye distance, 1.8 * eye-to-mouth distance). The nose is unused.
    """
    p = _points(landmarks, "landmarks")
    eye_avg, mouth_avg = (p[0] + p[1]) / 2, (p[3] + p[4]) / 2
    eye_to_eye, eye_to_mouth = p[1] - p[0], mouth_avg - eye_avg
    x = eye_to_eye - np.array([-eye_to_mouth[1], eye_to_mouth[0]])
    norm = np.hypot(*x)
    if norm < 1e-9:
        raise FaceRejected("landmarks_failed", "degenerate landmarks, no FFHQ crop")
    x *= max(np.hypot(*eye_to_eye) * 2.0, np.hypot(*eye_to_mouth) * 1.8) / norm
    y = np.array([-x[1], x[0]])
    c = eye_avg + eye_to_mouth * 0.1
    quad = np.array([c - x - y, c - x + y, c + x + y], dtype=np.float32)  # top-left, bottom-left, bottom-right
    edge = -0.5, size - 0.5  # the quad's corners are the crop's outer pixel edges (pixel centres are integers)
    corners = np.array([[edge[0], edge[0]], [edge[0], edge[1]], [edge[1], edge[1]]], dtype=np.float32)
    return cv2.getAffineTransform(quad, corners).astype(np.float64)


def _default_template(size: int) -> str:
    return {224: "simswap", 256: "ffhq"}.get(size, "arcface")


def swapper_matrix(landmarks: np.ndarray, size: int, template: str | None = None) -> np.ndarray:
    """The (2, 3) warp of `landmarks` to a swapper's `size` crop under `template` (see align_to_swapper)."""
    template = _default_template(size) if template is None else template
    if template == "arcface":
        return estimate_similarity(landmarks, arcface_template(size))
    if template == "simswap":
        best, best_err = None, np.inf
        src = _points(landmarks, "landmarks")
        for t in SIMSWAP_TEMPLATES * (size / 112.0):
            m = estimate_similarity(src, t)
            err = np.linalg.norm(src @ m[:, :2].T + m[:, 2] - t, axis=1).sum()
            if err < best_err:
                best, best_err = m, err
        return best
    if template == "ffhq":
        return ffhq_matrix(landmarks, size)
    raise InputError(f"template must be one of {', '.join(TEMPLATES)}, got {template!r}")


MAX_CROP = 4096  # pixels a side: a 4096 crop is 50 MB; 100000 would be 30 GB (a typo, not a swapper)


def _check_size(size) -> None:
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or not 16 <= size <= MAX_CROP:
        raise InputError(f"size must be an integer from 16 to {MAX_CROP} (pixels a side), got {size!r}")


def align_to_swapper(image: np.ndarray, landmarks: np.ndarray, size: int = 112,
                     template: str | None = None) -> np.ndarray:
    """The face warped to the crop a swapper expects: uint8 (size, size, 3), black outside the image.

    template "arcface": InsightFace's rule (112 ArcFace; 128 inswapper, shifted; multiples of 112
    scaled); "simswap": SimSwap's 224 crop (the best of five pose templates); "ffhq": FFHQ's
    eye/mouth crop (256 FFHQ-style, any size). None: simswap at 224, ffhq at 256, else arcface.
    """
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise InputError(f"image must be uint8 (H, W, 3), got {getattr(image, 'shape', type(image))}")
    _check_size(size)
    matrix = swapper_matrix(landmarks, int(size), template)
    return cv2.warpAffine(image, matrix, (int(size), int(size)), flags=cv2.INTER_LINEAR, borderValue=0.0)


def align_face(image: np.ndarray, landmarks: np.ndarray, size: int = 112) -> np.ndarray:
    """The face warped onto the ArcFace template: uint8 (size, size, 3), same channel order.

    `size` scales the 112 template (224 gives the same crop at twice the resolution).
    Pixels outside the image are black, as in InsightFace's `norm_crop`.
    """
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise InputError(f"image must be uint8 (H, W, 3), got {getattr(image, 'shape', type(image))}")
    _check_size(size)
    matrix = estimate_similarity(landmarks, ARCFACE_TEMPLATE * (size / 112.0))
    return cv2.warpAffine(image, matrix, (int(size), int(size)), flags=cv2.INTER_LINEAR, borderValue=0.0)
