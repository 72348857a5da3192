"""The callable classes Ray Data runs in its actors: each loads its models once, in `__init__`.

Every call takes one batch of `{"i", "job"}` rows and returns `{"i", "job"}` rows (see
`ray_cluster`); the work itself is the local engine's code, so the results are the same bits.
The last actor of each job writes its results to the bank's storage itself, as batch files
(`ray_batches.write_runs`), and returns only their names and checksums; the driver commits them.
"""

from __future__ import annotations

import contextlib

from facebank.config import SpaceConfig, VisionConfig
from facebank.engine.ray_batches import write_runs
from facebank.engine.ray_cluster import jobs_of, outputs, worker_meta
from facebank.errors import FaceRejected
from facebank.ingest.generate import GenerateSummary, store_generated
from facebank.ingest.stages import Summary, store_annotated, store_annotation, store_embedding

__all__ = ["AnnotateActor", "AnnotateRowActor", "EmbedActor", "GenerateActor", "StoreActor"]


def _one_thread() -> None:
    with contextlib.suppress(Exception):
        import cv2

        cv2.setNumThreads(1)  # one core per actor: the actor pool is the parallelism


def _checksums(models: dict) -> dict:
    return {name: info.get("sha256", "") for name, info in models.items()}


def engine_provenance(*metas: dict) -> dict:
    """A face's `provenance.engine`: Ray, and the node, pid and model checksums of each worker that made it."""
    return {"kind": "ray", "workers": [{k: m[k] for k in ("node", "pid", "models")} for m in metas]}


class GenerateActor:
    """StyleGAN2-ADA on this actor's device (its GPU when Ray gave it one).

    One job is one generator batch, a `GridBatch` cut by the driver exactly as the local engine
    cuts it (CPU convolutions round differently at other batch sizes or thread counts, so both
    are the local engine's) and made whole: one row (item, meta) per face it keeps, numbered from
    the batch's `start` in the to-do order.
    """

    def __init__(self, cfg, threads: int):
        import torch

        from facebank.sources.stylegan_source import StyleGanSource

        torch.set_num_threads(threads)  # Ray gives a fractional-CPU actor 1 thread; the driver had `threads`
        self.source = StyleGanSource(cfg)
        self.meta = worker_meta({"generator": self.source.network_sha256})
        self.meta["device"] = str(self.source.device)

    def __call__(self, batch: dict) -> dict:
        index, out = [], []
        for job in jobs_of(batch):
            for k, item in enumerate(self.source.grid_items([job])):
                index.append(job.start + k)
                out.append((item, self.meta))
        return outputs({"i": index}, out)


class StoreActor:
    """Encodes (and annotates and embeds) generated faces and writes them: (item, meta) -> batch files."""

    def __init__(self, plan, bank_path: str):
        from facebank.ingest.store_workers import StoreWorker

        _one_thread()
        self.worker = StoreWorker(plan)
        self.bank_path, self.annotating = bank_path, plan.vision is not None
        self.meta = worker_meta(_checksums(self.worker.models()))

    def _store(self, batch, summary, result) -> None:
        store_generated(batch, summary, *result, annotating=self.annotating)

    def __call__(self, batch: dict) -> dict:
        results, metas = [], []
        for item, gen_meta in jobs_of(batch):
            record, rejection = self.worker(item)
            record.provenance["engine"] = engine_provenance(gen_meta, self.meta)
            results.append((record, rejection))
            metas.append((gen_meta, self.meta))
        return write_runs(self.bank_path, batch["i"], results, self._store, GenerateSummary, metas,
                          self.worker.space_infos())


class AnnotateActor:
    """Detect, align, estimate and embed source items (ingest) and write them: item -> batch files."""

    def __init__(self, vision: VisionConfig, spaces: tuple[SpaceConfig, ...], bank_path: str):
        from facebank.ingest.annotator import Annotator

        _one_thread()
        self.annotator = Annotator(vision, spaces)
        self.bank_path = bank_path
        self.meta = worker_meta(_checksums(self.annotator.models()))
        self.spaces = {s: self.annotator.space_info(s) for s in self.annotator.embedders}

    def __call__(self, batch: dict) -> dict:
        from facebank.ingest.annotator import encoded

        results = []
        for item in jobs_of(batch):
            try:
                record = self.annotator.annotate(item, encoded(item))
                record.provenance["engine"] = engine_provenance(self.meta)
                results.append((item, record, None))
            except FaceRejected as exc:
                results.append((item, None, (exc.reason, exc.detail)))
        return write_runs(self.bank_path, batch["i"], results, lambda b, s, r: store_annotated(b, s, *r), Summary,
                          [(self.meta,)] * len(results), self.spaces)


class EmbedActor:
    """Embeds bank rows, reading and writing the bank's storage itself (every node sees it): row -> batch files."""

    def __init__(self, bank_path: str, space: SpaceConfig, info: dict):
        from facebank.bank import open_bank
        from facebank.vision.registry import load_embedder

        _one_thread()
        self.bank_path, self.space, self.info = bank_path, space.space, info
        self.bank = open_bank(bank_path)  # the version at the job's start: it holds every row asked for
        self.embedder = load_embedder(space.space, space.model_path, space.contract)
        self.meta = worker_meta({f"embedder:{space.space}": self.embedder.info.sha256})

    def _store(self, batch, summary, result) -> None:
        store_embedding(batch, summary, self.space, self.info, *result)

    def __call__(self, batch: dict) -> dict:
        from facebank.vision.image_io import decode_image
        from facebank.vision.types import Detection

        out = []
        for row in jobs_of(batch):
            face = self.bank.face(int(row), spaces=[])
            image = decode_image(face.image_bytes(), name=face.id)
            out.append((face.id, self.embedder.embed(image, Detection(box=face.box, landmarks=face.landmarks,
                                                                      score=1.0))))
        return write_runs(self.bank_path, batch["i"], out, self._store, Summary, [(self.meta,)] * len(out))


class AnnotateRowActor:
    """(Re-)annotates bank rows, reading and writing the bank's storage: (row, is_new) -> batch files."""

    def __init__(self, bank_path: str, vision: VisionConfig):
        from facebank.bank import open_bank
        from facebank.ingest.annotator import Annotator

        _one_thread()
        self.bank_path = bank_path
        self.bank = open_bank(bank_path)
        self.annotator = Annotator(vision)
        self.meta = worker_meta(_checksums(self.annotator.models()))
        self.categories = self.bank.column("meta_age_category")
        self.meta_genders = self.bank.column("meta_gender")

    def __call__(self, batch: dict) -> dict:
        from facebank.ingest.workers import annotate_row, row_job

        out = []
        for row, is_new in jobs_of(batch):
            job = row_job(self.bank, row, is_new, self.categories[row], self.meta_genders[row])
            out.append(annotate_row(self.annotator, job))
        return write_runs(self.bank_path, batch["i"], out, lambda b, s, r: store_annotation(b, s, *r), Summary,
                          [(self.meta,)] * len(out))
