"""Whole-bank operations on schema version 2: upgrade from version 1, compact, copy.

Each writes new fragments first, then switches `<bank>` to a new top file (atomic), and removes
files no version references only after the switch, so a kill at any point leaves a bank that
opens (a version-1 bank until `upgrade` switches) and re-running finishes the job.
"""

from __future__ import annotations

import copy
import fcntl
import json
import os
import shutil
import uuid
from contextlib import contextmanager
from pathlib import Path

import h5py

from facebank.bank import schema
from facebank._io.files import as_path, disk_full, ensure_space, is_disk_full
from facebank.bank.digests import verify_digests
from facebank.bank.integrity import (BANK_ID_FILE, bind_top, canonical_dir, check_refs, damaged_file, fragment_seq,
                                     read_bank_id, write_bank_id)
from facebank.bank.layout import FragmentWriter, empty_manifest, fragment_dir, fragment_files, orphans, write_top
from facebank.bank.store import Bank, check_header
V1 = 1  # the schema `bank upgrade` reads, with plain h5py (its frozen writer: tests/fixtures/bank_v1_frozen)
from facebank.errors import BankError, BankLockedError, InputError

__all__ = ["compact_bank", "copy_bank", "upgrade_bank"]

_READ_ROWS = 256  # rows read at a time while rewriting, so that images never load whole


@contextmanager
def _locked(bank: Path):
    if not bank.is_file():
        raise InputError(f"bank {bank} does not exist")
    fh = open(f"{bank}.lock", "a+")
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.close()
        raise BankLockedError(f"another process is writing to {bank}") from None
    try:
        yield
    finally:
        fcntl.flock(fh, fcntl.LOCK_UN)
        fh.close()


def _copy_rows(fw: FragmentWriter, src: h5py.Group, dst: h5py.Group, columns, a: int, b: int) -> None:
    """Copy rows [a, b) of `columns` from `src` (any layout) to `dst` rows [0, b - a)."""
    for name in columns:
        s, d = src[name], dst[name]
        for lo in range(a, b, _READ_ROWS):
            hi = min(b, lo + _READ_ROWS)
            if s.dtype.kind == "O":
                for i, v in enumerate(s[lo:hi]):
                    d[lo - a + i] = v
            else:
                d[lo - a:hi - a] = s[lo:hi]
            fw.check()  # a write that failed (full disk) ends the copy here, outside HDF5


def _write_range(fw: FragmentWriter, f: h5py.File, spaces: dict, a: int, b: int) -> None:
    """All face columns and every space's vectors of rows [a, b) of the open bank `f`, as parts of `fw`."""
    g = fw.part("faces", a, b, list(schema.FACE_COLUMNS))
    _copy_rows(fw, f["faces"], g, schema.FACE_COLUMNS, a, b)
    fw.seal(g)
    for space, info in spaces.items():
        present = f["embeddings"][space]["present"][a:b]
        if present.any():
            g = fw.part(f"emb/{space}", a, b, ["vectors", "present"], dim=int(info["dim"]))
            _copy_rows(fw, f["embeddings"][space], g, ["vectors", "present"], a, b)
            fw.seal(g)


def _write_tables(fw: FragmentWriter, f: h5py.File, rows: dict) -> None:
    """The whole rejection table and log as parts of `fw`."""
    for table, cols in (("rejections", schema.REJECTION_COLUMNS), ("log", ["log"])):
        if rows[table]:
            g = fw.part(table, 0, rows[table], list(cols))
            _copy_rows(fw, f if table == "log" else f[table], g, cols, 0, rows[table])


_IN_MEMORY = 512 << 20  # merged fragments smaller than this are built in memory (a full disk fails outside HDF5)


def _rewrite(bank: Path, f: h5py.File, manifest: dict, runs: list[tuple[int, int]], keep: list[dict],
             memory: bool = False) -> dict:
    """Fragments for `runs` (row ranges) plus the tables; returns the new manifest (not yet switched to)."""
    new = copy.deepcopy(manifest)
    new.update(fragments=list(keep), retired=[], applied_batches=manifest.get("applied_batches", []))
    new["version"] += 1
    directory = fragment_dir(bank, new)
    for i, (a, b) in enumerate(runs):
        fw = FragmentWriter(directory, new["version"], memory=memory)
        try:
            _write_range(fw, f, new["spaces"], a, b)
            if i == len(runs) - 1:
                _write_tables(fw, f, new["rows"])
            entry = fw.close()
        except BaseException:
            fw.abort()
            raise
        new["fragments"].append(entry)
    if not runs and (new["rows"]["rejections"] or new["rows"]["log"]):
        fw = FragmentWriter(directory, new["version"], memory=memory)
        try:
            _write_tables(fw, f, new["rows"])
            new["fragments"].append(fw.close())
        except BaseException:
            fw.abort()
            raise
    new["fragments"].sort(key=lambda fr: min((p["start"] for p in fr["parts"] if p["table"] == "faces"), default=1 << 62))
    return new


def _remove_unreferenced(bank: Path, old: dict, new: dict) -> int:
    """After the switch to `new`: delete the files of `old` (live or retired) that `new` does not use,
    and this bank's orphans. Only in the bank's own folder, and only files provably its own."""
    directory = canonical_dir(bank)
    live = {name for fr in new["fragments"] for name in fragment_files(fr)}
    mine = {name for fr in old["fragments"] for name in fragment_files(fr)} | set(old["retired"])
    doomed = {directory / name for name in mine - live} | set(orphans(directory, new))
    for p in doomed:
        p.unlink(missing_ok=True)
    return len(doomed)


def _checked(bank: Path, *, bind: bool = True, full=None) -> tuple[dict, float]:
    """Every check a reader makes, the refs, and the digests of the files changed since a writer verified
    them (`full(manifest)`: files re-read whatever the record says), before anything is written; then the
    manifest bound to the bank's own folder (see integrity.py, digests.py)."""
    with Bank(bank) as b:
        manifest = copy.deepcopy(b.manifest)
        created = float(b._f.attrs["created"])
        recorded = b.recorded_dir
    folder = canonical_dir(bank)
    check_refs(bank, manifest, folder)
    every = full(manifest) if full is not None else set()
    if every:
        verify_digests(bank, manifest, folder, scope="all", names=every)
    everything = {n for fr in manifest["fragments"] for n in fragment_files(fr)}
    verify_digests(bank, manifest, folder, names=everything - every, write_record=bind)  # a copy writes nothing
    if not bind:
        return manifest, created
    bind_top(bank, manifest, recorded, created)
    return manifest, created


def _read_failed(bank: Path, manifest: dict, exc: BaseException) -> BankError:
    """A read of the bank failed while rewriting it (HDF5 names no file): name the fragment file."""
    bad = damaged_file(manifest, canonical_dir(bank))
    where = f"fragment file {bad} cannot be read" if bad else "a read failed"
    return BankError(f"{bank}: {where} ({' '.join(str(exc).split())[:160]}); the bank is damaged")


def upgrade_bank(bank: str | os.PathLike, *, target_rows: int = 2048) -> dict:
    """Convert a version-1 bank to version 2 in place. Returns what was done."""
    bank = as_path(bank, "bank")
    with _locked(bank):
        with h5py.File(bank, "r") as f:
            version = int(f.attrs.get("schema_version", -1))
            if version == schema.SCHEMA_VERSION:
                check_header(f, bank)
                return {"bank": str(bank), "upgraded": False, "schema_version": version}
            if f.attrs.get("format") != schema.FORMAT or version != V1:
                raise BankError(f"{bank} is not a version-1 facebank bank (schema version {version})")
            manifest = empty_manifest(f"{bank.name}.d")
            folder = canonical_dir(bank)
            if folder.is_dir():  # only what a killed upgrade leaves (version-1 fragments) is taken over
                names = [p.name for p in folder.iterdir() if p.name != BANK_ID_FILE]
                if any(fragment_seq(n) != 1 for n in names):
                    raise BankError(f"{folder} holds files a killed upgrade of {bank} did not write; move it away first")
                manifest["uuid"] = read_bank_id(folder) or manifest["uuid"]
            write_bank_id(folder, manifest["uuid"])
            _remove_unreferenced(bank, manifest, manifest)  # a killed upgrade's fragments: start again
            n = f["faces/id"].shape[0]
            manifest["rows"] = {"faces": n, "rejections": f["rejections/reason"].shape[0], "log": f["log"].shape[0]}
            manifest["spaces"] = {s: json.loads(g.attrs["info"]) for s, g in f["embeddings"].items()}
            runs = [(a, min(n, a + target_rows)) for a in range(0, n, target_rows)]
            new = _rewrite(bank, f, manifest, runs, [])
            created = float(f.attrs["created"])
        new["version"] = 1
        write_top(bank, new, created)
    return {"bank": str(bank), "upgraded": True, "schema_version": schema.SCHEMA_VERSION,
            "faces": new["rows"]["faces"], "fragments": len(new["fragments"])}


def _segment_files(manifest: dict) -> dict[tuple[int, int], set[str]]:
    out: dict[tuple[int, int], set[str]] = {}
    for fr in manifest["fragments"]:
        for p in fr["parts"]:
            if p["table"] == "faces" or p["table"].startswith("emb/"):
                out.setdefault((p["start"], p["stop"]), set()).add(fr["name"])
    return out


def _plan(manifest: dict, target_rows: int) -> tuple[list[tuple[int, int]], list[dict]]:
    """Row ranges to merge into new fragments, and the fragments kept as they are."""
    segs = _segment_files(manifest)
    by_name = {fr["name"]: fr for fr in manifest["fragments"]}
    runs, keep, cur = [], [], None
    for (a, b), names in sorted(segs.items()):
        frag = by_name[next(iter(names))]
        alone = len(names) == 1 and all((p["start"], p["stop"]) == (a, b) and p["table"] != "log"
                                        and p["table"] != "rejections" for p in frag["parts"])
        if alone and b - a >= target_rows:  # already a whole fragment of its own: keep it
            keep.append(frag)
            cur = None
        elif cur is not None and b - cur[0] <= target_rows and cur[1] == a:
            cur[1] = b
        else:
            cur = [a, b]
            runs.append(cur)
    return [tuple(r) for r in runs], keep


def _merged_files(manifest: dict, target_rows: int) -> set[str]:
    _, keep = _plan(manifest, target_rows)
    return {n for fr in manifest["fragments"] if fr not in keep for n in fragment_files(fr)}


def compact_bank(bank: str | os.PathLike, *, target_rows: int = 2048) -> dict:
    """Merge small fragments into fragments of about `target_rows` rows; content and content hash stay."""
    if target_rows < 1:
        raise InputError("--target-rows must be at least 1")
    bank = as_path(bank, "bank")
    with _locked(bank):
        # The merged files are re-read in full, whatever the record says: they are deleted afterwards,
        # so damage read into the new fragments would be kept under fresh digests.
        manifest, created = _checked(bank, full=lambda m: _merged_files(m, target_rows))
        folder = canonical_dir(bank)
        for p in orphans(folder, manifest):  # what a killed compact of this bank left
            p.unlink(missing_ok=True)
        runs, keep = _plan(manifest, target_rows)
        before = len(manifest["fragments"]) + len(manifest["retired"])
        merged = [fr for fr in manifest["fragments"] if fr not in keep]
        need = sum(fr["bytes"] + sum(r["bytes"] for r in fr.get("refs", [])) for fr in merged)
        ensure_space(folder, need, f"compacted fragments of {bank}")
        with h5py.File(bank, "r") as f:
            try:
                new = _rewrite(bank, f, manifest, runs, keep, memory=need < _IN_MEMORY)
            except Exception as exc:
                if is_disk_full(exc):
                    raise disk_full(folder, exc) from exc
                if isinstance(exc, (OSError, RuntimeError)):
                    raise _read_failed(bank, manifest, exc) from exc
                raise
        # The replaced files are listed as retired: a compaction killed after the switch leaves them
        # to the next one to remove (they are provably this bank's), never on disk for good.
        live = {n for fr in new["fragments"] for n in fragment_files(fr)}
        new["retired"] = sorted(({n for fr in manifest["fragments"] for n in fragment_files(fr)}
                                 | set(manifest["retired"])) - live)
        try:
            write_top(bank, new, created)
        except Exception as exc:
            if is_disk_full(exc):
                _remove_unreferenced(bank, manifest, manifest)  # the new fragments: orphans of a version not reached
                raise disk_full(bank, exc) from exc
            raise
        removed = _remove_unreferenced(bank, manifest, new)
        if new["retired"]:
            new["retired"] = []
            write_top(bank, new, created)  # the same version, without the names just removed
    return {"bank": str(bank), "fragments_before": before, "fragments": len(new["fragments"]), "removed": removed}


def copy_bank(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """Copy a bank: its top file and live fragments (immutable, so hard-linked when possible), under a new
    bank id in its own folder `<dst>.d`. The source is checked as a reader would, under its lock."""
    src, dst = as_path(src, "bank"), as_path(dst, "copy")
    if dst.exists() or canonical_dir(dst).exists():
        raise InputError(f"{dst if dst.exists() else canonical_dir(dst)} already exists")
    _check_dir(dst.parent)
    with _locked(src):
        manifest, created = _checked(src, bind=False)  # a copy never writes to its source
        new = copy.deepcopy(manifest)
        new.update(dir=f"{dst.name}.d", uuid=uuid.uuid4().hex, retired=[])
        out = canonical_dir(dst)
        write_bank_id(out, new["uuid"])
        try:
            for name in [name for fr in manifest["fragments"] for name in fragment_files(fr)]:
                source = canonical_dir(src) / name
                try:
                    os.link(source, out / name)
                except OSError:
                    shutil.copyfile(source, out / name)
            write_top(dst, new, created)
        except BaseException:
            shutil.rmtree(out, ignore_errors=True)  # a folder only this call made
            raise
    return dst


def _check_dir(directory: Path) -> None:
    directory = directory if str(directory) else Path(".")
    if not directory.is_dir():
        raise InputError(f"{directory} is not a folder" if directory.exists() else f"folder {directory} does not exist")
