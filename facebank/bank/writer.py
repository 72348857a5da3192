"""Crash-safe, resumable writes to a bank (schema version 2, see SCHEMA.md).

1. new work is buffered and written as small *pending batch* files in `<bank>.pending/`, each
   written under a temporary name and moved into place with `os.replace` (atomic), so a kill
   loses at most one batch;
2. `commit()` merges the pending batches into ONE new immutable fragment in `<bank>.d/` (only
   the new data, and not the images: the batch files that hold them are hard-linked beside it;
   facebank/bank/commit.py), writes a new small top file and `os.replace`s it over `<bank>`,
   then deletes the applied batches.
3. other processes (the Ray engine's workers) write batch files of the same format, with the same
   code (`PendingBatch.write`), into `<bank>.pending/work/`; the writer `adopt`s each one (checksum
   checked) into the pending folder, in the order the driver decides, and commits it as its own.
   What is in `work/` when a writer opens was never adopted and is deleted.

A kill at any moment leaves the previous top file (which opens) and its fragments, complete
pending batches that the next writer applies first, and maybe an orphan fragment that no top
file references (the next writer removes it). The top file names the batches it applied, so a
kill between the switch and the deletion of the batches cannot apply them twice. One writer at
a time (`flock` on `<bank>.lock`).
"""

from __future__ import annotations

import copy
import fcntl
import logging
import os
import time
from pathlib import Path

import h5py
import numpy as np

from facebank.bank.commit import CommitState, commit_pending
from facebank.bank.digests import verify_digests
from facebank._io.checksum import xxh3_file
from facebank._io.files import as_path, disk_full, ensure_space, is_disk_full
from facebank.bank.integrity import BANK_ID_FILE, bind_top, canonical_dir, check_refs, read_bank_id, write_bank_id
from facebank.bank.layout import empty_manifest, orphans, write_top
from facebank.bank.leftovers import quarantine_corrupt_batches, remove_temp_files
from facebank.bank.batch import ATTRIBUTE_COLUMNS, PendingBatch
from facebank.bank.records import FaceRecord, Rejection
from facebank.bank.store import Bank, refuse_directory
from facebank.errors import BankError, BankLockedError, DiskFull, InputError

log = logging.getLogger(__name__)

__all__ = ["ATTRIBUTE_COLUMNS", "BankWriter", "PendingBatch", "create_bank", "work_dir"]



def create_bank(path: str | os.PathLike) -> Path:
    """Create an empty bank at `path` (atomically). Refuses to overwrite an existing file."""
    path = Path(path)
    if path.exists():
        raise InputError(f"{path} already exists")
    _check_writable_dir(path.parent)
    manifest = empty_manifest(f"{path.name}.d")
    folder = canonical_dir(path)
    if folder.exists():  # what a creation killed before its top file leaves is taken over; nothing else
        # A creation killed while it wrote the id leaves the id's temporary file: that, too.
        dead = [p for p in folder.iterdir() if p.name.startswith(f".{BANK_ID_FILE}.") and p.name.endswith(".tmp")] \
            if folder.is_dir() else []
        if not folder.is_dir() or any(p.name != BANK_ID_FILE for p in folder.iterdir() if p not in dead):
            raise InputError(f"{folder} already exists; a new bank needs its own fragments folder")
        for p in dead:
            p.unlink()
        manifest["uuid"] = read_bank_id(folder) or manifest["uuid"]
    write_bank_id(folder, manifest["uuid"])  # the folder first: a kill leaves no top file without one
    write_top(path, manifest, time.time())  # an OSError names the path itself
    return path


def _check_writable_dir(directory: Path) -> None:
    directory = directory if str(directory) else Path(".")
    if directory.exists() and not directory.is_dir():
        raise InputError(f"{directory} is a file, not a folder: a bank needs a folder to live in")
    if not directory.is_dir():
        raise InputError(f"directory {directory} does not exist")
    if not os.access(directory, os.W_OK):
        raise InputError(f"cannot write in {directory}: read-only location")


class BankWriter:
    """Appends faces, rejections and embeddings to a bank; see the module docstring.

    Use as a context manager. `commit()` makes buffered work durable and visible to readers;
    leaving the context commits. Work is also flushed to a pending batch every `batch_size`
    faces (or once buffered work is `flush_seconds` old), and committed every `commit_every`
    faces, so a kill loses at most one batch.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        create: bool = True,  # create the bank if it does not exist
        batch_size: int = 64,  # faces per pending batch file
        commit_every: int = 2048,  # faces between automatic commits (each writes one fragment)
        flush_seconds: float = 10.0,  # buffered work older than this is flushed: a kill loses at most that
        copy_images: bool = False,  # copy images into each commit's fragment (no `fragment-refs`; see commit.py)
    ):
        self.path = as_path(path, "bank")
        self.batch_size = batch_size
        self.commit_every = commit_every
        self.flush_seconds = flush_seconds
        self.copy_images = copy_images
        self._buffered_since: float | None = None  # monotonic time of the oldest unflushed work
        self._checksums: dict[str, str] = {}  # adopted batch -> its checked XXH3-128, so the commit reads it once
        if not self.path.exists() and not create:
            raise InputError(f"bank {self.path} does not exist")
        refuse_directory(self.path)
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
        self._batch = PendingBatch()
        self._last_ns = 0
        self._since_commit = 0
        self._seen: set[str] = set()
        self._state: CommitState
        try:
            if self.path.exists():
                with Bank(self.path) as bank:  # every check a reader makes, before anything is written or deleted
                    check_refs(self.path, bank.manifest, canonical_dir(self.path))
                    verify_digests(self.path, bank.manifest, canonical_dir(self.path), write_record=True)
            remove_temp_files(self.path, self.pending_dir)
            if not self.path.exists():
                create_bank(self.path)
            quarantine_corrupt_batches(self.pending_dir)
            self._load_known()
            self._bind()
            self._remove_orphans()
            self._remove_unfinished()
        except BaseException:
            self._unlock()
            raise
        if self._pending_files():
            try:
                self.commit()  # finish what a killed writer left behind
            except BaseException:
                self._unlock()
                raise

    # -- what is already there (for resumable re-runs) --
    def _load_known(self) -> None:
        with Bank(self.path) as bank:
            f = bank._f
            manifest = copy.deepcopy(bank.manifest)  # `dir` is the folder it was proven to own
            self._recorded_dir = bank.recorded_dir
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

    def _bind(self) -> None:
        """Record the folder beside the bank, and a bank id, in the top file when it does not yet."""
        m = self._state.manifest
        if bind_top(self.path, m, self._recorded_dir, self._state.created):
            self._recorded_dir = m["dir"]

    def _remove_orphans(self) -> None:
        """Delete what a killed commit, compact or upgrade of THIS bank left in its own folder: temporary
        fragments, and fragment files written for a version this bank never reached (their name carries
        the version). Anything else not in the manifest is kept: it cannot be proven an orphan."""
        m = self._state.manifest
        for p in orphans(canonical_dir(self.path), m):
            p.unlink(missing_ok=True)

    def _remove_unfinished(self) -> None:
        """Delete half-written batch files (a killed writer's) and unadopted worker batches: never part of the bank."""
        if self.pending_dir.is_dir():
            for p in self.pending_dir.glob(".batch-*.tmp"):
                p.unlink(missing_ok=True)
        self.clear_work()

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
        self._batch.add_face(record)
        self._since_commit += 1
        if len(self._batch.faces) >= self.batch_size or self._stale():
            self.flush()
        if self._since_commit >= self.commit_every:
            self.commit()
        return True

    def add_rejection(self, rejection: Rejection) -> None:
        if rejection.key in self._rejected:
            return
        self._rejected.add(rejection.key)
        self._batch.add_rejection(rejection)

    def register_space(self, space: str, info: dict) -> None:
        """Declare the model (name, sha256, dim) behind `FaceRecord.embeddings[space]`."""
        self._batch.register_space(space, info)

    def set_embeddings(self, space: str, info: dict, ids: list[str], vectors: np.ndarray) -> None:
        """Buffer vectors (n, d) of `space` for existing face `ids`; `info` has model, sha256, dim."""
        self._batch.set_embeddings(space, info, ids, vectors)
        self._since_commit += len(ids)
        if sum(len(v.ids) for v in self._batch.vectors.values()) >= self.batch_size * 4 or self._stale():
            self.flush()
        if self._since_commit >= self.commit_every:
            self.commit()

    def set_attributes(self, ids: list[str], columns: dict[str, np.ndarray]) -> None:
        """Buffer new values of annotation columns (detection, crop, attributes) for existing `ids`."""
        self._batch.set_attributes(ids, columns)
        self._since_commit += len(ids)
        if sum(len(a.ids) for a in self._batch.attributes) >= self.batch_size * 4 or self._stale():
            self.flush()

    def log(self, event: str, **fields) -> None:
        self._batch.log(event, **fields)

    # -- durability --
    def _pending_files(self) -> list[str]:
        if not self.pending_dir.is_dir():
            return []
        return sorted(str(p) for p in self.pending_dir.glob("batch-*.h5"))

    def _next_batch_name(self) -> Path:
        # Names sort in the order batches were made: a commit applies them in that order.
        self._last_ns = max(time.time_ns(), self._last_ns + 1)
        return self.pending_dir / f"batch-{self._last_ns:020d}.h5"

    def _stale(self) -> bool:
        """True when buffered work has waited flush_seconds: slow stages (one embedding every
        100 ms) then reach disk by time, not only every few hundred faces."""
        now = time.monotonic()
        if self._buffered_since is None:
            self._buffered_since = now
        return now - self._buffered_since >= self.flush_seconds

    def flush(self) -> None:
        """Write buffered work as one pending batch file (atomic). Readers do not see it yet; the
        next commit, or the next writer to open the bank after a kill, applies it."""
        self._buffered_since = None
        if self._batch.empty():
            return
        self.pending_dir.mkdir(exist_ok=True)
        self._batch.write(self._next_batch_name())
        self._batch = self._batch.fresh()

    # -- batches written by other processes (the Ray engine's workers) --
    def work_dir(self) -> Path:
        """Where workers write complete batch files for this writer to adopt: `<bank>.pending/work/`."""
        return work_dir(self.path)

    def clear_work(self) -> None:
        """Delete every batch file in the work folder: none was adopted, so none is part of the bank.

        Called under the writer's lock at the start and end of a job, which removes what a killed
        worker or driver left (temporary files and complete batches alike; their work is redone).
        """
        directory = self.work_dir()
        if directory.is_dir():
            for p in directory.iterdir():
                p.unlink(missing_ok=True)

    def adopt(self, name: str, xxh3: str) -> None:
        """Queue a worker's complete batch file for the next commit, after what is buffered here.

        The file must be in `work_dir()` and match `xxh3` (the XXH3-128 the worker reported), so a
        file replaced or cut short after the worker finished is refused rather than committed.
        XXH3, not sha256: the driver reads every byte a worker wrote, at ~8 GB/s instead of ~1.
        """
        src = self.work_dir() / name
        if Path(name).name != name or not name.startswith("batch-") or not src.is_file():
            raise BankError(f"no complete worker batch {name!r} in {self.work_dir()}")
        if xxh3_file(src) != xxh3:
            raise BankError(f"worker batch {name} does not match its checksum: not committed")
        self.flush()  # what the driver buffered before (screening rejections, log lines) stays first
        dst = self._next_batch_name()
        os.replace(src, dst)
        self._checksums[str(dst)] = xxh3
        with h5py.File(dst, "r") as p:
            if "faces" in p:
                self._known.update(h.decode() for h in p["faces/content_sha256"][:])

    def commit(self) -> None:
        """Merge every pending batch into one new fragment and switch the bank to the new version."""
        self.flush()
        pending = self._pending_files()
        self._since_commit = 0
        if not pending:
            return
        try:
            ensure_space(canonical_dir(self.path), self._commit_estimate(pending), f"a commit of {self.path}")
            commit_pending(self.path, self._state, pending, copy_images=self.copy_images, checksums=self._checksums)
        except Exception as exc:
            self._load_known()  # the commit did not happen: forget what it had noted
            if isinstance(exc, DiskFull):
                raise
            if is_disk_full(exc):
                raise disk_full(self.path, exc) from exc
            if isinstance(exc, OSError):
                raise BankError(f"cannot write {self.path}: {exc.strerror or exc}") from exc
            raise
        except BaseException:
            self._load_known()
            raise
        for name in pending:  # applied and deleted
            self._checksums.pop(name, None)
        log.debug("committed %d pending batches to %s", len(pending), self.path)

    def _commit_estimate(self, pending: list[str]) -> int:
        """About how many bytes a commit of `pending` writes: the new faces' small columns and crops,
        vectors and attribute updates; images only when they are copied (else hard links)."""
        total = 0
        for name in pending:
            size = os.path.getsize(name)
            if self.copy_images:
                total += size
                continue
            with h5py.File(name, "r") as p:
                faces = p["faces/id"].shape[0] if "faces" in p else 0
                images = int(p["faces/image"].id.get_storage_size()) if "faces" in p else 0
            total += faces * 40_000 + max(0, size - images)
        return total

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


def work_dir(bank: str | os.PathLike) -> Path:
    """The folder where workers of other processes write batch files for the bank's writer to adopt."""
    return Path(f"{bank}.pending") / "work"
