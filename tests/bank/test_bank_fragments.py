"""Schema version 2: commits that write only what they add, compact, upgrade from version 1,
plain-h5py access, and kill -9 in the middle of a commit or an upgrade."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from facebank.bank import BankWriter, FaceRecord, Rejection, compact_bank, copy_bank, open_bank, upgrade_bank
from facebank.bank import schema
from facebank.bank.layout import fragment_files
from facebank.errors import BankError, SchemaVersionError

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "tests" / "fixtures" / "bank_v1.h5"
INFO = {"model": "test", "sha256": "ab" * 32, "dim": 8}


def _record(i: int, size: int = 100, dim: int = 8) -> FaceRecord:
    rng = np.random.default_rng(i)
    v = rng.standard_normal(dim).astype(np.float32)
    return FaceRecord(
        source="folder", source_id=f"face{i}.png", image=i.to_bytes(4, "little") + rng.bytes(size), image_format="png",
        width=64, height=64, box=np.array([1, 2, 30, 40], np.float32), landmarks=rng.random((5, 2), dtype=np.float32),
        detector="test", crop=rng.integers(0, 255, (112, 112, 3), dtype=np.uint8), provenance={"i": i},
        age=20.0 + i, gender=i % 2, added_at=1.7e9 + i, embeddings={"s": v / np.linalg.norm(v)} if i % 3 else {},
    )


def _frag_files(bank: Path) -> dict[str, tuple[int, int, int]]:
    d = Path(f"{bank}.d")
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns, p.stat().st_size) for p in d.iterdir() if p.name.startswith("frag-")} if d.is_dir() else {}


def _snapshot(bank: Path) -> dict:
    """Everything a bank holds, read through plain h5py (the virtual datasets)."""
    out = {}
    with h5py.File(bank, "r") as f:
        def visit(name, obj):
            if isinstance(obj, h5py.Dataset):
                data = obj[...]
                out[name] = [bytes(x) for x in data] if obj.dtype.kind == "O" and data.ndim else data
            elif "info" in obj.attrs:
                out[name + "@info"] = obj.attrs["info"]
        f.visititems(visit)
        out["content_hash"] = f.attrs["content_hash"]
    return out


def _assert_same(a: dict, b: dict) -> None:
    assert sorted(a) == sorted(b)
    for k in a:
        if isinstance(a[k], np.ndarray):
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)
        else:
            assert a[k] == b[k], k


def _manifest(bank: Path) -> dict:
    with h5py.File(bank, "r") as f:
        return json.loads(f.attrs["manifest"])


def test_commit_writes_only_a_new_fragment(tmp_path):
    bank = tmp_path / "b.h5"
    with BankWriter(bank, batch_size=4, commit_every=8) as w:
        w.register_space("s", INFO)
        for i in range(24):
            w.add_face(_record(i, size=20_000))
    before = _frag_files(bank)
    frags = _manifest(bank)["fragments"]
    assert len(frags) == 3  # one fragment per commit, each linking the 2 batch files that hold its images
    assert [len(fr["refs"]) for fr in frags] == [2, 2, 2]
    assert set(before) == {n for fr in frags for n in [fr["name"], *(r["name"] for r in fr["refs"])]}
    with BankWriter(bank, batch_size=4, commit_every=8) as w:
        w.register_space("s", INFO)
        for i in range(24, 32):
            w.add_face(_record(i, size=20_000))
    after = _frag_files(bank)
    assert {k: after[k] for k in before} == before, "existing fragments were not touched (inode, mtime, size)"
    (entry,) = [fr for fr in _manifest(bank)["fragments"] if fr["name"] not in before]
    assert set(after) - set(before) == {entry["name"], *(r["name"] for r in entry["refs"])}
    assert after[entry["name"]][2] < 8 * 112 * 112 * 3 * 1.2 + 300_000, "the commit copied no image"
    assert sum(after[r["name"]][2] for r in entry["refs"]) > 8 * 20_004, "the images are in the linked batch files"
    assert bank.stat().st_size < 200_000, "the top file stays small"
    with open_bank(bank) as b:
        assert len(b) == 32 and b.face(_record(30, size=20_000).id).image_bytes() == _record(30, size=20_000).image
        assert list(b.present("s")) == [bool(i % 3) for i in range(32)]
        np.testing.assert_array_equal(b.vectors("s")[0], np.zeros(8, np.float32))  # no vector: zeros
    with h5py.File(bank, "r") as f:  # plain h5py reads the images through both levels of virtual datasets
        assert json.loads(f.attrs["required_features"]) == ["fragment-refs"]
        assert [bytes(x) for x in f["faces/image"][:]] == [_record(i, size=20_000).image for i in range(32)]


def test_copy_images_writes_them_into_the_commit_fragment(tmp_path):
    """copy_images=True: the layout before fragment-refs, which older readers open."""
    bank = tmp_path / "b.h5"
    with BankWriter(bank, batch_size=4, commit_every=8, copy_images=True) as w:
        w.register_space("s", INFO)
        for i in range(16):
            w.add_face(_record(i, size=20_000))
    frags = _manifest(bank)["fragments"]
    assert len(frags) == len(_frag_files(bank)) == 2 and not any("refs" in fr for fr in frags)
    with h5py.File(bank, "r") as f:
        assert json.loads(f.attrs["required_features"]) == []
        assert [bytes(x) for x in f["faces/image"][:]] == [_record(i, size=20_000).image for i in range(16)]


def test_updates_copy_only_their_columns(tmp_path):
    bank = tmp_path / "b.h5"
    with BankWriter(bank, batch_size=4, commit_every=8) as w:
        w.register_space("s", INFO)
        for i in range(16):
            w.add_face(_record(i, size=50_000))
    before = _frag_files(bank)
    ids = open_bank(bank).ids
    with BankWriter(bank) as w:
        w.set_attributes([ids[1], ids[12]], {"age": np.array([5.0, 6.0], np.float32)})
        w.set_embeddings("t", {"model": "m", "sha256": "cd" * 32, "dim": 4}, [ids[9]], np.ones((1, 4), np.float32))
    after = _frag_files(bank)
    assert {k: after[k] for k in before} == before
    (new,) = set(after) - set(before)
    with h5py.File(Path(f"{bank}.d") / new) as f:
        stored = {f"{g}/{d}" for g in f for d in f[g]}
    assert all(not s.endswith("/image") for s in stored), stored
    assert sum(s.endswith("/age") for s in stored) == 2  # both row ranges, only that column
    with open_bank(bank) as b:
        assert b.column("age")[1] == 5.0 and b.column("age")[12] == 6.0 and b.column("age")[2] == 22.0
        assert list(np.flatnonzero(b.present("t"))) == [9] and b.vectors("t")[9].tolist() == [1.0] * 4


def test_plain_h5py_opens_it_as_one_file_from_anywhere(tmp_path, monkeypatch):
    bank = tmp_path / "b.h5"
    with BankWriter(bank, batch_size=3, commit_every=5) as w:
        w.register_space("s", INFO)
        for i in range(12):
            w.add_face(_record(i))
        w.add_rejection(Rejection("folder", "x.png", "00" * 32, "no_face", "", "annotate", at=1.0))
        w.log("test", n=12)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # relative fragment paths resolve from the bank's folder, not the cwd
    with h5py.File(bank, "r") as f:
        assert f["faces/id"].is_virtual and f["faces/id"].shape == (12,)
        assert f["faces/image"][7].tobytes() == _record(7).image
        np.testing.assert_array_equal(f["faces/crop"][11], _record(11).crop)
        assert f["rejections/reason"].asstr()[0] == "no_face" and "test" in f["log"].asstr()[0]
        assert f["embeddings/s/present"][:].tolist() == [bool(i % 3) for i in range(12)]


def test_missing_fragment_is_refused(tmp_path):
    from facebank.errors import BankError

    bank = tmp_path / "b.h5"
    with BankWriter(bank) as w:
        w.add_face(_record(0))
    next(Path(f"{bank}.d").iterdir()).unlink()
    with pytest.raises(BankError, match="fragment"):
        open_bank(bank)


def test_compact_keeps_content_and_hash(tmp_path):
    bank = tmp_path / "b.h5"
    with BankWriter(bank, batch_size=2, commit_every=4) as w:
        w.register_space("s", INFO)
        for i in range(22):
            w.add_face(_record(i))
            if i % 5 == 0:
                w.add_rejection(Rejection("folder", f"r{i}", "00" * 32, "no_face", "", "annotate", at=1.0))
    ids = open_bank(bank).ids
    with BankWriter(bank) as w:
        w.set_attributes(list(ids[3:9]), {"status": np.full(6, schema.STATUS_REMOVED, np.int8)})
    want = _snapshot(bank)
    n_before = len(_frag_files(bank))
    result = compact_bank(bank, target_rows=10)
    got = _snapshot(bank)
    _assert_same(want, got)
    assert len(_frag_files(bank)) == result["fragments"] == 3 < n_before  # rows 0-9, 10-19, 20-21
    compact_bank(bank, target_rows=10)  # compacting again changes nothing
    _assert_same(want, _snapshot(bank))
    with BankWriter(bank) as w:  # and the bank stays writable
        w.add_face(_record(99))
    assert len(open_bank(bank)) == 23


def test_image_refs_skip_duplicates_and_live_and_go_with_their_fragment(tmp_path):
    """A batch whose faces are partly in the bank already is linked whole, and the virtual image
    column maps only its new rows; a missing linked file is refused; copy and compact carry the
    images (compact into its merged fragments, so the small linked files go)."""
    from facebank.bank.writer import PendingBatch

    bank = tmp_path / "b.h5"
    with BankWriter(bank) as w:
        w.register_space("s", INFO)
        for i in (0, 1):
            w.add_face(_record(i))
    with BankWriter(bank) as w:  # a worker's batch: 1 (in the bank), 2, 1 again, 3, 2 again
        batch = PendingBatch({"s": INFO})
        for i in (1, 2, 1, 3, 2):
            batch.add_face(_record(i))
        w.work_dir().mkdir(parents=True)
        batch.write(w.work_dir() / "batch-w.h5")
        from facebank._io.checksum import xxh3_file

        w.adopt("batch-w.h5", xxh3_file(w.work_dir() / "batch-w.h5"))
    want = [_record(i).image for i in range(4)]
    with h5py.File(bank, "r") as f:
        assert [bytes(x) for x in f["faces/image"][:]] == want
        assert list(f["faces/source_id"].asstr()[:]) == [f"face{i}.png" for i in range(4)]
    frags = _manifest(bank)["fragments"]
    assert [len(fr.get("refs", [])) for fr in frags] == [1, 1]
    copy = copy_bank(bank, tmp_path / "copy.h5")
    with open_bank(copy) as b:
        assert [b.image_bytes(r) for r in range(4)] == want
    snapshot = _snapshot(bank)
    compact_bank(bank, target_rows=100)
    _assert_same(snapshot, _snapshot(bank))
    (frag,) = _manifest(bank)["fragments"]
    assert "refs" not in frag and set(_frag_files(bank)) == {frag["name"]}
    with h5py.File(bank, "r") as f:
        assert json.loads(f.attrs["required_features"]) == []
    ref = Path(f"{copy}.d") / _manifest(copy)["fragments"][1]["refs"][0]["name"]
    ref.unlink()
    with pytest.raises(BankError, match="fragment file .* is missing"):
        open_bank(copy)


def test_compact_keeps_index_builds_valid(small_bank, tmp_path):
    from facebank import build_index, verify_build
    from facebank.errors import StaleIndex

    bank = tmp_path / "bank.h5"
    copy_bank(small_bank, bank)
    with BankWriter(bank, batch_size=4, commit_every=4) as w:  # spread the bank over small fragments
        w.set_attributes(list(open_bank(bank).ids[:20]), {"age": open_bank(bank).column("age")[:20] + 1})
    built = build_index(bank, out=tmp_path / "builds")
    compact_bank(bank, target_rows=16)
    verify_build(built)  # same content hash: the build is still valid
    with BankWriter(bank) as w:
        w.set_attributes([open_bank(bank).ids[0]], {"status": np.array([schema.STATUS_REMOVED])})
    with pytest.raises(StaleIndex):
        verify_build(built)


def test_v1_fixture_converts_bit_for_bit(tmp_path):
    bank = tmp_path / "bank_v1.h5"
    shutil.copy(FIXTURE, bank)
    with h5py.File(bank, "r") as f:
        assert f.attrs["schema_version"] == 1
    want = _snapshot(bank)
    with pytest.raises(SchemaVersionError, match="facebank bank upgrade"):
        open_bank(bank)
    with pytest.raises(SchemaVersionError, match="facebank bank upgrade"):
        BankWriter(bank)
    from facebank.cli import app
    from typer.testing import CliRunner

    from facebank.cli.common import read_envelope

    r = CliRunner().invoke(app, ["bank", "upgrade", "--bank", str(bank), "--target-rows", "3", "--json"])
    assert r.exit_code == 0, r.output
    assert read_envelope(r.output, "bank upgrade")["upgraded"] is True
    got = _snapshot(bank)
    assert got.pop("content_hash") != want.pop("content_hash")  # version-2 definition
    _assert_same(want, got)
    with open_bank(bank) as b:
        assert len(b) == 4 and b.present("fixture").tolist() == [True, True, True, False]
        assert b.rejections()[0]["reason"] == "no_face" and [e["event"] for e in b.log()] == ["generate_start", "generate_end"]
    assert upgrade_bank(bank)["upgraded"] is False  # a second run has nothing to do


# -- kill -9 --
CHILD = """
import sys, time
import numpy as np
sys.path.insert(0, sys.argv[2])
from tests.bank.test_bank_fragments import _record, INFO
from facebank.bank import writer as W
inner = W.BankWriter.commit
def commit(self):
    print("ENTER", flush=True); t = time.perf_counter(); inner(self); print("LEAVE", time.perf_counter() - t, flush=True)
W.BankWriter.commit = commit
bank = sys.argv[1]
with W.BankWriter(bank, batch_size=8, commit_every=24) as w:
    w.register_space("s", INFO)
    for i in range(72):
        r = _record(i, size=400_000)
        if not w.has_content(r.content_sha256):
            w.add_face(r)
from facebank.bank import open_bank
ids = list(open_bank(bank).ids)
with W.BankWriter(bank, commit_every=24) as w:
    for k in range(0, 72, 24):
        part = ids[k:k + 24]
        w.set_embeddings("late", {"model": "m", "sha256": "cd" * 32, "dim": 4}, part,
                         np.stack([np.frombuffer(bytes.fromhex(i), np.uint8)[:4].astype(np.float32) for i in part]))
        w.set_attributes(part[::3], {"status": np.zeros(len(part[::3]), np.int8)})
        w.commit()
"""


def _run_child(bank: Path, kill_after_enter: int | None = None, delay: float = 0.0) -> tuple[bool, list[float]]:
    """Run the writer; with `kill_after_enter`, SIGKILL it `delay` s into that commit. Returns (killed mid-commit, durations)."""
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(bank), str(ROOT / "tests")], stdout=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    entered, durations = 0, []
    try:
        for line in proc.stdout:
            if line.startswith("LEAVE"):
                durations.append(float(line.split()[1]))
            if line.startswith("ENTER"):
                entered += 1
                if entered == kill_after_enter:
                    import time

                    time.sleep(delay)
                    assert proc.poll() is None, "the child was still running when killed"
                    os.kill(proc.pid, signal.SIGKILL)
                    rest = proc.stdout.read()
                    proc.wait()
                    return "LEAVE" not in rest, durations
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    assert proc.returncode == 0
    return False, durations


def test_kill_minus_9_during_commit_then_rerun_equals_uninterrupted(tmp_path):
    ref = tmp_path / "ref" / "b.h5"
    ref.parent.mkdir()
    _, durations = _run_child(ref)
    assert len(durations) >= 6
    want = _snapshot(ref)
    rng = np.random.default_rng(7)
    bank = tmp_path / "run" / "b.h5"
    bank.parent.mkdir()
    landed = 0
    for enter in (1, 2, 3, 5, 6, 7):  # first commits of new faces, and commits of updates
        delay = float(rng.uniform(0, min(durations)))  # inside a commit, from a measured commit time
        mid, _ = _run_child(bank, kill_after_enter=enter, delay=delay)
        landed += mid
        if bank.exists():
            with open_bank(bank) as b:  # opens after every kill, no duplicates
                assert len(set(b.ids)) == len(b)
    assert landed >= 3, f"only {landed} kills landed inside a commit"
    _run_child(bank)
    got = _snapshot(bank)
    _assert_same(want, got)
    with h5py.File(bank) as f:
        live = {n for fr in json.loads(f.attrs["manifest"])["fragments"] for n in fragment_files(fr)}
        live |= set(json.loads(f.attrs["manifest"])["retired"])
    assert set(_frag_files(bank)) == live, "orphan fragments of killed commits were removed"
    assert not list(Path(f"{bank}.pending").glob("*.h5"))


UPGRADE = """
import sys
from facebank.bank import upgrade_bank
print("START", flush=True)
upgrade_bank(sys.argv[1], target_rows=4)
print("DONE", flush=True)
"""


def _make_v1(path: Path, n: int = 48) -> None:
    sys.path.insert(0, str(ROOT / "tests" / "fixtures"))  # the frozen v1 writer: test-only code
    from bank_v1_frozen.writer import BankWriter as V1Writer

    with V1Writer(path, batch_size=8, commit_every=1000) as w:
        w.register_space("s", INFO)
        for i in range(n):
            w.add_face(_record(i, size=300_000))
        w.add_rejection(Rejection("folder", "x.png", "00" * 32, "no_face", "", "annotate", at=1.0))


def test_kill_minus_9_during_upgrade_then_rerun_finishes(tmp_path):
    import time

    v1 = tmp_path / "v1.h5"
    _make_v1(v1)
    ref = tmp_path / "ref" / "b.h5"
    ref.parent.mkdir()
    shutil.copy(v1, ref)
    t = time.perf_counter()
    upgrade_bank(ref, target_rows=4)
    took = time.perf_counter() - t
    want = _snapshot(ref)
    bank = tmp_path / "run" / "b.h5"
    bank.parent.mkdir()
    shutil.copy(v1, bank)
    rng = np.random.default_rng(3)
    mid_run = 0
    for _ in range(4):
        proc = subprocess.Popen([sys.executable, "-c", UPGRADE, str(bank)], stdout=subprocess.PIPE, text=True,
                                env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert proc.stdout.readline().strip() == "START"
        time.sleep(float(rng.uniform(0.1, 0.9)) * took)
        alive = proc.poll() is None
        os.kill(proc.pid, signal.SIGKILL)
        rest = proc.stdout.read()
        proc.wait()
        with h5py.File(bank, "r") as f:  # opens: version 1 (not switched yet) or version 2
            version = int(f.attrs["schema_version"])
        assert version in (1, 2)
        if version == 2:
            open_bank(bank).close()
            break
        mid_run += alive and "DONE" not in rest and bool(_frag_files(bank))
    assert mid_run >= 1, "no kill landed while the upgrade was writing fragments"
    upgrade_bank(bank, target_rows=4)
    _assert_same(want, _snapshot(bank))
    with h5py.File(bank) as f:
        live = {n for fr in json.loads(f.attrs["manifest"])["fragments"] for n in fragment_files(fr)}
    assert set(_frag_files(bank)) == live


def test_worker_batches_are_adopted_in_the_drivers_order_and_stray_ones_never_committed(tmp_path):
    """The Ray engine's write path without Ray: other processes write batch files into the work folder
    with PendingBatch.write; the writer adopts them (checksum checked) in the order it is given, and what
    it never adopted (a complete file of a retried batch, a half-written .tmp) is deleted, not committed."""
    from facebank._io.checksum import xxh3_file
    from facebank.bank.writer import PendingBatch, work_dir

    bank = tmp_path / "bank.h5"
    with BankWriter(bank) as w:
        work = w.work_dir()
        work.mkdir(parents=True)
        names = []
        for k in (0, 1, 2):  # written out of order, as workers finish
            batch = PendingBatch({"s": INFO})
            for i in range(3 * (2 - k), 3 * (2 - k) + 3):
                batch.add_face(_record(i))
            names.append(f"batch-w{k}.h5")
            batch.write(work / names[-1])
        stray = PendingBatch({"s": INFO})
        stray.add_face(_record(99))
        stray.write(work / "batch-stray.h5")
        (work / ".batch-half.h5.123-4.tmp").write_bytes(b"\x89HDF half")
        with pytest.raises(BankError, match="does not match its checksum"):
            w.adopt(names[0], "0" * 64)
        inodes = {(work / n).stat().st_ino for n in names}
        for name in reversed(names):  # input order: seeds 0-2, 3-5, 6-8
            w.adopt(name, xxh3_file(work / name))
        w.clear_work()
    # the workers' files themselves hold the bank's images: linked into the bank, never copied
    assert inodes <= {p.stat().st_ino for p in Path(f"{bank}.d").iterdir()}
    refs = [r for fr in _manifest(bank)["fragments"] for r in fr.get("refs", [])]
    assert len(refs) == 3 and all(r["xxh3_128"] == xxh3_file(Path(f"{bank}.d") / r["name"]) for r in refs)
    assert w._checksums == {}  # forgotten once committed
    with open_bank(bank) as b:
        assert list(b.column("source_id")) == [f"face{i}.png" for i in range(9)]
        assert np.array_equal(b.vectors("s")[1], _record(1).embeddings["s"])
    assert list(work_dir(bank).iterdir()) == []


@pytest.mark.parametrize("name", ["../outside.h5", "/etc/passwd", ".."])
def test_a_tampered_ref_name_is_refused_not_followed(tmp_path, name):
    bank = tmp_path / "b.h5"
    with BankWriter(bank) as w:
        w.add_face(_record(0))
    with h5py.File(bank, "r+") as f:
        m = json.loads(f.attrs["manifest"])
        m["fragments"][0]["refs"][0]["name"] = name
        f.attrs["manifest"] = json.dumps(m)
        f.attrs["manifest_sha256"] = hashlib.sha256(f.attrs["manifest"].encode()).hexdigest()  # a forger's
    with pytest.raises(BankError, match="not a plain file name"):
        open_bank(bank)
    with pytest.raises(BankError, match="not a plain file name"):
        copy_bank(bank, tmp_path / "copy.h5")
    assert not any(p.name.startswith("copy") or p.name == "outside.h5" for p in tmp_path.iterdir())
