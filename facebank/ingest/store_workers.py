"""Worker processes that turn generated pixels into bank records: encode, and optionally annotate and embed.

Each worker is spawned (no model or CUDA state is forked) and loads its models once. The
caller submits items as the generator makes them and reads results in submission order; at
most `window` items are in flight, so a fast generator cannot fill memory with images waiting
to be encoded.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass

import numpy as np

from facebank.bank import FaceRecord
from facebank.bank.schema import CROP_SIZE, STATUS_ANNOTATED, STATUS_GENERATED, STATUS_REJECTED
from facebank.bank.writer import ATTRIBUTE_COLUMNS
from facebank.config import SpaceConfig, VisionConfig
from facebank.errors import FaceRejected, ModelError
from facebank.ingest.workers import exit_with_parent
from facebank.sources.base import SourceItem
from facebank.vision.image_encode import DEFAULT_IMAGE_FORMAT, ImageFormat, encode_image
from facebank.vision.image_io import decode_image
from facebank.vision.types import Detection

__all__ = ["StorePlan", "StoreWorker", "generated_record", "ordered_map"]


@dataclass(frozen=True)
class StorePlan:
    """What a worker does with each generated face."""

    image_format: ImageFormat = DEFAULT_IMAGE_FORMAT
    vision: VisionConfig | None = None  # detect, align, estimate age and gender (None: store only)
    spaces: tuple[SpaceConfig, ...] = ()  # embed in these spaces (only with vision)


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

    def __call__(self, item: SourceItem) -> tuple[FaceRecord, tuple[str, str] | None]:
        """(record, None) or (record with status "rejected", (reason, detail))."""
        fmt = self.plan.image_format
        data = encode_image(item.pixels, fmt)
        record = generated_record(item, data, fmt)
        if self.annotator is None:
            return record, None
        # Annotate what the bank stores: a lossy format is decoded first, exactly as
        # `annotate_bank` would read it later; a lossless one decodes to these very pixels.
        image = item.pixels if fmt.lossless else decode_image(data, name=item.source_id)
        try:
            annotated = self.annotator.annotate(SourceItem(item.source, item.source_id, data=data, pixels=image), data)
        except FaceRejected as exc:
            record.status = STATUS_REJECTED
            return record, (exc.reason, exc.detail)
        for name in ATTRIBUTE_COLUMNS - {"status"}:
            setattr(record, name, getattr(annotated, name))
        record.status = STATUS_ANNOTATED
        # The stored float32 box and landmarks, as `embed_bank` passes them: the same vectors bit for bit.
        detection = Detection(box=record.box, landmarks=record.landmarks, score=1.0)
        for space, embedder in self.embedders.items():
            record.embeddings[space] = embedder.embed(image, detection)
        return record, None


_worker: StoreWorker | None = None


def _init(plan: StorePlan) -> None:
    global _worker
    exit_with_parent()
    with contextlib.suppress(Exception):
        import cv2

        cv2.setNumThreads(1)  # one core per worker: the pool is the parallelism
    _worker = StoreWorker(plan)


def _job(item: SourceItem):
    return _worker(item)


@contextlib.contextmanager
def ordered_map(plan: StorePlan, workers: int, *, local: StoreWorker, window: int | None = None):
    """Yields (run, n): run(items) -> results in input order, from n worker processes (n = 0: here).

    workers: 0 = one per CPU, 1 = in this process (`local`, already loaded, does the work).
    """
    n = (os.cpu_count() or 1) if workers == 0 else max(1, workers)
    if n <= 1:
        yield (lambda items: map(local, items)), 0
        return
    window = window or 2 * n + 2
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(n, mp_context=ctx, initializer=_init, initargs=(plan,)) as pool:
        def run(items: Iterable[SourceItem]) -> Iterator:
            pending: deque = deque()
            try:
                for item in items:
                    pending.append(pool.submit(_job, item))
                    if len(pending) >= window:
                        yield pending.popleft().result()
                while pending:
                    yield pending.popleft().result()
            except BrokenProcessPool as exc:
                raise ModelError(f"a worker process died while storing generated faces ({exc}); "
                                 "finished faces are kept: re-run to continue") from exc
            finally:
                for f in pending:
                    f.cancel()

        yield run, n
