"""Vectorised random picks for B queries sharing one group, thresholds and exclusions.

Used for queries in several spaces; random picks in one space go through the compiled loop
instead (`Picker._batch_fast`, facebank.index.screen).

Each query runs its own rejection sampling, as `Picker._pick_one` does: an independent stream of
uniform members of the group (drawn with `Generator.integers`, exact), of which it takes the first
eligible, not excluded one; after `limit` draws without one it falls back to an exact scan and a
uniform choice among the eligible rows with fresh randomness. So each pick is uniform over its
eligible set (the argument in `_pick_one`), and picks of different queries are independent: no
candidate is shared between queries.

Vectorisation only changes how draws are verified. A working set of up to `_ROWS // k` pending
queries gets k draws each per round: one gather of all their rows (float32 or float16 storage),
one stacked matrix-vector product, the first eligible column of each query by argmax of a boolean
mask. Finished queries leave the working set and new ones take their place, so every round is
full. k follows the acceptance rate observed so far in this call (about 0.7 / rate draws: small
blocks waste few rows past a query's first eligible draw; the per-round cost is shared by ~1000 rows): it depends only on the queries, the bank and the
generator, never on earlier calls, so a seeded batch reproduces. Draws a query makes after its
first eligible one, in the same round, are ignored; they do not change which draw is first.

Eligibility is decided as in `Picker`: the float32 similarity against the threshold widened by the
space's proven error bound, and rows inside that band (rare) exactly (`_Space.exact_many`).
"""

from __future__ import annotations

import math

import numpy as np

_ROWS = 1024  # rows gathered per round: 2 MiB of float32 512-d rows, stays in cache
_K_MAX = 64
_K_RATE = 0.7  # draws per query and round: about 0.7 / acceptance rate (at least 1)


def pick_random_batch(picker, qry, members, desc: str, excluded_set: set[int], gen: np.random.Generator):
    """(rows int64 (B,), tries int64 (B,), methods (B,) str) for the B queries of `qry`.

    qry.parts hold (space, float32 (B, d), float64 (B, d), threshold, margin).
    """
    parts = qry.parts
    b_all = parts[0][1].shape[0]
    m = picker.n if members is None else members.size
    limit = picker._draws_limit(m) if m else 0
    rows_out = np.full(b_all, -1, np.int64)
    tries = np.zeros(b_all, np.int64)
    excl = np.fromiter(excluded_set, np.int64, len(excluded_set)) if excluded_set else None
    to_scan: list[int] = []
    if limit > 0:
        active = np.empty(0, np.int64)  # query numbers in the working set
        drawn = np.empty(0, np.int64)  # draws each of them has verified
        nxt = 0  # next query to enter the working set
        seen, hits = 0, 0  # draws verified and successes so far (for the rate estimate)
        k = 4
        while nxt < b_all or active.size:
            cap = max(1, _ROWS // k)
            if active.size < cap and nxt < b_all:
                add = np.arange(nxt, min(b_all, nxt + cap - active.size))
                nxt += add.size
                active = np.concatenate([active, add])
                drawn = np.concatenate([drawn, np.zeros(add.size, np.int64)])
            a = active.size
            draw = gen.integers(0, m, size=(a, k))
            rows = draw if members is None else members.take(draw)
            flat = rows.ravel()
            ok = None
            for sp, q, q64, thr, mg in parts:
                blk = sp.data.take(flat, axis=0)
                if not sp.f32:
                    blk = blk.astype(np.float32)
                s = np.matmul(blk.reshape(a, k, -1), q.take(active, axis=0)[:, :, None])[:, :, 0]
                good = s <= thr - mg
                if np.count_nonzero(s <= thr + mg) > np.count_nonzero(good):
                    border = np.flatnonzero((s > thr - mg) & (s <= thr + mg))
                    ex = sp.exact_many(flat[border], q64[active[border // k]], thr, per_row=True)
                    if ex is not None:  # else (float16 rows alone) the band counts as too similar
                        good.ravel()[border] = ex <= thr
                ok = good if ok is None else ok & good
            if excl is not None:
                ok &= ~np.isin(rows, excl)
            left = limit - drawn  # draws each query may still verify
            if left.min() < k:
                ok &= np.arange(k) < left[:, None]
            has = ok.any(axis=1)
            first = ok.argmax(axis=1)
            used = np.where(has, first + 1, np.minimum(left, k))
            seen += int(used.sum())
            hits += int(np.count_nonzero(has))
            done = active[has]
            rows_out[done] = rows[has, first[has]]
            tries[done] = drawn[has] + first[has] + 1
            drawn = drawn + used
            out = ~has & (drawn >= limit)
            if out.any():
                to_scan.extend(active[out].tolist())
                tries[active[out]] = drawn[out]
            keep = ~has & ~out
            active, drawn = active[keep], drawn[keep]
            rate = (hits + 1) / (seen + 2)
            k = int(min(_K_MAX, max(1, math.ceil(_K_RATE / rate))))
    else:
        to_scan = list(range(b_all))
    methods = np.where(rows_out >= 0, "rejection", "scan")
    if to_scan:
        from facebank.index.exact import _Query

        excluded = np.array(sorted(excluded_set), dtype=np.intp)
        for i in sorted(to_scan):  # scan fallback, one query at a time, fresh randomness
            one = _Query([(sp, q[i:i + 1], thr) for sp, q, _, thr, _ in parts])
            elig, _, size = picker._scan(one, members, excluded, want_score=False)
            if elig.size == 0:
                raise picker._no_target(one, desc, size, 0, prefix=f"query {i}: ")
            rows_out[i] = elig[gen.integers(elig.size)]
            tries[i] += m
    return rows_out, tries, methods


def batch_similarities(qry, rows_out: np.ndarray) -> dict[str, np.ndarray]:
    """space -> float64 (B,) similarity of each query's row, exact where it decides (as `_result`)."""
    sims = {}
    for sp, q, q64, thr, _ in qry.parts:
        out = np.empty(rows_out.size)
        for i in range(0, rows_out.size, 1024):  # chunks: bounded temporaries
            r, qi = rows_out[i:i + 1024], q[i:i + 1024]
            if sp.src is None:  # float16 rows alone: their float32 approximation
                out[i:i + 1024] = np.einsum("kd,kd->k", sp.block(r), qi)
                continue
            if sp.src_nd:  # float64 dot products of the float32 rows (products exact) ...
                f = np.einsum("kd,kd->k", sp.src.take(r, axis=0), qi, dtype=np.float64)
            else:
                f = sp.exact_many(r, q64[i:i + 1024], thr, per_row=True)
            # ... made exact where they decide, as in `_Space.exact_many`
            for j in np.flatnonzero(np.abs(f - thr) <= sp.e64).tolist():
                f[j] = sp.exact_one(int(r[j]), q64[i + j:i + j + 1], thr)
            out[i:i + 1024] = f
        sims[sp.name] = out
    return sims
