"""The classical swapper: the target's face warped onto the real face, colour-matched, Poisson-blended.

No model beyond dlib's 68-point shape predictor (from `face-recognition-models`); CPU only and
deterministic (same photo, face and target: same bytes). Two geometries:

- `similarity`: the target's whole face under one similarity transform fitted on the 68 points.
  The target keeps its own eye spacing, nose, mouth and jaw; only position, size and roll follow
  the real face. Leaks least of the real identity (docs/swappers.md has the measured figures).
- `warp`: the same, then every triangle of a Delaunay triangulation of the real face's 68 points
  is filled with the target's matching triangle (piecewise affine). The result follows the real
  face's pose and expression, and therefore its shape, which a recogniser reads as identity.

The pasted region is the convex hull of the real face's 68 points (jaw, brows), shrunk a little
(with `similarity, region="both"`, also inside the placed target's own hull); the forehead, hair and background
stay the photo's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import cv2
import numpy as np
from scipy.spatial import Delaunay
from skimage.transform import SimilarityTransform

from facebank.errors import FaceRejected, InputError
from facebank.swap.blend import colour_match, feather_paste, poisson_paste, roi_around
from facebank.swap.landmarks68 import landmarks68

__all__ = ["GEOMETRIES", "ClassicalSwapper"]

GEOMETRIES = ("similarity", "warp")
MIN_TRIANGLE_AREA = 0.5  # px^2; a closed mouth puts inner-lip points together: such triangles are skipped


def _check_image(image) -> np.ndarray:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise InputError(f"image must be RGB uint8 (H, W, 3), got {getattr(image, 'shape', type(image))}")
    return image


def _area(tri: np.ndarray) -> float:
    (x0, y0), (x1, y1), (x2, y2) = tri
    return abs((x1 - x0) * (y2 - y0) - (x2 - x0) * (y1 - y0)) / 2.0


def fit_similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The (2, 3) least-squares similarity taking `src` points to `dst` points."""
    if hasattr(SimilarityTransform, "from_estimate"):  # scikit-image >= 0.26
        t = SimilarityTransform.from_estimate(src, dst)
        ok = bool(t)
    else:  # pragma: no cover - older scikit-image
        t = SimilarityTransform()
        ok = t.estimate(src, dst)
    m = t.params[:2] if ok else np.full((2, 3), np.nan)
    if not ok or not np.isfinite(m).all() or abs(np.linalg.det(m[:, :2])) < 1e-9:
        raise FaceRejected("landmarks_failed", "degenerate 68-point landmarks, no similarity transform")
    return m.copy()


def warp_triangles(src_img: np.ndarray, src_pts: np.ndarray, canvas: np.ndarray, dst_pts: np.ndarray) -> int:
    """Fill `canvas` (in place) triangle by triangle of the Delaunay triangulation of `dst_pts`.

    Each triangle gets `src_img`'s pixels under the affine map of its matching `src_pts` triangle.
    A triangle degenerate on either side is skipped (the canvas keeps what it had there): an
    affine map of collinear points is singular, and warping with it is what hung before.
    Returns the number of triangles filled.
    """
    h, w = canvas.shape[:2]
    filled = 0
    # Coincident points (closed lips) are merged by Qhull; "QJ" is not used: it would jitter randomly.
    for simplex in Delaunay(dst_pts).simplices:
        d, s = dst_pts[simplex].astype(np.float32), src_pts[simplex].astype(np.float32)
        if _area(d) < MIN_TRIANGLE_AREA or _area(s) < MIN_TRIANGLE_AREA:
            continue
        x0, y0 = np.floor(d.min(axis=0)).astype(int)
        x1, y1 = np.ceil(d.max(axis=0)).astype(int) + 1
        x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
        if x1 <= x0 or y1 <= y0:
            continue
        m = cv2.getAffineTransform(s, d - np.array([x0, y0], np.float32))
        if not np.isfinite(m).all():
            continue
        patch = cv2.warpAffine(src_img, m, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_REPLICATE)
        tri_mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
        cv2.fillConvexPoly(tri_mask, np.rint(d - np.array([x0, y0], np.float32)).astype(np.int32), 1,
                           lineType=cv2.LINE_8)
        region = canvas[y0:y1, x0:x1]
        region[tri_mask > 0] = patch[tri_mask > 0]
        filled += 1
    return filled


@dataclass(frozen=True)
class ClassicalSwapper:
    """Swap without a network (module docstring). Options are fixed at construction.

    Args:
        geometry: "similarity" (the target's own layout; default) or "warp" (the real face's layout).
        colour: match the target's Lab colour to the real face's before blending.
        blend: "poisson" (Poisson image editing, blend.poisson_paste) or "alpha" (feathered paste).
        region: with `similarity`, "real" (default) pastes over the real face's whole hull (the target's
            background may show as a smear where its face is narrower); "both" only inside both faces'
            hulls (cleaner, but the real jaw's skin stays and leaks: docs/swappers.md).
        shrink: the pasted hull is shrunk by this fraction of the face's size (keeps the seam on skin).
        feather: px of feathering for the alpha blend (and the fallback for tiny faces).
        models_dir: where dlib's model files are (None: the face-recognition-models package).
    """

    geometry: str = "similarity"
    colour: bool = True
    blend: str = "poisson"
    region: str = "real"  # measured: half the held-out leak of "both", same detection and gender kept
    shrink: float = 0.04
    feather: float = 3.0
    models_dir: str | None = None
    name: ClassVar[str] = "classical"

    def __post_init__(self):
        if self.geometry not in GEOMETRIES:
            raise InputError(f"classical geometry must be one of {', '.join(GEOMETRIES)}, got {self.geometry!r}")
        if self.region not in ("both", "real"):
            raise InputError(f"classical region must be 'both' or 'real', got {self.region!r}")
        if self.blend not in ("poisson", "alpha"):
            raise InputError(f"classical blend must be 'poisson' or 'alpha', got {self.blend!r}")
        if not 0.0 <= float(self.shrink) < 0.3:
            raise InputError(f"shrink must be in [0, 0.3), got {self.shrink}")
        if float(self.feather) < 0:
            raise InputError(f"feather must be >= 0, got {self.feather}")

    def swap(self, image: np.ndarray, face, target) -> np.ndarray:
        """A new RGB uint8 photo with `target`'s face on `face` (PhotoFace); `image` is not modified."""
        image = _check_image(image)
        tface = target.face()
        return self.swap_images(image, np.asarray(face.landmarks, np.float64), tface.image(),
                                np.asarray(tface.landmarks, np.float64))

    def swap_images(self, image: np.ndarray, points5: np.ndarray, target_image: np.ndarray,
                    target_points5: np.ndarray) -> np.ndarray:
        """`swap` on plain arrays: the real face by its 5 ArcFace points, the target by its image and points."""
        image, target_image = _check_image(image), _check_image(target_image)
        real = landmarks68(image, points5, self.models_dir)
        tgt = landmarks68(target_image, target_points5, self.models_dir)
        return self.swap_landmarks(image, real, target_image, tgt)

    def swap_landmarks(self, image: np.ndarray, real68: np.ndarray, target_image: np.ndarray,
                       target68: np.ndarray) -> np.ndarray:
        """The swap once both faces' 68 landmarks are known (photo pixels, target-image pixels)."""
        image, target_image = _check_image(image), _check_image(target_image)
        real68, target68 = np.asarray(real68, np.float64), np.asarray(target68, np.float64)
        if real68.shape != (68, 2) or target68.shape != (68, 2):
            raise InputError(f"68-point landmarks must be (68, 2), got {real68.shape} and {target68.shape}")
        if not (np.isfinite(real68).all() and np.isfinite(target68).all()):
            raise FaceRejected("landmarks_failed", "68-point landmarks contain NaN or infinity")
        roi = roi_around(real68, image.shape)
        dst = roi.cut(image)
        pts = roi.shift(real68)
        size = (roi.x1 - roi.x0, roi.y1 - roi.y0)
        sim = fit_similarity(target68, pts)
        warped = cv2.warpAffine(target_image, sim, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        if self.geometry == "warp":
            warp_triangles(target_image, target68, warped, pts)
        mask = self._mask(pts, dst.shape[:2])
        if self.geometry == "similarity" and self.region == "both":
            # Only where the target has face: its own outline may lie inside the real one, and its
            # hair or background pasted there would be a smear after blending.
            mask = np.minimum(mask, self._mask(target68 @ sim[:, :2].T + sim[:, 2], dst.shape[:2]))
        if self.colour:
            warped = colour_match(warped, dst, mask)
        if self.blend == "poisson":
            out = poisson_paste(dst, warped, mask, self.feather)
        else:
            out = feather_paste(dst, warped, mask, self.feather)
        result = image.copy()
        roi.put(result, out)
        return result

    def _mask(self, pts: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
        """The real face's convex hull, shrunk by `shrink` of the face's size, as a 0/255 mask."""
        mask = np.zeros(shape, np.uint8)
        hull = cv2.convexHull(np.rint(pts).astype(np.int32))
        cv2.fillConvexPoly(mask, hull, 255, lineType=cv2.LINE_8)
        r = int(round(self.shrink * float(np.ptp(pts, axis=0).max())))
        if r > 0:
            mask = cv2.erode(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1)))
        return mask
