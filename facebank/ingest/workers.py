"""The work of one face in each ingest stage, as named jobs and results that cross processes.

Each `*Worker` is what a process of the pool (`ingest.pool`) loads once and calls per job; the
same class does the work in this process with one worker, and in the Ray engine's actors, so
every engine and worker count gives the same bits.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from facebank.bank import FaceRecord
from facebank.bank.schema import gender_code
from facebank.bank.writer import ATTRIBUTE_COLUMNS
from facebank.config import SpaceConfig, VisionConfig
from facebank.errors import FaceRejected
from facebank.ingest.annotator import Annotator, combine_attributes, encoded
from facebank.labels import metadata_attributes
from facebank.sources.base import SourceItem
from facebank.vision.image_io import decode_image
from facebank.vision.registry import load_embedder
from facebank.vision.types import Detection

__all__ = ["Annotated", "EmbedJob", "EmbedWorker", "Embedded", "IngestWorker", "Rejected", "RowAnnotated", "RowJob",
           "RowWorker", "embed_job", "row_job"]


@dataclass(frozen=True)
class Rejected:
    """Why a face was refused (FaceRejected's reason and detail), as it travels back from a worker."""

    reason: str
    detail: str = ""

    @classmethod
    def of(cls, exc: FaceRejected) -> Rejected:
        return cls(exc.reason, exc.detail)


@dataclass(frozen=True)
class Annotated:
    """`ingest`: one source item and its face, or why it has none."""

    item: SourceItem
    record: FaceRecord | None
    rejected: Rejected | None = None


@dataclass(frozen=True)
class EmbedJob:
    """`embed_bank`: one bank face's stored image and its stored float32 box and landmarks."""

    face_id: str
    image: bytes
    box: np.ndarray
    landmarks: np.ndarray


@dataclass(frozen=True)
class Embedded:
    face_id: str
    vector: np.ndarray


@dataclass(frozen=True)
class RowJob:
    """`annotate_bank`: one bank row. A new (generated) face is detected from scratch; an annotated
    one is re-estimated at its stored box and landmarks, with its stored labels as metadata."""

    face_id: str
    is_new: bool
    item: SourceItem
    box: np.ndarray
    landmarks: np.ndarray


@dataclass(frozen=True)
class RowAnnotated:
    """The new attribute columns of one bank row (without `status`), or why it has none."""

    face_id: str
    item: SourceItem
    columns: dict | None
    rejected: Rejected | None = None


class IngestWorker:
    """Source item -> Annotated: detect, align, estimate and embed (`ingest`)."""

    def __init__(self, annotator: Annotator):
        self.annotator = annotator

    @classmethod
    def load(cls, vision: VisionConfig, spaces: tuple[SpaceConfig, ...] = ()) -> IngestWorker:
        return cls(Annotator(vision, spaces))

    def __call__(self, item: SourceItem) -> Annotated:
        try:
            return Annotated(item, self.annotator.annotate(item, encoded(item)))
        except FaceRejected as exc:
            return Annotated(item, None, Rejected.of(exc))


class EmbedWorker:
    """EmbedJob -> Embedded: one space's vector of a stored face (`embed_bank`)."""

    def __init__(self, embedder):
        self.embedder = embedder

    @classmethod
    def load(cls, space: SpaceConfig) -> EmbedWorker:
        return cls(load_embedder(space.space, space.model_path, space.contract))

    def __call__(self, job: EmbedJob) -> Embedded:
        image = decode_image(job.image, name=job.face_id)
        return Embedded(job.face_id, self.embedder.embed(image, Detection(box=job.box, landmarks=job.landmarks,
                                                                          score=1.0)))


def embed_job(bank, row: int) -> EmbedJob:
    face = bank.face(int(row), spaces=[])
    return EmbedJob(face.id, face.image_bytes(), face.box, face.landmarks)


def row_job(bank, row: int, is_new: bool, category: str, meta_gender: int) -> RowJob:
    """The annotation job of one bank row: its image, box, landmarks and labels."""
    face = bank.face(int(row), spaces=[])
    meta = dict(face.provenance.get("metadata", {})) if is_new else {}
    if not is_new:
        if category:
            meta["age"] = category
        if meta_gender in (0, 1):
            meta["gender"] = ("female", "male")[meta_gender]
    return RowJob(face.id, bool(is_new), SourceItem(face.source, face.source_id, data=face.image_bytes(), metadata=meta),
                  face.box, face.landmarks)


class RowWorker:
    """RowJob -> RowAnnotated (`annotate_bank`)."""

    def __init__(self, annotator: Annotator):
        self.annotator = annotator

    @classmethod
    def load(cls, vision: VisionConfig) -> RowWorker:
        return cls(Annotator(vision))

    def __call__(self, job: RowJob) -> RowAnnotated:
        annotator = self.annotator
        try:
            if job.is_new:  # generated: detect, align and estimate from scratch
                rec = annotator.annotate(job.item, job.item.data)
                return RowAnnotated(job.face_id, job.item,
                                    {k: getattr(rec, k) for k in ATTRIBUTE_COLUMNS if k != "status"})
            est = annotator.attributes.estimate(decode_image(job.item.data, name=job.item.source_id),
                                                Detection(box=job.box, landmarks=job.landmarks, score=1.0))
        except FaceRejected as exc:
            return RowAnnotated(job.face_id, job.item, None, Rejected.of(exc))
        cols = combine_attributes(est, metadata_attributes(job.item.metadata))
        cols.update(model_age=est.age, model_age_confidence=est.age_confidence, model_gender=gender_code(est.gender),
                    model_gender_confidence=est.gender_confidence, attribute_model=annotator.attributes.info.name)
        return RowAnnotated(job.face_id, job.item, cols)
