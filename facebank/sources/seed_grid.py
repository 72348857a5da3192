"""The fixed grid of generator batches that makes a resumed run equal an uninterrupted one.

CPU convolutions round differently at other batch sizes, so a face's last bits depend on the
batch it was made in. Batches are therefore cut from the full requested seed list, never from
the seeds still missing: batch k is always `seeds[k*B:(k+1)*B]`. A re-run keeps only the batches
that still hold a missing seed and makes each one whole, so every stored face comes from the same
batch as in a run that was never interrupted; the faces the bank already holds are made again
only to complete their batch, and dropped. Both engines cut their batches here.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

__all__ = ["GridBatch", "seed_grid"]


@dataclass(frozen=True)
class GridBatch:
    """One generator batch of the grid: made whole, only the `keep` seeds stored."""

    start: int  # index, in the to-do order (the missing seeds in request order), of its first kept seed
    seeds: tuple[int, ...]  # seeds[k*B:(k+1)*B] of the requested list
    keep: tuple[bool, ...]  # which of them the bank lacks

    @property
    def kept(self) -> int:
        return sum(self.keep)


def seed_grid(seeds: Sequence[int], missing: Sequence[bool], size: int) -> Iterator[GridBatch]:
    """The grid batches of `seeds` (`size` each, the last one shorter) that hold a missing seed.

    `missing[j]` says whether `seeds[j]` still has to be stored. Lazy, so a long run holds one batch.
    """
    if len(missing) != len(seeds):
        raise ValueError(f"{len(missing)} missing flags for {len(seeds)} seeds")
    start = 0
    for k in range(0, len(seeds), size):
        keep = tuple(bool(m) for m in missing[k:k + size])
        if any(keep):
            batch = GridBatch(start, tuple(int(s) for s in seeds[k:k + size]), keep)
            start += batch.kept
            yield batch
