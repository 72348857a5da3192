"""Workers write batch files to the bank's storage; the driver alone adopts and commits them.

Worker side (`write_runs`): an actor's results for one Ray Data batch are split into runs of
consecutive input indices; each run is written, with the local engine's own code (the same
`store_*` helper as locally, into a `PendingBatch`), as one complete batch file in the bank's
work folder `<bank>.pending/work/` (temporary name, fsync, rename: a worker killed mid-write
leaves only a `.tmp` file). Only the file's name, XXH3-128 checksum, input count and the run's counts go
back to the driver, on the run's first row. The driver's commit links that file into the
bank (commit.py) rather than copying its images, so a file is written once, by its worker.

Driver side (`Committer`): results come back in input order (`ray_cluster.ordered`), so the
driver adopts the runs in input order and commits every `commit_every` faces, and the bank has
the local engine's rows in the local engine's order. A batch Ray retried after its actor died
wrote a second file; only the one whose result came back is adopted, and what stays in the
work folder (the dead attempt's complete or half-written file) is deleted, never committed.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass

from facebank.bank import BankWriter
from facebank._io.checksum import xxh3_file
from facebank.bank.writer import PendingBatch, work_dir
from facebank.engine.ray_cluster import outputs
from facebank.progress import Tally

__all__ = ["Committer", "RunFile", "Workers", "write_runs"]


@dataclass(frozen=True)
class RunFile:
    """A worker's batch file for one run of consecutive inputs, as the driver adopts it."""

    name: str  # in the bank's work folder
    xxh3: str  # XXH3-128 of the file, checked when adopted
    n: int  # inputs of the run
    summary: object  # the run's counts (the stage's Summary or GenerateSummary)
    workers: list[dict]  # the workers that made it (ray_cluster.worker_meta)


def write_runs(bank_path: str, index, results: list, store: Callable, new_summary: Callable,
               metas: list[tuple[dict, ...]], space_info: dict | None = None) -> dict:
    """Write `results` (one per input index in `index`) as one batch file per run of consecutive indices.

    `store(batch, summary, result)` writes and counts one result (the local engine's helper);
    `metas[k]`: the workers (ray_cluster.worker_meta) that made result k;
    returns the `{"i", "job"}` rows: a RunFile on each run's first row, None on the others.
    """
    index = [int(i) for i in index]
    order = sorted(range(len(index)), key=index.__getitem__)
    out: list = [None] * len(index)
    directory = work_dir(bank_path)
    directory.mkdir(parents=True, exist_ok=True)
    run: list[int] = []
    for pos, k in enumerate(order):
        run.append(k)
        if pos + 1 < len(order) and index[order[pos + 1]] == index[k] + 1:
            continue
        batch, summary = PendingBatch(space_info), new_summary()
        for j in run:
            store(batch, summary, results[j])
        name = f"batch-{uuid.uuid4().hex}.h5"
        batch.write(directory / name)
        workers = list({(m["node"], m["pid"]): m for m in (m for j in run for m in metas[j])}.values())
        out[run[0]] = RunFile(name, xxh3_file(directory / name), len(run), summary, workers)
        run = []
    return outputs({"i": index}, out)


class Workers:
    """The distinct workers seen in a job's results: logged once, as the job's provenance."""

    def __init__(self):
        self.seen: dict[tuple, dict] = {}

    def add(self, *metas: dict) -> None:
        for m in metas:
            self.seen.setdefault((m["node"], m["pid"]), {k: m[k] for k in ("node", "pid", "models")})

    def log(self, writer: BankWriter, stage: str) -> None:
        writer.log("ray_workers", stage=stage, engine="ray", workers=list(self.seen.values()))


class Committer:
    """The driver's half: adopts the workers' batch files in input order and commits them.

    `tally` moves when a commit lands, by the inputs it made durable (faces and rejections),
    so the bar counts committed work, never work a kill could still lose.
    """

    def __init__(self, writer: BankWriter, summary, *, commit_every: int, tally: Tally):
        self.writer, self.summary, self.commit_every, self.tally = writer, summary, commit_every, tally
        self.workers = Workers()
        self.uncommitted = 0

    def take(self, result: RunFile | None) -> None:
        """One row of `ordered` results: a run's first row adopts its file; the others carry nothing."""
        if result is None:
            return
        self.writer.adopt(result.name, result.xxh3)
        self.summary.merge(result.summary)
        self.workers.add(*result.workers)
        self.done(result.n)

    def done(self, n: int) -> None:
        """`n` inputs are settled in the writer (adopted, or screened by the driver)."""
        self.uncommitted += n
        if self.uncommitted >= self.commit_every:
            self.commit()

    def commit(self) -> None:
        self.writer.commit()
        if self.uncommitted:
            self.tally.advance(self.uncommitted)
        self.uncommitted = 0
