"""Real photos for the audit: every face detected, embedded in every space of the bank (with the
bank's own models, checked by checksum) and, for group-constrained picks, its age and gender.
Calibration and the pick audit share one `AuditPhotos`, so a photo is analysed once."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from facebank.errors import FaceRejected, InputError
from facebank.sources.base import IMAGE_SUFFIXES

__all__ = ["AuditFace", "AuditPhotos", "list_images"]


@dataclass
class AuditFace:
    """One face of a real photo: what calibration and the pick audit need."""

    photo: str  # file name
    index: int  # 0 = the largest face of the photo
    embeddings: dict[str, np.ndarray]
    crop: np.ndarray  # aligned 112x112 RGB
    age: float | None = None  # estimated only when picks use age/gender groups
    gender: str | None = None

    @property
    def name(self) -> str:
        return f"{self.photo}#{self.index}"


@dataclass
class AuditPhotos:
    """Detects and embeds real photos once; calibration and queries share the results."""

    spaces: list[str]
    models: Mapping[str, str]
    bank: Any
    attributes: bool = False  # estimate age and gender of every face (group-constrained picks)
    skipped: list[dict] = field(default_factory=list)
    _cache: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        from facebank.vision.registry import load_attribute_model, load_detector, load_embedder

        self.detector = load_detector("dlib")
        self.attr = load_attribute_model() if self.attributes else None
        self.embedders = {}
        for s in self.spaces:
            if s != "dlib" and s not in self.models:
                raise InputError(f"space {s!r} needs its model to embed real photos: pass --model {s}=PATH")
            e = load_embedder(s, self.models.get(s))
            want = self.bank.space_info(s).get("sha256")
            if want and e.info.sha256 != want:
                # Query vectors from another model would be compared with the bank's meaninglessly.
                raise InputError(f"the model given for space {s!r} ({e.info.name}, {e.info.sha256[:12]}) is not "
                                 f"the one that made the bank's vectors ({want[:12]})")
            self.embedders[s] = e

    def faces(self, path: Path, min_face_px: int = 20) -> list[AuditFace]:
        """Every face of the photo, largest first; [] (and a `skipped` row) when there is none."""
        from facebank.vision.align import align_face
        from facebank.vision.image_io import decode_image

        key = path.resolve()
        if key in self._cache:
            return self._cache[key]
        out: list[AuditFace] = []
        try:
            image = decode_image(path.read_bytes(), name=path.name)
            dets = [d for d in self.detector.detect(image)
                    if min(d.box[2] - d.box[0], d.box[3] - d.box[1]) >= min_face_px]
            dets.sort(key=lambda d: -(d.box[2] - d.box[0]) * (d.box[3] - d.box[1]))
            for k, d in enumerate(dets):
                a = self.attr.estimate(image, d) if self.attr else None
                out.append(AuditFace(path.name, k, {s: e.embed(image, d) for s, e in self.embedders.items()},
                                 align_face(image, d.landmarks, 112), a and float(a.age), a and a.gender))
            if not out:
                self.skipped.append({"photo": path.name, "reason": "no_face"})
        except FaceRejected as exc:
            self.skipped.append({"photo": path.name, "reason": exc.reason, "detail": exc.detail})
        self._cache[key] = out
        return out


def list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
