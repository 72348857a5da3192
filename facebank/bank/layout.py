"""Schema version 2 on disk: immutable fragment files, a manifest, and the small top file.

`<bank>` is one small HDF5 file, the current version: root attributes (the manifest among them)
and HDF5 virtual datasets that map every column onto the fragment files in `<bank>.d/`, so plain
h5py opens the bank as one file. Fragments are written once, under a temporary name, fsynced and
`os.replace`d; a new version is a new top file `os.replace`d over `<bank>`. See SCHEMA.md.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import h5py
import numpy as np

from facebank._io.checksum import FAST, file_digests, xxh3_file
from facebank._io.files import write_durable
from facebank._io.guarded_file import DeferredSignals, GuardedFile
from facebank._version import __version__
from facebank.errors import BankError
from facebank.bank import schema

__all__ = ["BankLayout", "FragmentWriter", "content_hash", "empty_manifest", "fill_top", "orphans", "fragment_dir", "fragment_files", "read_layout",
           "required_features", "row_sum", "write_top"]

HASH_TAG = b"facebank-bank-content-v2"
HASHED_COLUMNS = ("id", "age", "gender", "status")  # and every space's vectors of present rows
_MOD = 1 << 256
TABLES = {"faces": schema.FACE_COLUMNS, "rejections": schema.REJECTION_COLUMNS, "log": {"log": (schema.STR, ())}}


def empty_manifest(dir_name: str) -> dict:
    return {"dir": dir_name, "uuid": uuid.uuid4().hex, "version": 0, "rows": {"faces": 0, "rejections": 0, "log": 0},
            "spaces": {}, "fragments": [], "retired": [], "applied_batches": []}


def fragment_dir(bank: Path, manifest: dict) -> Path:
    return bank.parent / manifest["dir"]


def fragment_files(fragment: dict) -> list[str]:
    """The files a fragment's entry stands for: its own and the batch files its virtual parts read (`refs`)."""
    names = [fragment["name"], *(ref["name"] for ref in fragment.get("refs", []))]
    for name in names:  # names come from the file: a tampered one must not reach outside the folder
        if not isinstance(name, str) or os.path.basename(name) != name or name in ("", ".", ".."):
            raise BankError(f"manifest names a fragment file {name!r} that is not a plain file name")
    return names


def orphans(folder: Path, manifest: dict) -> list[Path]:
    """Files in the bank's own `folder` that a killed writer of this bank left: temporary fragments,
    and fragment files named for a version after the manifest's (never a file it cannot prove its own)."""
    from facebank.bank.integrity import fragment_seq

    live = {name for fr in manifest["fragments"] for name in fragment_files(fr)} | set(manifest["retired"])
    out = []
    for p in sorted(folder.iterdir()) if folder.is_dir() else []:
        seq = fragment_seq(p.name)
        if p.name not in live and seq is not None and (p.name.endswith(".tmp") or seq > manifest["version"]):
            out.append(p)
    return out


def required_features(manifest: dict) -> list[str]:
    """What a reader must implement to read this version: `fragment-refs` once a fragment references files."""
    return ["fragment-refs"] if any(fr.get("refs") for fr in manifest["fragments"]) else []


def columns_of(table: str) -> dict:
    """name -> (dtype, row shape) of a table; `emb/<space>` tables need the space's dim."""
    return TABLES[table]


def space_columns(dim: int) -> dict:
    return {"vectors": (np.float32, (dim,)), "present": (np.bool_, ())}


# -- the content hash (see SCHEMA.md, "Content hash") --
def row_sum(key: str, start: int, values: np.ndarray, present: np.ndarray | None = None) -> int:
    """sum mod 2^256 of sha256(tag | key | row | value bytes) over the rows (present ones only, if given).

    Row sums add up over any split of the rows into fragments, so merging fragments keeps the hash.
    """
    values = np.ascontiguousarray(values)
    if values.dtype.kind in "fiub" and values.dtype.byteorder == ">":
        values = values.astype(values.dtype.newbyteorder("<"))
    prefix = HASH_TAG + b"\0" + key.encode() + b"\0"
    total = 0
    for i in range(len(values)):
        if present is not None and not present[i]:
            continue
        digest = hashlib.sha256(prefix + (start + i).to_bytes(8, "little") + values[i].tobytes()).digest()
        total += int.from_bytes(digest, "big")
    return total % _MOD


def content_hash(manifest: dict) -> str:
    """sha256 over the face count, the summed row digests of id/age/gender/status and every space's."""
    sums: dict[str, int] = {}
    for frag in manifest["fragments"]:
        for part in frag["parts"]:
            for key, hexsum in part.get("sums", {}).items():
                name = key if part["table"] == "faces" else part["table"]
                sums[name] = (sums.get(name, 0) + int(hexsum, 16)) % _MOD
    body = {
        "faces": manifest["rows"]["faces"],
        "columns": {c: f"{sums.get(c, 0):064x}" for c in HASHED_COLUMNS},
        "spaces": {s: {"sha256": info.get("sha256"), "dim": int(info["dim"]), "vectors": f"{sums.get('emb/' + s, 0):064x}"}
                   for s, info in sorted(manifest["spaces"].items())},
    }
    return hashlib.sha256(HASH_TAG + json.dumps(body, sort_keys=True).encode()).hexdigest()


# -- fragments --
def _fsync_path(path: Path | str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class FragmentWriter:
    """One new fragment file: parts (a table's row range and some of its columns), written once."""

    def __init__(self, directory: Path, seq: int, *, memory: bool = False):
        directory.mkdir(exist_ok=True)
        self.directory = directory
        self.name = f"frag-{seq:08d}-{uuid.uuid4().hex[:8]}.h5"
        self.tmp = directory / f".{self.name}.tmp"
        # memory: built in memory and written in one plain write (a commit's fragment: crops and small
        # columns), so a full disk fails outside HDF5. Larger ones (compact's, which copy images) are
        # written through a GuardedFile: a failed write is kept for `check`, never seen by HDF5.
        self._buf = io.BytesIO() if memory else None
        self._guard = None if memory else GuardedFile(self.tmp)
        self._signals = DeferredSignals()  # Ctrl-C raised inside a GuardedFile method would fail HDF5's I/O
        if self._guard is not None:
            self._signals.start()
        try:
            self.f = h5py.File(self._buf if memory else self._guard, "w", libver=("v110", "latest"))
        except BaseException:
            if self._guard is not None:
                self._guard.close()
                os.unlink(self.tmp)
            self._signals.stop()
            raise
        self.parts: list[dict] = []
        self.refs: list[dict] = []  # files linked beside it that its virtual datasets read
        self._seq = seq

    def link(self, path: str | os.PathLike, xxh3: str | None = None) -> str:
        """Put the immutable file `path` beside the fragment (a hard link, or a copy where links fail)
        under a fragment name of its own, for this fragment's virtual datasets; returns that name.

        A link, not a move: until the new top file is switched to, `path` (a pending batch) must stay
        where a re-run finds it; a killed commit leaves the link an orphan, which the next writer deletes.
        `xxh3`: the file's XXH3-128 when the caller checked it already (an adopted worker batch).
        """
        name = f"frag-{self._seq:08d}-{uuid.uuid4().hex[:8]}.h5"
        target = self.directory / name
        try:
            os.link(path, target)
        except OSError:  # a file system without hard links
            shutil.copyfile(path, target)
            _fsync_path(target)
        self.refs.append({"name": name, "bytes": target.stat().st_size, FAST: xxh3 or xxh3_file(target)})
        return name

    def part(self, table: str, start: int, stop: int, columns: dict, dim: int | None = None) -> h5py.Group:
        """Create the datasets of one part; returns its group (filled by the caller, then `seal`ed)."""
        group = self.f.create_group(f"p{len(self.parts)}")
        specs = space_columns(dim) if table.startswith("emb/") else columns_of(table)
        for name in columns:
            dtype, shape = specs[name]
            rows = schema.chunk_rows(name) if table == "faces" else schema.ROW_CHUNK
            if name == "vectors":
                rows = schema.VECTOR_CHUNK_ROWS
            n = stop - start  # 0 for a part that grows as rows are appended
            group.create_dataset(name, shape=(n, *shape), maxshape=(None, *shape), dtype=dtype,
                                 chunks=(min(rows, n) if n else rows, *shape))
        self.parts.append({"table": table, "group": group.name.lstrip("/"), "start": start, "stop": stop,
                           "columns": sorted(columns), "sums": {}})
        return group

    def seal(self, group: h5py.Group) -> None:
        """Compute the part's row sums from what it holds (call once its rows are final)."""
        part = next(p for p in self.parts if p["group"] == group.name.lstrip("/"))
        if part["table"] == "faces":
            for c in HASHED_COLUMNS:
                if c in group:
                    part["sums"][c] = f"{row_sum(c, part['start'], group[c][:]):064x}"
        elif part["table"].startswith("emb/"):
            key = part["table"]
            part["sums"]["vectors"] = f"{row_sum(key, part['start'], group['vectors'][:], group['present'][:]):064x}"

    def check(self) -> None:
        """Raise the write error (a full disk, the file size limit) the guarded file kept, if any:
        call between HDF5 calls, so a failed write ends the work early and outside HDF5."""
        if self._guard is None:
            return
        if self._signals.pending:  # an interrupt noted while HDF5 ran: raised here, outside it
            try:
                self._signals.stop()
            finally:
                self._signals.start()  # the file is still open: defer again until close or abort
        if self._guard.failed is not None:
            raise self._guard.failed

    def close(self) -> dict | None:
        """Fsync and move the file into place; returns its manifest entry (None when it holds no part)."""
        self.f.close()
        if not self.parts:
            self.abort()
            return None
        if self._buf is not None:
            write_durable(self.tmp, self._buf.getbuffer())
            self._buf = None
        else:
            self.check()  # the caller aborts: the file is garbage past the failed write
            self._guard.fsync()
            self._guard.close()
            self._signals.stop()  # HDF5 is done with the file
        final = self.directory / self.name
        os.replace(self.tmp, final)
        _fsync_path(self.directory)  # also makes the links of `refs` durable
        sha, fast = file_digests(final)  # one read: sha256 the record, XXH3-128 what writers re-check
        entry = {"name": self.name, "bytes": final.stat().st_size, "sha256": sha, FAST: fast, "parts": self.parts}
        if self.refs:
            entry["refs"] = self.refs
        return entry

    def abort(self) -> None:
        """Remove what this writer made (also the moved file: an interrupt may land after `close` moved
        it and before the caller recorded its entry; no manifest names it yet)."""
        try:
            self.f.close()
        finally:
            if self._guard is not None:
                self._guard.close()
            for name in [self.tmp, self.directory / self.name, *(self.directory / ref["name"] for ref in self.refs)]:
                if os.path.exists(name):
                    os.unlink(name)
            self._signals.stop()


# -- the top file --
def _tmp_top(bank: Path) -> str:
    fd, name = tempfile.mkstemp(prefix=f".{bank.name}.", suffix=".tmp", dir=bank.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(name, 0o666 & ~umask)  # mkstemp makes 0600; a bank is an ordinary shared file
    return name


def _sources(manifest: dict, table: str, column: str) -> list[tuple[int, int, str, str]]:
    out = []
    for frag in manifest["fragments"]:
        for part in frag["parts"]:
            if part["table"] == table and column in part["columns"] and part["stop"] > part["start"]:
                # HDF5 reads `%%` as `%` in a source file name (and `%b` as a block number): escape
                source = f"{manifest['dir']}/{frag['name']}".replace("%", "%%")
                out.append((part["start"], part["stop"], source, f"{part['group']}/{column}"))
    return sorted(out)


def _virtual(parent: h5py.Group, name: str, manifest: dict, table: str, column: str, spec, n: int,
             fill=None) -> None:
    dtype, shape = spec
    layout = h5py.VirtualLayout(shape=(n, *shape), dtype=dtype)
    for start, stop, file_name, dset in _sources(manifest, table, column):
        layout[start:stop] = h5py.VirtualSource(file_name, dset, shape=(stop - start, *shape), dtype=dtype)
    parent.create_virtual_dataset(name, layout, fillvalue=fill)


def fill_top(f: h5py.File, manifest: dict, created: float) -> None:
    """The root attributes and virtual datasets of the top file for `manifest`, written into `f`."""
    raw = json.dumps(manifest, sort_keys=True)
    f.attrs["format"] = schema.FORMAT
    f.attrs["schema_version"] = schema.SCHEMA_VERSION
    f.attrs["required_features"] = json.dumps(required_features(manifest))
    f.attrs["writer"] = f"facebank {__version__}"
    f.attrs["created"] = created
    f.attrs["updated"] = time.time()
    f.attrs["version"] = manifest["version"]
    f.attrs["content_hash"] = content_hash(manifest)
    f.attrs["manifest"] = raw
    f.attrs["manifest_sha256"] = hashlib.sha256(raw.encode("utf-8", "surrogatepass")).hexdigest()
    rows = manifest["rows"]
    for table in ("faces", "rejections"):
        g = f.create_group(table)
        for col, spec in TABLES[table].items():
            _virtual(g, col, manifest, table, col, spec, rows[table])
    _virtual(f, "log", manifest, "log", "log", TABLES["log"]["log"], rows["log"])
    emb = f.create_group("embeddings")
    for space, info in sorted(manifest["spaces"].items()):
        g = emb.create_group(space)
        g.attrs["info"] = json.dumps(info, sort_keys=True)
        specs = space_columns(int(info["dim"]))
        _virtual(g, "vectors", manifest, f"emb/{space}", "vectors", specs["vectors"], rows["faces"], 0.0)
        _virtual(g, "present", manifest, f"emb/{space}", "present", specs["present"], rows["faces"], False)


def write_top(bank: Path, manifest: dict, created: float) -> None:
    """Write the top file for `manifest` under a temporary name and switch `<bank>` to it (atomic)."""
    tmp = _tmp_top(bank)
    try:
        buf = io.BytesIO()  # in memory, then one plain write: a full disk fails outside HDF5
        with h5py.File(buf, "w", libver=("v110", "latest")) as f:
            fill_top(f, manifest, created)
        write_durable(tmp, buf.getbuffer())
        os.replace(tmp, bank)
        _fsync_path(bank.parent)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


# -- the manifest as a typed value (readers; a writer edits a copy of the dict and writes it whole) --
@dataclass(frozen=True)
class FilePart:
    """Rows `start..stop` of some `columns` of a table, in group `group` of a fragment file."""

    table: str  # faces, rejections, log or emb/<space>
    group: str
    start: int
    stop: int
    columns: tuple[str, ...]
    sums: Mapping[str, str]  # hashed column -> row sum (hex), see content_hash


@dataclass(frozen=True)
class FileRef:
    """A batch file linked beside a fragment, which the fragment's virtual parts read."""

    name: str
    bytes: int
    xxh3_128: str | None


@dataclass(frozen=True)
class Fragment:
    name: str
    bytes: int
    sha256: str | None
    parts: tuple[FilePart, ...]
    refs: tuple[FileRef, ...]


@dataclass(frozen=True)
class BankLayout:
    """A bank's manifest (SCHEMA.md): its fragments folder and id, version, row counts, spaces and
    the fragment files that hold every column. Read with `read_layout`, or `Bank.layout` of an open bank."""

    dir: str  # the fragments folder the top file names
    uuid: str | None  # the bank id (None: a bank written before ids)
    version: int
    rows: Mapping[str, int]  # faces, rejections, log
    spaces: Mapping[str, Mapping[str, Any]]  # space -> info (dim, model, sha256, ...)
    fragments: tuple[Fragment, ...]
    retired: tuple[str, ...]
    applied_batches: tuple[str, ...]

    @classmethod
    def from_dict(cls, manifest: Any, where: str | os.PathLike = "bank") -> BankLayout:
        """The checked manifest (`facebank.bank.integrity.check_manifest`: BankError naming what is wrong)."""
        from facebank.bank.integrity import check_manifest

        check_manifest(manifest, where)
        fragments = tuple(
            Fragment(fr["name"], fr["bytes"], fr.get("sha256"),
                     tuple(FilePart(p["table"], p["group"], p["start"], p["stop"], tuple(p["columns"]),
                                    MappingProxyType(dict(p.get("sums", {})))) for p in fr["parts"]),
                     tuple(FileRef(r["name"], r["bytes"], r.get(FAST)) for r in fr.get("refs", [])))
            for fr in manifest["fragments"])
        return cls(manifest["dir"], manifest.get("uuid"), manifest["version"], MappingProxyType(dict(manifest["rows"])),
                   MappingProxyType({s: MappingProxyType(dict(i)) for s, i in manifest["spaces"].items()}),
                   fragments, tuple(manifest["retired"]), tuple(manifest["applied_batches"]))


def read_layout(f: h5py.File, where: str | os.PathLike = "bank") -> BankLayout:
    """The layout recorded in a top file's `manifest` attribute (BankError when it is not valid)."""
    try:
        manifest = json.loads(f.attrs["manifest"])
    except (KeyError, TypeError, ValueError, RecursionError) as exc:
        raise BankError(f"{where}: attribute manifest is missing or not JSON; the bank is damaged") from exc
    return BankLayout.from_dict(manifest, where)
