"""A validated query as the picker checks it: per space, unit rows, their float64 copy, the threshold
and the error band around it (typed, instead of tuples unpacked by position).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from facebank.index.exact import Space

__all__ = ["Query", "QueryPart", "make_query"]


@dataclass(frozen=True, eq=False)
class QueryPart:
    """One space of a query: float32 (F, d) unit rows (F faces, or F batch rows), their float64
    copy, the threshold, and the margin of an approximate similarity in this space."""

    space: Space
    q: np.ndarray
    q64: np.ndarray  # or _Rows64 for a large batch
    threshold: float
    margin: float

    @property
    def lo(self) -> float:
        """Approximate similarities at most this are eligible without an exact check."""
        return self.threshold - self.margin

    @property
    def hi(self) -> float:
        """Approximate similarities above this are too similar without an exact check."""
        return self.threshold + self.margin

    def screen_part(self) -> tuple:
        """This part as the compiled loop reads it: (rows, d, queries, lo, hi)."""
        return self.space.data, self.space.dim, self.q, self.lo, self.hi

    def admits(self, row: int, approx: float | None = None) -> bool:
        """The exact decision on a row within this part's error band: its exact similarity is at
        most the threshold; without float32 rows (float16 storage alone) a row counts only when
        its approximate similarity (`approx`, computed when not given) is below the band."""
        ex = self.space.exact_one(row, self.q64, self.threshold)
        if ex is not None:
            return ex <= self.threshold
        if approx is None:
            approx = float((self.space.block(np.array([row])) @ self.q.T).max())
        return approx <= self.lo


@dataclass(frozen=True, eq=False)
class Query:
    """Every space of a query. `margin` bounds |approximate score - exact score| over the spaces;
    `single` is the one part when the query is one face in one space (the hot path), else None."""

    parts: tuple[QueryPart, ...]
    margin: float
    single: QueryPart | None

    @property
    def rows(self) -> int:
        """Query rows of every part: faces of a photo, or queries of a batch."""
        return self.parts[0].q.shape[0]

    @property
    def thresholds(self) -> dict[str, float]:
        return {p.space.name: p.threshold for p in self.parts}

    def row(self, b: int) -> Query:
        """Query row b alone, as `Picker.pick` sees it."""
        return make_query([(p.space, p.q[b:b + 1], p.threshold) for p in self.parts])

    def screen_parts(self) -> tuple | None:
        """The parts as the compiled loop reads them, or None when it cannot read some space's rows."""
        if not all(p.space.screen for p in self.parts):
            return None
        return tuple(p.screen_part() for p in self.parts)

    def admits(self, row: int) -> bool:
        """The exact decision on a row within the error band of some space (see QueryPart.admits)."""
        return all(p.admits(row) for p in self.parts)


def make_query(parts: list[tuple[Space, np.ndarray, float]]) -> Query:
    """A Query of (space, float32 (F, d) unit rows, threshold) per space."""
    out = []
    for sp, q, thr in parts:
        # q is a float64 unit vector rounded to float32: ||q|| <= 1 + 2^-24 (+ float64 noise).
        # A batch's float64 copy is made only for the rows asked for (rare: band re-checks).
        q64 = q.astype(np.float64) if q.shape[0] <= 64 else _Rows64(q)
        out.append(QueryPart(sp, q, q64, thr, sp.margin))
    single = out[0] if len(out) == 1 and out[0].q.shape[0] == 1 else None
    return Query(tuple(out), max(p.margin for p in out), single)


class _Rows64:
    """The float64 copy of a batch's float32 (B, d) queries, made row by row on indexing: q64[i],
    q64[i:j] and q64[rows] give what q.astype(np.float64)[...] would, without the (B, d) copy."""

    def __init__(self, q: np.ndarray):
        self.q = q
        self.shape = q.shape

    def __getitem__(self, idx) -> np.ndarray:
        return self.q[idx].astype(np.float64)
