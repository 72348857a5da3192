"""What every reader and writer checks before it trusts a bank's manifest and folder.

A bank is its top file `<name>` and its fragments folder `<name>.d` beside it. The manifest
records a bank id (`uuid`) and the folder holds the same id in `BANK_ID_FILE`, so a folder is
proven to be this bank's before anything in it is read or deleted: a top file copied alone, or
a folder that belongs to another bank, is refused in one line instead of being read as fill
values or cleaned up as "orphans". A bank renamed or copied with its folder (`b.h5` ->
`c.h5`, `b.h5.d` -> `c.h5.d`) still records the old folder name; the folder beside it carries
its id, so it opens, and the next writer re-binds it (new id, new top file).
"""

from __future__ import annotations

import hashlib
import os
import re
import uuid
from pathlib import Path

from facebank._io.files import atomic_write_text
from facebank.bank import schema
from facebank.errors import BankError

__all__ = ["BANK_ID_FILE", "bind_top", "bound_folder", "canonical_dir", "check_files", "check_manifest", "check_refs", "fragment_seq",
           "manifest_digest", "read_bank_id", "write_bank_id"]

BANK_ID_FILE = "facebank-bank-id"  # in `<bank>.d/`: the bank id (the manifest's `uuid`), one line
_SEQ = re.compile(r"^\.?frag-(\d{8,})-[0-9a-f]+\.h5(\.tmp)?$")


def canonical_dir(bank: Path) -> Path:
    """The one folder a bank's fragments may live in: `<name>.d` beside the top file."""
    return bank.parent / f"{bank.name}.d"


def manifest_digest(raw: str | bytes) -> str:
    """sha256 of the manifest attribute as stored (attribute `manifest_sha256`)."""
    return hashlib.sha256(raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw).hexdigest()


def fragment_seq(name: str) -> int | None:
    """The version a fragment file was written for (`frag-<version>-<random>.h5`), None for other names."""
    m = _SEQ.match(name)
    return int(m.group(1)) if m else None


def read_bank_id(folder: Path) -> str | None:
    try:
        text = (folder / BANK_ID_FILE).read_text(encoding="ascii").strip()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise BankError(f"{folder / BANK_ID_FILE} cannot be read ({exc}); the bank is damaged") from exc
    return text


def write_bank_id(folder: Path, bank_id: str) -> None:
    """Atomic (a new file replaces the old): the folder may hold hard links shared with a copy."""
    folder.mkdir(exist_ok=True)
    atomic_write_text(folder / BANK_ID_FILE, bank_id + "\n")


def bound_folder(bank: Path, manifest: dict) -> Path:
    """The fragments folder proven to be this bank's (`<name>.d` with the manifest's id); BankError otherwise."""
    folder, bank_id = canonical_dir(bank), manifest.get("uuid")
    if folder.exists() and not folder.is_dir():
        raise BankError(f"{folder} is a file where the fragments folder of {bank} belongs; the bank is damaged")
    if folder.is_dir():
        found = read_bank_id(folder)
        if found == bank_id or bank_id is None:  # no id: a bank written before bank ids, in its own folder
            return folder
        if found is None:
            raise BankError(f"{folder} has no {BANK_ID_FILE} file, so it cannot be proven to hold the fragments "
                            f"of {bank} (id {bank_id}); the bank is damaged")
        raise BankError(f"{folder} belongs to another bank (id {found}), not to {bank} (id {bank_id}); "
                        f"copy a bank with `facebank bank copy`")
    if not manifest["fragments"]:
        return folder  # an empty bank: nothing to read yet
    recorded = manifest["dir"]
    why = (f"; its manifest names {recorded}, the folder of another top file: a top file copied without its "
           f"folder (copy a bank with `facebank bank copy`)" if recorded != folder.name else "")
    raise BankError(f"{bank} has no fragments folder {folder.name}{why}; the bank is damaged")


def bind_top(bank: Path, manifest: dict, recorded_dir: str, created: float) -> bool:
    """Make the top file name the folder beside it and carry a bank id (a writer's first step, under
    the lock, after `bound_folder` proved the folder). Kill-safe: the id file is written before the top
    file that needs it, and a renamed bank keeps its id. True when the top file was rewritten."""
    from facebank.bank.layout import write_top

    folder = canonical_dir(bank)
    if manifest.get("uuid") and recorded_dir == folder.name and read_bank_id(folder) == manifest["uuid"]:
        return False
    if not manifest.get("uuid"):
        manifest["uuid"] = read_bank_id(folder) if folder.is_dir() and read_bank_id(folder) else uuid.uuid4().hex
    if read_bank_id(folder) != manifest["uuid"]:
        write_bank_id(folder, manifest["uuid"])
    manifest["dir"] = folder.name
    write_top(bank, manifest, created)
    return True


def check_files(bank: Path, manifest: dict, folder: Path) -> None:
    """Every live fragment and ref is in `folder` with the size the manifest records (one listing)."""
    from facebank.bank.layout import fragment_files

    try:
        sizes = {e.name: e.stat().st_size for e in os.scandir(folder) if e.is_file()}
    except OSError:
        sizes = {}
    for fr in manifest["fragments"]:
        recorded = {fr["name"]: fr["bytes"], **{r["name"]: r["bytes"] for r in fr.get("refs", [])}}
        for name in fragment_files(fr):
            if name not in sizes:
                raise BankError(f"{bank}: fragment file {folder / name} is missing; the bank is damaged (a bank "
                                f"is its file and its folder: copy both, or use `facebank bank copy`)")
            if sizes[name] != recorded[name]:
                raise BankError(f"{bank}: fragment file {folder / name} has {sizes[name]} bytes, the manifest "
                                f"records {recorded[name]} (truncated or replaced); the bank is damaged")


def _nat(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _plain(name) -> bool:
    return isinstance(name, str) and os.path.basename(name) == name and name not in ("", ".", "..")


def _tiles(ranges: list[tuple[int, int]], n: int) -> bool:
    pos = 0
    for a, b in sorted(r for r in ranges if r[1] > r[0]):
        if a != pos:
            return False
        pos = b
    return pos == n


def check_manifest(manifest, where) -> None:
    """The manifest's shape, and that every (table, column, row) is provided by exactly one part."""
    def bad(msg: str):
        raise BankError(f"{where}: manifest {msg}; the bank is damaged")

    if not isinstance(manifest, dict):
        bad("is not a JSON object")
    rows, spaces = manifest.get("rows"), manifest.get("spaces")
    if not _plain(manifest.get("dir")) or not _nat(manifest.get("version")):
        bad("lacks a valid dir or version")
    if not isinstance(rows, dict) or not all(_nat(rows.get(t)) for t in ("faces", "rejections", "log")):
        bad("lacks valid row counts")
    if not isinstance(spaces, dict) or not all(isinstance(i, dict) and _nat(i.get("dim")) and i["dim"] > 0
                                               for i in spaces.values()):
        bad("lacks a valid spaces table")
    for key in ("fragments", "retired", "applied_batches"):
        if not isinstance(manifest.get(key), list):
            bad(f"lacks a {key} list")
    if not all(_plain(n) for n in manifest["retired"]) or not all(isinstance(n, str) for n in manifest["applied_batches"]):
        bad("has invalid retired or applied_batches entries")
    if "uuid" in manifest and not (isinstance(manifest["uuid"], str) and re.fullmatch(r"[0-9a-f]{32}", manifest["uuid"])):
        bad("has an invalid uuid")
    cover: dict[tuple[str, str], list[tuple[int, int]]] = {}
    names: set[str] = set()
    columns = {"faces": set(schema.FACE_COLUMNS), "rejections": set(schema.REJECTION_COLUMNS), "log": {"log"},
               **{f"emb/{s}": {"vectors", "present"} for s in spaces}}
    for fr in manifest["fragments"]:
        if not isinstance(fr, dict) or not _plain(fr.get("name")) or not _nat(fr.get("bytes")):
            bad("has a fragment without a valid name or size")
        refs = fr.get("refs", [])
        if not isinstance(refs, list) or not all(isinstance(r, dict) and _nat(r.get("bytes")) for r in refs):
            bad(f"has invalid refs in fragment {fr['name']}")
        for r in refs:
            if not _plain(r.get("name")):
                bad(f"names a fragment file {r.get('name')!r} that is not a plain file name")
        for name in [fr["name"], *(r["name"] for r in refs)]:
            if name in names:
                bad(f"names file {name} twice")
            names.add(name)
        parts = fr.get("parts")
        if not isinstance(parts, list) or not parts:
            bad(f"has no parts in fragment {fr['name']}")
        for p in parts:
            ok = (isinstance(p, dict) and p.get("table") in columns and isinstance(p.get("group"), str)
                  and _nat(p.get("start")) and _nat(p.get("stop")) and p["start"] <= p["stop"]
                  and isinstance(p.get("columns"), list) and set(p["columns"]) <= columns.get(p.get("table"), set())
                  and isinstance(p.get("sums", {}), dict))
            if not ok:
                bad(f"has an invalid part in fragment {fr['name']}")
            for c in p["columns"]:
                cover.setdefault((p["table"], c), []).append((p["start"], p["stop"]))
    for table in ("faces", "rejections", "log"):
        n = rows[table]
        for c in sorted(columns[table]):
            if not _tiles(cover.get((table, c), []), n):
                bad(f"column {table}/{c} does not cover rows 0..{n} exactly once (columns of different lengths)")
    for s in spaces:
        vec, pres = cover.get((f"emb/{s}", "vectors"), []), cover.get((f"emb/{s}", "present"), [])
        spans = sorted(r for r in vec if r[1] > r[0])
        if sorted(r for r in pres if r[1] > r[0]) != spans or any(b > rows["faces"] for _, b in spans) or any(
                spans[i][1] > spans[i + 1][0] for i in range(len(spans) - 1)):
            bad(f"space {s} has vector row ranges that overlap or pass the {rows['faces']} faces")


def check_refs(bank: Path, manifest: dict, folder: Path) -> None:
    """Each fragment's virtual `image` reads only files its entry lists as `refs` (a writer's check, one
    open per fragment): a manifest that lost them would let a clean-up delete the images."""
    import h5py

    for fr in manifest["fragments"]:
        groups = [p["group"] for p in fr["parts"] if p["table"] == "faces" and "image" in p["columns"]]
        if not groups:
            continue
        listed = {r["name"] for r in fr.get("refs", [])}
        path = folder / fr["name"]
        try:
            with h5py.File(path, "r") as f:
                used = {vs.file_name for g in groups if f[g]["image"].is_virtual
                        for vs in f[g]["image"].virtual_sources()}
        except (OSError, KeyError, ValueError) as exc:
            raise BankError(f"{bank}: fragment file {path} cannot be read ({' '.join(str(exc).split())}); "
                            f"the bank is damaged") from exc
        unlisted = sorted(used - listed)
        if unlisted:
            raise BankError(f"{bank}: fragment {path} reads {unlisted[0]}, which its manifest entry does not list "
                            f"in refs (edited manifest); the bank is damaged")


def damaged_file(manifest: dict, folder: Path) -> Path | None:
    """After a failed read: the first fragment or ref file that does not read whole (None: all do).
    Opening each file first (a truncated one fails there, cheaply); then every dataset is read, so
    this runs only once something already failed."""
    import h5py

    from facebank.bank.layout import fragment_files

    def read_all(f: h5py.File) -> None:
        f.visititems(lambda _, obj: obj[()] if isinstance(obj, h5py.Dataset) and not obj.is_virtual else None)

    files = [folder / name for fr in manifest["fragments"] for name in fragment_files(fr)]
    for deep in (False, True):
        for path in files:
            try:
                with h5py.File(path, "r") as f:
                    if deep:
                        read_all(f)
            except (OSError, RuntimeError, KeyError, ValueError):
                return path
    return None
