"""Build integrity at open (manifest version 2: XXH3-128 beside sha256) and the cheap per-target
re-check against the bank's own vector, read from its fragment (issue 13)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from facebank._io.checksum import file_digests, xxh3_file
from facebank._io.download import sha256_file
from facebank.bank import BankWriter, compact_bank, open_bank
from facebank.errors import FacebankError, IndexBuildError, StaleIndex
from facebank.index.build import build_index, verify_build
from facebank.index.build_files import manifest_files
from facebank.index.manifest import FORMAT_VERSION, read_manifest
from facebank.pick.session import FaceBank
from tests.hostile.test_hostile import DIM, _record  # the same synthetic faces (tests/ is on sys.path)

@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A bank of 200 faces written in several commits (several fragments), and a flat build."""
    root = tmp_path_factory.mktemp("integrity")
    bank = root / "bank.h5"
    with BankWriter(bank, batch_size=16, commit_every=50) as w:
        w.register_space("s", {"model": "t", "sha256": "ab" * 32, "dim": DIM})
        for i in range(200):
            w.add_face(_record(i))
    return bank, build_index(bank, out=root / "builds", thresholds={"s": 0.3}, build_id="b1")


def _copy(built, tmp_path) -> Path:
    return Path(shutil.copytree(built[1], tmp_path / "build"))


def _forge(b: Path, keys=("files", "xxh3_128")) -> None:
    """Rewrite the manifest's checksums to match the files as they are now."""
    m = json.loads((b / "manifest.json").read_text())
    for where in [m, *m["spaces"].values()]:
        for key in keys:
            if key in where:
                where[key] = {k: (sha256_file if key == "files" else xxh3_file)(b / k) for k in where[key]}
    (b / "manifest.json").write_text(json.dumps(m))


def test_manifest_records_both_checksums_of_every_file(built):
    m = read_manifest(built[1])
    assert m.format_version == FORMAT_VERSION == 2
    sha, fast = manifest_files(m), manifest_files(m, "xxh3_128")
    assert set(sha) == set(fast) == {"rows.npy", "ids.npy", "groups.npy", "vectors.s.npy", "index.s.faiss"}
    for name in sha:
        assert file_digests(built[1] / name) == (sha[name], fast[name])
    verify_build(built[1], bank_path=str(built[0]))


@pytest.mark.parametrize("how", ["flipped", "truncated", "swapped"])
def test_fast_checksum_refuses_a_tampered_vectors_file_even_with_a_forged_sha256(built, tmp_path, how):
    b = _copy(built, tmp_path)
    vec = np.load(b / "vectors.s.npy")
    if how == "truncated":
        data = (b / "vectors.s.npy").read_bytes()
        (b / "vectors.s.npy").write_bytes(data[: len(data) // 2])
    else:
        np.save(b / "vectors.s.npy", -vec if how == "flipped" else vec[::-1].copy())
    _forge(b, keys=("files",))  # only the sha256s: a session checks the XXH3-128s
    with pytest.raises(IndexBuildError, match=r"vectors\.s\.npy does not match its checksum"):
        FaceBank(b, bank=built[0])
    with pytest.raises(IndexBuildError, match=r"vectors\.s\.npy"):
        verify_build(b, bank_path=str(built[0]))


def test_both_checksums_forged_the_bank_recheck_still_refuses(built, tmp_path):
    """Swapped rows with every checksum rewritten: the open passes, each target is refused by the
    bank's own vector (read from its fragment)."""
    b = _copy(built, tmp_path)
    np.save(b / "vectors.s.npy", np.load(b / "vectors.s.npy")[::-1].copy())
    _forge(b)
    session = FaceBank(b, bank=built[0])
    rng = np.random.default_rng(0)
    for _ in range(20):
        with pytest.raises(StaleIndex, match=r"vectors\.s\.npy row \d+ differs from the bank's vector"):
            session.pick_target(rng.standard_normal(DIM).astype(np.float32), threshold=0.9, rng=rng, allow_looser=True)
    session.close()


def test_version_1_manifest_opens_and_is_checked_with_sha256(built, tmp_path):
    b = _copy(built, tmp_path)
    m = json.loads((b / "manifest.json").read_text())
    m["format_version"] = 1
    for where in [m, *m["spaces"].values()]:
        del where["xxh3_128"]
    (b / "manifest.json").write_text(json.dumps(m))
    with FaceBank(b, bank=built[0]) as s:
        s.pick_target(np.ones(DIM, np.float32), threshold=0.9, allow_looser=True)
    np.save(b / "vectors.s.npy", -np.load(b / "vectors.s.npy"))
    with pytest.raises(IndexBuildError, match=r"vectors\.s\.npy does not match its checksum"):
        FaceBank(b, bank=built[0])


def test_version_2_manifest_without_fast_checksums_is_refused(built, tmp_path):
    b = _copy(built, tmp_path)
    m = json.loads((b / "manifest.json").read_text())
    del m["spaces"]["s"]["xxh3_128"]
    (b / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(IndexBuildError, match=r"spaces\.s\.xxh3_128"):
        FaceBank(b, bank=built[0])


def test_faiss_index_is_checked_when_first_read(built, tmp_path):
    b = build_index(built[0], out=tmp_path / "builds", kind="hnsw", thresholds={"s": 0.3}, build_id="h")
    data = bytearray((b / "index.s.faiss").read_bytes())
    data[-1] ^= 0xFF
    (b / "index.s.faiss").write_bytes(bytes(data))
    with FaceBank(b, bank=built[0]) as s:  # random picks never read the FAISS index
        s.pick_target(np.ones(DIM, np.float32))
        with pytest.raises(IndexBuildError, match=r"index\.s\.faiss does not match its checksum"):
            s.pick_target(np.ones(DIM, np.float32), mode="furthest")


def test_fragment_row_reads_equal_the_virtual_dataset(built, tmp_path):
    """Bank.vector reads rows from their fragments: equal to the virtual dataset everywhere, also
    after an embedding update (copy-on-write parts) and a compaction."""
    bank = tmp_path / "bank.h5"
    shutil.copy(built[0], bank)
    shutil.copytree(f"{built[0]}.d", f"{bank}.d")
    with open_bank(bank) as b:
        ids = list(b.ids[:30])
    with BankWriter(bank) as w:  # rewrite 30 rows of another space: new parts for part of the rows
        w.set_embeddings("t", {"model": "t2", "sha256": "cd" * 32, "dim": 4}, ids,
                         np.eye(4, dtype=np.float32)[np.arange(30) % 4])
    for step in ("updated", "compacted"):
        with open_bank(bank) as b:
            assert len(b.layout.fragments) > 1 or step == "compacted"
            for s in ("s", "t"):
                whole = b.vectors(s)
                for row in range(len(b)):
                    assert np.array_equal(b.vector(s, row), whole[row]), (step, s, row)
            assert all(p.mapped for p in b._rows["s"]._parts)  # read from the mapped fragments, not through h5py
            for name in ("id", "age", "gender", "crop"):
                whole = b._f["faces"][name][:]
                col = b.mapped(name)
                assert all(np.array_equal(col[row], whole[row]) for row in range(len(b))), (step, name)
                assert np.array_equal(col.take(np.arange(len(b))[::-3]), whole[::-3]), (step, name)
            assert [b.face_id(r) for r in range(len(b))] == list(b.ids)
            with pytest.raises(FacebankError):
                b.vector("s", len(b))
        compact_bank(bank)
