"""What a bank can serve: faces and mutually distinct identities per age/gender group at a threshold.

A pick draws from the query's group. Two targets whose similarity is above the threshold look like
one person to the recogniser that threshold stands for, so what a group can really serve is its
count of *distinct identities*: faces pairwise at or below the threshold in every space. The
count here is greedy (faces in a seeded random order, each kept when it is at or below the
threshold to every kept face in every space): a lower bound, and every other face of the group is
above the threshold to at least one kept face.

A group is *thin* below THIN_DISTINCT distinct identities: if its faces fall into k look-alike
neighbourhoods (one per kept face), two picks from it land in the same neighbourhood with
probability sum p_i^2 >= 1/k, so under 10 identities two different people share a look-alike
target at least one time in ten. An *empty* group has no face: a pick for it fails (or widens
with fallback="widen_age").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

import numpy as np

from facebank.bank.schema import STATUS_ANNOTATED
from facebank.index import groups as G

__all__ = ["MAX_GREEDY", "THIN_DISTINCT", "BankCapacity", "GroupCapacity", "bank_capacity", "capacity_thresholds", "greedy_distinct",
           "greedy_distinct_multi"]

THIN_DISTINCT = 10  # below it, two picks share a look-alike target >= 10% of the time (module docstring)
MAX_GREEDY = 20_000  # faces per group the greedy count visits (a random sample above it: still a lower bound)


def greedy_distinct_multi(xs: Mapping[str, np.ndarray], thresholds: Mapping[str, float],
                          rng: np.random.Generator) -> np.ndarray:
    """Indices kept by the greedy count over several spaces (unit rows (n, d_s) each, same n).

    A face is kept when, in every space, its similarity to every kept face is <= that space's threshold.
    """
    names = list(xs)
    n = next(iter(xs.values())).shape[0] if names else 0
    kept_vec = {s: np.empty((min(n, 1024), xs[s].shape[1]), np.float64) for s in names}
    kept: list[int] = []
    for i in rng.permutation(n):
        k = len(kept)
        ok = True
        for s in names:
            v = xs[s][i].astype(np.float64)
            if k and float((kept_vec[s][:k] @ v).max()) > thresholds[s]:
                ok = False
                break
        if ok:
            for s in names:
                if k == kept_vec[s].shape[0]:  # grow by doubling: no copy per kept face
                    kept_vec[s] = np.concatenate([kept_vec[s], np.empty_like(kept_vec[s])])
                kept_vec[s][k] = xs[s][i]
            kept.append(int(i))
    return np.array(kept, dtype=np.int64)


def greedy_distinct(x: np.ndarray, threshold: float, rng: np.random.Generator) -> int:
    """How many faces of unit rows `x` (n, d) the greedy count keeps in one space (a lower bound on
    the mutually distinct identities of the set)."""
    return int(greedy_distinct_multi({"s": x}, {"s": threshold}, rng).size)


@dataclass(frozen=True)
class GroupCapacity:
    """One age/gender group: its faces and distinct identities at the thresholds."""

    group: str  # "30-39/female"
    faces: int
    distinct: int  # in every space at once
    distinct_by_space: Mapping[str, int] = field(default_factory=dict)
    sampled: bool = False  # counted on MAX_GREEDY faces of the group (still a lower bound)

    @property
    def status(self) -> str:
        return "empty" if self.faces == 0 else "thin" if self.distinct < THIN_DISTINCT else "ok"

    def to_dict(self) -> dict:
        return {"group": self.group, "faces": self.faces, "distinct": self.distinct,
                "distinct_by_space": dict(self.distinct_by_space), "sampled": self.sampled, "status": self.status}


@dataclass(frozen=True)
class BankCapacity:
    """Every group of the bank (all 14, empty ones too) and the whole bank, at `thresholds`."""

    thresholds: Mapping[str, float]
    threshold_source: str  # "build <id>" | "shipped defaults" | ...
    total: GroupCapacity
    groups: tuple[GroupCapacity, ...]

    def warnings(self) -> list[str]:
        """One line for the empty groups and one for the thin ones, saying what a pick does and what to do."""
        out = []
        empty = [g.group for g in self.groups if g.status == "empty"]
        thin = [g for g in self.groups if g.status == "thin"]
        if empty:
            out.append(f"empty groups: {', '.join(empty)}: a pick for them fails (fallback widen_age borrows a "
                       "neighbouring age group); add faces of those groups")
        if thin:
            out.append(f"thin groups (fewer than {THIN_DISTINCT} distinct identities; faces/distinct): "
                       + ", ".join(f"{g.group} {g.faces}/{g.distinct}" for g in thin)
                       + ": different people often get look-alike targets; add faces of those groups")
        return out

    def to_dict(self) -> dict:
        return {"thresholds": dict(self.thresholds), "threshold_source": self.threshold_source,
                "thin_below": THIN_DISTINCT, "total": self.total.to_dict(),
                "groups": [g.to_dict() for g in self.groups], "warnings": self.warnings()}


def _count(label: str, vecs: Mapping[str, np.ndarray], thresholds: Mapping[str, float], seed: int) -> GroupCapacity:
    n = next(iter(vecs.values())).shape[0]
    rng = np.random.default_rng(seed)
    sampled = n > MAX_GREEDY
    if sampled:
        pick = np.sort(rng.choice(n, MAX_GREEDY, replace=False))
        vecs = {s: v[pick] for s, v in vecs.items()}
    by_space = {s: int(greedy_distinct_multi({s: v}, {s: thresholds[s]}, np.random.default_rng(seed)).size)
                for s, v in vecs.items()} if len(vecs) > 1 else {}
    both = int(greedy_distinct_multi(vecs, thresholds, np.random.default_rng(seed)).size)
    if not by_space:
        by_space = {s: both for s in vecs}
    return GroupCapacity(label, n, both, by_space, sampled)


def bank_capacity(bank, thresholds: Mapping[str, float], *, source: str = "", rows: np.ndarray | None = None,
                  seed: int = 0) -> BankCapacity:
    """Capacity of the bank's servable faces (annotated, age and gender known, a vector in every
    space of `thresholds`; or exactly `rows`) per age/gender group."""
    spaces = list(thresholds)
    ages, genders = bank.column("age"), bank.column("gender")
    if rows is None:
        ok = (bank.column("status") == STATUS_ANNOTATED) & np.isfinite(ages) & np.isin(genders, (0, 1))
        for s in spaces:
            ok &= bank.present(s)
        rows = np.flatnonzero(ok)
    rows = np.asarray(rows, dtype=np.int64)
    codes = G.group_codes(ages[rows], np.where(genders[rows] == 0, "female", "male")) if rows.size else \
        np.empty(0, np.int16)
    vecs = {s: np.asarray(bank.vectors(s), dtype=np.float64)[rows] for s in spaces}
    empty = {s: np.empty((0, 1)) for s in spaces}
    groups = []
    for code in range(G.N_GROUPS):
        sel = codes == code
        label = G.group_label(code)
        groups.append(_count(label, {s: v[sel] for s, v in vecs.items()}, thresholds, seed) if sel.any()
                      else GroupCapacity(label, 0, 0, {s: 0 for s in spaces}))
    total = _count("all", vecs, thresholds, seed) if rows.size else _count("all", empty, thresholds, seed)
    return BankCapacity(dict(thresholds), source, total, tuple(groups))


def capacity_thresholds(bank, build=None) -> tuple[dict[str, float], str]:
    """The thresholds capacity is counted at, and where they come from: the build's (when `build`,
    a build directory, is given), else the shipped defaults for the bank's spaces whose model they
    were calibrated for. ({}, reason) when neither applies."""
    if build is not None:
        from facebank.index.manifest import read_manifest

        m = read_manifest(build)
        thr = {s: t for s, t in m.thresholds.items() if s in bank.spaces}
        same = m.bank.content_hash == bank.content_hash
        return thr, f"build {m.build_id}" + ("" if same else " (made from another version of this bank)")
    from facebank.index.build import default_thresholds

    defaults = default_thresholds().get("spaces", {})
    thr = {s: float(defaults[s]["threshold"]) for s in bank.spaces
           if s in defaults and defaults[s].get("sha256") == bank.space_info(s).get("sha256")}
    return thr, ("shipped defaults" if thr else "no build and no shipped default for this bank's spaces")
