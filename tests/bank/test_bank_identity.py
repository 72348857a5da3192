"""A bank cannot be lost by copying or renaming it, and a damaged one is refused before any write.

Each case is a real bank written by BankWriter, then copied, renamed or damaged the way a user or
a disk would, then read and written again.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from facebank.bank import BankWriter, FaceRecord, copy_bank, open_bank
from facebank.bank.integrity import BANK_ID_FILE, read_bank_id
from facebank.cli.common import read_envelope
from facebank.errors import BankError

FACEBANK = str(Path(sys.executable).with_name("facebank"))
INFO = {"model": "test", "sha256": "ab" * 32, "dim": 8}


def _record(i: int) -> FaceRecord:
    rng = np.random.default_rng(i)
    v = rng.standard_normal(8).astype(np.float32)
    return FaceRecord(
        source="folder", source_id=f"face{i}.png", image=i.to_bytes(4, "little") + rng.bytes(300), image_format="png",
        width=64, height=64, box=np.array([1, 2, 30, 40], np.float32), landmarks=rng.random((5, 2), dtype=np.float32),
        detector="test", crop=rng.integers(0, 255, (112, 112, 3), dtype=np.uint8), provenance={"i": i},
        age=20.0 + i, gender=i % 2, added_at=1.7e9 + i, embeddings={"s": v / np.linalg.norm(v)},
    )


def _write(bank: Path, faces: range) -> None:
    with BankWriter(bank, batch_size=4) as w:
        w.register_space("s", INFO)
        for i in faces:
            w.add_face(_record(i))


def _contents(bank: Path) -> dict:
    with open_bank(bank) as b:
        return {"ids": list(b.ids), "ages": b.column("age").tolist(), "vectors": b.vectors("s").tolist(),
                "images": [b.image_bytes(r) for r in range(len(b))]}


def _expected(faces: range) -> dict:
    recs = [_record(i) for i in faces]
    return {"ids": [r.id for r in recs], "ages": [r.age for r in recs],
            "vectors": [r.embeddings["s"].tolist() for r in recs], "images": [r.image for r in recs]}


def _forge(bank: Path, change) -> None:
    """Edit the manifest as a forger would: the checksum recomputed, so only the deeper checks remain."""
    with h5py.File(bank, "r+") as f:
        m = json.loads(f.attrs["manifest"])
        change(m)
        f.attrs["manifest"] = raw = json.dumps(m, sort_keys=True)
        f.attrs["manifest_sha256"] = hashlib.sha256(raw.encode()).hexdigest()


def test_a_copy_with_its_folder_never_deletes_the_originals_files(tmp_path):
    b, c = tmp_path / "b.h5", tmp_path / "c.h5"
    _write(b, range(6))
    shutil.copy(b, c)
    shutil.copytree(f"{b}.d", f"{c}.d")
    _write(b, range(6, 12))  # the original moves on: newer fragments only it references
    assert _contents(c) == _expected(range(6))  # the copy reads its own folder
    _write(c, range(100, 103))  # ... and its writer cleans up only there
    assert _contents(b) == _expected(range(12))
    assert _contents(c) == _expected([*range(6), *range(100, 103)])
    with open_bank(b) as ob, open_bank(c) as oc:
        assert oc.layout.dir == "c.h5.d" and oc.recorded_dir == "c.h5.d"  # re-bound to its own folder
        assert ob.recorded_dir == "b.h5.d"


def test_a_top_file_copied_beside_the_bank_is_refused_by_readers_and_writers(tmp_path):
    b, c = tmp_path / "b.h5", tmp_path / "c.h5"
    _write(b, range(6))
    shutil.copy(b, c)
    _write(b, range(6, 12))
    before = sorted(os.listdir(f"{b}.d"))
    with pytest.raises(BankError, match=r"c\.h5 has no fragments folder c\.h5\.d.*names b\.h5\.d"):
        open_bank(c)
    with pytest.raises(BankError, match="no fragments folder"):
        _write(c, range(100, 101))
    assert sorted(os.listdir(f"{b}.d")) == before
    assert _contents(b) == _expected(range(12))


def test_a_bank_renamed_with_its_folder_opens_and_takes_writes(tmp_path):
    b, x = tmp_path / "b.h5", tmp_path / "renamed.h5"
    _write(b, range(5))
    os.rename(b, x)
    os.rename(f"{b}.d", f"{x}.d")
    assert _contents(x) == _expected(range(5))
    _write(x, range(5, 8))
    assert _contents(x) == _expected(range(8))
    with h5py.File(x, "r") as f:  # plain h5py reads the re-bound top file too
        assert [h.decode() for h in f["faces/id"][:]] == _expected(range(8))["ids"]


def test_a_folder_of_another_bank_is_refused(tmp_path):
    b, c = tmp_path / "b.h5", tmp_path / "c.h5"
    _write(b, range(3))
    _write(c, range(10, 13))
    shutil.rmtree(f"{c}.d")
    shutil.copytree(f"{b}.d", f"{c}.d")  # b's folder under c's name
    with pytest.raises(BankError, match="belongs to another bank"):
        open_bank(c)
    with pytest.raises(BankError, match="belongs to another bank"):
        _write(c, range(20, 21))
    assert _contents(b) == _expected(range(3))


def test_copy_bank_and_the_cli_copy_are_independent(tmp_path):
    b = tmp_path / "b.h5"
    _write(b, range(4))
    c = copy_bank(b, tmp_path / "c.h5")
    r = subprocess.run([FACEBANK, "bank", "copy", "--bank", str(b), "--to",
                        str(tmp_path / "d.h5"), "--json"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert read_envelope(r.stdout)["copy"] == str(tmp_path / "d.h5")
    r = subprocess.run([FACEBANK, "bank", "copy", "--bank", str(b), "--to", str(c)],
                       capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "already exists" in r.stderr
    _write(c, range(4, 6))
    _write(tmp_path / "d.h5", range(50, 51))
    assert _contents(b) == _expected(range(4))
    assert _contents(c) == _expected(range(6))
    ids = {read_bank_id(Path(f"{p}.d")) for p in (b, c, tmp_path / "d.h5")}
    assert len(ids) == 3


@pytest.mark.parametrize("name", ["a%b%%c.h5", "with space.h5", "gesichtsbank-é-日本.h5", "%b.h5"])
def test_names_with_percent_spaces_and_non_ascii_round_trip(tmp_path, name):
    bank = tmp_path / name
    _write(bank, range(5))
    _write(bank, range(5, 7))
    assert _contents(bank) == _expected(range(7))
    with h5py.File(bank, "r") as f:
        np.testing.assert_array_equal(f["embeddings/s/vectors"][:], np.array(_expected(range(7))["vectors"], np.float32))


def _one_line_refusal(bank: Path, match: str) -> None:
    """Readers, writers and `facebank info` refuse it in one line naming the reason."""
    with pytest.raises(BankError, match=match):
        open_bank(bank)
    with pytest.raises(BankError, match=match):
        _write(bank, range(900, 901))
    r = subprocess.run([FACEBANK, "info", "--bank", str(bank)], capture_output=True, text=True)
    assert r.returncode == 1 and r.stderr.startswith("error: BankError") and r.stderr.count("\n") == 1, r.stderr


def test_a_manifest_that_is_not_json_is_refused(tmp_path):
    bank = tmp_path / "b.h5"
    _write(bank, range(3))
    with h5py.File(bank, "r+") as f:
        f.attrs["manifest"] = "{not json"
    _one_line_refusal(bank, "manifest")


def test_columns_of_different_lengths_are_refused_before_any_write(tmp_path):
    bank = tmp_path / "b.h5"
    _write(bank, range(4))
    _write(bank, range(4, 8))  # two commits: two row ranges

    def shorten_age(m):
        for fr in m["fragments"]:
            for p in fr["parts"]:
                if p["table"] == "faces" and p["start"] == 4:
                    p["columns"].remove("age")
    _forge(bank, shorten_age)
    _one_line_refusal(bank, "faces/age does not cover")
    with h5py.File(bank, "r") as f:  # nothing was written: ages of the rows still provided are intact
        assert f["faces/age"][:4].tolist() == [20.0, 21.0, 22.0, 23.0]


def test_a_naive_manifest_edit_is_refused_by_its_checksum(tmp_path):
    bank = tmp_path / "b.h5"
    _write(bank, range(3))
    with h5py.File(bank, "r+") as f:
        m = json.loads(f.attrs["manifest"])
        m["rows"]["faces"] = 2
        f.attrs["manifest"] = json.dumps(m)
    _one_line_refusal(bank, "manifest_sha256")


def test_a_manifest_that_lost_its_refs_is_refused_by_writers_and_nothing_deleted(tmp_path):
    bank = tmp_path / "b.h5"
    _write(bank, range(6))
    files = sorted(os.listdir(f"{bank}.d"))
    _forge(bank, lambda m: [fr.pop("refs", None) for fr in m["fragments"]])
    with pytest.raises(BankError, match="does not list in refs"):
        _write(bank, range(10, 11))
    assert sorted(os.listdir(f"{bank}.d")) == files
    assert _contents(bank)["images"] == _expected(range(6))["images"]  # readers still read every image


@pytest.mark.parametrize("damage", ["delete", "truncate"])
def test_a_deleted_or_truncated_images_file_is_refused_naming_it(tmp_path, damage):
    bank = tmp_path / "b.h5"
    _write(bank, range(6))
    with open_bank(bank) as b:
        ref = b.layout.fragments[0].refs[0].name
    path = Path(f"{bank}.d") / ref
    if damage == "delete":
        path.unlink()
    else:
        os.truncate(path, path.stat().st_size // 2)
    _one_line_refusal(bank, ref)


def test_a_top_file_moved_without_its_folder_is_refused(tmp_path):
    bank = tmp_path / "b.h5"
    _write(bank, range(3))
    other = tmp_path / "elsewhere"
    other.mkdir()
    shutil.copy(bank, other / "b.h5")
    _one_line_refusal(other / "b.h5", "no fragments folder")


def test_clean_up_keeps_files_it_cannot_prove_its_own(tmp_path):
    bank = tmp_path / "b.h5"
    _write(bank, range(3))
    folder = Path(f"{bank}.d")
    with open_bank(bank) as b:
        version = b.layout.version
    unknown = folder / f"frag-{version:08d}-deadbeef.h5"  # not this bank's: a version it already passed
    unknown.write_bytes(b"someone else's")
    killed = folder / f"frag-{version + 1:08d}-0badf00d.h5"  # a killed commit's: a version not reached
    killed.write_bytes(b"half")
    _write(bank, range(3, 4))
    assert unknown.exists() and not killed.exists()
    assert (folder / BANK_ID_FILE).exists()


def test_a_fragment_damaged_in_place_is_named_when_a_read_fails(tmp_path):
    bank = tmp_path / "b.h5"
    _write(bank, range(6))
    with open_bank(bank) as b:
        frag = Path(f"{bank}.d") / b.layout.fragments[0].name
    data = bytearray(frag.read_bytes())
    data[200:200 + 8192] = b"\x5a" * 8192  # its metadata overwritten, its size unchanged
    frag.write_bytes(bytes(data))
    with pytest.raises(BankError, match=f"fragment file {frag} cannot be read"):
        with open_bank(bank) as b:
            b.column("age")
            b.crop(0)
