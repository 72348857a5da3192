"""The digests a bank's manifest records for its files, re-read: by writers, by `compact`, and in full
by `facebank bank verify`.

Each fragment records its `sha256` (and, written since digests are re-read, its `xxh3_128`); each
ref (a linked batch file holding images) its `xxh3_128`. Re-reading them all is a read of the whole
bank, images included (about 1.4 TB at a million generated faces), so it is not done at every open:

- a reader checks sizes only (`integrity.check_files`): opening stays cheap;
- a writer (`BankWriter`, `compact`, `copy`) re-reads every file that changed since a writer last
  verified it, and refuses in one line naming the file before it writes anything. What was verified
  is recorded beside the bank in `<bank>.verified` (per file: size, inode, ctime, the digest checked).
  Any write to a file, even one that restores its mtime, sets its ctime, which no program can set
  back; an entry whose ctime is within `RACY_NS` of its check is not trusted (a write in the same
  clock tick as the check would leave the ctime as it was), so new files are re-read once;
- `compact` re-reads in full every file it merges, whatever the record says: it deletes them after;
- `facebank info` re-reads the files whose record no longer matches (changed since verified);
- `facebank bank verify` re-reads every file.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from facebank._io.checksum import FAST, digest_file
from facebank._io.files import atomic_write_text
from facebank.errors import BankError
from facebank.progress import Progress, Tally

__all__ = ["DigestCheck", "RACY_NS", "changed_files_verified", "record_path", "verify_bank", "verify_digests"]

_MB = 1 << 20
RACY_NS = 2_000_000_000  # an entry checked this soon after the file's ctime is re-read (clock ticks, NFS)
_HEX = {FAST: re.compile(r"^[0-9a-f]{32}$"), "sha256": re.compile(r"^[0-9a-f]{64}$")}


@dataclass(frozen=True)
class DigestCheck:
    """What one check read: every file of the bank, and those whose digest it re-read."""

    files: int
    bytes: int
    read_files: int
    read_bytes: int
    seconds: float

    def to_dict(self) -> dict:
        return {"files": self.files, "bytes": self.bytes, "read_files": self.read_files,
                "read_bytes": self.read_bytes, "seconds": round(self.seconds, 3)}


@dataclass(frozen=True)
class _Recorded:
    name: str
    bytes: int
    algorithm: str  # FAST (preferred when recorded) or "sha256"
    digest: str


def record_path(bank: Path) -> Path:
    """Where writers record what they verified: beside the bank, like its lock (never in a copy)."""
    return bank.parent / f"{bank.name}.verified"


def _recorded(bank: Path, manifest: dict) -> list[_Recorded]:
    out = []
    for fr in manifest["fragments"]:
        for entry in [fr, *fr.get("refs", [])]:
            algorithm = FAST if FAST in entry else "sha256" if "sha256" in entry else None
            if algorithm is None:
                continue  # written before digests were recorded: only its size can be checked
            digest = entry[algorithm]
            if not isinstance(digest, str) or not _HEX[algorithm].match(digest):
                raise BankError(f"{bank}: manifest has an invalid {algorithm} for fragment file {entry['name']}; "
                                f"the bank is damaged")
            out.append(_Recorded(entry["name"], entry["bytes"], algorithm, digest))
    return out


def _load(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return data["files"] if isinstance(data, dict) and isinstance(data.get("files"), dict) else {}
    except (OSError, ValueError, KeyError, UnicodeDecodeError):
        return {}  # no record, or a damaged one: everything is re-read


def _key(st: os.stat_result, item: _Recorded) -> list:
    return [st.st_size, st.st_ino, st.st_ctime_ns, f"{item.algorithm}:{item.digest}"]


def verify_digests(bank: Path, manifest: dict, folder: Path, *, scope: str = "untrusted", names: set[str] | None = None,
                   write_record: bool = False, progress: Callable[[int], None] | None = None) -> DigestCheck:
    """Re-read the digests of the bank's files (those in `names` only, when given) and refuse the first
    that does not match, in one line naming it. `scope`: "all" re-reads every file; "untrusted" those the
    record cannot vouch for (a writer's check); "changed" those whose record entry no longer matches the
    file (a reader's: it cannot record what it read). `write_record`: record what was verified (writers,
    under the bank's lock). `progress(n)`: bytes read."""
    t0 = time.perf_counter()
    items = [i for i in _recorded(bank, manifest) if names is None or i.name in names]
    record = {} if scope == "all" else _load(record_path(bank))
    fresh: dict[str, list] = {}
    total = read_files = read_bytes = 0
    for item in items:
        path = folder / item.name
        try:
            st = os.stat(path)
        except OSError as exc:
            raise BankError(f"{bank}: fragment file {path} cannot be read ({exc.strerror}); the bank is damaged") from exc
        total += st.st_size
        key, entry = _key(st, item), record.get(item.name)
        trusted = (isinstance(entry, list) and len(entry) == 5 and entry[:4] == key
                   and isinstance(entry[4], int) and entry[2] + RACY_NS < entry[4])
        if scope == "changed" and (entry is None or (isinstance(entry, list) and entry[:4] == key)):
            continue  # never verified (a reader cannot tell cheaply), or unchanged since
        if scope != "all" and trusted:
            fresh[item.name] = entry
            continue
        checked = time.time_ns()
        try:
            got = digest_file(path, item.algorithm, progress)
        except OSError as exc:
            raise BankError(f"{bank}: fragment file {path} cannot be read ({exc.strerror or exc}); "
                            f"the bank is damaged") from exc
        if got != item.digest:
            raise BankError(f"{bank}: fragment file {path} does not match the {item.algorithm} digest its manifest "
                            f"records (damaged in place, {st.st_size} bytes as recorded); the bank is damaged")
        read_files, read_bytes = read_files + 1, read_bytes + st.st_size
        fresh[item.name] = [*key, checked]
    if write_record:
        _save(record_path(bank), fresh if names is None else {**record, **fresh}, manifest)
    return DigestCheck(len(items), total, read_files, read_bytes, time.perf_counter() - t0)


def _save(path: Path, entries: dict, manifest: dict) -> None:
    """Keep only live files' entries. A cache: a failed write (a full disk) costs a re-read next time."""
    live = {n for fr in manifest["fragments"] for n in [fr["name"], *(r["name"] for r in fr.get("refs", []))]}
    try:
        atomic_write_text(path, json.dumps({"format": "facebank-verified", "files": {
            k: v for k, v in sorted(entries.items()) if k in live}}) + "\n")
    except OSError:
        pass


def verify_bank(bank: str | os.PathLike, *, progress: Progress | None = None) -> DigestCheck:
    """Every check a reader makes, the refs, and every file's digest re-read (`facebank bank verify`).
    Reads only: the bank and the record are left as they are. BankError naming the first bad file.
    `progress`: stage "verify", counted in MB read."""
    from facebank._io.files import as_path
    from facebank.bank.integrity import canonical_dir, check_refs
    from facebank.bank.store import Bank

    bank = as_path(bank, "bank")
    with Bank(bank) as b:
        manifest = b.manifest
    folder = canonical_dir(bank)
    check_refs(bank, manifest, folder)
    tally = Tally(progress, "verify")
    tally.start(-(-sum(os.path.getsize(folder / i.name) for i in _recorded(bank, manifest)) // _MB))
    read = 0

    def advance(n: int) -> None:  # bytes -> whole MB, so the bar moves once a MB
        nonlocal read
        before, read = read, read + n
        if read // _MB > before // _MB:
            tally.advance(read // _MB - before // _MB)

    return verify_digests(bank, manifest, folder, scope="all", progress=advance if progress is not None else None)


def changed_files_verified(bank) -> DigestCheck:
    """A reader's check (`facebank info`): re-read the files that changed since a writer verified them.
    `bank` is an open `Bank`; BankError naming the first file whose digest no longer matches."""
    from facebank.bank.integrity import canonical_dir

    return verify_digests(bank.path, bank.manifest, canonical_dir(bank.path), scope="changed")
