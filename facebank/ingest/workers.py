"""Worker processes for annotation and embedding: each loads its own models once (spawned, so no
model state is forked); with one worker the already loaded models do the work in-process."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import threading
import time

from facebank.bank.writer import ATTRIBUTE_COLUMNS
from facebank.bank.schema import gender_code
from facebank.config import SpaceConfig, VisionConfig
from facebank.errors import FaceRejected
from facebank.ingest.annotator import Annotator, combine_attributes, encoded
from facebank.labels import metadata_attributes
from facebank.sources.base import SourceItem
from facebank.vision.image_io import decode_image
from facebank.vision.registry import load_embedder
from facebank.vision.types import Detection

_worker = None


def exit_with_parent() -> None:
    """In a worker: exit when the parent process is gone (a kill -9 of the parent would otherwise
    leave its spawned workers waiting forever on a queue whose other end they hold themselves).

    Signals are the parent's to handle: Ctrl-C reaches the whole process group, and a worker that
    raised KeyboardInterrupt (or wrote to the pipe of a parent that is stopping) would print a
    traceback of its own. So a worker ignores SIGINT and ends silently on SIGTERM; the parent
    stops the pool, reports one line and exits non-zero."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(128 + signal.SIGTERM))
    # The parent's pid as spawn recorded it, not getppid() now: a worker still importing when the
    # parent was killed would read its new parent (init) here and then wait forever.
    spawned_by = multiprocessing.parent_process()
    parent = spawned_by.pid if spawned_by is not None else os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def init_annotator(vision: VisionConfig, spaces: tuple) -> None:
    global _worker
    exit_with_parent()
    _worker = Annotator(vision, spaces)


def annotate_job(item: SourceItem):
    try:
        return _worker.annotate(item, encoded(item)), None
    except FaceRejected as exc:
        return None, (exc.reason, exc.detail)


def init_embedder(space: SpaceConfig) -> None:
    global _worker
    exit_with_parent()
    _worker = load_embedder(space.space, space.model_path, space.contract)


def _embed_job(job):
    data, box, landmarks, name = job
    image = decode_image(data, name=name)
    return _worker.embed(image, Detection(box=box, landmarks=landmarks, score=1.0))


def embed_pair(pair):
    return pair[0], _embed_job(pair[1])


@contextlib.contextmanager
def pool(workers: int, initializer, initargs, *, local):
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
    with ctx.Pool(n, initializer=initializer, initargs=initargs) as processes:
        yield lambda fn, it: processes.imap(fn, it, chunksize=2)


def row_job(bank, row: int, is_new: bool, category: str, meta_gender: int):
    """The annotation job of one bank row (see annotate_row): its image, box, landmarks and labels."""
    face = bank.face(int(row), spaces=[])
    meta = dict(face.provenance.get("metadata", {})) if is_new else {}
    if not is_new:
        if category:
            meta["age"] = category
        if meta_gender in (0, 1):
            meta["gender"] = ("female", "male")[meta_gender]
    return (face.id, bool(is_new), SourceItem(face.source, face.source_id, data=face.image_bytes(), metadata=meta),
            face.box, face.landmarks)


def annotate_row_job(job):
    return annotate_row(_worker, job)


def annotate_row(annotator: Annotator, job):
    """(id, item, annotation columns or None, rejection (reason, detail) or None) of one bank face."""
    fid, is_new, item, box, landmarks = job
    try:
        if is_new:  # generated: detect, align and estimate from scratch
            rec = annotator.annotate(item, item.data)
            return fid, item, {k: getattr(rec, k) for k in ATTRIBUTE_COLUMNS if k != "status"}, None
        est = annotator.attributes.estimate(decode_image(item.data, name=item.source_id),
                                            Detection(box=box, landmarks=landmarks, score=1.0))
    except FaceRejected as exc:
        return fid, item, None, (exc.reason, exc.detail)
    cols = combine_attributes(est, metadata_attributes(item.metadata))
    cols.update(model_age=est.age, model_age_confidence=est.age_confidence, model_gender=gender_code(est.gender),
                model_gender_confidence=est.gender_confidence, attribute_model=annotator.attributes.info.name)
    return fid, item, cols, None
