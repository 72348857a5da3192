"""Crash-safe, resumable writes to a bank (schema version 2, see SCHEMA.md).

1. new work is buffered and written as small *pending batch* files in `<bank>.pending/`, each
   written under a temporary name and moved into place with `os.replace` (atomic), so a kill
   loses at most one batch;
2. `commit()` merges the pending batches into ONE new immutable fragment in `<bank>.d/` (only
   the new data: facebank/bank/commit.py), writes a new small top file and `os.replace`s it
   over `<bank>`, then deletes the applied batches.

A kill at any moment leaves the previous top file (which opens) and its fragments, complete
pending batches that the next writer applies first, and maybe an orphan fragment that no top
file references (the next writer removes it). The top file names the batches it applied, so a
kill between the switch and the deletion of the batches cannot apply them twice. One writer at
a time (`flock` on `<bank>.lock`).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import time
from pathlib import Path

import h5py
import numpy as np

from facebank.bank import schema
from facebank.bank.commit import CommitState, commit_pending
from facebank.bank.layout import empty_manifest, fragment_dir, read_manifest, write_top
from facebank.bank.leftovers import quarantine_corrupt_batches, remove_temp_files
from facebank.bank.records import FaceRecord, Rejection
from facebank.bank.store import check_header
from facebank.errors import BankError, BankLockedError, InputError

log = logging.getLogger(__name__)

__all__ = ["ATTRIBUTE_COLUMNS", "BankWriter", "create_bank"]

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


def _fsync(name: str) -> None:
    with open(name, "rb") as fh:
        os.fsync(fh.fileno())


def create_bank(path: str | os.PathLike) -> Path:
    """Create an empty bank at `path` (atomically). Refuses to overwrite an existing file."""
    path = Path(path)
    if path.exists():
        raise InputError(f"{path} already exists")
    _check_writable_dir(path.parent)
    write_top(path, empty_manifest(f"{path.name}.d"), time.time())  # an OSError names the path itself
    return path


def _check_writable_dir(directory: Path) -> None:
    directory = directory if str(directory) else Path(".")
    if not directory.is_dir():
        raise InputError(f"directory {directory} does not exist")
    if not os.access(directory, os.W_OK):
        raise InputError(f"cannot write in {directory}: read-only location")


class BankWriter:
    """Appends faces, rejections and embeddings to a bank; see the module docstring.

    Use as a context manager. `commit()` makes buffered work durable and visible to readers;
    leaving the context commits. Work is also flushed to a pending batch every `batch_size`
    faces, and committed every `commit_every` faces, so a kill loses at most one batch.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        create: bool = True,  # create the bank if it does not exist
        batch_size: int = 64,  # faces per pending batch file
        commit_every: int = 2048,  # faces between automatic commits (each writes one fragment)
    ):
        self.path = Path(path)
        self.batch_size = batch_size
        self.commit_every = commit_every
        if not self.path.exists() and not create:
            raise InputError(f"bank {self.path} does not exist")
        _check_writable_dir(self.path.parent)
        if self.path.exists() and not os.access(self.path, os.W_OK):
            raise InputError(f"bank {self.path} is read-only")
        self.pending_dir = Path(f"{self.path}.pending")
        # The lock comes first, creation after: whatever temporary file is left beside the bank
        # then belongs to a dead writer, and the lock holder may delete it.
        self._lock_fh = open(f"{self.path}.lock", "a+")
        try:
            fcntl.flock(self._lock_fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock_fh.close()
            raise BankLockedError(f"another process is writing to {self.path}") from None
        try:
            remove_temp_files(self.path, self.pending_dir)
            if not self.path.exists():
                create_bank(self.path)
            quarantine_corrupt_batches(self.pending_dir)
        except BaseException:
            self._unlock()
            raise
        self._faces: list[FaceRecord] = []
        self._rejections: list[Rejection] = []
        self._vectors: dict[str, tuple[dict, list[str], list[np.ndarray]]] = {}
        self._log: list[str] = []
        self._space_info: dict[str, dict] = {}
        self._attributes: list[tuple[list[str], dict[str, np.ndarray]]] = []
        self._since_commit = 0
        self._seen: set[str] = set()
        self._state: CommitState
        self._load_known()
        self._remove_orphans()
        if self._pending_files():
            self.commit()  # finish what a killed writer left behind

    # -- what is already there (for resumable re-runs) --
    def _load_known(self) -> None:
        with h5py.File(self.path, "r") as f:
            check_header(f, self.path)
            manifest = read_manifest(f)
            shas = {h.decode() for h in f["faces/content_sha256"][:]}
            ids = [h.decode() for h in f["faces/id"][:]]
            rej = f["rejections"]
            rejected = set(zip(rej["content_sha256"][:], rej["source_id"].asstr()[:], rej["stage"].asstr()[:]))
            created = float(f.attrs["created"])
        self._state = CommitState(manifest, created, ids, {fid: i for i, fid in enumerate(ids)}, shas, rejected)
        self._known = set(shas)
        self._rejected = {(h.decode(), s, st) for h, s, st in rejected}
        for name in self._pending_files():
            with h5py.File(name, "r") as p:
                if "faces" in p:
                    self._known.update(h.decode() for h in p["faces/content_sha256"][:])

    def _remove_orphans(self) -> None:
        """Delete fragment files no version references (left by a killed commit, compact or upgrade)."""
        m = self._state.manifest
        directory = fragment_dir(self.path, m)
        if not directory.is_dir():
            return
        live = {fr["name"] for fr in m["fragments"]} | set(m["retired"])
        for p in directory.iterdir():
            if p.name not in live and (p.name.startswith("frag-") or p.name.startswith(".frag-")):
                p.unlink()

    def has_content(self, sha256_hex: str) -> bool:
        """True when a face with these bytes is in the bank, buffered, or being processed."""
        return sha256_hex in self._known or sha256_hex in self._seen

    def mark_seen(self, sha256_hex: str) -> None:
        """Note content that is being processed, so a later copy in the same run counts as a duplicate."""
        self._seen.add(sha256_hex)

    def was_rejected(self, sha256_hex: str, source_id: str, stage: str) -> bool:
        return (sha256_hex, source_id, stage) in self._rejected

    # -- buffering --
    def add_face(self, record: FaceRecord) -> bool:
        """Buffer one face. Returns False (and stores nothing) when its content is already in."""
        if record.content_sha256 in self._known:
            return False
        self._known.add(record.content_sha256)
        self._faces.append(record)
        self._since_commit += 1
        if len(self._faces) >= self.batch_size:
            self.flush()
        if self._since_commit >= self.commit_every:
            self.commit()
        return True

    def add_rejection(self, rejection: Rejection) -> None:
        if rejection.key in self._rejected:
            return
        self._rejected.add(rejection.key)
        self._rejections.append(rejection)

    def register_space(self, space: str, info: dict) -> None:
        """Declare the model (name, sha256, dim) behind `FaceRecord.embeddings[space]`."""
        self._space_info[space] = dict(info)

    def set_embeddings(self, space: str, info: dict, ids: list[str], vectors: np.ndarray) -> None:
        """Buffer vectors (n, d) of `space` for existing face `ids`; `info` has model, sha256, dim."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[0] != len(ids) or vectors.shape[1] != int(info["dim"]):
            raise InputError(f"vectors for {space!r} must be ({len(ids)}, {info['dim']}), got {vectors.shape}")
        entry = self._vectors.setdefault(space, (dict(info), [], []))
        if entry[0].get("sha256") != info.get("sha256") or int(entry[0]["dim"]) != int(info["dim"]):
            raise InputError(f"space {space!r}: one writer session takes one model")
        entry[1].extend(ids)
        entry[2].append(vectors)
        self._since_commit += len(ids)
        if sum(len(v[1]) for v in self._vectors.values()) >= self.batch_size * 4:
            self.flush()
        if self._since_commit >= self.commit_every:
            self.commit()

    def set_attributes(self, ids: list[str], columns: dict[str, np.ndarray]) -> None:
        """Buffer new values of annotation columns (detection, crop, attributes) for existing `ids`."""
        bad = set(columns) - ATTRIBUTE_COLUMNS
        if bad:
            raise InputError(f"not attribute columns: {', '.join(sorted(bad))}")
        self._attributes.append((list(ids), {k: np.asarray(v) for k, v in columns.items()}))
        self._since_commit += len(ids)
        if sum(len(a[0]) for a in self._attributes) >= self.batch_size * 4:
            self.flush()

    def log(self, event: str, **fields) -> None:
        self._log.append(json.dumps({"event": event, "at": time.time(), **fields}, default=str))

    # -- durability --
    def _pending_files(self) -> list[str]:
        if not self.pending_dir.is_dir():
            return []
        return sorted(str(p) for p in self.pending_dir.glob("batch-*.h5"))

    def flush(self) -> None:
        """Write buffered work as one pending batch file (atomic). Readers do not see it yet."""
        if not (self._faces or self._rejections or self._vectors or self._log or self._attributes):
            return
        self.pending_dir.mkdir(exist_ok=True)
        final = self.pending_dir / f"batch-{time.time_ns():020d}.h5"
        tmp = str(final) + ".tmp"
        with h5py.File(tmp, "w") as p:
            if self._faces:
                _write_rows(p.create_group("faces"), schema.FACE_COLUMNS, self._faces)
                for space in {s for r in self._faces for s in r.embeddings}:
                    ids = [r.id for r in self._faces if space in r.embeddings]
                    vecs = np.stack([r.embeddings[space] for r in self._faces if space in r.embeddings])
                    if space not in self._space_info:
                        raise BankError(f"embeddings for {space!r} given without register_space()")
                    self._vectors.setdefault(space, (self._space_info[space], [], []))
                    self._vectors[space][1].extend(ids)
                    self._vectors[space][2].append(vecs)
            if self._rejections:
                _write_rows(p.create_group("rejections"), schema.REJECTION_COLUMNS, self._rejections)
            for space, (info, ids, vecs) in self._vectors.items():
                g = p.create_group(f"embeddings/{space}")
                g.attrs["info"] = json.dumps(info, sort_keys=True)
                g.create_dataset("ids", data=np.array(ids, dtype="S16"))
                g.create_dataset("vectors", data=np.concatenate(vecs).astype(np.float32))
            for k, (ids, cols) in enumerate(self._attributes):
                g = p.create_group(f"attributes/{k:06d}")
                g.create_dataset("ids", data=np.array(ids, dtype="S16"))
                for name, values in cols.items():
                    dtype = schema.FACE_COLUMNS[name][0]
                    g.create_dataset(name, data=values.astype(object) if dtype is schema.STR else values.astype(dtype),
                                     dtype=dtype)
            if self._log:
                p.create_dataset("log", data=np.array(self._log, dtype=object), dtype=schema.STR)
        _fsync(tmp)
        os.replace(tmp, final)
        self._faces, self._rejections, self._vectors, self._log = [], [], {}, []
        self._attributes = []

    def commit(self) -> None:
        """Merge every pending batch into one new fragment and switch the bank to the new version."""
        self.flush()
        pending = self._pending_files()
        self._since_commit = 0
        if not pending:
            return
        try:
            commit_pending(self.path, self._state, pending)
        except OSError as exc:
            self._load_known()  # the commit did not happen: forget what it had noted
            raise BankError(f"cannot write {self.path}: {exc.strerror or exc}") from exc
        except BaseException:
            self._load_known()
            raise
        log.debug("committed %d pending batches to %s", len(pending), self.path)

    def close(self) -> None:
        try:
            self.commit()
        finally:
            self._unlock()

    def _unlock(self) -> None:
        if not self._lock_fh.closed:
            fcntl.flock(self._lock_fh, fcntl.LOCK_UN)
            self._lock_fh.close()

    def __enter__(self) -> BankWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            # Keep what was finished: flush complete records as a pending batch, commit it.
            try:
                self.commit()
            finally:
                self._unlock()


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
