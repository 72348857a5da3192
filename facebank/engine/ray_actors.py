"""The callable classes Ray Data runs in its actors: each loads its models once, in `__init__`.

Every call takes one batch of `{"i", "job"}` rows and returns `{"i", "job"}` rows (see
`ray_cluster`); the work itself is the local engine's code, so the results are the same bits.
The last actor of each job writes its results to the bank's storage itself, as batch files
(`ray_batches.write_runs`), and returns only their names and checksums; the driver commits them.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from facebank.config import SpaceConfig, VisionConfig
from facebank.engine.ray_batches import write_runs
from facebank.engine.ray_cluster import jobs_of, outputs, worker_meta
from facebank.ingest.generate import GenerateSummary, store_generated
from facebank.ingest.stages import Summary, store_annotated, store_annotation, store_embedding
from facebank.sources.base import SourceItem

__all__ = ["AnnotateActor", "AnnotateRowActor", "EmbedActor", "GenerateActor", "Generated", "StoreActor"]


def _one_thread() -> None:
    with contextlib.suppress(Exception):
        import cv2

        cv2.setNumThreads(1)  # one core per actor: the actor pool is the parallelism


def _checksums(models: dict) -> dict:
    return {name: info.get("sha256", "") for name, info in models.items()}


def engine_provenance(*metas: dict) -> dict:
    """A face's `provenance.engine`: Ray, and the node, pid and model checksums of each worker that made it."""
    return {"kind": "ray", "workers": [{k: m[k] for k in ("node", "pid", "models")} for m in metas]}


@dataclass(frozen=True)
class Generated:
    """A generator actor's face for the store actors: the item and who made it (`worker_meta`)."""

    item: SourceItem
    meta: dict


class GenerateActor:
    """StyleGAN2-ADA on this actor's device (its GPU when Ray gave it one).

    One job is one generator batch, a `GridBatch` cut by the driver exactly as the local engine
    cuts it (CPU convolutions round differently at other batch sizes or thread counts, so both
    are the local engine's) and made whole: one `Generated` row per face it keeps, numbered from
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
                out.append(Generated(item, self.meta))
        return outputs({"i": index}, out)


class StoreActor:
    """Encodes (and annotates and embeds) generated faces and writes them: Generated -> batch files."""

    def __init__(self, plan, bank_path: str):
        from facebank.ingest.store_workers import StoreWorker

        _one_thread()
        self.worker = StoreWorker(plan)
        self.bank_path, self.annotating = bank_path, plan.vision is not None
        self.meta = worker_meta(_checksums(self.worker.models()))

    def _store(self, batch, summary, stored) -> None:
        store_generated(batch, summary, stored, annotating=self.annotating)

    def __call__(self, batch: dict) -> dict:
        results, metas = [], []
        for job in jobs_of(batch):
            stored = self.worker(job.item)
            stored.record.provenance["engine"] = engine_provenance(job.meta, self.meta)
            results.append(stored)
            metas.append((job.meta, self.meta))
        return write_runs(self.bank_path, batch["i"], results, self._store, GenerateSummary, metas,
                          self.worker.space_infos())


class AnnotateActor:
    """Detect, align, estimate and embed source items (ingest) and write them: item -> batch files."""

    def __init__(self, vision: VisionConfig, spaces: tuple[SpaceConfig, ...], bank_path: str):
        from facebank.ingest.workers import IngestWorker

        _one_thread()
        self.worker = IngestWorker.load(vision, spaces)
        annotator = self.worker.annotator
        self.bank_path = bank_path
        self.meta = worker_meta(_checksums(annotator.models()))
        self.spaces = {s: annotator.space_info(s) for s in annotator.embedders}

    def __call__(self, batch: dict) -> dict:
        results = []
        for item in jobs_of(batch):
            outcome = self.worker(item)
            if outcome.record is not None:
                outcome.record.provenance["engine"] = engine_provenance(self.meta)
            results.append(outcome)
        return write_runs(self.bank_path, batch["i"], results, store_annotated, Summary,
                          [(self.meta,)] * len(results), self.spaces)


class EmbedActor:
    """Embeds bank rows, reading and writing the bank's storage itself (every node sees it): row -> batch files."""

    def __init__(self, bank_path: str, space: SpaceConfig, info: dict):
        from facebank.bank import open_bank
        from facebank.ingest.workers import EmbedWorker

        _one_thread()
        self.bank_path, self.space, self.info = bank_path, space.space, info
        self.bank = open_bank(bank_path)  # the version at the job's start: it holds every row asked for
        self.worker = EmbedWorker.load(space)
        self.meta = worker_meta({f"embedder:{space.space}": self.worker.embedder.info.sha256})

    def _store(self, batch, summary, embedded) -> None:
        store_embedding(batch, summary, self.space, self.info, embedded)

    def __call__(self, batch: dict) -> dict:
        from facebank.ingest.workers import embed_job

        out = [self.worker(embed_job(self.bank, row)) for row in jobs_of(batch)]
        return write_runs(self.bank_path, batch["i"], out, self._store, Summary, [(self.meta,)] * len(out))


class AnnotateRowActor:
    """(Re-)annotates bank rows, reading and writing the bank's storage: (row, is_new) -> batch files."""

    def __init__(self, bank_path: str, vision: VisionConfig):
        from facebank.bank import open_bank
        from facebank.ingest.workers import RowWorker

        _one_thread()
        self.bank_path = bank_path
        self.bank = open_bank(bank_path)
        self.worker = RowWorker.load(vision)
        self.meta = worker_meta(_checksums(self.worker.annotator.models()))
        self.categories = self.bank.column("meta_age_category")
        self.meta_genders = self.bank.column("meta_gender")

    def __call__(self, batch: dict) -> dict:
        from facebank.ingest.workers import row_job

        out = [self.worker(row_job(self.bank, row, is_new, self.categories[row], self.meta_genders[row]))
               for row, is_new in jobs_of(batch)]
        return write_runs(self.bank_path, batch["i"], out, store_annotation, Summary, [(self.meta,)] * len(out))
