"""What a threshold costs: eligible share per group, the bank's identity capacity, repeat rates.

- eligible share: for real query faces, the share of a group's bank faces with similarity
  <= threshold (eligible targets) as the threshold moves from FAR 1e-2 to 1e-5. A looser FAR
  (1e-2) means a lower cosine: fewer eligible targets, safe against a recogniser that accepts
  more; a stricter FAR (1e-5) means a higher cosine and more eligible targets;
- capacity at the build threshold: the share of bank faces whose nearest other bank face is
  above it (a recogniser would take that target for another target), the share of bank pairs
  above it, and a greedy count of mutually distinct identities per group (faces kept in random
  order when no kept face of the group is above the threshold to them);
- repeat rate: how often one target serves several queries (furthest mode concentrates).
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Mapping, Sequence

import numpy as np

from facebank.audit.calibration import threshold_at_far
from facebank.index.capacity import greedy_distinct  # one greedy count: info, index build and the audit

__all__ = ["SWEEP_FARS", "capacity_rows", "eligible_share_rows", "greedy_distinct", "repeat_rows", "sweep_thresholds"]

SWEEP_FARS = (1e-2, 3e-3, 1e-3, 3e-4, 1e-4, 3e-5, 1e-5)


def sweep_thresholds(impostor: np.ndarray, fars: Sequence[float] = SWEEP_FARS) -> list[dict]:
    """Plain thresholds at each FAR with their counts (FAR 1e-5 on 379k pairs rests on ~3 pairs)."""
    out = []
    for f in fars:
        t = threshold_at_far(impostor, f)
        out.append({"far": f, "threshold": t.threshold, "n_above": t.n_above, "supported": t.supported})
    return out


def eligible_share_rows(space: str, bank_x: np.ndarray, groups: np.ndarray, queries: np.ndarray,
                        sweep: Sequence[Mapping[str, Any]]) -> list[dict]:
    """Per group and threshold: mean and 10th percentile over queries of the eligible share."""
    sims = queries.astype(np.float64) @ bank_x.T.astype(np.float64)  # (q, n)
    rows = []
    for g in sorted(set(groups.tolist())):
        cols = groups == g
        for s in sweep:
            share = (sims[:, cols] <= s["threshold"]).mean(axis=1)
            rows.append({"space": space, "group": g, "faces": int(cols.sum()), "far": s["far"],
                         "threshold": s["threshold"], "supported": s["supported"],
                         "mean_eligible_share": float(share.mean()), "p10_eligible_share": float(np.percentile(share, 10))})
    return rows


def capacity_rows(space: str, bank_x: np.ndarray, groups: np.ndarray, threshold: float, *, seed: int = 0) -> list[dict]:
    """Per group (and 'all'): nearest-neighbour share above, pair share above, greedy identities."""
    x = bank_x.astype(np.float64)
    rng = np.random.default_rng(seed)
    rows = []
    for g in ["all", *sorted(set(groups.tolist()))]:
        sel = np.ones(len(x), bool) if g == "all" else groups == g
        xs = x[sel]
        n = xs.shape[0]
        if n < 2:
            rows.append({"space": space, "group": g, "faces": n, "threshold": threshold})
            continue
        sims = xs @ xs.T
        np.fill_diagonal(sims, -np.inf)
        iu = np.triu_indices(n, k=1)
        distinct = greedy_distinct(xs, threshold, rng)
        rows.append({"space": space, "group": g, "faces": n, "threshold": threshold,
                     "nn_above_share": float((sims.max(axis=1) > threshold).mean()),
                     "pairs_above_share": float((sims[iu] > threshold).mean()),
                     "distinct_identities": distinct, "distinct_share": distinct / n})
    return rows


def repeat_rows(picks: Mapping[tuple[str, str], Sequence[Any]]) -> list[dict]:
    """(picked_with, mode) -> per query a target id or None: how concentrated the targets are."""
    rows = []
    for (a, mode), ids in picks.items():
        got = [i for i in ids if i is not None]
        c = Counter(got)
        repeated = sum(v for v in c.values() if v > 1)
        rows.append({"picked_with": a, "mode": mode, "queries": len(ids), "picked": len(got),
                     "distinct_targets": len(c), "repeat_rate": repeated / len(got) if got else float("nan"),
                     "top_target_share": max(c.values()) / len(got) if got else float("nan")})
    return rows
