"""One source item -> one FaceRecord: detect, align, attributes (model estimate and source labels), embeddings."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict

import numpy as np

from facebank.bank import FaceRecord
from facebank.bank.schema import GENDER_UNKNOWN, gender_code
from facebank.config import SpaceConfig, VisionConfig
from facebank.errors import FaceRejected, InputError
from facebank.labels import metadata_attributes
from facebank.sources.base import SourceItem
from facebank.vision.align import align_face
from facebank.vision.image_io import decode_image, encode_png, image_format
from facebank.vision.registry import load_attribute_model, load_detector, load_embedder
from facebank.vision.select import select_single_face
from facebank.vision.types import Attributes

__all__ = ["Annotator", "combine_attributes", "encoded"]


def combine_attributes(model: Attributes | None, meta: dict) -> dict:
    """The age and gender the picker groups by, from the model estimate and the source metadata.

    Policy (documented in facebank/bank/SCHEMA.md): the source's gender label wins when present
    (generated.photos sets it when it generates the face); the source's age category bounds the
    age and the model's estimate in years picks the point inside it (clipped); with no
    metadata the model decides; with no model the category's midpoint is used.
    """
    out = {
        "age": math.nan, "age_confidence": math.nan, "age_source": "",
        "gender": GENDER_UNKNOWN, "gender_confidence": math.nan, "gender_source": "",
    }
    m_gender = gender_code(model.gender) if model else GENDER_UNKNOWN
    if "gender" in meta:
        out["gender"] = gender_code(meta["gender"])
        out["gender_source"] = "metadata"
        if model is not None:
            agree = m_gender == out["gender"]
            out["gender_confidence"] = model.gender_confidence if agree else 1.0 - model.gender_confidence
    elif model is not None:
        out.update(gender=m_gender, gender_confidence=model.gender_confidence, gender_source=model.source)
    if "age_range" in meta:
        low, high = meta["age_range"]
        if model is not None:
            out["age"] = float(np.clip(model.age, low, high - 1e-3))
            out["age_confidence"] = model.age_confidence
            out["age_source"] = f"{model.source}+metadata"
        else:
            out["age"], out["age_source"] = (low + high) / 2.0, "metadata"
    elif model is not None:
        out.update(age=model.age, age_confidence=model.age_confidence, age_source=model.source)
    return out


class Annotator:
    """Turns a source item into a FaceRecord (detect, align, attributes, embeddings), or rejects it."""

    def __init__(self, vision: VisionConfig, spaces: Iterable[SpaceConfig] = ()):
        self.vision = vision
        self.detector = load_detector(vision.detector, vision.detector_path)
        self.attributes = load_attribute_model(vision.attributes, vision.attributes_path)
        self.embedders = {s.space: load_embedder(s.space, s.model_path, s.contract) for s in spaces}

    def space_info(self, space: str) -> dict:
        e = self.embedders[space]
        return {"model": e.info.name, "sha256": e.info.sha256, "dim": int(e.dim), "version": e.info.version}

    def models(self) -> dict:
        out = {"detector": asdict(self.detector.info), "attributes": asdict(self.attributes.info)}
        out.update({f"embedder:{s}": asdict(e.info) for s, e in self.embedders.items()})
        return out

    def annotate(self, item: SourceItem, data: bytes) -> FaceRecord:
        """Raises FaceRejected with the reason when the image is not one usable face."""
        image = item.pixels if item.pixels is not None else decode_image(data, name=item.source_id)
        detection = select_single_face(
            self.detector.detect(image), image.shape, min_face_px=self.vision.min_face_px
        )
        crop = align_face(image, detection.landmarks, 112)
        try:
            model = self.attributes.estimate(image, detection)
        except FaceRejected:
            raise
        except Exception as exc:  # a model failure on one image is that image's rejection
            raise FaceRejected("attributes_failed", str(exc)) from exc
        meta = metadata_attributes(item.metadata)
        combined = combine_attributes(model, meta)
        provenance = {
            "source": item.source, "source_id": item.source_id, "metadata": item.metadata,
            "models": {"detector": self.detector.info.sha256[:16], "attributes": self.attributes.info.sha256[:16]},
        }
        record = FaceRecord(
            source=item.source, source_id=item.source_id, image=data,
            image_format=image_format(data, name=item.source_id) if item.pixels is None else "png",
            width=image.shape[1], height=image.shape[0],
            box=np.asarray(detection.box, np.float32), landmarks=np.asarray(detection.landmarks, np.float32),
            detector=self.detector.info.name, crop=crop, provenance=provenance,
            model_age=model.age, model_age_confidence=model.age_confidence,
            model_gender=gender_code(model.gender), model_gender_confidence=model.gender_confidence,
            attribute_model=self.attributes.info.name,
            meta_age_category=meta.get("age_category", ""), meta_gender=gender_code(meta.get("gender")),
            **combined,
        )
        for space, embedder in self.embedders.items():
            record.embeddings[space] = embedder.embed(image, detection)
        return record


def encoded(item: SourceItem) -> bytes:
    if item.data is not None:
        return item.data
    if item.pixels is not None:
        return encode_png(item.pixels)
    raise InputError(f"source item {item.source_id} has neither bytes nor pixels")
