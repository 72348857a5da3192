"""The one shape of progress: a long stage reports `ProgressEvent`s to a `Progress` callable.

Every stage that counts work (ingest, generate, annotate, embed, index build, audit, anonymize)
takes `progress: Progress | None` and calls it with how much of which stage is done; the CLI draws
the events as rich bars (`facebank.cli.common.progress_bars`), a caller of the library may log
them or ignore them. A leaf: it imports nothing of facebank.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

__all__ = ["Progress", "ProgressEvent", "Tally", "relabel"]


@dataclass(frozen=True)
class ProgressEvent:
    stage: str  # what is counted: "ingest", "embed dlib", "picks", ...
    done: int  # units of the stage finished so far
    total: int | None = None  # units the stage will do; None while not known


Progress = Callable[[ProgressEvent], None]


class Tally:
    """A stage's count: reports every change to `progress` (nothing at all without one).

    Nothing is reported before the first `start` or `advance`, so a stage that fails while it
    loads its models shows no bar, only its error.
    """

    def __init__(self, progress: Progress | None, stage: str, total: int | None = None):
        self.progress, self.stage, self.total, self.done = progress, stage, total, 0

    def start(self, total: int | None) -> None:
        """The stage's total is known (or changed): `total` units."""
        self.total = total
        self._report()

    def advance(self, n: int = 1) -> None:
        self.done += n
        self._report()

    def _report(self) -> None:
        if self.progress is not None:
            self.progress(ProgressEvent(self.stage, self.done, self.total))


def relabel(progress: Progress | None, stage: str) -> Progress | None:
    """`progress`, with every event under the name `stage` (a caller's name for a stage it runs)."""
    if progress is None:
        return None
    return lambda event: progress(replace(event, stage=stage))
