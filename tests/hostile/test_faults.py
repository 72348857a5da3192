"""Faults: a full disk (the process's file size limit, or a small tmpfs where one can be mounted),
SIGTERM to a multi-worker ingest, and SIGINT during a compaction each end in one line and a
non-zero exit, with the bank as it was before (it opens, its faces intact)."""

from __future__ import annotations

import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from facebank.bank import BankWriter, FaceRecord, open_bank

FACEBANK = str(Path(sys.executable).with_name("facebank"))
INFO = {"model": "test", "sha256": "ab" * 32, "dim": 8}


def _limit(nbytes: int):
    """preexec_fn: a file size limit of nbytes; SIGXFSZ ignored so a write past it fails with EFBIG."""
    def pre() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, nbytes))
    return pre


def _run(args, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([FACEBANK, *args], capture_output=True, text=True, timeout=600, **kw)


def _one_error_line(r: subprocess.CompletedProcess, code: int, prefix: str) -> None:
    lines = [l for l in r.stderr.splitlines() if l.strip() and "faces/s" not in l]  # progress bars aside
    assert r.returncode == code, r.stderr
    assert len(lines) == 1 and lines[0].startswith(prefix), r.stderr
    assert "Traceback" not in r.stderr and "leaked semaphore" not in r.stderr


def _record(i: int, size: int = 300) -> FaceRecord:
    rng = np.random.default_rng(i)
    v = rng.standard_normal(8).astype(np.float32)
    return FaceRecord(
        source="folder", source_id=f"face{i}.png", image=i.to_bytes(4, "little") + rng.bytes(size), image_format="png",
        width=64, height=64, box=np.array([1, 2, 30, 40], np.float32), landmarks=rng.random((5, 2), dtype=np.float32),
        detector="test", crop=rng.integers(0, 255, (112, 112, 3), dtype=np.uint8), age=20.0 + i, gender=i % 2,
        embeddings={"s": v / np.linalg.norm(v)},
    )


def _state(bank: Path) -> tuple:
    with open_bank(bank) as b:
        return list(b.ids), b.content_hash, [b.image_bytes(r) for r in range(len(b))]


@pytest.fixture
def photos(assets, tmp_path) -> Path:
    """A folder of 24 real generated.photos faces."""
    src = sorted((assets / "generated_photos" / "age_adult").glob("*.jpg"))[:24]
    dst = tmp_path / "photos"
    dst.mkdir()
    for p in src:
        shutil.copy(p, dst / p.name)
    return dst


def test_ingest_past_the_file_size_limit_is_one_line_and_keeps_the_bank(photos, tmp_path):
    bank = tmp_path / "b.h5"
    with BankWriter(bank) as w:  # faces committed before the disk fills
        w.register_space("s", INFO)
        for i in range(4):
            w.add_face(_record(i))
    before = _state(bank)
    r = _run(["ingest", "folder", str(photos), "--bank", str(bank)], preexec_fn=_limit(300_000))
    _one_error_line(r, 1, "error: DiskFull: ")
    assert "file too large" in r.stderr
    assert _state(bank) == before


def test_a_full_tmpfs_says_no_space_left_on_device(photos, tmp_path):
    mnt = tmp_path / "small"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root); the file size limit test covers the same path")
    try:
        bank = mnt / "b.h5"
        r = _run(["ingest", "folder", str(photos), "--bank", str(bank)])
        _one_error_line(r, 1, "error: DiskFull: ")
        assert "no space left on device" in r.stderr
        with open_bank(bank) as b:  # created, empty, and it opens
            assert len(b) == 0
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def _bank_of_fragments(bank: Path, commits: int, size: int = 300) -> None:
    for c in range(commits):
        with BankWriter(bank) as w:
            w.register_space("s", INFO)
            for i in range(2 * c, 2 * c + 2):
                w.add_face(_record(i, size))


def test_compact_past_the_file_size_limit_is_one_line_and_changes_nothing(tmp_path):
    bank = tmp_path / "b.h5"
    _bank_of_fragments(bank, 6, size=50_000)
    before, files = _state(bank), sorted(os.listdir(f"{bank}.d"))
    r = _run(["bank", "compact", "--bank", str(bank)], preexec_fn=_limit(200_000))
    _one_error_line(r, 1, "error: DiskFull: ")
    assert _state(bank) == before and sorted(os.listdir(f"{bank}.d")) == files


def test_hnsw_index_build_past_the_file_size_limit_is_one_line(small_bank, tmp_path):
    from facebank.bank import copy_bank

    bank = copy_bank(small_bank, tmp_path / "bank.h5")
    builds = tmp_path / "builds"
    r = _run(["index", "build", "--bank", str(bank), "--kind", "hnsw", "--builds", str(builds)],
             preexec_fn=_limit(20_000))
    _one_error_line(r, 1, "error: DiskFull: ")
    assert not builds.exists() or not list(builds.iterdir())  # no build, no temporary folder


def _children(pid: int) -> int:
    import psutil

    return len(psutil.Process(pid).children())


def test_sigterm_to_a_multi_worker_ingest_is_one_line_and_non_zero(assets, tmp_path):
    bank = tmp_path / "b.h5"
    p = subprocess.Popen([FACEBANK, "ingest", "generated-photos", str(assets / "generated_photos"), "--bank", str(bank),
                          "--workers", "2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while _children(p.pid) < 2 and p.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(3)  # the workers are loading models or annotating
    assert p.poll() is None, "the ingest ended before the signal"
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=300)
    r = subprocess.CompletedProcess(p.args, p.returncode, out, err)
    _one_error_line(r, 143, "error: terminated by SIGTERM")
    if bank.exists():
        _state(bank)  # opens


def test_sigint_during_compact_exits_130_and_keeps_the_bank(tmp_path):
    bank = tmp_path / "b.h5"
    _bank_of_fragments(bank, 40, size=400_000)
    before = _state(bank)
    p = subprocess.Popen([FACEBANK, "bank", "compact", "--bank", str(bank)], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    folder = Path(f"{bank}.d")
    deadline = time.monotonic() + 120
    while p.poll() is None and not list(folder.glob(".frag-*.tmp")) and time.monotonic() < deadline:
        time.sleep(0.01)
    if p.poll() is not None:
        pytest.skip("the compaction finished before it could be interrupted")
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 130, err
    assert "Traceback" not in err and len([l for l in err.splitlines() if l.strip() and "faces/s" not in l]) == 1, err
    assert _state(bank) == before
