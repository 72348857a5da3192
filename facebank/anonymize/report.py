"""What anonymising a photo did, face by face: the values the sidecar and the counts are made of."""

from __future__ import annotations

from dataclasses import dataclass, field, fields

__all__ = ["ACTIONS", "SIDECAR_FORMAT", "Attempt", "FaceReport", "PhotoReport", "ResultCheck", "RunCounts"]

SIDECAR_FORMAT = "facebank.anonymize/1"  # bump when the sidecar's shape changes

# What happened to a face: swapped (a swap passed the check), fallback (blurred or pixelated and
# no longer matching), kept (consent), missed (smaller than min_face: left as it is), failed (left
# as it is, or still matching after the fallback: the photo fails).
ACTIONS = ("swapped", "fallback", "kept", "missed", "failed")


def _r(x: float | None, nd: int = 4) -> float | None:
    return None if x is None else round(float(x), nd)


@dataclass(frozen=True)
class ResultCheck:
    """The swapped face re-detected in the result and compared with the real face in every space."""

    redetected: bool
    similarities: dict[str, float]  # space -> cosine(result face, real face); {} when not re-detected
    thresholds: dict[str, float]  # space -> the result threshold
    passed: bool  # every similarity <= its threshold (a swap also needs the face re-detected)
    age: float | None = None  # the result face's estimated age and gender (reported, not enforced)
    gender: str | None = None
    box: list[float] | None = None  # where the face was re-detected

    def to_dict(self) -> dict:
        return {"redetected": self.redetected, "passed": self.passed,
                "similarities": {s: _r(v) for s, v in self.similarities.items()},
                "thresholds": {s: _r(v, 6) for s, v in self.thresholds.items()},
                "age": _r(self.age, 1), "gender": self.gender, "box": self.box}


@dataclass(frozen=True)
class Attempt:
    """One swap with one target, and its check."""

    target: dict  # facebank.pick.targets.Target.to_dict(): id, group, similarities (source vs target), ...
    check: ResultCheck | None  # None when the swapper itself failed
    error: str | None = None
    group_match: bool | None = None  # the result's age group and gender are the target's group

    def to_dict(self) -> dict:
        t = self.target
        return {"target": {"id": t["id"], "source_id": t["source_id"], "group": t["group"],
                           "requested_group": t["requested_group"], "pick_fallback": t["fallback"], "mode": t["mode"],
                           "age": _r(t["age"], 1), "gender": t["gender"],
                           "source_vs_target": {s: _r(v) for s, v in t["similarities"].items()},
                           "pick_thresholds": {s: _r(v, 6) for s, v in t["thresholds"].items()}},
                "check": None if self.check is None else self.check.to_dict(),
                "result_group_match": self.group_match, "error": self.error}


@dataclass(frozen=True)
class FaceReport:
    """One real face of the photo and what was done to it."""

    index: int  # in the detector's order
    face: dict  # PhotoFace.to_dict(): box, landmarks, age, gender, detector score
    action: str  # one of ACTIONS
    swapper: str | None = None
    attempts: tuple[Attempt, ...] = ()
    fallback: str | None = None  # the fallback's name when it was applied
    fallback_check: ResultCheck | None = None
    kept: dict | None = None  # consent: which kept person matched, and how closely
    reason: str = ""
    recheck: dict | None = None  # space -> the highest similarity to the real face in the whole finished photo

    @property
    def passed_at(self) -> int | None:
        """1-based try at which a swap passed, None when none did."""
        for n, a in enumerate(self.attempts, 1):
            if a.check is not None and a.check.passed:
                return n
        return None

    def to_dict(self) -> dict:
        last = self.attempts[self.passed_at - 1] if self.passed_at else None
        return {"index": self.index, **self.face, "action": self.action, "swapper": self.swapper,
                "tries": len(self.attempts), "passed_at_try": self.passed_at,
                "target": None if last is None else last.to_dict()["target"],
                "check": None if last is None else last.check.to_dict(),
                "attempts": [a.to_dict() for a in self.attempts], "fallback": self.fallback,
                "fallback_check": None if self.fallback_check is None else self.fallback_check.to_dict(),
                "kept": self.kept, "recheck": self.recheck, "reason": self.reason}


@dataclass
class RunCounts:
    """Per run (and per photo): faces by outcome; faces_found is the sum of the five outcomes."""

    photos: int = 0  # photos written in this run
    photos_skipped: int = 0  # complete from an earlier run
    photos_failed: int = 0  # a face left matching (fallback none) or an unreadable photo
    faces_found: int = 0
    passed_first_try: int = 0
    passed_after_retries: int = 0
    fallen_back: int = 0
    kept: int = 0
    missed: int = 0
    failed: int = 0

    def add(self, other: RunCounts) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def of_faces(cls, faces: list[FaceReport]) -> RunCounts:
        c = cls(faces_found=len(faces))
        for f in faces:
            if f.action == "swapped":
                if f.passed_at == 1:
                    c.passed_first_try += 1
                else:
                    c.passed_after_retries += 1
            elif f.action == "fallback":
                c.fallen_back += 1
            elif f.action == "kept":
                c.kept += 1
            elif f.action == "missed":
                c.missed += 1
            else:
                c.failed += 1
        return c


@dataclass(frozen=True)
class PhotoReport:
    """One photo: its faces, whether it passed, and the provenance the sidecar records."""

    faces: tuple[FaceReport, ...]
    provenance: dict = field(default_factory=dict)  # build id, bank content hash, key, thresholds, options

    @property
    def passed(self) -> bool:
        return all(f.action != "failed" for f in self.faces)

    @property
    def counts(self) -> RunCounts:
        return RunCounts.of_faces(list(self.faces))

    def to_dict(self) -> dict:
        return {"format": SIDECAR_FORMAT, "status": "ok" if self.passed else "failed", **self.provenance,
                "counts": {k: v for k, v in self.counts.to_dict().items() if not k.startswith("photos")},
                "faces": [f.to_dict() for f in self.faces]}
