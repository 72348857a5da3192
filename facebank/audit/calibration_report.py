"""The calibration report: thresholds at each FAR with their intervals, per space, and the
versioned JSON document (`kind: facebank.calibration`) that `index build --threshold-from` reads.

The measurements themselves are made in `facebank.audit.calibration` (its docstring gives the
conventions: a recogniser accepts when score > t; the two conservative bounds; "supported").
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from facebank._io.files import atomic_write_text
from facebank.errors import InputError

__all__ = [
    "FORMAT_VERSION",
    "CalibrationReport",
    "ScoreStats",
    "SpaceCalibration",
    "ThresholdAtFar",
    "thresholds_from_report",
]

FORMAT_VERSION = 2  # 2: counts above, intervals, conservative choice, EER resolution
_KIND = "facebank.calibration"


@dataclass(frozen=True)
class ThresholdAtFar:
    """The threshold at a target false-accept rate, how many impostor pairs lie above it, and
    the 95% Clopper-Pearson interval on the rate it achieves."""

    far: float  # the target rate
    threshold: float  # an impostor score; pairs scoring above it are accepted
    n_impostor_pairs: int
    supported: bool  # n_above >= 30, or ci_high <= far (module docstring)
    achieved_far: float  # n_above / n_impostor_pairs
    note: str = ""
    n_above: int = 0  # impostor pairs scoring > threshold
    ci_low: float = 0.0  # 95% Clopper-Pearson interval on achieved_far
    ci_high: float = 1.0
    conservative: bool = False  # chosen with a 95% bound (see `bound`), not the point estimate
    bound: str = "none"  # none | far (ci_high <= far) | privacy (ci_low >= far)


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
    eer_far: float = float("nan")  # the two rates at the EER point
    eer_frr: float = float("nan")

    @property
    def eer_resolution(self) -> tuple[float, float]:
        """(1 / n_genuine, 1 / n_impostor): the smallest non-zero FRR and FAR the pairs can show."""
        return 1.0 / self.n_genuine, 1.0 / self.n_impostor

    @property
    def eer_resolved(self) -> bool:
        """False when the EER lies below 1 / n_genuine: the genuine pairs cannot measure it."""
        return self.eer >= 1.0 / self.n_genuine

    @property
    def eer_text(self) -> str:
        if self.eer_resolved:
            return f"EER {self.eer:.3%} (resolution {1 / self.n_genuine:.3%} genuine, {1 / self.n_impostor:.2g} impostor)"
        return (f"EER below {1 / self.n_genuine:.3%}, the genuine pairs' resolution (1/{self.n_genuine:,}; "
                f"computed {self.eer:.3%}, not resolved)")

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
    conservative: bool = False  # thresholds chosen with a 95% bound, not the point estimate
    bound: str = "none"  # none | far (upper bound <= far) | privacy (lower bound >= far)
    data: tuple = ()  # per labelled set: folder, files, identities, sha256, faces used (facebank.audit.api)
    format_version: int = FORMAT_VERSION
    # The raw scores, for plots and CSVs; not part of the JSON document.
    scores: Mapping[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict, repr=False, compare=False)

    def rows(self) -> list[dict[str, Any]]:
        """One table row per (space, far), for CSV."""
        out = []
        for s in self.spaces.values():
            for t in s.thresholds:
                out.append({
                    "space": s.space, "far": t.far, "threshold": t.threshold, "conservative": t.conservative,
                    "bound": t.bound, "n_impostor_pairs": t.n_impostor_pairs, "n_above": t.n_above, "achieved_far": t.achieved_far,
                    "ci95_low": t.ci_low, "ci95_high": t.ci_high, "supported": t.supported,
                    "n_genuine_pairs": s.n_genuine, "eer": s.eer, "eer_threshold": s.eer_threshold,
                    "eer_resolved": s.eer_resolved, "note": t.note,
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
            "conservative": self.conservative,
            "bound": self.bound,
            "data": list(self.data),
            "interval": "Clopper-Pearson, two-sided 95%, over impostor pairs",
            "spaces": {
                name: {
                    "dim": s.dim, "n_genuine": s.n_genuine, "n_impostor": s.n_impostor,
                    "eer": s.eer, "eer_threshold": s.eer_threshold, "eer_far": s.eer_far, "eer_frr": s.eer_frr,
                    "eer_resolution": list(s.eer_resolution), "eer_resolved": s.eer_resolved,
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
                    eer_far=float(s["eer_far"]), eer_frr=float(s["eer_frr"]),
                )
                for name, s in doc["spaces"].items()
            }
            return cls(spaces=spaces, n_faces=int(doc["n_faces"]), n_identities=int(doc["n_identities"]),
                       fars=tuple(float(f) for f in doc["fars"]), source=str(doc.get("source", "")),
                       conservative=bool(doc.get("conservative", False)),
                       bound=str(doc.get("bound", "far" if doc.get("conservative") else "none")),
                       data=tuple(doc.get("data", ())))
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
