"""Batches of random picks: B sequential picks in one call of the compiled loop, and their
similarities (float64, exact where they decide) without a (B, d) float64 copy."""

from __future__ import annotations

import numpy as np

from facebank.index import scan, screen
from facebank.index.exact import BatchPick, PickResult
from facebank.index.query import Query

__all__ = ["as_arrays", "as_list", "batch_picks", "batch_similarities"]

_NO_ROWS = np.empty(0, np.int64)


def batch_picks(picker, qry: Query, groups, members, desc: str, excluded_set: set[int], gen) -> BatchPick:
    """Random picks for the B queries of `qry`, one after another from one generator: pick b
    equals `Picker.pick` of query row b (in every space) with the generator where pick b - 1 left it."""
    b_all = qry.rows
    m = picker.n if members is None else members.size
    if m == picker.n:
        members = None  # a group of every row: its members are 0..n-1, the draws themselves
    parts = qry.screen_parts()
    if not (m and screen.AVAILABLE and parts is not None and screen.usable_members(members)):
        res = [picker.pick_query(qry.row(b), groups, "random", gen, excluded_set, prefix=f"query {b}: ")
               for b in range(b_all)]
        return as_arrays(res, [p.space.name for p in qry.parts])
    excluded = np.array(sorted(excluded_set), np.int64) if excluded_set else _NO_ROWS

    def on_limit(b: int, tries: int) -> int:  # as `Picker.scan_pick`: a uniform choice after a scan
        qb = qry.row(b)
        elig, _, size = scan.scan(qb, picker.n, members, excluded, want_score=False)
        if elig.size == 0:
            raise scan.no_target(qb, desc, size, 0, prefix=f"query {b}: ")
        return int(elig[gen.integers(elig.size)])

    rows, tries, scanned = screen.screen_picks(gen, picker.n, parts, members, m, b_all, 1, picker.draw_plan(m),
                                               excluded, lambda b, row: qry.row(b).admits(row), on_limit)
    tries[scanned] += m
    return BatchPick(rows, batch_similarities(qry, rows), tries, np.where(scanned, "scan", "rejection"))


def batch_similarities(qry: Query, rows_out: np.ndarray) -> dict[str, np.ndarray]:
    """space -> float64 (B,) similarity of each query's row, exact where it decides and confirmed at
    or below the threshold (as `Picker._result`)."""
    sims = {}
    for p in qry.parts:
        sp, q, thr = p.space, p.q, p.threshold
        out = np.empty(rows_out.size)
        for i in range(0, rows_out.size, 1024):  # chunks: bounded temporaries
            r = rows_out[i:i + 1024]
            f = sp.exact_many(r, p.given.take(slice(i, i + 1024)), thr, per_row=True)
            if f is None:  # float16 rows alone: their float32 approximation
                out[i:i + 1024] = np.einsum("kd,kd->k", sp.block(r), q[i:i + 1024])
                continue
            bad = np.flatnonzero(~(f <= thr))
            if bad.size:
                sp.confirm(float(f[bad[0]]), int(r[bad[0]]), thr)  # raises
            out[i:i + 1024] = f
        sims[sp.name] = out
    return sims


def as_list(b: BatchPick) -> list[PickResult]:
    cols = {s: v.tolist() for s, v in b.similarities.items()}
    return [PickResult(r, {s: c[i] for s, c in cols.items()}, t, m)
            for i, (r, t, m) in enumerate(zip(b.rows.tolist(), b.tries.tolist(), b.methods.tolist()))]


def as_arrays(res: list[PickResult], names: list[str]) -> BatchPick:
    return BatchPick(np.array([r.row for r in res], np.int64),
                     {s: np.array([r.similarities[s] for r in res]) for s in names},
                     np.array([r.tries for r in res], np.int64), np.array([r.method for r in res]))
