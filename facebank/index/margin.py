"""The privacy margin: restrict a random pick to the furthest `margin` fraction of the candidates.

The build's thresholds make a target dissimilar in the build's own spaces; a recogniser nobody
configured still matches random eligible targets at chance level. Drawing only among the faces
furthest from the query in *every* build space transfers: the held-out recogniser then matches
far fewer picks (docs/privacy-margin.md has the figures).

The score. For a query (all faces of a photo) and a candidate row, `sim_s` is the row's largest
similarity to the query faces in space s, and `rank_s` its rank among the candidates in that
space. The row's score is `max_s rank_s`: a row is as close as its closest space says. The
furthest `margin` fraction is every row whose score is at most the cut-off K, and since
`max_s rank_s <= K` holds exactly when `sim_s <= tau_s` in every space (tau_s: the similarity at
rank K in space s), the margin becomes one tightened threshold per space. So every pick path
(draws, the compiled loop, scans, groups, exclusions, several faces, furthest) applies it
unchanged, and the exact check still decides every row: against min(threshold_s, tau_s), never
above the build's threshold.

What is exact and what is estimated. The threshold check is exact, always. The cut-off is
estimated from a fixed uniform sample of `sample` rows of the group (the whole group when it is
no larger, which makes the cut exact): the share of the group under the cut is then the k-th of
n uniform order statistics, Beta(k, n + 1 - k), standard deviation sqrt(m (1 - m) / (n + 2)),
3.1 points at m = 0.5 and n = 256. Exclusions are left out of a whole-group sample and ignored in
a sampled one (their share of the group is the extra error). The sample is fixed per session and
group, so keyed picks reproduce. Cost: one (n, d) @ (d, faces) product per space and pick,
independent of the bank's size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

import numpy as np

from facebank.errors import InputError

__all__ = ["DEFAULT_MARGIN", "MIN_CUT_ROWS", "SAMPLE_ROWS", "MarginCut", "MarginSampler", "check_margin"]

# The shipped default, chosen from `facebank audit --transfer` (docs/privacy-margin.md).
DEFAULT_MARGIN = 0.5
SAMPLE_ROWS = 256  # rows the cut-off is estimated from: 3.1 points of share at m = 0.5 (sd), ~6 us at d = 512
# A cut that would leave fewer candidates than this is widened to this many (or the whole group):
# a margin must not turn a random pick into a handful of fixed targets for a thin group.
MIN_CUT_ROWS = 8


def check_margin(value) -> float:
    """A margin: the fraction of candidates a random target is drawn from, in (0, 1]."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise InputError(f"margin must be a number in (0, 1], got {value!r}")
    m = float(value)
    if not (math.isfinite(m) and 0.0 < m <= 1.0):
        raise InputError(f"margin must be a fraction in (0, 1] (1 = no margin), got {value!r}")
    return m


@dataclass(frozen=True)
class MarginCut:
    """The cut of one pick. thresholds: space -> min(build threshold, tau); tau: space -> the cut's
    similarity; share: the estimated share of candidates under the cut (the requested margin, or
    more when the group is too small for it); sample: rows it was estimated from; exact: the
    sample was the whole group (the cut is then exact, not estimated)."""

    margin: float
    thresholds: dict[str, float]
    tau: dict[str, float]
    share: float
    sample: int
    exact: bool

    @property
    def relaxed(self) -> bool:
        """The group was too small for the margin: the cut keeps MIN_CUT_ROWS rows instead."""
        return self.share > self.margin + 1e-12

    def to_dict(self) -> dict:
        return {"margin": self.margin, "tau": self.tau, "share": self.share, "sample": self.sample,
                "exact": self.exact, "relaxed": self.relaxed}


class MarginSampler:
    """Per group, a fixed uniform sample of rows (float32, every space), and the cuts it gives."""

    def __init__(self, spaces: Mapping[str, object], n: int, *, size: int = SAMPLE_ROWS, seed: int = 0):
        self._spaces = spaces  # name -> exact.Space
        self._n = n
        self.size = int(size)
        self._seed = seed
        self._cache: dict[tuple, tuple[np.ndarray, dict[str, np.ndarray]]] = {}

    def _sample(self, members: np.ndarray | None, key: tuple, names: tuple[str, ...]):
        """(sample rows, space -> float32 (k, d) rows), cached per group key."""
        got = self._cache.get(key)
        if got is not None and all(s in got[1] for s in names):
            return got
        m = self._n if members is None else members.size
        if m <= self.size:
            rows = np.arange(self._n) if members is None else np.asarray(members)
        else:  # a fixed sample per group: the same cut for the same query, so keyed picks reproduce
            rng = np.random.default_rng([self._seed, m, *(c if isinstance(c, int) else 1 << 20 for c in key[:8])])
            pos = np.sort(rng.choice(m, self.size, replace=False))
            rows = pos if members is None else np.asarray(members)[pos]
        vecs = dict(got[1]) if got is not None else {}
        for s in names:
            vecs[s] = np.ascontiguousarray(self._spaces[s].block(rows), dtype=np.float32)
        if len(self._cache) >= 64:
            self._cache.clear()
        self._cache[key] = (rows, vecs)
        return rows, vecs

    def cut(self, parts: Mapping[str, tuple[np.ndarray, float]], members: np.ndarray | None, key: tuple,
            margin: float, excluded: set[int] | frozenset = frozenset()) -> MarginCut:
        """The cut for query faces `parts` (space -> (float32 (F, d) unit rows, build threshold))."""
        names = tuple(sorted(parts))
        thresholds = {s: float(parts[s][1]) for s in names}
        if margin >= 1.0:
            return MarginCut(1.0, thresholds, {}, 1.0, 0, True)
        rows, vecs = self._sample(members, key, names)
        m = self._n if members is None else members.size
        exact = m <= self.size
        keep = None
        if exact and excluded:
            keep = ~np.isin(rows, np.fromiter(excluded, np.int64, len(excluded)))
        sims = {}
        for s in names:
            q = parts[s][0]
            a = vecs[s] @ q[0] if q.shape[0] == 1 else (vecs[s] @ q.T).max(axis=1)
            sims[s] = a if keep is None else a[keep]
        n = next(iter(sims.values())).size
        if n == 0:
            return MarginCut(margin, thresholds, {}, 1.0, 0, exact)
        k = max(1, math.ceil(margin * n - 1e-9))
        k = max(k, min(n, MIN_CUT_ROWS))
        if len(names) == 1:
            (s, a), = sims.items()
            tau = {s: _between(np.sort(a), k - 1)}
            inside = int(np.count_nonzero(a <= tau[s]))
        else:  # score = max over spaces of the row's rank; the k-th smallest score is the cut-off K
            order = {s: np.argsort(a, kind="stable") for s, a in sims.items()}
            ranks = np.zeros(n, np.int64)
            for o in order.values():
                r = np.empty(n, np.int64)
                r[o] = np.arange(n)
                np.maximum(ranks, r, out=ranks)
            cutoff = int(np.partition(ranks, k - 1)[k - 1])
            tau = {s: _between(sims[s][order[s]], cutoff) for s in names}
            inside = int(np.count_nonzero(ranks <= cutoff))
        share = inside / n
        return MarginCut(margin, {s: min(thresholds[s], tau[s]) for s in names}, tau, share, n, exact)


def _between(ascending: np.ndarray, k: int) -> float:
    """A cut between the k-th and the next similarity (0-based), midway: the same rows fall under
    it as under the k-th value, and a float32 rounding of either neighbour cannot move one across
    (the exact check compares exact similarities with it). A cut above the whole sample is 1.0,
    no cosine exceeds it: the sample's own largest float32 value can lie below its exact cosine."""
    if k + 1 >= ascending.size:
        return max(1.0, float(ascending[k]))
    return (float(ascending[k]) + float(ascending[k + 1])) / 2
