"""Faults inside a commit and inside `bank compact`: a full disk (a small tmpfs, the file size limit)
is one `error: DiskFull: ...` line and exit 1; Ctrl-C is one line and exit 130; kill -9 leaves a bank
that opens. In every case the bank keeps its previous content and a re-run finishes the job with
nothing lost and nothing twice. A compacted fragment too large to build in memory (the limit lowered
here) is written through facebank._io.guarded_file: a full disk there is the same one line, never a
crash inside HDF5.

The commands run as the real CLI in a child process; a hook in the child (WRAP) sends the signal at
the n-th os.link/replace/unlink/fsync/pwrite call inside the commit or the compaction, so every step
(links of the images files, fragment and top-file switches, deletion of applied batches) is hit."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from facebank.bank import BankWriter, open_bank
from facebank.bank.integrity import BANK_ID_FILE, canonical_dir
from tests.hostile.test_faults import INFO, _bank_of_fragments, _limit, _one_error_line, _record, _state

pytestmark = pytest.mark.slow

WRAP = r"""
import os, signal, sys
hook = os.environ.get("FB_HOOK", "")
import facebank.bank, facebank.bank.maintain as maintain, facebank.bank.writer as writer
if "small" in hook:  # every compacted fragment takes the path of those of 512 MB or more
    maintain._IN_MEMORY = 0
if "nocheck" in hook:  # the free-space estimate passes (a disk filled by another process meanwhile)
    maintain.ensure_space = writer.ensure_space = lambda *a, **k: None
at, sig, calls, inside = int(os.environ.get("FB_AT", "0")), os.environ.get("FB_SIG", "INT"), [0], [False]
count_file = os.environ.get("FB_COUNT")
def within(fn):
    def run(*a, **k):
        inside[0] = True
        try:
            return fn(*a, **k)
        finally:
            inside[0] = False
            if count_file:
                open(count_file, "w").write(str(calls[0]))
    return run
if os.environ.get("FB_IN") == "commit":
    writer.commit_pending = within(writer.commit_pending)
else:
    facebank.bank.compact_bank = within(maintain.compact_bank)
def hooked(fn):
    def call(*a, **k):
        if inside[0]:
            calls[0] += 1
            if calls[0] == at:
                os.kill(os.getpid(), signal.SIGINT if sig == "INT" else signal.SIGKILL)
        return fn(*a, **k)
    return call
for name in ("link", "replace", "unlink", "fsync", "pwrite"):
    setattr(os, name, hooked(getattr(os, name)))
from facebank.cli import main
sys.argv[0] = "facebank"
main()
"""


def _cli(args: list[str], env: dict | None = None, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", WRAP, *args], capture_output=True, text=True, timeout=600,
                          env={**os.environ, **(env or {})}, **kw)


LEAVE_PENDING = r"""
import os, sys
from facebank.bank import BankWriter
from tests.hostile.test_faults import INFO, _record
w = BankWriter(sys.argv[1], batch_size=2)
w.register_space("s", INFO)
for i in range(int(sys.argv[2]), int(sys.argv[3])):
    w.add_face(_record(i))
w.flush()
os._exit(0)  # a writer killed after its batches reached disk, before it committed them
"""


def _with_pending(bank: Path, committed: int = 4, pending: int = 6) -> None:
    with BankWriter(bank) as w:
        w.register_space("s", INFO)
        for i in range(committed):
            w.add_face(_record(i))
    root = Path(__file__).resolve().parents[2]
    subprocess.run([sys.executable, "-c", LEAVE_PENDING, str(bank), str(committed), str(committed + pending)],
                   check=True, cwd=root, env={**os.environ, "PYTHONPATH": str(root)})
    assert len(list(Path(f"{bank}.pending").glob("batch-*.h5"))) == pending // 2


def _commit(bank: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    """A writer command that applies the pending batches first (an ingest of nothing)."""
    empty = bank.parent / "empty"
    empty.mkdir(exist_ok=True)
    return _cli(["ingest", "folder", str(empty), "--bank", str(bank)], {"FB_IN": "commit", **(env or {})})


def _only_live_files(bank: Path) -> None:
    with open_bank(bank) as b:
        live = {n for fr in b.manifest["fragments"] for n in [fr["name"], *(r["name"] for r in fr.get("refs", []))]}
    assert set(os.listdir(canonical_dir(bank))) == live | {BANK_ID_FILE}, "files left behind"


def _points(total: int, most: int = 6) -> list[int]:
    """Up to `most` os calls spread over 1..total, the first and the last among them."""
    if total <= most:
        return list(range(1, total + 1))
    return sorted({1 + round(i * (total - 1) / (most - 1)) for i in range(most)})


def _count(run, tmp_path: Path) -> int:
    counter = tmp_path / "calls"
    r = run({"FB_COUNT": str(counter)})
    assert r.returncode == 0, r.stderr
    return int(counter.read_text())


@pytest.mark.parametrize("sig", ["INT", "KILL"])
def test_a_commit_interrupted_at_each_step_loses_nothing_and_a_rerun_finishes_it(tmp_path, sig):
    base = tmp_path / "base" / "b.h5"
    base.parent.mkdir()
    _with_pending(base)
    before = _state(base)
    ref = tmp_path / "ref"
    shutil.copytree(base.parent, ref)
    total = _count(lambda env: _commit(ref / "b.h5", env), tmp_path)
    expected = _state(ref / "b.h5")
    assert len(expected[0]) == 10 and total >= 6
    for at in _points(total):
        work = tmp_path / f"{sig}{at}"
        shutil.copytree(base.parent, work)
        bank = work / "b.h5"
        r = _commit(bank, {"FB_AT": str(at), "FB_SIG": sig})
        if sig == "INT":
            _one_error_line(r, 130, "interrupted")
        else:
            assert r.returncode == -signal.SIGKILL, r.stderr
        ids, _, images = _state(bank)  # it opens: the previous version, or the committed one
        assert ids in (before[0], expected[0]), f"call {at}: a partial commit"
        assert len(set(ids)) == len(ids)
        r = _commit(bank)
        assert r.returncode == 0, r.stderr
        assert _state(bank) == expected, f"call {at}: the re-run differs from an uninterrupted commit"
        _only_live_files(bank)
        assert not list(Path(f"{bank}.pending").glob("batch-*"))


@pytest.mark.parametrize("estimate", ["checked", "bypassed"])
def test_a_full_disk_during_a_commit_is_one_line_and_keeps_the_bank(tmp_path, estimate):
    mnt = tmp_path / "small"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        bank = mnt / "b.h5"
        _with_pending(bank)
        before, listing = _state(bank), sorted(os.listdir(canonical_dir(bank)))
        st = os.statvfs(mnt)
        filler = mnt / "filler"
        filler.write_bytes(b"\0" * (st.f_bavail * st.f_frsize - (64 << 10)))  # 64 kB left: the commit needs ~230
        r = _commit(bank, {"FB_HOOK": "nocheck"} if estimate == "bypassed" else {})
        _one_error_line(r, 1, "error: DiskFull: ")
        assert "no space left on device" in r.stderr and "what was committed before is intact" in r.stderr
        assert _state(bank) == before and sorted(os.listdir(canonical_dir(bank))) == listing
        assert len(list(Path(f"{bank}.pending").glob("batch-*.h5"))) == 3  # the work waits for the next commit
        filler.unlink()
        r = _commit(bank)
        assert r.returncode == 0, r.stderr
        ids = _state(bank)[0]
        assert len(ids) == 10 == len(set(ids)) and ids[:4] == before[0]
        _only_live_files(bank)
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def _compact(bank: Path, env: dict | None = None, **kw) -> subprocess.CompletedProcess:
    return _cli(["bank", "compact", "--bank", str(bank)], {"FB_IN": "compact", **(env or {})}, **kw)


def test_a_large_compacted_fragment_on_a_full_disk_is_one_line_not_a_crash(tmp_path):
    """The path of fragments of 512 MB or more (limit lowered to 0), past the file size limit, with the
    estimate bypassed so the failure lands inside the fragment's writes."""
    bank = tmp_path / "b.h5"
    _bank_of_fragments(bank, 6, size=50_000)
    before, files = _state(bank), sorted(os.listdir(f"{bank}.d"))
    r = _compact(bank, {"FB_HOOK": "small,nocheck"}, preexec_fn=_limit(200_000))
    _one_error_line(r, 1, "error: DiskFull: ")  # not -11: HDF5 never saw the failed write
    assert "file too large" in r.stderr
    assert _state(bank) == before and sorted(os.listdir(f"{bank}.d")) == files
    r = _compact(bank, {"FB_HOOK": "small"})  # with room, the same path writes a bank that reads the same
    assert r.returncode == 0, r.stderr
    assert _state(bank) == before
    _only_live_files(bank)


@pytest.mark.parametrize("sig,path", [("INT", "memory"), ("KILL", "memory"), ("INT", "large"), ("KILL", "large")])
def test_compact_interrupted_at_each_step_keeps_the_bank_and_a_rerun_finishes(tmp_path, sig, path):
    base = tmp_path / "base" / "b.h5"
    base.parent.mkdir()
    _bank_of_fragments(base, 6, size=20_000)
    before = _state(base)
    hook = {"FB_HOOK": "small"} if path == "large" else {}
    ref = tmp_path / "ref"
    shutil.copytree(base.parent, ref)
    total = _count(lambda env: _compact(ref / "b.h5", {**hook, **env}), tmp_path)
    for at in _points(total):
        work = tmp_path / f"{sig}{at}"
        shutil.copytree(base.parent, work)
        bank = work / "b.h5"
        r = _compact(bank, {**hook, "FB_AT": str(at), "FB_SIG": sig})
        if sig == "INT":
            _one_error_line(r, 130, "interrupted")
        else:
            assert r.returncode == -signal.SIGKILL, r.stderr
        assert _state(bank) == before, f"call {at}"
        r = _compact(bank, hook)
        assert r.returncode == 0, r.stderr
        assert _state(bank) == before
        _only_live_files(bank)
        with open_bank(bank) as b:
            assert len(b.manifest["fragments"]) == 1
