"""Threshold calibration against identity-labelled real faces.

Conventions (the same as the picker's): a score is the cosine similarity of two embeddings; a
recogniser *accepts* a pair (says "same person") when `score > t`; facebank calls a target
dissimilar enough when `score <= t`. Hence, at threshold t:

    FAR(t) = #{impostor > t} / n_impostor      (different people wrongly accepted)
    FRR(t) = #{genuine <= t} / n_genuine       (same person wrongly rejected)

A FAR figure is *supported* only when n_impostor >= ceil(1/far): with fewer pairs a single
false accept is already a rate above `far`, so the figure says nothing about it.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from facebank._io.files import atomic_write_text
from facebank.errors import InputError

__all__ = [
    "FORMAT_VERSION",
    "CalibrationReport",
    "Curve",
    "ScoreStats",
    "SpaceCalibration",
    "ThresholdAtFar",
    "calibrate",
    "eer",
    "pair_scores",
    "roc_det",
    "threshold_at_far",
    "thresholds_from_report",
]

FORMAT_VERSION = 1
_KIND = "facebank.calibration"
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


def pair_scores(embeddings: Any, identities: Any) -> tuple[np.ndarray, np.ndarray]:
    """Cosine scores of all unordered pairs i < j, split by identity.

    Args:
        embeddings: (n, d) float, one row per photo; normalised here (a copy), so unit rows
            are not required.
        identities: (n,) labels of any hashable dtype; equal labels = same person.
    Returns:
        (genuine, impostor): float64 1-d arrays, pairs in row-major (i, j) order.
    """
    x = _unit_rows(embeddings, "embeddings")
    ids = np.asarray(identities)
    if ids.shape != (x.shape[0],):
        raise InputError(f"identities must have shape ({x.shape[0]},), got {ids.shape}")
    i, j = np.triu_indices(x.shape[0], k=1)
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
    curve = roc_det(genuine, impostor)
    gap = np.abs(curve.far - curve.frr)
    k = int(np.flatnonzero(gap == gap.min())[-1])
    return float((curve.far[k] + curve.frr[k]) / 2), float(curve.thresholds[k])


@dataclass(frozen=True)
class ThresholdAtFar:
    """The threshold at a target false-accept rate, and whether the data can support it."""

    far: float  # the target rate
    threshold: float  # smallest t with #{impostor > t} / n <= far
    n_impostor_pairs: int
    supported: bool  # n_impostor_pairs >= ceil(1 / far)
    achieved_far: float  # #{impostor > threshold} / n, <= far
    note: str = ""


def _min_pairs(far: float) -> int:
    # round() first: 1/1e-3 is 1000.0000000000001 on some inputs, which must not ask for 1001.
    return math.ceil(round(1.0 / far, 9))


def threshold_at_far(impostor: Any, far: float) -> ThresholdAtFar:
    """Smallest threshold at which the impostor acceptance rate (score > t) is at most `far`.

    With impostor scores sorted descending s[0] >= s[1] >= ..., k = floor(far * n) impostors may
    be accepted, so t = s[k]: every score above it is one of the k, and any lower t accepts s[k]
    too. When far * n < 1 this is the highest impostor score (achieved FAR 0).
    """
    imp = _scores(impostor, "impostor")
    far = float(far)
    if not 0.0 < far < 1.0:
        raise InputError(f"far must be in (0, 1), got {far}")
    n = imp.size
    k = int(math.floor(far * n))
    # Make k the largest count with k / n <= far exactly as achieved_far is computed below.
    while (k + 1) / n <= far:
        k += 1
    while k > 0 and k / n > far:
        k -= 1
    desc = np.sort(imp)[::-1]
    threshold = float(desc[min(k, n - 1)])
    achieved = float(np.count_nonzero(imp > threshold) / n)
    need = _min_pairs(far)
    supported = n >= need
    note = ""
    if not supported:
        note = (
            f"not supported: {n} impostor pairs, FAR {far:g} needs at least {need} "
            f"(one false accept is already a rate of {1 / n:.3g})"
        )
    return ThresholdAtFar(far, threshold, n, supported, achieved, note)


@dataclass(frozen=True)
class ScoreStats:
    """Summary of one score distribution."""

    n: int
    mean: float
    std: float
    min: float
    p01: float  # 1st percentile
    median: float
    p99: float  # 99th percentile
    max: float

    @classmethod
    def of(cls, scores: np.ndarray) -> "ScoreStats":
        p01, med, p99 = np.percentile(scores, [1, 50, 99])
        return cls(int(scores.size), float(scores.mean()), float(scores.std()), float(scores.min()),
                   float(p01), float(med), float(p99), float(scores.max()))


@dataclass(frozen=True)
class SpaceCalibration:
    """Calibration of one identity space."""

    space: str
    dim: int
    n_genuine: int
    n_impostor: int
    eer: float
    eer_threshold: float
    thresholds: tuple[ThresholdAtFar, ...]
    genuine: ScoreStats
    impostor: ScoreStats

    def at_far(self, far: float) -> ThresholdAtFar | None:
        """The entry for `far` (compared with a relative tolerance of 1e-9), or None."""
        for t in self.thresholds:
            if math.isclose(t.far, far, rel_tol=1e-9):
                return t
        return None


@dataclass(frozen=True)
class CalibrationReport:
    """Per-space calibration; `to_json`/`from_json` give the versioned document
    (`format_version: 1`) that `thresholds_from_report` reads."""

    spaces: Mapping[str, SpaceCalibration]
    n_faces: int
    n_identities: int
    fars: tuple[float, ...]
    source: str = ""  # free text: which labelled data this came from
    format_version: int = FORMAT_VERSION
    # The raw scores, for plots and CSVs; not part of the JSON document.
    scores: Mapping[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict, repr=False, compare=False)

    def rows(self) -> list[dict[str, Any]]:
        """One table row per (space, far), for CSV."""
        out = []
        for s in self.spaces.values():
            for t in s.thresholds:
                out.append({
                    "space": s.space, "far": t.far, "threshold": t.threshold,
                    "n_impostor_pairs": t.n_impostor_pairs, "supported": t.supported,
                    "achieved_far": t.achieved_far, "n_genuine_pairs": s.n_genuine,
                    "eer": s.eer, "eer_threshold": s.eer_threshold, "note": t.note,
                })
        return out

    def to_json(self) -> str:
        doc = {
            "kind": _KIND,
            "format_version": self.format_version,
            "writer": _writer(),
            "source": self.source,
            "n_faces": self.n_faces,
            "n_identities": self.n_identities,
            "fars": list(self.fars),
            "spaces": {
                name: {
                    "dim": s.dim, "n_genuine": s.n_genuine, "n_impostor": s.n_impostor,
                    "eer": s.eer, "eer_threshold": s.eer_threshold,
                    "thresholds": [t.__dict__ for t in s.thresholds],
                    "genuine": s.genuine.__dict__, "impostor": s.impostor.__dict__,
                }
                for name, s in self.spaces.items()
            },
        }
        return json.dumps(doc, indent=1) + "\n"

    def save(self, path: str | os.PathLike) -> Path:
        """Write `to_json()` to `path` atomically."""
        return atomic_write_text(path, self.to_json())

    @classmethod
    def from_json(cls, text: str) -> "CalibrationReport":
        """Parse a document written by `to_json`; refuses other kinds and format versions."""
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(f"calibration report is not valid JSON: {exc}") from exc
        if not isinstance(doc, dict) or doc.get("kind") != _KIND:
            raise InputError("not a facebank calibration report (missing kind 'facebank.calibration')")
        if doc.get("format_version") != FORMAT_VERSION:
            raise InputError(
                f"calibration report format_version {doc.get('format_version')!r} is not supported "
                f"(this facebank reads {FORMAT_VERSION})"
            )
        try:
            spaces = {
                name: SpaceCalibration(
                    space=name, dim=int(s["dim"]), n_genuine=int(s["n_genuine"]),
                    n_impostor=int(s["n_impostor"]), eer=float(s["eer"]),
                    eer_threshold=float(s["eer_threshold"]),
                    thresholds=tuple(ThresholdAtFar(**t) for t in s["thresholds"]),
                    genuine=ScoreStats(**s["genuine"]), impostor=ScoreStats(**s["impostor"]),
                )
                for name, s in doc["spaces"].items()
            }
            return cls(spaces=spaces, n_faces=int(doc["n_faces"]), n_identities=int(doc["n_identities"]),
                       fars=tuple(float(f) for f in doc["fars"]), source=str(doc.get("source", "")))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise InputError(f"calibration report is malformed: {exc!r}") from exc

    @classmethod
    def load(cls, path: str | os.PathLike) -> "CalibrationReport":
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise InputError(f"cannot read calibration report {path}: {exc}") from exc
        return cls.from_json(text)


def _writer() -> dict[str, str]:
    try:
        from importlib.metadata import version

        v = version("facebank")
    except Exception:  # not installed as a distribution (e.g. run from a checkout)
        v = "unknown"
    return {"library": "facebank", "version": v}


def calibrate(
    embeddings_by_space: Mapping[str, Any],
    identities: Any,
    *,
    fars: Sequence[float] = DEFAULT_FARS,
    source: str = "",
) -> CalibrationReport:
    """Calibrate every space on the same labelled photos.

    Args:
        embeddings_by_space: space name -> (n, d) embeddings, rows in the order of `identities`.
        identities: (n,) identity labels.
        fars: target false-accept rates.
        source: free text recorded in the report (e.g. the labelled folder).
    """
    ids = np.asarray(identities)
    if not embeddings_by_space:
        raise InputError("embeddings_by_space is empty")
    spaces, scores = {}, {}
    for name, emb in embeddings_by_space.items():
        gen, imp = pair_scores(emb, ids)
        if gen.size == 0 or imp.size == 0:
            raise InputError(
                f"space {name!r}: need genuine and impostor pairs, got {gen.size} and {imp.size} "
                "(every identity once, or only one identity?)"
            )
        e, e_t = eer(gen, imp)
        spaces[name] = SpaceCalibration(
            space=name, dim=int(np.shape(emb)[1]), n_genuine=int(gen.size), n_impostor=int(imp.size),
            eer=e, eer_threshold=e_t, thresholds=tuple(threshold_at_far(imp, f) for f in fars),
            genuine=ScoreStats.of(gen), impostor=ScoreStats.of(imp),
        )
        scores[name] = (gen, imp)
    return CalibrationReport(spaces=spaces, n_faces=int(ids.size), n_identities=int(np.unique(ids).size),
                             fars=tuple(float(f) for f in fars), source=source, scores=scores)


def thresholds_from_report(path: str | os.PathLike, far: float) -> dict[str, float]:
    """space -> threshold at `far` from a saved report, for `facebank index build --threshold-from`.

    Raises InputError when the report lacks `far` for a space, or when the figure is not
    supported by its number of impostor pairs.
    """
    report = CalibrationReport.load(path)
    out = {}
    for name, space in report.spaces.items():
        entry = space.at_far(far)
        if entry is None:
            have = ", ".join(f"{t.far:g}" for t in space.thresholds) or "none"
            raise InputError(f"calibration report {path} has no threshold at FAR {far:g} for space {name!r} (has: {have})")
        if not entry.supported:
            raise InputError(f"calibration report {path}, space {name!r}: threshold at FAR {far:g} is {entry.note}")
        out[name] = entry.threshold
    return out
