"""In-memory forms of what goes into the bank: one face, one rejection."""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field

import numpy as np

from facebank.bank.schema import CROP_SIZE, GENDER_UNKNOWN


def content_sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def face_id(sha256_hex: str) -> str:
    """Stable face id: the first 16 hex digits of the content hash (64 bits)."""
    return sha256_hex[:16]


@dataclass
class FaceRecord:
    """Everything the bank stores about one face, before it is written."""

    source: str
    source_id: str
    image: bytes
    image_format: str
    width: int
    height: int
    box: np.ndarray  # (4,) float32
    landmarks: np.ndarray  # (5, 2) float32
    detector: str
    crop: np.ndarray  # (112, 112, 3) uint8
    provenance: dict = field(default_factory=dict)
    age: float = float("nan")
    age_confidence: float = float("nan")
    age_source: str = ""
    gender: int = GENDER_UNKNOWN
    gender_confidence: float = float("nan")
    gender_source: str = ""
    model_age: float = float("nan")
    model_age_confidence: float = float("nan")
    model_gender: int = GENDER_UNKNOWN
    model_gender_confidence: float = float("nan")
    attribute_model: str = ""
    meta_age_category: str = ""
    meta_gender: int = GENDER_UNKNOWN
    meta_gender_confidence: float = float("nan")
    embeddings: dict[str, np.ndarray] = field(default_factory=dict)  # space -> (d,) unit float32
    content_sha256: str = ""
    added_at: float = 0.0
    status: int = 1  # schema.STATUS_ANNOTATED

    def __post_init__(self) -> None:
        if not self.content_sha256:
            self.content_sha256 = content_sha256(self.image)
        if not self.added_at:
            self.added_at = time.time()
        if self.crop.shape != (CROP_SIZE, CROP_SIZE, 3) or self.crop.dtype != np.uint8:
            raise ValueError(f"crop must be uint8 {(CROP_SIZE, CROP_SIZE, 3)}, got {self.crop.dtype} {self.crop.shape}")

    @property
    def id(self) -> str:
        return face_id(self.content_sha256)

    def column(self, name: str):
        if name == "id":
            return self.id.encode()
        if name == "content_sha256":
            return self.content_sha256.encode()
        if name == "provenance":
            return json.dumps(self.provenance, sort_keys=True, default=str)
        if name == "image":
            return np.frombuffer(self.image, dtype=np.uint8)
        if name == "image_format":
            return self.image_format.encode()[:8]
        return getattr(self, name)


@dataclass(frozen=True)
class Rejection:
    """An image that did not enter the bank, and why."""

    source: str
    source_id: str
    content_sha256: str
    reason: str
    detail: str = ""
    stage: str = ""
    at: float = field(default_factory=time.time)

    def column(self, name: str):
        if name == "content_sha256":
            return self.content_sha256.encode()
        return getattr(self, name)

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.content_sha256, self.source_id, self.stage)
