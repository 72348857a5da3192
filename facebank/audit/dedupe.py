"""`facebank dedupe`: remove near-duplicate faces from a bank, recorded in its log, resumable.

A pair of faces is a near-duplicate when the cosine of their vectors in `space` is above a cut.
Rows are visited in bank order and a face is removed when it is above the cut to an earlier face
that is kept, so the first face of every group of near-duplicates stays and no two kept faces
are above the cut. Removal sets status = STATUS_REMOVED (the face stays in the file, with its
seed and provenance) and logs the removed ids with their kept partner and similarity.

Only annotated faces with a vector in `space` take part, so a second run over the result finds
nothing; a run killed half-way is finished by the next one (the same faces are chosen again).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from facebank.bank import BankWriter, open_bank
from facebank.bank.schema import STATUS_ANNOTATED, STATUS_REMOVED
from facebank.errors import InputError

__all__ = ["dedupe_bank", "pairs_above"]

log = logging.getLogger(__name__)


def pairs_above(x: np.ndarray, cut: float, *, block: int = 2048) -> list[tuple[int, int, float]]:
    """Every pair (i, j, sim), i < j, of unit rows `x` (n, d) with sim > cut, sorted by (i, j).

    Blocked float32 matmul: memory is about block * n * 4 bytes; no (n, n) matrix is formed.
    """
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise InputError(f"x must be (n, d), got shape {x.shape}")
    out = []
    for s in range(0, x.shape[0], block):
        sims = x[s:s + block] @ x.T
        i, j = np.nonzero(sims > cut)
        keep = j > i + s  # upper triangle only: each pair once, never a face with itself
        out += [(int(a + s), int(b), float(sims[a, b])) for a, b in zip(i[keep], j[keep])]
    return sorted(out)


def dedupe_bank(
    bank_path: str | os.PathLike,
    *,
    space: str,
    above: float | None = None,  # remove one face of every pair more similar than this
    below: float | None = None,  # alias: keep only faces whose nearest kept neighbour is <= this
    dry_run: bool = False,  # report what would be removed, change nothing
    confirm=None,  # callable(result) -> bool, asked before anything is removed; False cancels
) -> dict:
    """Mark near-duplicates as removed; returns what was (or would be) removed.

    Returns:
        {"bank", "space", "cut", "considered", "pairs_above", "removed": [{"id", "row",
        "kept_id", "kept_row", "sim"}], "dry_run", "cancelled"}.
    """
    if (above is None) == (below is None):
        raise InputError("give exactly one cut: --above SIM (or its alias --below SIM)")
    cut = float(above if above is not None else below)
    if not np.isfinite(cut) or not -1.0 <= cut <= 1.0:
        raise InputError(f"the cut must be a cosine in [-1, 1], got {cut}")
    bank_path = Path(bank_path)
    with open_bank(bank_path) as bank:
        rows = np.flatnonzero((bank.column("status") == STATUS_ANNOTATED) & bank.present(space))
        ids = bank.ids[rows]
        pairs = pairs_above(bank.vectors(space)[rows], cut) if rows.size > 1 else []
    removed: dict[int, tuple[int, float]] = {}
    for i, j, sim in pairs:  # sorted by i: whether i is kept is final when its pairs come up
        if i not in removed and j not in removed:
            removed[j] = (i, sim)
    result = {
        "bank": str(bank_path), "space": space, "cut": cut, "considered": int(rows.size),
        "pairs_above": len(pairs), "dry_run": dry_run,
        "removed": [{"id": ids[j], "row": int(rows[j]), "kept_id": ids[i], "kept_row": int(rows[i]), "sim": sim}
                    for j, (i, sim) in sorted(removed.items())],
    }
    result["cancelled"] = False
    if removed and not dry_run and confirm is not None and not confirm(result):
        result["cancelled"] = True
        return result
    if removed and not dry_run:
        with BankWriter(bank_path, create=False) as writer:
            gone = [r["id"] for r in result["removed"]]
            writer.set_attributes(gone, {"status": np.full(len(gone), STATUS_REMOVED, dtype=np.int8)})
            writer.log("dedupe", space=space, cut=cut, considered=int(rows.size),
                       removed=[{k: r[k] for k in ("id", "kept_id", "sim")} for r in result["removed"]])
        log.info("dedupe %s: removed %d of %d faces in space %s above %g",
                 bank_path, len(removed), rows.size, space, cut)
    return result
