"""A validated query as the picker checks it: per space, the float32 unit rows of the screen, the
query as given for the exact check, the threshold and the error band around it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from facebank.index.cosine import Given
from facebank.index.exact import Space

__all__ = ["Query", "QueryPart", "make_query"]


@dataclass(frozen=True, eq=False)
class QueryPart:
    """One space of a query: float32 (F, d) unit rows (F faces, or F batch rows) for the screen,
    the same rows as given (`Given`) for the exact check, the threshold, and the margin of the
    screen's similarity in this space."""

    space: Space
    q: np.ndarray
    given: Given
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
        ex = self.space.exact_one(row, self.given, self.threshold)
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
        return make_query([(p.space, p.q[b:b + 1], p.threshold, p.given.take(slice(b, b + 1))) for p in self.parts])

    def screen_parts(self) -> tuple | None:
        """The parts as the compiled loop reads them, or None when it cannot read some space's rows."""
        if not all(p.space.screen for p in self.parts):
            return None
        return tuple(p.screen_part() for p in self.parts)

    def admits(self, row: int) -> bool:
        """The exact decision on a row within the error band of some space (see QueryPart.admits)."""
        return all(p.admits(row) for p in self.parts)


def make_query(parts: list[tuple[Space, np.ndarray, float, Given]]) -> Query:
    """A Query of (space, float32 (F, d) unit rows, threshold, the F rows as given) per space."""
    out = [QueryPart(sp, q, g, thr, sp.margin) for sp, q, thr, g in parts]
    single = out[0] if len(out) == 1 and out[0].q.shape[0] == 1 else None
    return Query(tuple(out), max(p.margin for p in out), single)
