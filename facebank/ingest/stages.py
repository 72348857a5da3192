"""Source -> detect + align -> attributes -> (embeddings) -> bank. Resumable and never silent.

Every image either becomes a face in the bank or a row in the bank's rejection log with a reason.
Re-running the same ingest skips what the bank already holds (by content hash) and what it
already rejected (by content hash, source id and stage), so a killed run finishes without
duplicates.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable, Sized
from functools import partial
from dataclasses import asdict, dataclass, field

import numpy as np

from facebank.bank import BankWriter, Rejection, open_bank
from facebank.bank.records import content_sha256
from facebank.bank.schema import STATUS_ANNOTATED, STATUS_GENERATED, STATUS_REJECTED
from facebank.config import SpaceConfig, VisionConfig
from facebank.errors import InputError
from facebank.ingest.annotator import Annotator, encoded
from facebank.ingest.pool import worker_pool
from facebank.ingest.workers import (Annotated, EmbedWorker, Embedded, IngestWorker, RowAnnotated, RowWorker,
                                     embed_job, row_job)
from facebank.progress import Progress, Tally
from facebank.sources.base import SourceItem

__all__ = ["Summary", "annotate_bank", "annotate_todo", "embed_bank", "ingest", "space_info", "store_annotated",
           "store_annotation", "store_embedding"]


@dataclass
class Summary:
    """What a run did, for the CLI summary and `--json`."""

    added: int = 0
    items: int = 0  # items the source listed: added + already_in_bank + sum(rejected) (ingest)
    already_in_bank: int = 0
    duplicates: list[str] = field(default_factory=list)  # source ids whose bytes were already in
    rejected: Counter = field(default_factory=Counter)  # reason -> count
    rejected_items: list[dict] = field(default_factory=list)
    embedded: int = 0
    seconds: float = 0.0

    def merge(self, other: Summary) -> None:
        """Add the counts of a part of the same run (a Ray worker's batch)."""
        self.added += other.added
        self.rejected += other.rejected
        self.rejected_items.extend(other.rejected_items)
        self.embedded += other.embedded

    def to_dict(self) -> dict:
        d = asdict(self)
        d["rejected"] = dict(self.rejected)
        return d


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
    workers: int = 1,  # processes that detect, annotate and embed: 0 = one per CPU, 1 = in this process
) -> Summary:
    """Add every face of `items` to the bank at `bank_path` (created if missing)."""
    start = time.perf_counter()
    summary = Summary()
    spaces = tuple(spaces)
    annotator = annotator or Annotator(vision, spaces)
    tally = Tally(progress, "ingest", len(items) if isinstance(items, Sized) else None)
    with BankWriter(bank_path, batch_size=batch_size, commit_every=commit_every) as writer:
        for space in annotator.embedders:
            writer.register_space(space, annotator.space_info(space))
        writer.log("ingest_start", models=annotator.models())

        todo = []
        for item in items:
            summary.items += 1
            if _screen(writer, item, summary):
                todo.append(item)
            else:
                tally.advance()
        with worker_pool(partial(IngestWorker.load, vision, spaces), workers, local=IngestWorker(annotator)) as pool:
            for outcome in pool.map(todo):
                store_annotated(writer, summary, outcome)
                tally.advance()
        _check_counts(summary)
        writer.log("ingest_end", added=summary.added, rejected=dict(summary.rejected), duplicates=summary.duplicates)
    summary.seconds = time.perf_counter() - start
    return summary


def store_annotated(writer, summary: Summary, outcome: Annotated) -> None:
    """Write one ingested item's outcome (its face, or its rejection) and count it.

    `writer` is the bank's BankWriter here, or a Ray worker's PendingBatch (the same methods).
    """
    if outcome.record is not None:
        writer.add_face(outcome.record)
        summary.added += 1
    else:
        item, why = outcome.item, outcome.rejected
        _reject(writer, item, summary, content_sha256(encoded(item)), why.reason, why.detail, "annotate")


def store_annotation(writer, summary: Summary, outcome: RowAnnotated) -> None:
    """Write one annotated bank row's new columns (or its rejection and status) and count it."""
    item, why = outcome.item, outcome.rejected
    if outcome.columns is None:
        writer.add_rejection(Rejection(item.source, item.source_id, content_sha256(item.data), why.reason, why.detail,
                                       "annotate"))
        summary.rejected[why.reason] += 1
        cols = {"status": STATUS_REJECTED}
    else:
        cols = {**outcome.columns, "status": STATUS_ANNOTATED}
        summary.added += 1
    writer.set_attributes([outcome.face_id], {k: np.array([v]) for k, v in cols.items()})


def store_embedding(writer, summary: Summary, space: str, info: dict, outcome: Embedded) -> None:
    """Write one face's vector of `space` and count it."""
    writer.set_embeddings(space, info, [outcome.face_id], outcome.vector[None, :])
    summary.embedded += 1


def space_info(embedder) -> dict:
    """What the bank records of a space's model (`register_space`, `set_embeddings`)."""
    return {"model": embedder.info.name, "sha256": embedder.info.sha256, "dim": int(embedder.dim),
            "version": embedder.info.version}


def _check_counts(summary: Summary) -> None:
    """Nothing dropped silently: every listed item was added, already in the bank, or rejected."""
    accounted = summary.added + summary.already_in_bank + sum(summary.rejected.values())
    if accounted != summary.items:
        raise RuntimeError(f"ingest accounted for {accounted} of {summary.items} items (a bug: please report it)")


def _reject(writer, item: SourceItem, summary: Summary, sha: str, reason: str, detail: str,
            stage: str) -> None:
    writer.add_rejection(Rejection(item.source, item.source_id, sha, reason, detail, stage))
    summary.rejected[reason] += 1
    summary.rejected_items.append({"source_id": item.source_id, "reason": reason, "detail": detail})


def _screen(writer: BankWriter, item: SourceItem, summary: Summary) -> bool:
    """True when the item still needs annotating; records why not otherwise."""
    if item.rejection is not None:
        _reject(writer, item, summary, "", *item.rejection, "read")
        return False
    sha = content_sha256(encoded(item))
    if writer.has_content(sha):
        summary.already_in_bank += 1
        summary.duplicates.append(item.source_id)
        return False
    if writer.was_rejected(sha, item.source_id, "annotate"):
        summary.rejected["already_rejected"] += 1
        return False
    writer.mark_seen(sha)  # a second copy later in this run is a duplicate, not a second face
    return True


def embed_bank(
    bank_path: str,
    space: SpaceConfig,
    *,
    progress: Progress | None = None,
    workers: int = 1,  # embedding processes: 0 = one per CPU, 1 = in this process
) -> Summary:
    """Compute the `space` embedding of every face that lacks one (resumable)."""
    start = time.perf_counter()
    summary = Summary()
    with open_bank(bank_path) as bank:
        embedder = EmbedWorker.load(space)
        info = space_info(embedder.embedder)
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
        tally = Tally(progress, f"embed {space.space}")
        tally.start(len(todo))
        with BankWriter(bank_path, create=False) as writer:
            writer.log("embed_start", space=space.space, model=info)
            with worker_pool(partial(EmbedWorker.load, space), workers, local=embedder) as pool:
                for outcome in pool.map(embed_job(bank, row) for row in todo):
                    store_embedding(writer, summary, space.space, info, outcome)
                    tally.advance()
            writer.log("embed_end", space=space.space, embedded=summary.embedded)
    summary.seconds = time.perf_counter() - start
    return summary


def annotate_todo(bank, model_name: str, force: bool) -> tuple[np.ndarray, np.ndarray]:
    """(rows to annotate, which rows are new): generated faces, and annotated ones lacking this model's estimate."""
    status = bank.column("status")
    done = (bank.column("attribute_model") == model_name) & np.isfinite(bank.column("model_age"))
    new = status == STATUS_GENERATED
    redo = (status == STATUS_ANNOTATED) & (force | ~done)
    return np.flatnonzero(new | redo), new


def annotate_bank(
    bank_path: str,
    vision: VisionConfig = VisionConfig(),
    *,
    force: bool = False,
    progress: Progress | None = None,
    workers: int = 1,  # annotation processes: 0 = one per CPU, 1 = in this process
) -> Summary:
    """Annotate the bank's faces: detect + align + age/gender for generated faces not yet
    annotated, and (re-)estimate age and gender of the others with `vision.attributes`.

    Without `force`, faces that already carry this model's estimate are skipped, so an
    interrupted run resumes where it stopped. A generated face with no usable face in it stays
    in the bank (its seed is not retried) with status "rejected" and a reason in the log.
    """
    start = time.perf_counter()
    summary = Summary()
    worker = RowWorker.load(vision)
    annotator = worker.annotator
    with open_bank(bank_path) as bank:
        todo, new = annotate_todo(bank, annotator.attributes.info.name, force)
        summary.already_in_bank = len(bank) - len(todo)
        categories, meta_genders = bank.column("meta_age_category"), bank.column("meta_gender")
        tally = Tally(progress, "annotate")
        tally.start(len(todo))
        jobs = (row_job(bank, row, new[row], categories[row], meta_genders[row]) for row in todo)
        with BankWriter(bank_path, create=False) as writer:
            writer.log("annotate_start", models=annotator.models(), force=force)
            with worker_pool(partial(RowWorker.load, vision), workers, local=worker) as pool:
                for outcome in pool.map(jobs):
                    store_annotation(writer, summary, outcome)
                    tally.advance()
            writer.log("annotate_end", annotated=summary.added, rejected=dict(summary.rejected))
    summary.seconds = time.perf_counter() - start
    return summary
