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
from facebank.config import SpaceConfig
from facebank.ingest import ingest
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


GENERATE = """
import sys
from facebank.ingest import generate_to_bank
from facebank.sources.stylegan_source import GenerateConfig
net, bank = sys.argv[1], sys.argv[2]
generate_to_bank(bank, GenerateConfig(network=net, seeds="0-47", psi=0.7, batch_size=4))
"""


def test_generate_killed_resumes_at_first_missing_seed(stylegan_fixtures, tmp_path):
    from facebank.ingest import generate_to_bank
    from facebank.sources.stylegan_source import GenerateConfig

    net = str(stylegan_fixtures / "tiny32.pkl")
    ref = tmp_path / "ref.h5"
    generate_to_bank(str(ref), GenerateConfig(network=net, seeds="0-47", psi=0.7, batch_size=4))
    bank = tmp_path / "g.h5"
    proc = subprocess.Popen([sys.executable, "-c", GENERATE, net, str(bank)])
    deadline = time.time() + 120
    pending = tmp_path / "g.h5.pending"
    while proc.poll() is None and time.time() < deadline and not (pending.is_dir() and any(pending.iterdir())):
        time.sleep(0.01)
    time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = len(open_bank(bank)) if bank.exists() else 0
    summary = generate_to_bank(str(bank), GenerateConfig(network=net, seeds="0-47", psi=0.7, batch_size=4))
    with open_bank(bank) as got, open_bank(ref) as want:
        assert summary.generated + summary.already_in_bank == 48 and summary.already_in_bank >= before
        assert sorted(got.ids) == sorted(want.ids) and len(set(got.ids)) == 48
        assert sorted(got.column("source_id")) == sorted(want.column("source_id"))
