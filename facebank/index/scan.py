"""The exact scan of a group: every row verified in chunks, for random picks whose draws ran out,
for furthest picks, and for an approximate index's candidates.
"""

from __future__ import annotations

import numpy as np

from facebank.errors import NoEligibleTarget
from facebank.index.exact import _SCAN_CHUNK
from facebank.index.query import Query

__all__ = ["exact_scores", "lowest_exact", "no_target", "scan", "verify"]


def verify(qry: Query, rows: np.ndarray | slice, want_score: bool = False):
    """Exact eligibility of rows (bool (k,)) and, if asked, approximate scores float32 (k,)."""
    ok = None
    score = None
    for p in qry.parts:
        sp, q, thr, m = p.space, p.q, p.threshold, p.margin
        s = sp.block(rows) @ q[0] if q.shape[0] == 1 else (sp.block(rows) @ q.T).max(axis=1)
        good = s <= thr - m
        if np.count_nonzero(s <= thr + m) > np.count_nonzero(good):
            # rare: rows within the error bound are decided exactly (Space.exact_many)
            border = np.flatnonzero((s > thr - m) & (s <= thr + m))
            idx = border + rows.start if isinstance(rows, slice) else rows[border]
            ex = sp.exact_many(idx, p.given, thr)
            if ex is not None:  # else (float16 rows alone) the band counts as too similar
                good[border] = ex <= thr
        ok = good if ok is None else ok & good
        if want_score:
            score = s if score is None else np.maximum(score, s)
    return ok, score


def exact_scores(qry: Query, rows: np.ndarray) -> dict[str, np.ndarray]:
    """space -> float64 (k,) similarity (max over faces), within e64 of exact (Space.scores)."""
    return {p.space.name: p.space.scores(rows, p.given, p.q) for p in qry.parts}


def lowest_exact(qry: Query, elig: np.ndarray, score: np.ndarray) -> int:
    """The eligible row with the smallest exact score (ties: the lowest row; `elig` increasing).

    Approximate scores are within qry.margin of the exact ones, so the true minimum is among
    rows whose approximation is within 2 * margin of the smallest approximation.
    """
    cand = elig[score <= score.min() + 2 * qry.margin]
    exact = np.max(np.stack(list(exact_scores(qry, cand).values())), axis=0)
    return int(cand[np.argmin(exact)])


def scan(qry: Query, n: int, members, excluded: np.ndarray, want_score: bool):
    """Exact scan of a group: (eligible rows int64, their approx scores or None, group size)."""
    m = n if members is None else members.size
    found, scores = [], []
    for i in range(0, m, _SCAN_CHUNK):
        j = min(m, i + _SCAN_CHUNK)
        rows = slice(i, j) if members is None else members[i:j]
        ok, score = verify(qry, rows, want_score)
        idx = np.flatnonzero(ok)
        found.append(idx + i if members is None else rows[idx])
        if want_score:
            scores.append(score[idx])
    elig = np.concatenate(found) if found else np.empty(0, np.intp)
    score = np.concatenate(scores) if want_score and scores else None
    size = m
    if excluded.size:
        keep = ~np.isin(elig, excluded)
        elig = elig[keep]
        score = None if score is None else score[keep]
        in_group = excluded if members is None else excluded[np.isin(excluded, members)]
        size -= int(np.count_nonzero((in_group >= 0) & (in_group < n)))
    return elig, score, size


def no_target(qry: Query, desc: str, size: int, n_elig: int, prefix: str = "") -> NoEligibleTarget:
    if size == 0:  # nothing was too similar: the group has no face at all
        why = ("the group is empty (no face of it in this build, or every one excluded); add faces of that "
               "group or pick with fallback='widen_age'")
    else:
        why = f"{size} faces, all {size - n_elig} too similar (thresholds {qry.thresholds})"
    return NoEligibleTarget(f"{prefix}no eligible target in group {desc}: {why}", group_size=size,
                            too_similar=size - n_elig, group=desc)
