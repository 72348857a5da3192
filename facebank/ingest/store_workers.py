"""The work of one generated face: encode it, and optionally annotate and embed it (`StoreWorker`).

`generate_to_bank` runs it in the ingest worker pool (`ingest.pool`: each process loads its models
once) while the generator makes the next batch; the Ray engine runs it in its store actors.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from facebank.bank import FaceRecord
from facebank.bank.schema import CROP_SIZE, STATUS_ANNOTATED, STATUS_GENERATED, STATUS_REJECTED
from facebank.bank.writer import ATTRIBUTE_COLUMNS
from facebank.config import SpaceConfig, VisionConfig
from facebank.errors import FaceRejected
from facebank.ingest.workers import Rejected
from facebank.sources.base import SourceItem
from facebank.vision.image_encode import DEFAULT_IMAGE_FORMAT, ImageFormat, encode_image
from facebank.vision.image_io import decode_image
from facebank.vision.types import Detection

__all__ = ["StorePlan", "StoreWorker", "Stored", "generated_record"]


@dataclass(frozen=True)
class StorePlan:
    """What a worker does with each generated face."""

    image_format: ImageFormat = DEFAULT_IMAGE_FORMAT
    vision: VisionConfig | None = None  # detect, align, estimate age and gender (None: store only)
    spaces: tuple[SpaceConfig, ...] = ()  # embed in these spaces (only with vision)


@dataclass(frozen=True)
class Stored:
    """One generated face's record (status "rejected" when annotation refused it) and why, if so."""

    record: FaceRecord
    rejected: Rejected | None = None


def generated_record(item: SourceItem, data: bytes, fmt: ImageFormat) -> FaceRecord:
    """The bank record of a generated face: its image and provenance, nothing detected yet."""
    image = item.pixels
    provenance = {**item.metadata, "image_format": fmt.spec}
    return FaceRecord(
        source=item.source, source_id=item.source_id, image=data, image_format=fmt.kind,
        width=image.shape[1], height=image.shape[0], box=np.full(4, np.nan, np.float32),
        landmarks=np.full((5, 2), np.nan, np.float32), detector="",
        crop=np.zeros((CROP_SIZE, CROP_SIZE, 3), np.uint8), provenance=provenance, status=STATUS_GENERATED,
    )


class StoreWorker:
    """Encodes one generated face and, with a vision config, annotates and embeds it."""

    def __init__(self, plan: StorePlan):
        from facebank.ingest.annotator import Annotator
        from facebank.vision.registry import load_embedder

        self.plan = plan
        self.annotator = Annotator(plan.vision, ()) if plan.vision is not None else None
        self.embedders = {s.space: load_embedder(s.space, s.model_path, s.contract) for s in plan.spaces}

    def space_infos(self) -> dict[str, dict]:
        return {s: {"model": e.info.name, "sha256": e.info.sha256, "dim": int(e.dim), "version": e.info.version}
                for s, e in self.embedders.items()}

    def models(self) -> dict:
        out = self.annotator.models() if self.annotator else {}
        out.update({f"embedder:{s}": asdict(e.info) for s, e in self.embedders.items()})
        return out

    def __call__(self, item: SourceItem) -> Stored:
        fmt = self.plan.image_format
        data = encode_image(item.pixels, fmt)
        record = generated_record(item, data, fmt)
        if self.annotator is None:
            return Stored(record)
        # Annotate what the bank stores: a lossy format is decoded first, exactly as
        # `annotate_bank` would read it later; a lossless one decodes to these very pixels.
        image = item.pixels if fmt.lossless else decode_image(data, name=item.source_id)
        try:
            annotated = self.annotator.annotate(SourceItem(item.source, item.source_id, data=data, pixels=image), data)
        except FaceRejected as exc:
            record.status = STATUS_REJECTED
            return Stored(record, Rejected.of(exc))
        for name in ATTRIBUTE_COLUMNS - {"status"}:
            setattr(record, name, getattr(annotated, name))
        record.status = STATUS_ANNOTATED
        # The stored float32 box and landmarks, as `embed_bank` passes them: the same vectors bit for bit.
        detection = Detection(box=record.box, landmarks=record.landmarks, score=1.0)
        for space, embedder in self.embedders.items():
            record.embeddings[space] = embedder.embed(image, detection)
        return Stored(record)
