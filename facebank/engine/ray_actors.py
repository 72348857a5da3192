"""The callable classes Ray Data runs in its actors: each loads its models once, in `__init__`.

Every call takes one batch of `{"i", "job"}` rows and returns `{"i", "job"}` rows (see
`ray_cluster`); the work itself is the local engine's code, so the results are the same bits.
"""

from __future__ import annotations

import contextlib

from facebank.config import SpaceConfig, VisionConfig
from facebank.engine.ray_cluster import jobs_of, outputs, worker_meta
from facebank.errors import FaceRejected

__all__ = ["AnnotateActor", "AnnotateRowActor", "EmbedActor", "GenerateActor", "StoreActor"]


def _one_thread() -> None:
    with contextlib.suppress(Exception):
        import cv2

        cv2.setNumThreads(1)  # one core per actor: the actor pool is the parallelism


def _checksums(models: dict) -> dict:
    return {name: info.get("sha256", "") for name, info in models.items()}


class GenerateActor:
    """StyleGAN2-ADA on this actor's device (its GPU when Ray gave it one).

    One job is one generator batch, (index of its first face, seeds), cut by the driver exactly
    as the local engine batches (CPU convolutions round differently at other batch sizes or
    thread counts, so both are the local engine's): one row (item, meta) per face.
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
        for start, seeds in jobs_of(batch):
            for k, item in enumerate(self.source.items(seeds)):
                index.append(start + k)
                out.append((item, self.meta))
        return outputs({"i": index}, out)


class StoreActor:
    """Encodes (and annotates and embeds) generated faces: (item, meta) -> (record, rejection, metas)."""

    def __init__(self, plan):
        from facebank.ingest.store_workers import StoreWorker

        _one_thread()
        self.worker = StoreWorker(plan)
        self.meta = worker_meta(_checksums(self.worker.models()))
        self.meta["spaces"] = self.worker.space_infos()

    def __call__(self, batch: dict) -> dict:
        out = []
        for item, gen_meta in jobs_of(batch):
            record, rejection = self.worker(item)
            out.append((record, rejection, gen_meta, self.meta))
        return outputs(batch, out)


class AnnotateActor:
    """Detect, align, estimate and embed source items (ingest): item -> (record or None, reason, meta)."""

    def __init__(self, vision: VisionConfig, spaces: tuple[SpaceConfig, ...]):
        from facebank.ingest.annotator import Annotator

        _one_thread()
        self.annotator = Annotator(vision, spaces)
        self.meta = worker_meta(_checksums(self.annotator.models()))
        self.meta["spaces"] = {s: self.annotator.space_info(s) for s in self.annotator.embedders}

    def __call__(self, batch: dict) -> dict:
        from facebank.ingest.annotator import encoded

        out = []
        for item in jobs_of(batch):
            try:
                out.append((self.annotator.annotate(item, encoded(item)), None, self.meta))
            except FaceRejected as exc:
                out.append((None, (exc.reason, exc.detail), self.meta))
        return outputs(batch, out)


class EmbedActor:
    """Embeds bank rows, reading them itself from the bank (on storage every node sees): row -> (id, vector)."""

    def __init__(self, bank_path: str, space: SpaceConfig):
        from facebank.bank import open_bank
        from facebank.vision.registry import load_embedder

        _one_thread()
        self.bank = open_bank(bank_path)  # the version at the job's start: it holds every row asked for
        self.embedder = load_embedder(space.space, space.model_path, space.contract)
        self.meta = worker_meta({f"embedder:{space.space}": self.embedder.info.sha256})

    def __call__(self, batch: dict) -> dict:
        from facebank.vision.image_io import decode_image
        from facebank.vision.types import Detection

        out = []
        for row in jobs_of(batch):
            face = self.bank.face(int(row), spaces=[])
            image = decode_image(face.image_bytes(), name=face.id)
            vec = self.embedder.embed(image, Detection(box=face.box, landmarks=face.landmarks, score=1.0))
            out.append((face.id, vec, self.meta))
        return outputs(batch, out)


class AnnotateRowActor:
    """(Re-)annotates bank rows, reading them from the bank: (row, is_new) -> annotate_row result + meta."""

    def __init__(self, bank_path: str, vision: VisionConfig):
        from facebank.bank import open_bank
        from facebank.ingest.annotator import Annotator

        _one_thread()
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
            out.append((*annotate_row(self.annotator, job), self.meta))
        return outputs(batch, out)
