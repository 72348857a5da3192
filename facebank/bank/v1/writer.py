"""Bank schema version 1 writer (frozen; see facebank/bank/v1/__init__.py).

HDF5 has no journal: a process killed while it updates a file in place can leave metadata that
no longer opens. So the bank file itself is only ever replaced whole:

1. new work is buffered and written as small *pending batch* files in `<bank>.pending/`, each
   written under a temporary name and moved into place with `os.replace` (atomic);
2. `commit()` copies the bank, applies every pending batch to the copy, and `os.replace`s the
   copy over the bank, then deletes the applied batches.

A kill at any moment leaves the previous bank (which opens) plus complete pending batches that
the next writer applies first. Applying a batch is idempotent (faces are keyed by content hash,
rejections by (content, source id, stage), embeddings by face id), so a kill between the replace
and the deletion of the batches cannot duplicate anything. One writer at a time (`flock`).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

from facebank._version import __version__
from facebank.bank import schema
from facebank.bank.v1 import SCHEMA_VERSION
from facebank.bank.v1.integrity import compute_content_hash
from facebank.bank.records import FaceRecord, Rejection
from facebank.errors import BankError, BankLockedError, InputError

log = logging.getLogger(__name__)

__all__ = ["BankWriter", "check_header_v1", "create_bank"]

# Columns `facebank annotate` may rewrite; everything else about a face is fixed at ingest.
ATTRIBUTE_COLUMNS = frozenset({
    "age", "age_confidence", "age_source", "gender", "gender_confidence", "gender_source",
    "model_age", "model_age_confidence", "model_gender", "model_gender_confidence", "attribute_model",
    "box", "landmarks", "crop", "detector", "status",
})


def check_header_v1(f: h5py.File, path) -> None:
    """Refuse anything that is not a version-1 bank."""
    if f.attrs.get("format") != schema.FORMAT or int(f.attrs.get("schema_version", -1)) != SCHEMA_VERSION:
        raise BankError(f"{path} is not a version-1 facebank bank")


def _create_columns(group: h5py.Group, columns: dict, n: int = 0) -> None:
    for name, (dtype, shape) in columns.items():
        # No compression: crops gzip to only ~75% of their size but cost ~200 us more per read.
        group.create_dataset(name, shape=(n, *shape), maxshape=(None, *shape), dtype=dtype,
                             chunks=(schema.chunk_rows(name), *shape))


def create_bank(path: str | os.PathLike) -> Path:
    """Create an empty bank at `path` (atomically). Refuses to overwrite an existing file."""
    path = Path(path)
    if path.exists():
        raise InputError(f"{path} already exists")
    _check_writable_dir(path.parent)
    tmp = _tmp_name(path)
    try:
        with h5py.File(tmp, "w", libver=("v110", "latest")) as f:
            f.attrs["format"] = schema.FORMAT
            f.attrs["schema_version"] = SCHEMA_VERSION
            f.attrs["required_features"] = "[]"
            f.attrs["writer"] = f"facebank {__version__}"
            f.attrs["created"] = time.time()
            f.attrs["updated"] = time.time()
            f.attrs["models"] = "{}"
            _create_columns(f.create_group("faces"), schema.FACE_COLUMNS)
            _create_columns(f.create_group("rejections"), schema.REJECTION_COLUMNS)
            f.create_group("embeddings")
            f.create_dataset("log", shape=(0,), maxshape=(None,), dtype=schema.STR, chunks=(64,))
            f.attrs["content_hash"] = compute_content_hash(f)
        _fsync(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def _check_writable_dir(directory: Path) -> None:
    directory = directory if str(directory) else Path(".")
    if not directory.is_dir():
        raise InputError(f"directory {directory} does not exist")
    if not os.access(directory, os.W_OK):
        raise InputError(f"cannot write in {directory}: read-only location")


def _tmp_name(path: Path) -> str:
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent or ".")
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(name, 0o666 & ~umask)  # mkstemp makes 0600; a bank is an ordinary shared file
    return name


def _fsync(name: str) -> None:
    with open(name, "rb") as fh:
        os.fsync(fh.fileno())


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
        commit_every: int = 2048,  # faces between automatic commits (each copies the bank once)
    ):
        self.path = Path(path)
        self.batch_size = batch_size
        self.commit_every = commit_every
        if not self.path.exists():
            if not create:
                raise InputError(f"bank {self.path} does not exist")
            create_bank(self.path)
        _check_writable_dir(self.path.parent)
        if not os.access(self.path, os.W_OK):
            raise InputError(f"bank {self.path} is read-only")
        self.pending_dir = Path(f"{self.path}.pending")
        self._lock_fh = open(f"{self.path}.lock", "a+")
        try:
            fcntl.flock(self._lock_fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock_fh.close()
            raise BankLockedError(f"another process is writing to {self.path}") from None
        self._faces: list[FaceRecord] = []
        self._rejections: list[Rejection] = []
        self._vectors: dict[str, tuple[dict, list[str], list[np.ndarray]]] = {}
        self._log: list[str] = []
        self._space_info: dict[str, dict] = {}
        self._attributes: list[tuple[list[str], dict[str, np.ndarray]]] = []
        self._since_commit = 0
        self._seen: set[str] = set()
        self._load_known()
        if self._pending_files():
            self.commit()  # finish what a killed writer left behind

    # -- what is already there (for resumable re-runs) --
    def _load_known(self) -> None:
        with h5py.File(self.path, "r") as f:
            check_header_v1(f, self.path)
            self._known = {h.decode() for h in f["faces/content_sha256"][:]}
            rej = f["rejections"]
            self._rejected = {
                (h.decode(), s, st)
                for h, s, st in zip(rej["content_sha256"][:], rej["source_id"].asstr()[:], rej["stage"].asstr()[:])
            }
            self._ids = {h.decode() for h in f["faces/id"][:]}
        for name in self._pending_files():
            with h5py.File(name, "r") as p:
                if "faces" in p:
                    self._known.update(h.decode() for h in p["faces/content_sha256"][:])

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
        """Apply every pending batch to a copy of the bank and replace the bank with it."""
        self.flush()
        pending = self._pending_files()
        self._since_commit = 0
        if not pending:
            return
        tmp = _tmp_name(self.path)
        try:
            shutil.copyfile(self.path, tmp)
            with h5py.File(tmp, "r+") as f:
                for name in pending:
                    with h5py.File(name, "r") as p:
                        _apply_batch(f, p, self._ids)
                f.attrs["updated"] = time.time()
                f.attrs["writer"] = f"facebank {__version__}"
                f.attrs["content_hash"] = compute_content_hash(f)
            _fsync(tmp)
            os.replace(tmp, self.path)
        except OSError as exc:
            raise BankError(f"cannot write {self.path}: {exc.strerror or exc}") from exc
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        for name in pending:
            os.unlink(name)
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


def _append(dst: h5py.Dataset, values: np.ndarray) -> None:
    n = dst.shape[0]
    dst.resize((n + len(values), *dst.shape[1:]))
    if dst.dtype.kind == "O":
        for i, v in enumerate(values):
            dst[n + i] = v
    else:
        dst[n:] = values


def _apply_batch(f: h5py.File, p: h5py.File, ids: set[str]) -> None:
    """Apply one pending batch to the open bank copy `f`, skipping what it already holds."""
    if "faces" in p:
        pf = p["faces"]
        known = {h.decode() for h in f["faces/content_sha256"][:]}
        keep = [i for i, h in enumerate(pf["content_sha256"][:]) if h.decode() not in known]
        if keep:
            n_before = f["faces/id"].shape[0]
            for name in schema.FACE_COLUMNS:
                _append(f["faces"][name], pf[name][keep] if pf[name].dtype.kind != "O" else [pf[name][i] for i in keep])
            n_after = n_before + len(keep)
            for g in f["embeddings"].values():  # new faces have no vectors yet in existing spaces
                g["vectors"].resize((n_after, g["vectors"].shape[1]))
                g["present"].resize((n_after,))
                g["present"][n_before:] = False
            ids.update(h.decode() for h in pf["id"][keep])
    if "rejections" in p:
        pr, fr = p["rejections"], f["rejections"]
        known = set(zip(fr["content_sha256"][:], fr["source_id"].asstr()[:], fr["stage"].asstr()[:]))
        keep = [
            i for i, key in enumerate(zip(pr["content_sha256"][:], pr["source_id"].asstr()[:], pr["stage"].asstr()[:]))
            if key not in known
        ]
        if keep:
            for name in schema.REJECTION_COLUMNS:
                _append(fr[name], pr[name][keep] if pr[name].dtype.kind != "O" else [pr[name][i] for i in keep])
    if "embeddings" in p:
        row_of = {h.decode(): i for i, h in enumerate(f["faces/id"][:])}
        for space, pg in p["embeddings"].items():
            info = json.loads(pg.attrs["info"])
            g = _space_group(f, space, info)
            rows = np.array([row_of[h.decode()] for h in pg["ids"][:] if h.decode() in row_of], dtype=np.int64)
            vecs = pg["vectors"][:][[h.decode() in row_of for h in pg["ids"][:]]]
            if len(rows):
                order = np.argsort(rows)  # h5py fancy indexing needs increasing, unique rows
                rows, vecs = rows[order], vecs[order]
                rows, first = np.unique(rows, return_index=True)
                g["vectors"][rows] = vecs[first]
                g["present"][rows] = True
    if "attributes" in p:
        row_of = {h.decode(): i for i, h in enumerate(f["faces/id"][:])}
        for g in p["attributes"].values():
            rows = [row_of.get(h.decode(), -1) for h in g["ids"][:]]
            for name in g:
                if name == "ids":
                    continue
                values = g[name].asstr()[:] if g[name].dtype.kind == "O" else g[name][:]
                for r, v in zip(rows, values):
                    if r >= 0:
                        f["faces"][name][r] = v
    if "log" in p:
        _append(f["log"], list(p["log"].asstr()[:]))


def _space_group(f: h5py.File, space: str, info: dict) -> h5py.Group:
    n, dim = f["faces/id"].shape[0], int(info["dim"])
    if space in f["embeddings"]:
        g = f["embeddings"][space]
        old = json.loads(g.attrs["info"])
        if int(old["dim"]) != dim or old.get("sha256") != info.get("sha256"):
            raise InputError(
                f"space {space!r} was made by {old.get('model')} ({old.get('sha256', '')[:12]}), "
                f"not {info.get('model')} ({info.get('sha256', '')[:12]}); use another space name"
            )
        return g
    g = f["embeddings"].create_group(space)
    g.attrs["info"] = json.dumps(info, sort_keys=True)
    g.create_dataset("vectors", shape=(n, dim), maxshape=(None, dim), dtype=np.float32,
                     chunks=(schema.VECTOR_CHUNK_ROWS, dim))
    g.create_dataset("present", shape=(n,), maxshape=(None,), dtype=bool, chunks=(schema.ROW_CHUNK,), fillvalue=False)
    return g

