"""kill -9 in the middle of an ingest: the bank still opens, and a re-run ends equal to an
uninterrupted run (same faces, same vectors, no duplicates).

Each child prints a line per finished item and "DONE" when it returns; the parent kills it
after a given number of lines, then checks that the kill landed mid-run: the child died of
SIGKILL without printing "DONE", and the bank holds a partial state.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import psutil
import pytest

from facebank.bank import BankWriter, open_bank

pytestmark = pytest.mark.slow

SCRIPT = """
import sys
from facebank.config import SpaceConfig
from facebank.ingest import ingest
from facebank.sources.generated_photos import iter_generated_photos
root, bank = sys.argv[1], sys.argv[2]
items = []
for folder in ("age_child", "age_adult"):
    items += [i for i in iter_generated_photos(root + "/" + folder) if i.data][:20]
ingest(bank, items, spaces=[SpaceConfig("dlib")], batch_size=3, commit_every=6, progress=lambda e: print("item", flush=True))
print("DONE", flush=True)
"""

GENERATE = """
import sys
from facebank.ingest import generate_to_bank
from facebank.sources.stylegan_source import GenerateConfig
net, bank = sys.argv[1], sys.argv[2]
generate_to_bank(bank, GenerateConfig(network=net, seeds="0-47", psi=0.7, batch_size=4),
                 progress=lambda e: e.done and print("item", flush=True), pending_every=4)
print("DONE", flush=True)
"""


def _run_and_kill(args: list[str], after_items: int) -> int:
    """Run a child, SIGKILL it once it has reported `after_items` items; returns the items it reported.

    Fails unless the kill landed while the child was still running (it never printed DONE)."""
    proc = subprocess.Popen([sys.executable, "-c", *args], stdout=subprocess.PIPE, text=True)
    seen, done = 0, False
    try:
        deadline = time.time() + 240
        while seen < after_items and time.time() < deadline:
            line = proc.stdout.readline()
            if not line:  # the child exited before the kill
                break
            done |= line.strip() == "DONE"
            seen += line.strip() == "item"
    finally:
        children = _children(proc.pid)  # its spawned workers: they must not outlive it
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
    assert not done and proc.returncode == -signal.SIGKILL, f"the child finished before the kill ({seen} items)"
    assert seen == after_items
    _, alive = psutil.wait_procs(children, timeout=60)  # workers still importing exit once their initializer runs
    assert not alive, f"workers outlived their killed parent: {[c.pid for c in alive]}"
    return seen


def _children(pid: int) -> list:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def _faces_after_recovery(bank) -> int:
    with BankWriter(str(bank)):  # opening a writer applies what the killed run left pending
        pass
    with open_bank(bank) as b:
        return len(b)


def test_kill_minus_9_then_rerun_equals_uninterrupted(assets, small_bank, tmp_path):
    bank = tmp_path / "crash.h5"
    args = [SCRIPT, str(assets / "generated_photos"), str(bank)]
    held = []
    for after_items in (2, 18, 30):
        _run_and_kill(args, after_items)
        with open_bank(bank) as b:  # must open after every kill
            assert len(set(b.ids)) == len(b)
        held.append(_faces_after_recovery(bank))
        assert held[-1] < 40  # a partial bank: the run was cut short
    assert held == sorted(held)  # nothing committed is lost to a later kill
    subprocess.run([sys.executable, "-c", *args], check=True, stdout=subprocess.DEVNULL)
    with open_bank(bank) as got, open_bank(small_bank) as ref:
        assert sorted(got.ids) == sorted(ref.ids)
        assert len(set(got.ids)) == len(got)
        assert got.present("dlib").all()
        ref_rows = {fid: i for i, fid in enumerate(ref.ids)}
        order = [ref_rows[fid] for fid in got.ids]
        np.testing.assert_array_equal(got.vectors("dlib"), ref.vectors("dlib")[order])
        np.testing.assert_array_equal(got.column("age"), ref.column("age")[order])
        np.testing.assert_array_equal(got.column("gender"), ref.column("gender")[order])
    assert not list((tmp_path / "crash.h5.pending").glob("*.h5"))


def test_generate_killed_resumes_at_first_missing_seed(stylegan_fixtures, tmp_path):
    from facebank.ingest import generate_to_bank
    from facebank.sources.stylegan_source import GenerateConfig

    net = str(stylegan_fixtures / "tiny32.pkl")
    cfg = GenerateConfig(network=net, seeds="0-47", psi=0.7, batch_size=4)
    ref = tmp_path / "ref.h5"
    generate_to_bank(str(ref), cfg)
    bank = tmp_path / "g.h5"
    _run_and_kill([GENERATE, net, str(bank)], 10)
    before = _faces_after_recovery(bank)
    assert 0 < before < 48  # a partial bank: some seeds stored, the rest still missing
    with open_bank(bank) as got:
        have = set(got.column("source_id"))
    summary = generate_to_bank(str(bank), cfg)
    with open_bank(bank) as got, open_bank(ref) as want:
        assert summary.already_in_bank == before and summary.generated == 48 - before
        assert sorted(got.ids) == sorted(want.ids) and len(set(got.ids)) == 48
        assert sorted(got.column("source_id")) == sorted(want.column("source_id"))
        assert have <= set(want.column("source_id"))


SLOW_EMBED = """
import os, signal, sys, time
import numpy as np
from facebank.bank import BankWriter, open_bank
bank = sys.argv[1]
with open_bank(bank) as b:
    ids = list(b.column("id"))
info = {"model": "slow", "sha256": "ab" * 32, "dim": 4}
w = BankWriter(bank, create=False, flush_seconds=0.3)
for i, fid in enumerate(ids[:5]):  # one vector every 0.1 s: far from 256 vectors, past 0.3 s by the 4th
    w.set_embeddings("slow", info, [fid], np.full((1, 4), 0.5, np.float32))
    time.sleep(0.1)
print("BUFFERED", flush=True)
os.kill(os.getpid(), signal.SIGKILL)  # no close(), no commit: only what the time bound flushed
"""


def test_a_slow_stage_reaches_disk_by_time_and_survives_kill_minus_9(small_bank, tmp_path):
    from facebank.bank import copy_bank

    bank = tmp_path / "b.h5"
    copy_bank(small_bank, bank)
    r = subprocess.run([sys.executable, "-c", SLOW_EMBED, str(bank)], capture_output=True, text=True, timeout=120)
    assert r.returncode == -signal.SIGKILL and "BUFFERED" in r.stdout, r.stderr
    assert list((tmp_path / "b.h5.pending").glob("batch-*.h5"))  # flushed by time, not by count
    with open_bank(bank) as b:
        assert "slow" not in b.spaces  # not committed yet: readers never see a half state
    with BankWriter(bank, create=False):  # the next writer applies what the killed one flushed
        pass
    with open_bank(bank) as b:
        present = b.present("slow")
        assert 3 <= present.sum() <= 5 and present[:present.sum()].all()
        assert np.allclose(b.vectors("slow")[present], 0.5)
