"""The one worker pool of the ingest stages: jobs in, results out in input order.

`workers`: 0 = one process per CPU, 1 = in this process (no worker process: the caller's already
loaded models do the work), N = N spawned processes. Workers are spawned, not forked, so no ONNX,
dlib or CUDA state is shared across a fork; each loads its models once (`load()`, kept in the one
per-process cache below) and leaves the threads of OpenCV to the pool. At most `window` jobs are in
flight, so a fast producer cannot fill memory with images waiting for a worker.

Errors are the same in both modes: an exception a job raises reaches the caller with its own type
(a facebank error stays that error); a worker process that dies (killed, out of memory) is one
ModelError; on any error or signal the workers are stopped before the pool is left.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Generic, TypeVar

from facebank.errors import ModelError

__all__ = ["WorkerPool", "exit_with_parent", "worker_pool"]

J = TypeVar("J")
R = TypeVar("R")

_loaded: Callable | None = None  # in a worker process: its models, loaded once by `_start`


def exit_with_parent() -> None:
    """In a worker: exit when the parent process is gone (a kill -9 of the parent would otherwise
    leave its spawned workers waiting forever on a queue whose other end they hold themselves).

    Signals are the parent's to handle: Ctrl-C reaches the whole process group, and a worker that
    raised KeyboardInterrupt (or wrote to the pipe of a parent that is stopping) would print a
    traceback of its own. So a worker ignores SIGINT and ends silently on SIGTERM; the parent
    stops the pool, reports one line and exits non-zero."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(128 + signal.SIGTERM))
    # The parent's pid as spawn recorded it, not getppid() now: a worker still importing when the
    # parent was killed would read its new parent (init) here and then wait forever.
    spawned_by = multiprocessing.parent_process()
    parent = spawned_by.pid if spawned_by is not None else os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def _start(load: Callable[[], Callable]) -> None:
    global _loaded
    exit_with_parent()
    with contextlib.suppress(Exception):
        import cv2

        cv2.setNumThreads(1)  # one core per worker: the pool is the parallelism
    _loaded = load()


def _call(job):
    return _loaded(job)


class WorkerPool(Generic[J, R]):
    """`map(jobs)`: the results in input order. `processes`: worker processes (0 = in this process)."""

    def __init__(self, processes: int, map_fn: Callable[[Iterable[J]], Iterator[R]]):
        self.processes = processes
        self._map = map_fn

    def map(self, jobs: Iterable[J]) -> Iterator[R]:
        return self._map(jobs)


@contextlib.contextmanager
def worker_pool(load: Callable[[], Callable[[J], R]], workers: int, *, local: Callable[[J], R] | None = None,
                window: int | None = None) -> Iterator[WorkerPool[J, R]]:
    """A pool whose workers each run `load()` once, then call its result on every job.

    `load` is pickled to each worker (a module-level function or class, or a partial of one);
    `local` is what does the work in this process when `workers` is 1 (default: `load()`).
    """
    n = (os.cpu_count() or 1) if workers == 0 else max(1, workers)
    if n == 1:
        here = local if local is not None else load()
        yield WorkerPool(0, lambda jobs: map(here, jobs))
        return
    window = window or 2 * n + 2
    executor = ProcessPoolExecutor(n, mp_context=multiprocessing.get_context("spawn"), initializer=_start,
                                   initargs=(load,))
    try:
        yield WorkerPool(n, lambda jobs: _ordered(executor, jobs, window))
    except BaseException:
        _stop(executor)
        raise
    executor.shutdown(wait=True)


def _ordered(executor: ProcessPoolExecutor, jobs: Iterable, window: int) -> Iterator:
    pending: deque[Future] = deque()
    try:
        for job in jobs:
            pending.append(executor.submit(_call, job))
            if len(pending) >= window:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    except BrokenProcessPool as exc:
        raise ModelError(f"a worker process died ({exc}); finished faces are kept: re-run to continue") from exc
    finally:
        for f in pending:
            f.cancel()


def _stop(executor: ProcessPoolExecutor) -> None:
    """Stop the workers now (an error or a signal in this process): queued jobs are dropped and a
    running one is not waited for; each worker ends silently on SIGTERM (`exit_with_parent`)."""
    processes = list(getattr(executor, "_processes", None) or {})  # no public accessor before Python 3.14
    executor.shutdown(wait=False, cancel_futures=True)
    for pid in processes:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGTERM)
