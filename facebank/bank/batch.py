"""One pending batch: buffered work of a writer (or a Ray worker), and the one function that writes
it as a batch file (see writer.py and SCHEMA.md, "Crash safety")."""

from __future__ import annotations

import io
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from facebank._io.files import disk_full, ensure_space, is_disk_full, write_durable
from facebank.bank import schema
from facebank.bank.records import FaceRecord, Rejection
from facebank.errors import BankError, InputError

__all__ = ["ATTRIBUTE_COLUMNS", "AttributeRows", "PendingBatch", "SpaceVectors"]

# Columns `facebank annotate` may rewrite; everything else about a face is fixed at ingest.
ATTRIBUTE_COLUMNS = frozenset({
    "age", "age_confidence", "age_source", "gender", "gender_confidence", "gender_source",
    "model_age", "model_age_confidence", "model_gender", "model_gender_confidence", "attribute_model",
    "box", "landmarks", "crop", "detector", "status",
})


def _create_columns(group: h5py.Group, columns: dict, n: int = 0) -> None:
    for name, (dtype, shape) in columns.items():
        group.create_dataset(name, shape=(n, *shape), maxshape=(None, *shape), dtype=dtype,
                             chunks=(schema.chunk_rows(name), *shape))


@dataclass(frozen=True)
class SpaceVectors:
    """A batch's vectors of one space: its model's info and the faces' ids and vectors, in order."""

    info: dict
    ids: list[str] = field(default_factory=list)
    vectors: list[np.ndarray] = field(default_factory=list)  # blocks of rows, concatenated when written


@dataclass(frozen=True)
class AttributeRows:
    """New attribute columns (ATTRIBUTE_COLUMNS) for the faces `ids`, one value per face."""

    ids: list[str]
    columns: dict[str, np.ndarray]


class PendingBatch:
    """Buffered work of one pending batch, and the one function that writes a batch file.

    The bank's writer buffers into one; a Ray worker fills one and writes it into `work_dir`,
    for the driver's writer to adopt. `write` writes under a temporary name, fsyncs and renames,
    so a process killed mid-write leaves only a `.tmp` file, which nothing ever commits.
    """

    def __init__(self, space_info: dict[str, dict] | None = None):
        self.faces: list[FaceRecord] = []
        self.rejections: list[Rejection] = []
        self.vectors: dict[str, SpaceVectors] = {}
        self.attributes: list[AttributeRows] = []
        self.lines: list[str] = []
        self.space_info: dict[str, dict] = dict(space_info or {})

    def fresh(self) -> PendingBatch:
        """An empty batch that keeps the registered spaces."""
        return PendingBatch(self.space_info)

    def empty(self) -> bool:
        return not (self.faces or self.rejections or self.vectors or self.lines or self.attributes)

    def rows(self) -> int:
        """Faces added or updated by this batch (its weight in progress and commit counts)."""
        return len(self.faces) + sum(len(v.ids) for v in self.vectors.values()) + sum(len(a.ids) for a in self.attributes)

    def add_face(self, record: FaceRecord) -> bool:
        self.faces.append(record)
        return True

    def add_rejection(self, rejection: Rejection) -> None:
        self.rejections.append(rejection)

    def register_space(self, space: str, info: dict) -> None:
        self.space_info[space] = dict(info)

    def set_embeddings(self, space: str, info: dict, ids: list[str], vectors: np.ndarray) -> None:
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[0] != len(ids) or vectors.shape[1] != int(info["dim"]):
            raise InputError(f"vectors for {space!r} must be ({len(ids)}, {info['dim']}), got {vectors.shape}")
        entry = self.vectors.setdefault(space, SpaceVectors(dict(info)))
        if entry.info.get("sha256") != info.get("sha256") or int(entry.info["dim"]) != int(info["dim"]):
            raise InputError(f"space {space!r}: one writer session takes one model")
        entry.ids.extend(ids)
        entry.vectors.append(vectors)

    def set_attributes(self, ids: list[str], columns: dict[str, np.ndarray]) -> None:
        bad = set(columns) - ATTRIBUTE_COLUMNS
        if bad:
            raise InputError(f"not attribute columns: {', '.join(sorted(bad))}")
        self.attributes.append(AttributeRows(list(ids), {k: np.asarray(v) for k, v in columns.items()}))

    def log(self, event: str, **fields) -> None:
        self.lines.append(json.dumps({"event": event, "at": time.time(), **fields}, default=str))

    def write(self, final: Path) -> None:
        """Write the batch as `final` (atomic: a temporary name, fsync, rename)."""
        tmp = f"{final.parent}/.{final.name}.{os.getpid()}-{time.time_ns()}.tmp"
        vectors = {s: SpaceVectors(v.info, list(v.ids), list(v.vectors)) for s, v in self.vectors.items()}
        ensure_space(final.parent, self.estimate(), f"pending batch {final.name}")
        buf = io.BytesIO()
        try:
            with h5py.File(buf, "w") as p:  # in memory, then one plain write (see write_durable)
                if self.faces:
                    _write_rows(p.create_group("faces"), schema.FACE_COLUMNS, self.faces)
                    for space in sorted({s for r in self.faces for s in r.embeddings}):
                        if space not in self.space_info:
                            raise BankError(f"embeddings for {space!r} given without register_space()")
                        entry = vectors.setdefault(space, SpaceVectors(self.space_info[space]))
                        entry.ids.extend(r.id for r in self.faces if space in r.embeddings)
                        entry.vectors.append(np.stack([r.embeddings[space] for r in self.faces if space in r.embeddings]))
                if self.rejections:
                    _write_rows(p.create_group("rejections"), schema.REJECTION_COLUMNS, self.rejections)
                for space, v in vectors.items():
                    g = p.create_group(f"embeddings/{space}")
                    g.attrs["info"] = json.dumps(v.info, sort_keys=True)
                    g.create_dataset("ids", data=np.array(v.ids, dtype="S16"))
                    g.create_dataset("vectors", data=np.concatenate(v.vectors).astype(np.float32))
                for k, rows in enumerate(self.attributes):
                    g = p.create_group(f"attributes/{k:06d}")
                    g.create_dataset("ids", data=np.array(rows.ids, dtype="S16"))
                    for name, values in rows.columns.items():
                        dtype = schema.FACE_COLUMNS[name][0]
                        g.create_dataset(name, data=values.astype(object) if dtype is schema.STR else
                                         values.astype(dtype), dtype=dtype)
                if self.lines:
                    p.create_dataset("log", data=np.array(self.lines, dtype=object), dtype=schema.STR)
            write_durable(tmp, buf.getbuffer())
            os.replace(tmp, final)
        except Exception as exc:
            if is_disk_full(exc):
                raise disk_full(final.parent, exc) from exc
            raise
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def estimate(self) -> int:
        """About how many bytes `write` needs (images, crops, vectors, attribute columns, overhead)."""
        n = sum(len(r.image) + r.crop.nbytes + 2048 + sum(v.nbytes for v in r.embeddings.values())
                for r in self.faces)
        n += sum(sum(np.asarray(b).nbytes for b in v.vectors) for v in self.vectors.values())
        n += sum(sum(getattr(c, "nbytes", 0) for c in a.columns.values()) + 64 * len(a.ids) for a in self.attributes)
        return n + 1024 * len(self.rejections) + sum(len(x) for x in self.lines) + (64 << 10)


def _write_rows(group: h5py.Group, columns: dict, rows: list) -> None:
    n = len(rows)
    _create_columns(group, columns, n)
    for name in columns:
        values = [r.column(name) for r in rows]
        ds = group[name]
        if ds.dtype.kind == "O":
            for i, v in enumerate(values):
                ds[i] = v
        else:
            ds[...] = np.asarray(values, dtype=ds.dtype)
