"""The next writer removes what a kill -9 left behind, and moves a corrupt pending batch aside
(issue 13). Real files, laid out as a killed writer leaves them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import h5py
import numpy as np
import pytest

from facebank.bank import BankWriter, open_bank
from facebank.errors import BankLockedError
from facebank.index.build import build_index
from tests.hostile.test_hostile import DIM, _record  # the same synthetic faces (tests/ is on sys.path)

INFO = {"model": "t", "sha256": "ab" * 32, "dim": DIM}


def _bank(tmp_path, n=5, start=0):
    bank = tmp_path / "bank.h5"
    with BankWriter(bank) as w:
        w.register_space("s", INFO)
        for i in range(start, start + n):
            w.add_face(_record(i))
    return bank


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_next_writer_removes_temporary_bank_copies_and_batches(tmp_path):
    bank = _bank(tmp_path)
    copy = tmp_path / ".bank.h5.k3j2x9.tmp"  # a killed commit's temporary top file / bank copy
    shutil.copy(bank, copy)
    pending = tmp_path / "bank.h5.pending"
    pending.mkdir(exist_ok=True)
    half = pending / "batch-00000000000000000001.h5.tmp"
    half.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 100)  # cut off mid-write
    other = tmp_path / ".other.h5.abc.tmp"  # another bank's: not ours to remove
    other.write_bytes(b"x")
    with BankWriter(bank) as w:
        w.register_space("s", INFO)
        w.add_face(_record(99))
    assert not copy.exists() and not half.exists() and other.exists()
    with open_bank(bank) as b:
        assert len(b) == 6


def test_a_live_writers_temporary_files_are_kept(tmp_path):
    bank = _bank(tmp_path)
    with BankWriter(bank):
        live = tmp_path / ".bank.h5.live01.tmp"
        live.write_bytes(b"being written")
        with pytest.raises(BankLockedError):
            BankWriter(bank)
        assert live.exists()  # the second writer never got the lock, so it removed nothing


def test_corrupt_pending_batch_is_moved_aside_with_one_warning(tmp_path, capfd):
    bank = _bank(tmp_path)
    pending = tmp_path / "bank.h5.pending"
    pending.mkdir(exist_ok=True)
    garbage = pending / "batch-00000000000000000007.h5"
    garbage.write_bytes(b"garbage, not HDF5" * 50)
    foreign = pending / "batch-00000000000000000008.h5"
    with h5py.File(foreign, "w") as f:
        f["secrets"] = np.arange(3)
    capfd.readouterr()
    with BankWriter(bank) as w:  # the bank stays writable
        w.register_space("s", INFO)
        w.add_face(_record(50))
    lines = [x for x in capfd.readouterr().err.splitlines() if x.strip()]
    assert len(lines) == 2 and all(x.startswith("warning: pending batch ") for x in lines), lines
    assert str(garbage) in lines[0] and str(foreign) in lines[1]
    assert (pending / "corrupt" / garbage.name).read_bytes() == b"garbage, not HDF5" * 50
    assert (pending / "corrupt" / foreign.name).exists() and not garbage.exists() and not foreign.exists()
    with open_bank(bank) as b:
        assert len(b) == 6
    capfd.readouterr()
    with BankWriter(bank):  # moved once: no warning on the next run
        pass
    assert capfd.readouterr().err == ""


def test_next_build_removes_a_dead_builds_temporary_folder(tmp_path):
    bank = _bank(tmp_path, n=30)
    out = tmp_path / "builds"
    out.mkdir()
    dead, live = _dead_pid(), os.getppid()
    stale = out / f".tmp-20260101-000000-abcd1234-{dead}"
    stale.mkdir()
    (stale / "vectors.s.npy").write_bytes(b"\0" * 4096)
    running = out / f".tmp-20260101-000001-abcd1234-{live}"  # a live build's: kept
    running.mkdir()
    link = out / f".current.{dead}"
    os.symlink("nowhere", link)
    build_index(bank, out=out, thresholds={"s": 0.3}, build_id="b")
    assert not stale.exists() and not link.is_symlink()
    assert running.is_dir()
