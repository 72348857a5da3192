"""The small interfaces every detector, attribute model and embedder implements.

Images are RGB uint8 arrays of shape (H, W, 3), C-contiguous, never modified in place.
Landmarks are the 5 ArcFace points in image pixels, in this order: left eye, right eye,
nose tip, left mouth corner, right mouth corner ("left" = the subject's right = image left).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

__all__ = [
    "Attributes",
    "AttributeModel",
    "Detection",
    "Detector",
    "Embedder",
    "ModelInfo",
]


@dataclass(frozen=True)
class ModelInfo:
    """What a model is, for provenance: stored in the bank next to what it produced."""

    name: str  # e.g. "dlib_resnet_v1", "scrfd_500m", "mobilefacenet_128d"
    sha256: str  # checksum of the weights file(s)
    version: str = ""  # library or model version, free text


@dataclass(frozen=True)
class Detection:
    """One detected face."""

    box: np.ndarray  # float32 (4,): left, top, right, bottom in pixels
    landmarks: np.ndarray  # float32 (5, 2): x, y of the 5 ArcFace points
    score: float  # detector confidence, detector-specific scale


@dataclass(frozen=True)
class Attributes:
    """Age and gender of one face, with where they came from."""

    age: float  # years (a point estimate)
    age_confidence: float  # 0..1
    gender: str  # "female" | "male"
    gender_confidence: float  # 0..1
    source: str  # model name, or "metadata:<source>"
    extra: dict = field(default_factory=dict)


@runtime_checkable
class Detector(Protocol):
    info: ModelInfo

    def detect(self, image: np.ndarray) -> list[Detection]:
        """All faces in an RGB uint8 image, best first."""
        ...


@runtime_checkable
class AttributeModel(Protocol):
    info: ModelInfo

    def estimate(self, image: np.ndarray, detection: Detection) -> Attributes:
        """Age and gender of the face `detection` in the RGB uint8 `image`."""
        ...


@runtime_checkable
class Embedder(Protocol):
    info: ModelInfo
    space: str  # the identity space it writes, e.g. "dlib", "arcface", "mobilefacenet"
    dim: int

    def embed(self, image: np.ndarray, detection: Detection) -> np.ndarray:
        """Unit-norm float32 (dim,) identity vector of the face `detection` in `image`."""
        ...
