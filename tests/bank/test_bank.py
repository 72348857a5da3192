"""The HDF5 bank: schema, round trips, refusals, locking and crash safety of the writer."""

from __future__ import annotations

import os

import h5py
import numpy as np
import pytest

from facebank.bank import BankWriter, FaceRecord, Rejection, copy_bank, create_bank, open_bank
from facebank.bank import schema
from facebank.errors import BankError, BankLockedError, InputError, SchemaVersionError, UnknownFace, UnknownSpace


def _record(i: int, dim: int = 8) -> FaceRecord:
    rng = np.random.default_rng(i)
    v = rng.standard_normal(dim).astype(np.float32)
    return FaceRecord(
        source="folder", source_id=f"face{i}.png", image=rng.bytes(100 + i), image_format="png", width=64, height=64,
        box=np.array([1, 2, 30, 40], np.float32), landmarks=rng.random((5, 2), dtype=np.float32) * 64,
        detector="test", crop=rng.integers(0, 255, (112, 112, 3), dtype=np.uint8), provenance={"i": i},
        age=20.0 + i, gender=i % 2, embeddings={"s": v / np.linalg.norm(v)},
    )


INFO = {"model": "test", "sha256": "ab" * 32, "dim": 8}


def test_round_trip_and_ids(tmp_path):
    path = tmp_path / "b.h5"
    records = [_record(i) for i in range(10)]
    with BankWriter(path, batch_size=3) as w:
        w.register_space("s", INFO)
        for r in records:
            assert w.add_face(r)
        assert not w.add_face(_record(3))  # same bytes: not stored twice
        w.add_rejection(Rejection("folder", "bad.png", "00" * 32, "no_face", "nothing found", "annotate"))
    with open_bank(path) as bank:
        assert len(bank) == 10
        assert bank.spaces == ["s"] and bank.space_info("s")["dim"] == 8
        for r in records:
            face = bank.face(r.id)
            assert face.source_id == r.source_id and face.provenance == {"i": int(face.source_id[4:-4])}
            np.testing.assert_array_equal(face.crop, r.crop)
            np.testing.assert_array_equal(face.landmarks, r.landmarks)
            np.testing.assert_array_equal(face.embeddings["s"], r.embeddings["s"])
            assert face.image_bytes() == r.image
            assert face.gender == ("female", "male")[r.gender] and face.age == r.age
        assert [x["reason"] for x in bank.rejections()] == ["no_face"]
        with pytest.raises(UnknownFace):
            bank.face("0" * 16)
        with pytest.raises(UnknownSpace):
            bank.vectors("arcface")
    assert not list((tmp_path / "b.h5.pending").glob("*.h5")), "committed batches are removed"


def test_content_hash_changes_with_content(tmp_path):
    path = tmp_path / "b.h5"
    with BankWriter(path) as w:
        w.register_space("s", INFO)
        w.add_face(_record(0))
    h1 = open_bank(path).content_hash
    with BankWriter(path) as w:
        w.set_embeddings("s", INFO, [_record(0).id], np.eye(8, dtype=np.float32)[:1])
    h2 = open_bank(path).content_hash
    assert h1 != h2


def test_refuses_other_files(tmp_path):
    with pytest.raises(InputError):
        open_bank(tmp_path / "missing.h5")
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"not hdf5 at all")
    with pytest.raises(BankError):
        open_bank(junk)
    other = tmp_path / "other.h5"
    create_bank(other)
    with h5py.File(other, "r+") as f:
        f.attrs["schema_version"] = 99
    with pytest.raises(SchemaVersionError, match="schema version 99"):
        open_bank(other)
    with pytest.raises(SchemaVersionError):
        BankWriter(other)
    with pytest.raises(InputError):
        create_bank(other)  # never overwrites


def test_one_writer_at_a_time(tmp_path):
    path = tmp_path / "b.h5"
    with BankWriter(path):
        with pytest.raises(BankLockedError):
            BankWriter(path)
    with BankWriter(path):  # released on exit
        pass


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file permissions")
def test_read_only_location(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    os.chmod(ro, 0o555)
    try:
        with pytest.raises(InputError, match="read-only"):
            BankWriter(ro / "b.h5")
    finally:
        os.chmod(ro, 0o755)


def test_pending_batches_survive_and_apply_once(tmp_path):
    """A writer that dies after flushing leaves complete batches; the next writer applies them once."""
    path = tmp_path / "b.h5"
    w = BankWriter(path, batch_size=2, commit_every=10_000)
    w.register_space("s", INFO)
    for i in range(5):
        w.add_face(_record(i))
    w.flush()
    w._unlock()  # die without committing
    assert len(open_bank(path)) == 0
    batches = sorted((tmp_path / "b.h5.pending").glob("batch-*.h5"))
    assert len(batches) == 3
    keep = [b.read_bytes() for b in batches]
    with BankWriter(path):
        pass
    assert len(open_bank(path)) == 5
    # Killed between replacing the bank and deleting the batches: applying them again adds nothing.
    for b, data in zip(batches, keep):
        b.write_bytes(data)
    with BankWriter(path):
        pass
    with open_bank(path) as bank:
        assert len(bank) == 5 and len(set(bank.ids)) == 5
        assert bank.present("s").all()


def test_crop_read_is_one_chunk(tmp_path):
    path = tmp_path / "b.h5"
    with BankWriter(path) as w:
        w.register_space("s", INFO)
        w.add_face(_record(0))
    with h5py.File(path) as f:  # the top file maps crops onto fragments; each fragment chunks a face per chunk
        (source,) = f["faces/crop"].virtual_sources()
    with h5py.File(path.parent / source.file_name) as frag:
        assert frag[source.dset_name].chunks == (1, schema.CROP_SIZE, schema.CROP_SIZE, 3)


def test_schema_doc_lists_every_column():
    doc = (schema.__file__.rsplit("/", 1)[0] + "/SCHEMA.md")
    text = open(doc).read()
    for name in schema.FACE_COLUMNS:
        assert f"`{name}`" in text, name
    assert f"schema_version` = {schema.SCHEMA_VERSION}" in text


def test_copy_of_bank_is_independent(small_bank, tmp_path):
    copy = tmp_path / "copy.h5"
    copy_bank(small_bank, copy)
    with open_bank(copy) as a, open_bank(small_bank) as b:
        assert a.content_hash == b.content_hash
    with BankWriter(copy) as w:  # writing the copy leaves the original alone
        w.register_space("s", INFO)
        w.add_face(_record(99))
    assert len(open_bank(copy)) == len(open_bank(small_bank)) + 1
