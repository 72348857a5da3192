"""The one ingest worker pool: input order, what `workers` means, one error mapping, workers stopped on errors.

The work is the real stages' (`ingest.workers`) on real generated.photos faces; only the
dying worker is made up, since a worker killed by the system cannot be had on demand.
"""

from __future__ import annotations

import os
import signal
import time
from functools import partial

import numpy as np
import psutil
import pytest

from facebank.bank import copy_bank, open_bank
from facebank.config import SpaceConfig, VisionConfig
from facebank.errors import FaceRejected, InputError, ModelError
from facebank.ingest import annotate_bank
from facebank.ingest.pool import worker_pool
from facebank.ingest.workers import EmbedJob, EmbedWorker, embed_job
from facebank.progress import ProgressEvent

DLIB = SpaceConfig("dlib")


def _jobs(bank_path, n: int) -> list[EmbedJob]:
    with open_bank(bank_path) as bank:
        return [embed_job(bank, row) for row in range(n)]


def _die(_job):
    os.kill(os.getpid(), signal.SIGKILL)  # what the OOM killer does to a worker


def _load_dying():
    return _die


def test_results_keep_input_order_and_equal_in_process_work(small_bank):
    jobs = _jobs(small_bank, 8)
    local = EmbedWorker.load(DLIB)
    with worker_pool(partial(EmbedWorker.load, DLIB), 1, local=local) as here:
        assert here.processes == 0  # workers=1: this process, the models already loaded
        ref = list(here.map(jobs))
    with worker_pool(partial(EmbedWorker.load, DLIB), 2, local=local) as pool:
        assert pool.processes == 2
        got = list(pool.map(jobs))
    assert [e.face_id for e in got] == [j.face_id for j in jobs]
    for a, b in zip(ref, got):
        assert np.array_equal(a.vector, b.vector)
    with open_bank(small_bank) as bank:  # the vectors the bank holds, bit for bit
        assert np.array_equal(np.stack([e.vector for e in got]), bank.vectors("dlib")[:8])


@pytest.mark.parametrize("workers", [1, 2])
def test_a_workers_error_is_the_same_typed_error_as_in_process(small_bank, workers):
    good = _jobs(small_bank, 1)[0]
    corrupt = EmbedJob(good.face_id, b"\x89PNG not really", good.box, good.landmarks)
    with pytest.raises(FaceRejected) as rejected:
        with worker_pool(partial(EmbedWorker.load, DLIB), workers) as pool:
            list(pool.map([good, corrupt]))
    assert rejected.value.reason == "unreadable" and good.face_id in rejected.value.detail
    not_bytes = EmbedJob(good.face_id, "a path, not bytes", good.box, good.landmarks)
    with pytest.raises(InputError, match="bytes"):
        with worker_pool(partial(EmbedWorker.load, DLIB), workers) as pool:
            list(pool.map([not_bytes]))


def test_a_killed_worker_is_one_model_error_and_the_others_stop(small_bank):
    before = _children()
    with pytest.raises(ModelError, match="worker process died.*re-run to continue"):
        with worker_pool(_load_dying, 2) as pool:
            list(pool.map(range(4)))
    _no_workers_left(before)


def test_an_error_in_the_caller_stops_the_workers(small_bank):
    jobs = _jobs(small_bank, 12)
    before = _children()
    with pytest.raises(KeyboardInterrupt):
        with worker_pool(partial(EmbedWorker.load, DLIB), 2) as pool:
            for k, _ in enumerate(pool.map(jobs)):
                if k == 1:
                    assert len([c for c in psutil.Process().children() if _is_worker(c) and c.pid not in before]) >= 2
                    raise KeyboardInterrupt  # Ctrl-C, or SIGTERM as the CLI raises it
    _no_workers_left(before)


def _is_worker(p: psutil.Process) -> bool:
    """A live pool worker (not multiprocessing's resource tracker, which outlives every pool by design)."""
    try:
        return p.status() != psutil.STATUS_ZOMBIE and "resource_tracker" not in " ".join(p.cmdline())
    except psutil.NoSuchProcess:
        return False


def _children() -> set[int]:
    """Processes this test process already had (a Ray cluster an earlier test left running)."""
    return {c.pid for c in psutil.Process().children(recursive=True)}


def _no_workers_left(before: set[int], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive = [c for c in psutil.Process().children(recursive=True) if _is_worker(c) and c.pid not in before]
        if not alive:
            return
        time.sleep(0.2)
    raise AssertionError(f"workers outlived their pool: {alive}")


def test_progress_is_one_event_shape_from_start_to_done(small_bank, tmp_path):
    bank = tmp_path / "b.h5"
    copy_bank(small_bank, bank)
    events: list[ProgressEvent] = []
    s = annotate_bank(str(bank), VisionConfig(), force=True, progress=events.append)
    assert events[0] == ProgressEvent("annotate", 0, s.added + sum(s.rejected.values()))
    assert [e.done for e in events] == list(range(len(events)))
    assert events[-1].done == events[-1].total == len(events) - 1 > 0
