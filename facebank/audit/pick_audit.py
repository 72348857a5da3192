"""The paper's "Source vs Target" rows: how often a recogniser matches a query to its pick.

Input is the similarity of each query to the target it was given, picked with space A and
scored in space B (A == B is the guarantee itself; A != B asks whether it carries over):

    similarities[pick_space][score_space] -> float (n_queries,)

NaN marks a query that got no target (e.g. NoEligibleTarget); it is counted in `n_no_pick` and
left out of the rate's denominator. A recogniser *matches* a pair when sim > threshold[B].
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from facebank.audit.report import write_csv
from facebank.errors import InputError

__all__ = ["ANY_SPACE", "match_rate_table", "per_query_rows", "write_table_csv"]

# The score_space of the row that counts a pick as matched when any scoring space matches it.
ANY_SPACE = "any"


def _validated(
    similarities: Mapping[str, Mapping[str, Any]], thresholds: Mapping[str, float]
) -> tuple[dict[str, dict[str, np.ndarray]], int]:
    out: dict[str, dict[str, np.ndarray]] = {}
    n = None
    for a, by_b in similarities.items():
        out[a] = {}
        for b, sims in by_b.items():
            if b not in thresholds:
                raise InputError(f"no threshold for scoring space {b!r} (have: {sorted(thresholds)})")
            arr = np.asarray(sims, dtype=np.float64)
            if arr.ndim != 1:
                raise InputError(f"similarities[{a!r}][{b!r}] must be 1-d, got shape {arr.shape}")
            if n is None:
                n = arr.size
            elif arr.size != n:
                raise InputError(f"similarities[{a!r}][{b!r}] has {arr.size} queries, expected {n}")
            if np.any(np.isinf(arr)):
                raise InputError(f"similarities[{a!r}][{b!r}] contains infinity")
            out[a][b] = arr
    if n is None:
        raise InputError("similarities is empty")
    return out, n


def _row(mode: str, a: str, b: str, sims: np.ndarray, matched: np.ndarray, threshold: float | None) -> dict[str, Any]:
    picked = ~np.isnan(sims)
    n_picked = int(picked.sum())
    n_matched = int(matched[picked].sum())
    valid = sims[picked]
    return {
        "mode": mode,
        "picked_with": a,
        "scored_with": b,
        "threshold": threshold,
        "n_queries": int(sims.size),
        "n_no_pick": int(sims.size - n_picked),
        "n_matched": n_matched,
        # NaN when nothing was picked: a rate over zero picks is not 0.
        "match_rate": n_matched / n_picked if n_picked else float("nan"),
        "mean_sim": float(valid.mean()) if n_picked else float("nan"),
        "max_sim": float(valid.max()) if n_picked else float("nan"),
    }


def match_rate_table(
    similarities: Mapping[str, Mapping[str, Any]],
    thresholds: Mapping[str, float],
    *,
    mode: str = "",
) -> list[dict[str, Any]]:
    """Share of picks a recogniser would match, per (pick space, scoring space).

    Args:
        similarities: pick space -> scoring space -> float (n_queries,) similarity of each
            query to its picked target; NaN = no pick.
        thresholds: scoring space -> calibrated threshold (match when sim > threshold).
        mode: the pick mode ("random", "furthest", ...), copied into every row.
    Returns:
        rows with keys mode, picked_with, scored_with, threshold, n_queries, n_no_pick,
        n_matched, match_rate, mean_sim, max_sim. After each pick space's rows comes one with
        scored_with = "any" (matched in at least one scoring space; threshold None, mean/max of
        nothing: NaN).
    """
    sims, _ = _validated(similarities, thresholds)
    rows = []
    for a, by_b in sims.items():
        any_matched = None
        for b, s in by_b.items():
            t = float(thresholds[b])
            with np.errstate(invalid="ignore"):
                matched = s > t  # NaN compares False: no pick is no match
            rows.append(_row(mode, a, b, s, matched, t))
            any_matched = matched if any_matched is None else any_matched | matched
        if len(by_b) > 1:
            # A query missing in any space got no pick at all (the picker picks once per query).
            missing = np.any(np.isnan(np.stack(list(by_b.values()))), axis=0)
            placeholder = np.where(missing, np.nan, 0.0)
            row = _row(mode, a, ANY_SPACE, placeholder, any_matched, None)
            row["mean_sim"] = row["max_sim"] = float("nan")
            rows.append(row)
    return rows


def per_query_rows(
    query_ids: Sequence[Any],
    similarities: Mapping[str, Mapping[str, Any]],
    thresholds: Mapping[str, float],
    *,
    mode: str = "",
    target_ids: Mapping[str, Sequence[Any]] | None = None,
) -> list[dict[str, Any]]:
    """The raw numbers behind `match_rate_table`: one row per (query, pick space, scoring space).

    Args:
        query_ids: (n_queries,) identifiers of the queries.
        target_ids: pick space -> (n_queries,) picked target ids (None for no pick), optional.
    """
    sims, n = _validated(similarities, thresholds)
    if len(query_ids) != n:
        raise InputError(f"query_ids has {len(query_ids)} entries, similarities have {n}")
    rows = []
    for a, by_b in sims.items():
        targets = None if target_ids is None else target_ids.get(a)
        if targets is not None and len(targets) != n:
            raise InputError(f"target_ids[{a!r}] has {len(targets)} entries, expected {n}")
        for b, s in by_b.items():
            t = float(thresholds[b])
            for q in range(n):
                sim = float(s[q])
                rows.append({
                    "mode": mode, "query": query_ids[q], "picked_with": a,
                    "target": None if targets is None else targets[q], "scored_with": b,
                    "sim": sim, "threshold": t, "matched": bool(sim > t),
                })
    return rows


def write_table_csv(rows: Sequence[Mapping[str, Any]], path: str | os.PathLike) -> Path:
    """Write table rows as CSV atomically; returns the path."""
    return write_csv(rows, path)
