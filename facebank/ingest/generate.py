"""Generated faces into the bank, with the write path off the generator's critical path.

The generator runs in this process (on the GPU when there is one). Every face it makes goes to a
pool of worker processes that encode it (the bank's image format, `png` by default) and, when
asked, detect, align, estimate age and gender and embed it, while the generator makes the next
batch. Results come back in seed order and this process alone writes them, so the bank is the
same whatever the number of workers: the same rows in the same order, bit for bit, as generating
first and running `annotate_bank` and `embed_bank` afterwards.

Resumable by source id: a killed run loses at most one pending batch and a re-run stores only
the seeds the bank does not hold, bit-identical to an uninterrupted run: generator batches lie on
a fixed grid over the requested seeds (`sources.seed_grid`), so a batch with a missing seed is made
whole again and its other faces dropped. A generated face without one usable face in it stays in the
bank with status "rejected" and a reason in the rejection log, so its seed is not retried.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

from facebank.bank import BankWriter, Rejection, open_bank
from facebank.config import SpaceConfig, VisionConfig
from facebank.ingest.pool import worker_pool
from facebank.ingest.store_workers import StorePlan, Stored, StoreWorker
from facebank.progress import Progress, Tally
from facebank.sources.seed_grid import seed_grid
from facebank.sources.stylegan_source import SOURCE, GenerateConfig, StyleGanSource
from facebank.vision.image_encode import parse_image_format

__all__ = ["GenerateSummary", "generate_to_bank", "missing_seeds", "store_generated"]


@dataclass
class GenerateSummary:
    generated: int = 0
    already_in_bank: int = 0
    annotated: int = 0  # faces annotated in the same pass (0 unless `vision` was given)
    rejected: Counter = field(default_factory=Counter)  # reason -> count, annotation in the same pass
    embedded: dict = field(default_factory=dict)  # space -> faces embedded in the same pass
    network_sha256: str = ""
    seeds: str = ""
    device: str = ""  # where the generator ran ("cuda:0", "cpu")
    image_format: str = ""  # how the images were stored ("png")
    workers: int = 0  # encoding (and annotating) processes; 0 = in this process
    seconds: float = 0.0
    faces_per_s: float = 0.0
    extra: dict = field(default_factory=dict)

    def merge(self, other: GenerateSummary) -> None:
        """Add the counts of a part of the same run (a Ray worker's batch)."""
        self.generated += other.generated
        self.annotated += other.annotated
        self.rejected += other.rejected
        for space, n in other.embedded.items():
            self.embedded[space] = self.embedded.get(space, 0) + n


def store_generated(writer, summary: GenerateSummary, outcome: Stored, *, annotating: bool) -> None:
    """Write one generated face (and its rejection, if annotation rejected it) and count it.

    `writer` is the bank's BankWriter here, or a Ray worker's PendingBatch (the same methods).
    """
    record, why = outcome.record, outcome.rejected
    writer.add_face(record)
    summary.generated += 1
    if why is not None:
        writer.add_rejection(Rejection(record.source, record.source_id, record.content_sha256, why.reason, why.detail,
                                       "annotate"))
        summary.rejected[why.reason] += 1
    elif annotating:
        summary.annotated += 1
    for space in record.embeddings:
        summary.embedded[space] = summary.embedded.get(space, 0) + 1


def missing_seeds(bank_path: str, seeds: list[int], source_id: Callable[[int], str]) -> list[bool]:
    """Per requested seed, whether the bank still lacks its face (by source id): what a run stores."""
    with open_bank(bank_path) as bank:
        have = set(bank.column("source_id")[bank.column("source") == SOURCE])
    return [source_id(s) not in have for s in seeds]


def generate_to_bank(
    bank_path: str,
    cfg: GenerateConfig,
    *,
    vision: VisionConfig | None = None,  # annotate in the same pass (None: store as "generated")
    spaces: tuple[SpaceConfig, ...] = (),  # embed in the same pass (needs vision)
    workers: int = 0,  # encoding/annotating processes; 0 = one per CPU, 1 = in this process
    progress: Progress | None = None,
    pending_every: int = 64,  # faces per pending batch: at most this much work is lost to a kill
    say: Callable[[str], None] | None = None,  # one line for people: which device, which format
) -> GenerateSummary:
    """Generate the faces of `cfg.seeds` that the bank does not hold yet and store them."""
    start = time.perf_counter()
    fmt = parse_image_format(cfg.image_format)  # bad input fails before the network loads
    plan = StorePlan(image_format=fmt, vision=vision, spaces=tuple(spaces) if vision else ())
    source = StyleGanSource(cfg)
    summary = GenerateSummary(network_sha256=source.network_sha256, seeds=cfg.seeds, device=str(source.device),
                              image_format=fmt.spec)
    local = StoreWorker(plan)
    with BankWriter(bank_path, batch_size=pending_every) as writer:  # opening it first applies what a killed run left pending
        missing = missing_seeds(bank_path, source.seeds, source.source_id)
        todo = sum(missing)
        summary.already_in_bank = len(source.seeds) - todo
        for space, info in local.space_infos().items():
            writer.register_space(space, info)
        tally = Tally(progress, "generate")
        tally.start(todo)
        if say:
            say(f"generating {todo} faces on {summary.device}, stored as {fmt.spec}"
                + (", annotated" if vision else "") + (f" and embedded in {', '.join(s.space for s in plan.spaces)}"
                                                        if plan.spaces else ""))
        writer.log("generate_start", network=str(cfg.network), network_sha256=source.network_sha256, seeds=cfg.seeds,
                   psi=cfg.psi, todo=todo, batch_size=source.batch_size, device=summary.device,
                   image_format=fmt.spec, models=local.models())
        with worker_pool(partial(StoreWorker, plan), workers, local=local) as pool:
            summary.workers = pool.processes
            batches = seed_grid(source.seeds, missing, source.batch_size)
            for outcome in pool.map(source.grid_items(batches)):
                store_generated(writer, summary, outcome, annotating=vision is not None)
                tally.advance()
        writer.log("generate_end", generated=summary.generated, annotated=summary.annotated,
                   rejected=dict(summary.rejected))
    summary.seconds = time.perf_counter() - start
    summary.faces_per_s = summary.generated / summary.seconds if summary.seconds else 0.0
    return summary
