"""Distributions inside the bank: pairwise similarities, nearest neighbours, group counts.

All similarities are cosines of the rows (normalised here, on a copy); the caller's arrays are
never modified.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Mapping

import numpy as np

from facebank.audit.calibration import _unit_rows
from facebank.errors import InputError

__all__ = ["group_counts", "near_duplicates", "nearest_neighbour", "pairwise_similarities"]


def _pair_from_linear(k: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Map linear indices of the strict upper triangle (row-major) to (i, j), i < j."""
    rows = np.arange(n, dtype=np.int64)
    # offsets[i] = index of pair (i, i+1): rows before i hold (n-1) + (n-2) + ... pairs.
    offsets = rows * (2 * n - rows - 1) // 2
    i = np.searchsorted(offsets, k, side="right") - 1
    j = k - offsets[i] + i + 1
    return i, j


def pairwise_similarities(
    x: Any,
    *,
    max_pairs: int = 200_000,
    rng: np.random.Generator | int | None = None,
) -> tuple[np.ndarray, int, bool]:
    """Cosine similarities of the unordered pairs i < j, sampled when there are too many.

    Args:
        x: (n, d) embeddings.
        max_pairs: at most this many pairs are scored; above it, a uniform sample of exactly
            `max_pairs` distinct pairs is drawn (without replacement) - the sample size to state.
        rng: a Generator or a seed for the sample.
    Returns:
        (sims, n_pairs_total, sampled): float32 (m,) with m = min(max_pairs, n(n-1)/2); all pairs
        in row-major order when not sampled, sorted pair order when sampled.
    """
    x = _unit_rows(x)
    if max_pairs < 1:
        raise InputError(f"max_pairs must be >= 1, got {max_pairs}")
    n = x.shape[0]
    total = n * (n - 1) // 2
    if total <= max_pairs:
        i, j = np.triu_indices(n, k=1)
        sampled = False
    else:
        gen = np.random.default_rng(rng)
        k = np.sort(gen.choice(total, size=max_pairs, replace=False))
        i, j = _pair_from_linear(k, n)
        sampled = True
    # Row-wise dots in chunks: a full (n, n) matrix would not fit for large banks.
    sims = np.empty(i.size, dtype=np.float32)
    step = 65_536
    for s in range(0, i.size, step):
        sims[s : s + step] = np.einsum("ij,ij->i", x[i[s : s + step]], x[j[s : s + step]])
    return sims, total, sampled


def nearest_neighbour(x: Any, *, block: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Each row's most similar other row (exact, blocked float32 matmul, self excluded).

    Args:
        x: (n, d) embeddings, n >= 2.
        block: rows per matmul block; memory is about block * n * 4 bytes.
    Returns:
        (nn_index, nn_sim): int64 (n,) and float32 (n,). An exact duplicate of a row is its
        neighbour with similarity ~1; ties go to the lowest index.
    """
    x = _unit_rows(x)
    if block < 1:
        raise InputError(f"block must be >= 1, got {block}")
    n = x.shape[0]
    nn_index = np.empty(n, dtype=np.int64)
    nn_sim = np.empty(n, dtype=np.float32)
    for s in range(0, n, block):
        e = min(s + block, n)
        sims = x[s:e] @ x.T
        sims[np.arange(e - s), np.arange(s, e)] = -np.inf  # exclude self
        idx = np.argmax(sims, axis=1)
        nn_index[s:e] = idx
        nn_sim[s:e] = sims[np.arange(e - s), idx]
    return nn_index, nn_sim


def near_duplicates(nn_index: Any, nn_sim: Any, above: float) -> list[tuple[int, int, float]]:
    """Unique pairs (i, j, sim), i < j, where a face's nearest neighbour has sim > `above`.

    Only nearest-neighbour pairs are listed, so every flagged face appears at least once, but
    not every pair above the cut does (a face with two near copies lists one). Sorted by
    similarity, highest first, then by (i, j).
    """
    nn_index = np.asarray(nn_index)
    nn_sim = np.asarray(nn_sim, dtype=np.float64)
    if nn_index.ndim != 1 or nn_index.shape != nn_sim.shape:
        raise InputError(f"nn_index and nn_sim must be 1-d of the same length, got {nn_index.shape} and {nn_sim.shape}")
    pairs: dict[tuple[int, int], float] = {}
    for i in np.flatnonzero(nn_sim > above):
        j = int(nn_index[i])
        key = (min(int(i), j), max(int(i), j))
        # The two directions can differ in the last bit; keep the larger.
        pairs[key] = max(pairs.get(key, -np.inf), float(nn_sim[i]))
    return sorted(((i, j, s) for (i, j), s in pairs.items()), key=lambda p: (-p[2], p[0], p[1]))


def group_counts(labels: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Counts per combination of labels, e.g. {"age": ..., "gender": ..., "source": ...}.

    Args:
        labels: column name -> (n,) array of labels (already binned; e.g. age groups).
    Returns:
        rows {column: value, ..., "count": int}, one per combination present, sorted by the
        labels' string forms; values are plain Python scalars.
    """
    if not labels:
        raise InputError("labels is empty")
    names = list(labels)
    cols = [np.asarray(labels[n]) for n in names]
    n = cols[0].shape[0] if cols[0].ndim == 1 else -1
    for name, col in zip(names, cols):
        if col.ndim != 1 or col.shape[0] != n:
            raise InputError(f"labels[{name!r}] must be 1-d of length {n}, got shape {col.shape}")
    counts = Counter(zip(*(col.tolist() for col in cols)))
    rows = [dict(zip(names, key), count=c) for key, c in counts.items()]
    rows.sort(key=lambda r: tuple(str(r[k]) for k in names))
    return rows
