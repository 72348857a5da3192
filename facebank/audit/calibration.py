"""Threshold calibration against identity-labelled real faces.

Conventions (the same as the picker's): a score is the cosine similarity of two embeddings; a
recogniser *accepts* a pair (says "same person") when `score > t`; facebank calls a target
dissimilar enough when `score <= t`. Hence, at threshold t:

    FAR(t) = #{impostor > t} / n_impostor      (different people wrongly accepted)
    FRR(t) = #{genuine <= t} / n_genuine       (same person wrongly rejected)

Every threshold comes with k = #{impostor > t}, n, and the Clopper-Pearson 95% interval on k / n
(`facebank.audit.stats`). Two ways to pick it:
- plain: the smallest t with k / n <= far (the point estimate meets the asked rate);
- conservative "far": the smallest t whose interval's upper bound is <= far (the data show, at
  95%, that a recogniser deciding at t accepts impostors at a rate of at most far);
- conservative "privacy": the largest t whose interval's lower bound is >= far (the data show, at
  95%, that t lies at or below the score where a recogniser run at `far` starts accepting, so
  every target at or under t is one that recogniser rejects). This is the side the picker's
  guarantee needs; the shipped defaults use it. The two bounds sit on either side of the point
  estimate, a few impostor pairs apart once k is in the hundreds.

A figure is *supported* when k >= 30 (the rate is measured: its interval spans about +/-36%)
or when the interval's upper bound is <= far (the bound itself is the claim; Clopper-Pearson is
exact for any k). Otherwise it rests on a handful of pairs and says little.

The EER comes with its resolution, 1/n_genuine and 1/n_impostor: an EER below 1/n_genuine lies
below the smallest non-zero FRR the genuine pairs can show, and is flagged as unresolved.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from facebank.errors import InputError
from facebank.audit.calibration_report import CalibrationReport, ScoreStats, SpaceCalibration, ThresholdAtFar
from facebank.audit.stats import (
    MIN_ABOVE, clopper_pearson, conservative_count, largest_count_at_most, privacy_count,
)

__all__ = [
    "Curve",
    "bound_name",
    "calibrate",
    "eer",
    "eer_point",
    "pair_scores",
    "roc_det",
    "threshold_at_far",
]

DEFAULT_FARS = (1e-2, 1e-3, 1e-4)


def _unit_rows(x: Any, name: str = "x") -> np.ndarray:
    """(n, d) float32 copy with unit rows; typed errors name the argument."""
    x = np.array(x, dtype=np.float32, copy=True)
    if x.ndim != 2 or x.shape[0] < 2 or x.shape[1] < 1:
        raise InputError(f"{name} must have shape (n>=2, d>=1), got {x.shape}")
    if not np.all(np.isfinite(x)):
        raise InputError(f"{name} contains NaN or infinity")
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    if np.any(norms == 0):
        raise InputError(f"{name} has a zero-norm row at index {int(np.flatnonzero(norms == 0)[0])}")
    return x / norms


def _scores(x: Any, name: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64).ravel()
    if x.size == 0:
        raise InputError(f"{name} is empty")
    if not np.all(np.isfinite(x)):
        raise InputError(f"{name} contains NaN or infinity")
    return x


def pair_scores(embeddings: Any, identities: Any, subsets: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """Cosine scores of all unordered pairs i < j, split by identity.

    Args:
        embeddings: (n, d) float, one row per photo; normalised here (a copy), so unit rows
            are not required.
        identities: (n,) labels of any hashable dtype; equal labels = same person.
        subsets: optional (n,) labels of the data set each row comes from; pairs across data
            sets are left out (two sets labelled apart may hold the same person under two ids).
    Returns:
        (genuine, impostor): float64 1-d arrays, pairs in row-major (i, j) order.
    """
    x = _unit_rows(embeddings, "embeddings")
    ids = np.asarray(identities)
    if ids.shape != (x.shape[0],):
        raise InputError(f"identities must have shape ({x.shape[0]},), got {ids.shape}")
    i, j = np.triu_indices(x.shape[0], k=1)
    if subsets is not None:
        sub = np.asarray(subsets)
        if sub.shape != ids.shape:
            raise InputError(f"subsets must have shape {ids.shape}, got {sub.shape}")
        keep = sub[i] == sub[j]
        i, j = i[keep], j[keep]
    # float64 products of float32 rows: the scores the picker compares, without accumulation error.
    sims = (x.astype(np.float64) @ x.T.astype(np.float64))[i, j]
    same = ids[i] == ids[j]
    return sims[same], sims[~same]


@dataclass(frozen=True, eq=False)  # arrays: compare the fields yourself
class Curve:
    """ROC/DET operating points, one per threshold, thresholds ascending.

    thresholds[0] lies just below every score (everything accepted: FAR 1, FRR 0); the last
    threshold is the highest score (nothing accepted: FAR 0, FRR 1).
    """

    thresholds: np.ndarray  # float64 (m,), ascending, unique
    far: np.ndarray  # float64 (m,), non-increasing
    frr: np.ndarray  # float64 (m,), non-decreasing
    n_genuine: int
    n_impostor: int

    @property
    def tpr(self) -> np.ndarray:
        """True accept rate, 1 - FRR."""
        return 1.0 - self.frr


def roc_det(genuine: Any, impostor: Any) -> Curve:
    """Exact ROC/DET curve: one point at every distinct score (ties give one point)."""
    gen = np.sort(_scores(genuine, "genuine"))
    imp = np.sort(_scores(impostor, "impostor"))
    uniq = np.unique(np.concatenate([gen, imp]))
    thresholds = np.concatenate([[np.nextafter(uniq[0], -np.inf)], uniq])
    # Counts by binary search on the sorted scores: exact with ties, O(m log n).
    far = (imp.size - np.searchsorted(imp, thresholds, side="right")) / imp.size
    frr = np.searchsorted(gen, thresholds, side="right") / gen.size
    return Curve(thresholds, far, frr, int(gen.size), int(imp.size))


def eer(genuine: Any, impostor: Any) -> tuple[float, float]:
    """Equal error rate and its threshold.

    The operating point where |FAR - FRR| is smallest (the higher threshold on a tie); the EER
    is (FAR + FRR) / 2 there. No interpolation: on small sets the rate stays a count ratio.
    """
    e, t, _, _ = eer_point(roc_det(genuine, impostor))
    return e, t


def eer_point(curve: Curve) -> tuple[float, float, float, float]:
    """(eer, threshold, far, frr) at the EER point of `curve` (the rule of `eer`)."""
    gap = np.abs(curve.far - curve.frr)
    k = int(np.flatnonzero(gap == gap.min())[-1])
    return (float((curve.far[k] + curve.frr[k]) / 2), float(curve.thresholds[k]),
            float(curve.far[k]), float(curve.frr[k]))


def _min_pairs(far: float) -> int:
    # round() first: 1/1e-3 is 1000.0000000000001 on some inputs, which must not ask for 1001.
    return math.ceil(round(1.0 / far, 9))


def _bound(conservative: bool | str) -> str:
    """False -> none; True or "far" -> far; "privacy" -> privacy."""
    if conservative in (False, None, "", "none"):
        return "none"
    if conservative is True or conservative == "far":
        return "far"
    if conservative == "privacy":
        return "privacy"
    raise InputError(f"bound must be 'privacy', 'far' or 'none' (conservative: False, True/'far' or 'privacy'), "
                     f"got {conservative!r}")


def bound_name(value: bool | str | None) -> str:
    """The one vocabulary of bounds (manifest, CLI, audit): 'privacy' | 'far' | 'none', from it or the old
    `conservative` spelling (False -> none, True -> far)."""
    return _bound(value)


def threshold_at_far(impostor: Any, far: float, *, conservative: bool | str = False) -> ThresholdAtFar:
    """The threshold at `far` on impostor scores, with its count above and its interval.

    With impostor scores sorted descending s[0] >= s[1] >= ..., allowing k accepted pairs gives
    t = s[k]: every score above it is one of the k, and any lower t accepts s[k] too.
    Plain: k is the largest with k / n <= far. Conservative: k is the largest whose
    Clopper-Pearson upper bound is <= far; when even k = 0 is above far (too few pairs), t is
    the highest impostor score and the entry is not supported. Privacy: k is the smallest whose
    lower bound is >= far, and ties at t are let through (t moves below them) so that at least
    k pairs lie above it.
    """
    imp = _scores(impostor, "impostor")
    far = float(far)
    if not 0.0 < far < 1.0:
        raise InputError(f"far must be in (0, 1), got {far}")
    n = imp.size
    bound = _bound(conservative)
    desc = np.sort(imp)[::-1]
    if bound == "privacy":
        k = privacy_count(n, far)
        k = n - 1 if k is None else min(k, n - 1)
        below = desc[desc < desc[k]]  # ties at s[k] would keep some of the k at or under t
        threshold = float(desc[k]) if np.count_nonzero(imp > desc[k]) >= k or below.size == 0 else float(below[0])
    else:
        k = conservative_count(n, far) if bound == "far" else largest_count_at_most(n, far)
        threshold = float(desc[min(k or 0, n - 1)])
    above = int(np.count_nonzero(imp > threshold))
    lo, hi = clopper_pearson(above, n)
    supported = above >= MIN_ABOVE or (hi <= far if bound != "privacy" else lo >= far)
    note = ""
    if not supported:
        need = _min_pairs(far)
        note = (f"not supported: {above} of {n} impostor pairs above it (needs {MIN_ABOVE}, or a 95% upper bound "
                f"<= {far:g}, which needs about {math.ceil(3.7 * need):,} pairs; has {hi:.3g})")
    return ThresholdAtFar(far, threshold, n, supported, above / n, note, above, lo, hi, bound != "none", bound)


def calibrate(
    embeddings_by_space: Mapping[str, Any],
    identities: Any,
    *,
    fars: Sequence[float] = DEFAULT_FARS,
    source: str = "",
    conservative: bool | str = False,
    subsets: Any = None,
) -> CalibrationReport:
    """Calibrate every space on the same labelled photos.

    Args:
        embeddings_by_space: space name -> (n, d) embeddings, rows in the order of `identities`.
        identities: (n,) identity labels.
        fars: target false-accept rates.
        source: free text recorded in the report (e.g. the labelled folder).
        conservative: False (point estimate), True or "far" (the 95% upper bound on each FAR is
            <= far) or "privacy" (the 95% lower bound is >= far; see the module docstring).
        subsets: (n,) data-set label of each row; only pairs inside one data set are scored.
    """
    ids = np.asarray(identities)
    if not embeddings_by_space:
        raise InputError("embeddings_by_space is empty")
    spaces, scores = {}, {}
    for name, emb in embeddings_by_space.items():
        gen, imp = pair_scores(emb, ids, subsets)
        if gen.size == 0 or imp.size == 0:
            raise InputError(
                f"space {name!r}: need genuine and impostor pairs, got {gen.size} and {imp.size} "
                "(every identity once, or only one identity?)"
            )
        e, e_t, e_far, e_frr = eer_point(roc_det(gen, imp))
        spaces[name] = SpaceCalibration(
            space=name, dim=int(np.shape(emb)[1]), n_genuine=int(gen.size), n_impostor=int(imp.size),
            eer=e, eer_threshold=e_t,
            thresholds=tuple(threshold_at_far(imp, f, conservative=conservative) for f in fars),
            genuine=ScoreStats.of(gen), impostor=ScoreStats.of(imp), eer_far=e_far, eer_frr=e_frr,
        )
        scores[name] = (gen, imp)
    return CalibrationReport(spaces=spaces, n_faces=int(ids.size), n_identities=int(np.unique(ids).size),
                             fars=tuple(float(f) for f in fars), source=source,
                             conservative=_bound(conservative) != "none", bound=_bound(conservative),
                             scores=scores)
