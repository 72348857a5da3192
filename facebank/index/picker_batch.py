"""Similarities of a batch's picks: float64, exact where they decide, without a (B, d) float64 copy."""

from __future__ import annotations

import numpy as np


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
