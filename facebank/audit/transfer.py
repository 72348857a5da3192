"""The transfer check: picks made in the build's spaces, scored by a recogniser the build does not use.

For every held-out space (`--heldout SPACE=MODEL`): the labelled faces calibrate its own
thresholds (FAR 1e-2, 1e-3, 1e-4, plain), the bank's build rows are embedded from their stored
aligned crops, and every query face is picked with each build space in random and furthest mode.
A pick *matches* in the held-out space when its similarity is above that space's threshold.
Beside the picks, two baselines: a uniform random bank face (the exact expectation over every
build row) and the most similar bank face in the build space (what a look-alike swapper picks).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from facebank.audit.calibration import calibrate
from facebank.audit.labelled import embed_crop
from facebank.progress import Progress, ProgressEvent

__all__ = ["HELDOUT_FARS", "transfer_rows"]

HELDOUT_FARS = (1e-2, 1e-3, 1e-4)


def _rates(sims: np.ndarray, thr: Mapping[float, float]) -> dict[str, float]:
    return {f"match@{f:g}": float(np.mean(sims > t)) for f, t in thr.items()}


def transfer_rows(session: Any, bank: Any, heldout: str, embedder: Any, *, labelled_crops: Sequence[np.ndarray],
                  labels: Sequence[str], queries: Mapping[str, np.ndarray], query_crops: Sequence[np.ndarray],
                  picks: Mapping[tuple[str, str], Sequence[int | None]], progress: Progress | None = None) -> tuple[list[dict], list[dict]]:
    """(threshold rows, transfer rows) for one held-out space.

    Args:
        labelled_crops, labels: identity-labelled aligned crops that calibrate the held-out space.
        queries: build space -> (q, d) query embeddings; query_crops: their (q) aligned crops.
        picks: (build space, mode) -> per query the picked bank row, or None (no eligible target).
    """
    emb_l = np.stack([embed_crop(c, heldout, embedder) for c in labelled_crops])
    cal = calibrate({heldout: emb_l}, np.asarray(labels), fars=HELDOUT_FARS).spaces[heldout]
    thr = {t.far: t.threshold for t in cal.thresholds}
    thr_rows = [{"heldout": heldout, "far": t.far, "threshold": t.threshold, "n_above": t.n_above,
                 "n_impostor_pairs": t.n_impostor_pairs, "ci95_low": t.ci_low, "ci95_high": t.ci_high,
                 "supported": t.supported} for t in cal.thresholds]
    rows_b = np.asarray(session.rows)
    bank_h = np.empty((rows_b.size, emb_l.shape[1]), dtype=np.float64)
    for k, r in enumerate(rows_b):
        if progress is not None and k % 50 == 0:
            progress(ProgressEvent(f"held-out {heldout}: bank", k, rows_b.size))
        bank_h[k] = embed_crop(bank.crop(int(r)), heldout, embedder)
    q_h = np.stack([embed_crop(c, heldout, embedder) for c in query_crops]).astype(np.float64)
    pos = {int(r): k for k, r in enumerate(rows_b)}
    sims_all = q_h @ bank_h.T  # (q, n)
    base = {"heldout": heldout, "queries": int(q_h.shape[0])}
    out = [{**base, "picked_with": "-", "selection": "uniform random bank face (expected)",
            "mean_sim": float(sims_all.mean()),
            **{f"match@{f:g}": float(np.mean(sims_all > t)) for f, t in thr.items()}}]
    for a, qa in queries.items():
        xa = np.asarray(bank.vectors(a), dtype=np.float64)[rows_b]
        nearest = np.argmax(qa.astype(np.float64) @ xa.T, axis=1)
        s = sims_all[np.arange(len(nearest)), nearest]
        out.append({**base, "picked_with": a, "selection": "most similar bank face (look-alike)",
                    "mean_sim": float(s.mean()), **_rates(s, thr)})
        for mode in ("random", "furthest"):
            s = np.array([sims_all[k, pos[r]] for k, r in enumerate(picks[(a, mode)]) if r is not None], np.float64)
            out.append({**base, "picked_with": a, "selection": f"facebank {mode}", "picked": int(s.size),
                        "mean_sim": float(s.mean()) if s.size else float("nan"), **_rates(s, thr)})
    return thr_rows, out
