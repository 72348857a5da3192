"""Generated faces into the bank: the StyleGAN source's items stored as they come, resumable by source id.

Generated faces are stored before any detection (status "generated", the provenance the source
gives, no box or crop yet); `annotate_bank` detects, aligns and estimates them later.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from facebank.bank import BankWriter, FaceRecord, open_bank
from facebank.bank.schema import CROP_SIZE, STATUS_GENERATED
from facebank.sources.base import SourceItem
from facebank.sources.stylegan_source import SOURCE, GenerateConfig, StyleGanSource

__all__ = ["GenerateSummary", "generate_to_bank"]


@dataclass
class GenerateSummary:
    generated: int = 0
    already_in_bank: int = 0
    network_sha256: str = ""
    seeds: str = ""
    seconds: float = 0.0
    faces_per_s: float = 0.0
    extra: dict = field(default_factory=dict)


def generated_record(item: SourceItem) -> FaceRecord:
    """The bank record of a generated face: its image and provenance, nothing detected yet."""
    image = item.pixels
    return FaceRecord(
        source=item.source, source_id=item.source_id, image=item.data, image_format="png",
        width=image.shape[1], height=image.shape[0], box=np.full(4, np.nan, np.float32),
        landmarks=np.full((5, 2), np.nan, np.float32), detector="",
        crop=np.zeros((CROP_SIZE, CROP_SIZE, 3), np.uint8), provenance=item.metadata, status=STATUS_GENERATED,
    )


def generate_to_bank(
    bank_path: str,
    cfg: GenerateConfig,
    *,
    progress: Callable[[int], None] | None = None,
    total: Callable[[int], None] | None = None,
    pending_every: int = 64,  # faces per pending batch: at most this much work is lost to a kill
) -> GenerateSummary:
    """Generate the faces of `cfg.seeds` that the bank does not hold yet and store them."""
    start = time.perf_counter()
    source = StyleGanSource(cfg)
    seeds = source.seeds
    summary = GenerateSummary(network_sha256=source.network_sha256, seeds=cfg.seeds)
    with BankWriter(bank_path, batch_size=pending_every) as writer:  # opening it first applies what a killed run left pending
        with open_bank(bank_path) as bank:
            have = set(bank.column("source_id")[bank.column("source") == SOURCE])
        todo = [s for s in seeds if source.source_id(s) not in have]
        summary.already_in_bank = len(seeds) - len(todo)
        if total:
            total(len(todo))
        writer.log("generate_start", network=str(cfg.network), network_sha256=source.network_sha256, seeds=cfg.seeds,
                   psi=cfg.psi, todo=len(todo))
        for item in source.items(todo):
            writer.add_face(generated_record(item))
            summary.generated += 1
            if progress:
                progress(1)
        writer.log("generate_end", generated=summary.generated)
    summary.seconds = time.perf_counter() - start
    summary.faces_per_s = summary.generated / summary.seconds if summary.seconds else 0.0
    return summary
