"""Folders of photos: skip the done ones, anonymise the rest in worker processes, count the outcomes.

Each worker opens the build once (its own FaceBank, analyser and swappers) and writes its photos'
outputs itself; the parent only hands out paths and adds up counts, so nothing large crosses a
process boundary. Photos are keyed by their relative path (or the run's one key), so which worker
takes a photo does not change its result.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from facebank.anonymize.files import Job, clear_leftovers, collect, encode_like, is_done, write_result
from facebank.anonymize.options import AnonymizeOptions
from facebank.anonymize.report import RunCounts
from facebank.errors import FacebankError, InputError
from facebank.ingest.pool import worker_pool
from facebank.progress import Progress, ProgressEvent

__all__ = ["RunSummary", "anonymize"]


@dataclass
class RunSummary:
    """What a run did: the counts, the photos that failed (path -> why), and where the outputs are."""

    out: Path
    build: str
    build_id: str
    counts: RunCounts = field(default_factory=RunCounts)
    failures: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.counts.photos_failed == 0

    def to_dict(self) -> dict:
        return {"out": str(self.out), "build": self.build, "build_id": self.build_id, "ok": self.ok,
                "counts": self.counts.to_dict(), "failures": dict(sorted(self.failures.items()))}


@dataclass(frozen=True)
class _Outcome:
    rel: str
    counts: RunCounts
    failure: str | None = None


class _Worker:
    """One process's state: the session and the anonymiser, made once."""

    def __init__(self, build, bank, options: AnonymizeOptions, out: Path):
        from facebank.anonymize.photo import Anonymizer
        from facebank.pick.session import FaceBank

        self.session = FaceBank(build, bank=bank)
        self.anonymizer = Anonymizer(self.session, options)
        self.options, self.out = options, out

    def __call__(self, job: Job) -> _Outcome:
        from facebank.vision.image_io import image_format

        try:
            data = job.src.read_bytes()
            if is_done(job, self.out, data):
                return _Outcome(job.rel, RunCounts(photos_skipped=1))
            clear_leftovers(job, self.out)  # a killed run's half-written files for this photo
            fmt = image_format(data, name=str(job.src))
            key = self.options.key if self.options.key is not None else job.rel
            image, report = self.anonymizer.run(
                data, key=key, encode=lambda px: encode_like(px, fmt, self.options.jpeg_quality))
            changed = any(f.action in ("swapped", "fallback") for f in report.faces)
            encoded = data if not changed else (self.anonymizer.encoded
                                                or encode_like(image, fmt, self.options.jpeg_quality))
            side = report.to_dict()
            side.update(width=int(image.shape[1]), height=int(image.shape[0]), image_format=fmt)
            write_result(job, self.out, data, encoded, side)
        except (FacebankError, OSError) as exc:
            reason = getattr(exc, "detail", None) or str(exc)
            return _Outcome(job.rel, RunCounts(photos_failed=1), f"{type(exc).__name__}: {reason}")
        except Exception as exc:  # FaceRejected from decoding, a bug in a user's swapper: this photo fails
            return _Outcome(job.rel, RunCounts(photos_failed=1), f"{type(exc).__name__}: {exc}")
        counts = report.counts
        counts.photos = 1
        if not report.passed:
            counts.photos_failed = 1
            bad = [f for f in report.faces if f.action == "failed"]
            return _Outcome(job.rel, counts, f"{len(bad)} face(s) left matching: {bad[0].reason}")
        return _Outcome(job.rel, counts)


def anonymize(inputs: Sequence[str | os.PathLike] | str | os.PathLike, out: str | os.PathLike, *,
              build: str | os.PathLike | None = None, bank: str | os.PathLike | None = None,
              options: AnonymizeOptions | None = None, workers: int = 1,
              progress: Progress | None = None) -> RunSummary:
    """Anonymise photos, folders (recursively) or list files into `out`; see facebank.anonymize."""
    options = (options or AnonymizeOptions()).check()
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    if isinstance(workers, bool) or not isinstance(workers, int) or not 1 <= workers <= 256:
        raise InputError(f"workers must be an integer in 1..256, got {workers!r}")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} exists and is not a folder")
    jobs = collect(list(inputs), out)
    if workers > 1 and not isinstance(options.swapper, str):
        import pickle

        try:
            pickle.dumps(options.swapper)
        except Exception as exc:
            raise InputError(f"workers > 1 need a swapper that pickles (a name or a module-level function): {exc}") \
                from None
    first = _Worker(build, bank, options, out)  # fails here, once, on a bad build, model or swapper
    out.mkdir(parents=True, exist_ok=True)
    summary = RunSummary(out, str(first.session.build_dir), first.session.manifest.build_id)
    done = 0

    def add(o: _Outcome) -> None:
        nonlocal done
        summary.counts.add(o.counts)
        if o.failure:
            summary.failures[o.rel] = o.failure
        done += 1
        if progress is not None:
            progress(ProgressEvent("anonymize", done, len(jobs)))

    if workers == 1 or len(jobs) < 2:
        for job in jobs:
            add(first(job))
        first.session.close()
        return summary
    first.session.close()
    # The ingest stages' pool: spawned workers (no fork of HDF5 or ONNX Runtime state), each with
    # its own session and anonymiser, one error mapping, stopped on any error or signal.
    load = functools.partial(_Worker, str(first.session.build_dir), str(first.session.bank_path), options, out)
    with worker_pool(load, min(workers, len(jobs))) as pool:
        for o in pool.map(jobs):
            add(o)
    return summary
