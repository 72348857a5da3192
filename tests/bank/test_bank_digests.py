"""Damage that keeps a file's size: writers re-read the digests the manifest records and refuse in one
line naming the file, before they write anything; `facebank bank verify` and `facebank info` report it;
a read of a damaged fragment names the file, whatever the read path."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from facebank.bank import BankWriter, Rejection, compact_bank, open_bank
from facebank.bank import digests
from facebank.bank.digests import record_path, verify_bank, verify_digests
from facebank.bank.integrity import canonical_dir
from facebank.errors import BankError
from tests.hostile.test_faults import INFO, _record

FACEBANK = str(Path(sys.executable).with_name("facebank"))


def _write(bank: Path, rows: range) -> None:
    with BankWriter(bank) as w:
        w.register_space("s", INFO)
        for i in rows:
            w.add_face(_record(i))
        w.add_rejection(Rejection(source="folder", source_id=f"bad{rows[0]}.png", content_sha256="00" * 32,
                                  reason="no_face", stage="annotate"))
        w.log("test_write", first=rows[0])


def _bank(tmp_path: Path) -> Path:
    """Two commits: each a fragment (crops, attributes, vectors) and an images file it links (a ref)."""
    bank = tmp_path / "b.h5"
    _write(bank, range(0, 4))
    _write(bank, range(4, 8))
    return bank


def _files(bank: Path, kind: str, commit: int = 0) -> Path:
    with open_bank(bank) as b:
        fr = [f for f in b.manifest["fragments"] if any(p["table"] == "faces" and "id" in p["columns"] for p in f["parts"])]
    fr = sorted(fr, key=lambda f: min(p["start"] for p in f["parts"] if p["table"] == "faces"))[commit]
    return canonical_dir(bank) / (fr["name"] if kind == "fragment" else fr["refs"][0]["name"])


def _flip(path: Path) -> None:
    """One byte changed in the middle of the file, its size and mtime kept (as silent damage would)."""
    st = os.stat(path)
    with open(path, "r+b") as fh:
        fh.seek(st.st_size // 2)
        byte = fh.read(1)
        fh.seek(st.st_size // 2)
        fh.write(bytes([byte[0] ^ 0xFF]))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def _snapshot(bank: Path) -> dict:
    out = {}
    for p in sorted(bank.parent.rglob("*")):
        if p.is_file():
            out[str(p.relative_to(bank.parent))] = (p.stat().st_size, p.stat().st_mtime_ns, p.read_bytes() if
                                                    p.stat().st_size < 1 << 20 and ".d" not in p.parent.name else b"")
    return out


def _contents(bank: Path) -> tuple:
    with open_bank(bank) as b:
        return list(b.ids), b.content_hash, len(b)


@pytest.mark.parametrize("kind", ["fragment", "images"])
def test_a_byte_flipped_in_place_is_refused_by_writers_before_they_write(tmp_path, kind):
    bank = _bank(tmp_path)
    target = _files(bank, kind)
    before, files = _contents(bank), _snapshot(bank)
    _flip(target)
    for write in (lambda: BankWriter(bank), lambda: compact_bank(bank, target_rows=100)):
        with pytest.raises(BankError) as err:
            write()
        msg = str(err.value)
        assert "\n" not in msg and f"fragment file {target} does not match" in msg and "damaged" in msg
        assert _snapshot(bank) == files  # nothing written, moved or deleted; no pending folder, no record change
    assert _contents(bank) == before  # readers check sizes only: it opens as before


@pytest.mark.parametrize("kind", ["fragment", "images"])
def test_verify_and_info_report_the_damaged_file(tmp_path, kind):
    bank = _bank(tmp_path)
    ok = subprocess.run([FACEBANK, "bank", "verify", "--bank", str(bank)], capture_output=True, text=True)
    assert ok.returncode == 0 and "every digest as recorded" in ok.stdout
    target = _files(bank, kind)  # of the first commit: the second writer recorded it as verified
    _flip(target)
    for args in (["bank", "verify"], ["info"]):
        r = subprocess.run([FACEBANK, *args, "--bank", str(bank)], capture_output=True, text=True)
        lines = [line for line in r.stderr.splitlines() if line.strip() and "verify" not in line[:8]]
        assert r.returncode == 1 and len(lines) == 1, (args, r.stderr)
        assert lines[0].startswith("error: BankError: ") and f"fragment file {target} does not match" in lines[0]


def test_the_record_spares_a_writer_the_reread_until_a_file_changes(tmp_path, monkeypatch):
    """What a writer verified is recorded; the next check re-reads only files changed since (ctime:
    restoring a file's mtime does not hide a write). A full verify ignores the record."""
    monkeypatch.setattr(digests, "RACY_NS", 0)  # this test's files are all younger than the real margin
    bank = _bank(tmp_path)
    with open_bank(bank) as b:
        manifest = b.manifest
    folder = canonical_dir(bank)
    first = verify_digests(bank, manifest, folder, write_record=True)
    assert first.files == 4 and record_path(bank).is_file()
    again = verify_digests(bank, manifest, folder, write_record=True)
    assert again.read_files == 0 and again.files == 4
    assert verify_bank(bank).read_files == 4
    target = _files(bank, "images", commit=1)
    _flip(target)
    with pytest.raises(BankError, match=f"fragment file {target} does not match"):
        verify_digests(bank, manifest, folder, scope="changed")


def test_every_digest_is_recorded_by_new_fragments(tmp_path):
    bank = _bank(tmp_path)
    compact_bank(bank, target_rows=100)
    with open_bank(bank) as b:
        frags = b.manifest["fragments"]
    assert frags and all(len(fr["xxh3_128"]) == 32 and len(fr["sha256"]) == 64 for fr in frags)
    assert verify_bank(bank).files == len(frags)


# -- reads of a fragment damaged after the bank was opened: every read path names the file --
READS = {
    "crop": lambda b: b.crop(1),
    "image_bytes": lambda b: b.image_bytes(1),
    "vectors": lambda b: b.vectors("s"),
    "vector": lambda b: b.vector("s", 1),
    "present": lambda b: b.present("s"),
    "age": lambda b: b.column("age"),
    "gender (mapped)": lambda b: b.mapped("gender").take(np.arange(4)),
    "ids": lambda b: b.ids,
    "face": lambda b: b.face(1),
    "rejections": lambda b: b.rejections(),
    "log": lambda b: b.log(),
}
# what each kind of file holds, so which reads must fail on it
HOLDS = {
    "fragment": {"crop", "image_bytes", "vectors", "vector", "present", "age", "gender (mapped)", "ids", "face",
                 "rejections", "log"},
    "images": {"image_bytes"},
    "compacted": set(READS),
}


@pytest.mark.parametrize("kind", sorted(HOLDS))
def test_a_fragment_truncated_after_open_is_named_by_every_read(tmp_path, kind):
    bank = tmp_path / "b.h5"
    _write(bank, range(0, 4))
    if kind == "compacted":
        _write(bank, range(4, 6))
        compact_bank(bank, target_rows=100)
    target = _files(bank, "images" if kind == "images" else "fragment")
    whole = target.read_bytes()
    for name, read in READS.items():
        target.write_bytes(whole)
        with open_bank(bank) as b:
            os.truncate(target, len(whole) // 2)
            if name not in HOLDS[kind]:
                read(b)  # the file holds none of it
                continue
            with pytest.raises(BankError) as err:
                read(b)
        assert f"fragment file {target} " in str(err.value) and "damaged" in str(err.value), (name, str(err.value))
    target.write_bytes(whole)
    assert verify_bank(bank).files >= 1  # restored whole, it verifies
