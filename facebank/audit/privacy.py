"""The privacy/diversity section of `facebank audit`: what the build threshold costs.

Real query faces here are the labelled faces (one per identity, at most 300): the people a
deployment would anonymise. Picks are made from the whole build (no age/gender estimate for
labelled faces). Computations live in `capacity` and `transfer`; this module lays them out.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from facebank.audit import capacity as C
from facebank.audit import plots
from facebank.audit.report import Section
from facebank.audit.transfer import transfer_rows
from facebank.errors import NoEligibleTarget
from facebank.index import groups as G
from facebank.progress import Progress

__all__ = ["privacy_section"]

MAX_QUERIES = 300


def _one_per_identity(labels: Sequence[str], seed: int) -> np.ndarray:
    first: dict[str, int] = {}
    for k, w in enumerate(labels):
        first.setdefault(w, k)
    idx = np.array(sorted(first.values()))
    if idx.size > MAX_QUERIES:
        idx = np.sort(np.random.default_rng(seed).choice(idx, MAX_QUERIES, replace=False))
    return idx


def _bank_groups(session: Any, bank: Any) -> np.ndarray:
    ages, genders = bank.column("age"), bank.column("gender")
    rows = np.asarray(session.rows)
    codes = G.group_codes(ages[rows], np.where(genders[rows] == 0, "female", "male"))
    return np.array([G.group_label(int(c)) for c in codes])


def privacy_section(session: Any, bank: Any, report: Any, *, labels: Sequence[str], embeddings: Mapping[str, np.ndarray],
                    crops: Sequence[np.ndarray], heldout: Mapping[str, Any], out: Path, seed: int = 0,
                    progress: Progress | None = None) -> Section:
    """Eligible share per group over FARs, capacity at the build threshold, repeat rates, transfer."""
    spaces, thr = session.spaces, dict(session.thresholds)
    rows = np.asarray(session.rows)
    groups = _bank_groups(session, bank)
    q_idx = _one_per_identity(labels, seed)
    queries = {s: np.asarray(embeddings[s], dtype=np.float64)[q_idx] for s in spaces}
    queries = {s: q / np.linalg.norm(q, axis=1, keepdims=True) for s, q in queries.items()}
    elig, cap, images, sweeps = [], [], [], []
    for s in spaces:
        x = np.asarray(bank.vectors(s), dtype=np.float64)[rows]
        sweep = C.sweep_thresholds(report.scores[s][1])
        sweeps += [{"space": s, **r} for r in sweep]
        mine = C.eligible_share_rows(s, x, groups, queries[s], sweep)
        elig += mine
        images.append(plots.plot_eligible_shares(out / "images" / f"eligible_{s}.png", mine, build_threshold=thr[s],
                                                 title=f"{s}: eligible bank faces per group vs threshold"))
        cap += C.capacity_rows(s, x, groups, thr[s], seed=seed)
    rng = np.random.default_rng(seed)
    picks: dict[tuple[str, str], list[int | None]] = {}
    for a in spaces:
        for mode in ("random", "furthest"):
            got = []
            for k in range(len(q_idx)):
                try:
                    got.append(int(session.pick_target({a: queries[a][k]}, mode=mode, rng=rng).row))
                except NoEligibleTarget:
                    got.append(None)
            picks[(a, mode)] = got
    repeats = C.repeat_rows(picks)
    tables = {"threshold sweep": sweeps, "eligible share by group": elig, "identity capacity": cap,
              "target repeat rate": repeats}
    text = [f"{len(q_idx)} real query faces (the labelled faces, one per identity), picked from the whole build "
            f"({rows.size:,} faces). *Eligible share*: of a group's bank faces, the share at or below the threshold "
            "to a query (mean over queries, and the 10th percentile). Thresholds for FAR 1e-2 .. 1e-5 come from the "
            "labelled impostor pairs (plain; `supported` says whether enough pairs lie above). *Capacity* at the "
            "build threshold: `nn_above_share` = faces whose nearest other face of the group is above it (a "
            "recogniser would take one target for another), `pairs_above_share`, and `distinct_identities` = a "
            "greedy count of faces all pairwise at or below it. *Repeat rate*: share of picks whose target also "
            "served another query; `top_target_share`: the most used target's share."]
    if heldout:
        thr_rows, tr_rows = [], []
        for h, emb in heldout.items():
            a, b = transfer_rows(session, bank, h, emb, labelled_crops=crops, labels=labels, queries=queries,
                                 query_crops=[crops[k] for k in q_idx], picks=picks, progress=progress)
            thr_rows += a
            tr_rows += b
        tables["held-out thresholds"] = thr_rows
        tables["held-out transfer"] = tr_rows
        text.append("*Transfer*: every pick scored by a recogniser the build does not use, at that recogniser's own "
                    "thresholds calibrated on the labelled faces; `match@FAR` = share of picks above the threshold "
                    "(the recogniser would say \"same person\"). Baselines: a uniform random bank face, and the most "
                    "similar bank face in the build space (a look-alike swapper).")
    return Section("Privacy and diversity: what the threshold costs", "\n\n".join(text), tables, images)
