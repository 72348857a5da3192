"""Decide whether an image holds exactly one usable face, with a reason when it does not."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from facebank.errors import FaceRejected, InputError
from facebank.vision.types import Detection

__all__ = ["select_single_face"]


def _side(box: np.ndarray) -> float:
    """Geometric-mean side of a box, the face 'size' compared across faces."""
    return float(np.sqrt(max(box[2] - box[0], 0.0) * max(box[3] - box[1], 0.0)))


def select_single_face(
    detections: Sequence[Detection],
    image_shape: tuple[int, ...],
    *,
    min_face_px: float = 64,  # the face's shorter box side must reach this (original pixels)
    second_face_ratio: float = 0.5,  # another face at least this fraction of the main face's size rejects the image
) -> Detection:
    """The one face of an image, or FaceRejected with reason
    'no_face', 'multiple_faces', 'face_too_small' or 'landmarks_failed'.

    The main face is the largest; small background faces (under `second_face_ratio` of its
    size) are tolerated because they do not change whose identity the image carries.
    """
    if len(image_shape) < 2 or image_shape[0] <= 0 or image_shape[1] <= 0:
        raise InputError(f"image_shape must be (H, W, ...), got {image_shape}")
    if not 0.0 < second_face_ratio <= 1.0:
        raise InputError(f"second_face_ratio must be in (0, 1], got {second_face_ratio}")
    if not detections:
        raise FaceRejected("no_face", "the detector found no face")
    sides = [_side(np.asarray(d.box, dtype=np.float64)) for d in detections]
    main = int(np.argmax(sides))
    others = [s for i, s in enumerate(sides) if i != main and s >= second_face_ratio * sides[main]]
    if others:
        raise FaceRejected(
            "multiple_faces", f"{len(others) + 1} faces of comparable size (largest {sides[main]:.0f} px)"
        )
    face = detections[main]
    box = np.asarray(face.box, dtype=np.float64)
    shorter = float(min(box[2] - box[0], box[3] - box[1]))
    if shorter < min_face_px:
        raise FaceRejected("face_too_small", f"face box {shorter:.0f} px < {min_face_px} px")
    points = np.asarray(face.landmarks, dtype=np.float64)
    if points.shape != (5, 2) or not np.isfinite(points).all():
        raise FaceRejected("landmarks_failed", "landmarks missing or not finite")
    # Landmarks well outside the (generously grown) box, or eyes on top of each other,
    # mean the landmark model failed; alignment from them would be garbage.
    width, height = box[2] - box[0], box[3] - box[1]
    grown = box + np.array([-0.5 * width, -0.5 * height, 0.5 * width, 0.5 * height])
    inside = (points[:, 0] >= grown[0]) & (points[:, 0] <= grown[2]) & (points[:, 1] >= grown[1]) & (points[:, 1] <= grown[3])
    eye_distance = float(np.linalg.norm(points[1] - points[0]))
    if not inside.all() or eye_distance < 0.1 * width:
        raise FaceRejected("landmarks_failed", f"implausible landmarks (eye distance {eye_distance:.1f} px)")
    return face
