"""kill -9 in the middle of an ingest: the bank still opens, and a re-run ends equal to an
uninterrupted run (same faces, same vectors, no duplicates)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import h5py
import numpy as np

from facebank.bank import open_bank

SCRIPT = """
import sys
from facebank.pipeline import SpaceConfig, ingest
from facebank.sources.generated_photos import iter_generated_photos
root, bank = sys.argv[1], sys.argv[2]
items = []
for folder in ("age_child", "age_adult"):
    items += [i for i in iter_generated_photos(root + "/" + folder) if i.data][:20]
ingest(bank, items, spaces=[SpaceConfig("dlib")], batch_size=3, commit_every=6)
"""


def _faces_committed(path) -> int:
    try:
        with h5py.File(path, "r") as f:
            return f["faces/id"].shape[0]
    except (OSError, KeyError):
        return -1


def _run_and_kill(assets, bank, at_least: int, delay: float) -> None:
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, str(assets / "generated_photos"), str(bank)])
    try:
        deadline = time.time() + 240
        while _faces_committed(bank) < at_least and proc.poll() is None and time.time() < deadline:
            time.sleep(0.02)
        time.sleep(delay)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()


def test_kill_minus_9_then_rerun_equals_uninterrupted(assets, small_bank, tmp_path):
    bank = tmp_path / "crash.h5"
    for at_least, delay in ((0, 0.0), (6, 0.13), (12, 0.41)):
        _run_and_kill(assets, bank, at_least, delay)
        with open_bank(bank) as b:  # must open after every kill
            assert len(b) <= 40
            assert len(set(b.ids)) == len(b)
    subprocess.run([sys.executable, "-c", SCRIPT, str(assets / "generated_photos"), str(bank)], check=True)
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
