"""What anonymising a video did, track by track: the sidecar's values, and the audit that checks them.

Every frame of a track (first detection to last) is counted once, in one of three kinds:
swapped (detected, and the swap passed the result check), filled (not detected there: a gap,
filled from the track) or fallen_back (detected, and blurred because the swapped face was not
found again). `fallback_frames` lists every frame the fallback covered, gaps included.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, fields
from pathlib import Path

__all__ = ["VIDEO_SIDECAR_FORMAT", "TrackReport", "VideoAudit", "VideoReport", "video_audit"]

VIDEO_SIDECAR_FORMAT = "facebank.anonymize.video/1"  # bump when the sidecar's shape changes
TRACK_ACTIONS = ("swapped", "fallback", "kept", "missed")


@dataclass(frozen=True)
class TrackReport:
    """One person across the video and what was done to every frame of it."""

    id: int
    first: int  # frame index of the first and last detection
    last: int
    detected: int  # frames where the detector found this face
    action: str  # one of TRACK_ACTIONS: swapped (with its one target), fallback (the whole track blurred), ...
    target: dict | None = None  # the one target of the whole track: id, group, source vs target similarities
    swapped: tuple[int, ...] = ()  # frames: detected, swap passed
    filled: tuple[int, ...] = ()  # frames: gaps, filled from the track
    fallen_back: tuple[int, ...] = ()  # frames: detected, then blurred (swapped face not found again)
    fallback_frames: tuple[int, ...] = ()  # every frame the fallback covered (gaps included)
    failed_frames: tuple[int, ...] = ()  # frames whose fallback still matched (or fallback "none")
    check_failures: int = 0  # result checks failed, over every round (matches and faces not found again)
    replaced_targets: tuple[dict, ...] = ()  # targets dropped for the whole track: id, frame, why, similarities
    pooled: dict | None = None  # mean result embedding vs mean real embedding: similarities, thresholds, passed
    reason: str = ""

    @property
    def frames(self) -> int:
        return self.last - self.first + 1

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        for k, v in d.items():
            if isinstance(v, tuple):
                d[k] = list(v)
        counts = {"frames": self.frames, "swapped": len(self.swapped), "filled": len(self.filled),
                  "fallen_back": len(self.fallen_back), "fallback_frames": len(self.fallback_frames),
                  "failed": len(self.failed_frames), "check_failures": self.check_failures}
        return {"id": self.id, "counts": counts, **{k: v for k, v in d.items() if k != "id"}}

    @classmethod
    def from_dict(cls, d: dict) -> TrackReport:
        names = {f.name for f in fields(cls)}
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items() if k in names})


@dataclass(frozen=True)
class VideoReport:
    """One video: its tracks, the rounds it took, the time per stage, and the provenance."""

    frames: int
    tracks: tuple[TrackReport, ...]
    rounds: int  # renders of the whole video (1 when every track's first target passed everywhere)
    input: dict = field(default_factory=dict)  # VideoInfo of the input
    output: dict = field(default_factory=dict)  # size, rate and the fourcc written
    seconds: dict = field(default_factory=dict)  # stage -> seconds: decode, detect, track, pick, swap, check, encode
    provenance: dict = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return all(not t.failed_frames for t in self.tracks)

    def counts(self) -> dict:
        c = {"tracks": len(self.tracks), "frames": self.frames}
        for a in TRACK_ACTIONS:
            c[f"tracks_{a}"] = sum(t.action == a for t in self.tracks)
        for k in ("swapped", "filled", "fallen_back", "fallback_frames", "failed_frames"):
            c[f"track_frames_{k}"] = sum(len(getattr(t, k)) for t in self.tracks)
        c["check_failures"] = sum(t.check_failures for t in self.tracks)
        return c

    def to_dict(self) -> dict:
        return {"format": VIDEO_SIDECAR_FORMAT, "status": "ok" if self.passed else "failed", "frames": self.frames,
                "rounds": self.rounds, "input_video": self.input, "output_video": self.output,
                "seconds": {k: round(v, 3) for k, v in self.seconds.items()}, **self.provenance,
                "counts": self.counts(), "tracks": [t.to_dict() for t in self.tracks]}

    @classmethod
    def from_dict(cls, d: dict) -> VideoReport:
        keys = {"format", "status", "frames", "rounds", "input_video", "output_video", "seconds", "counts", "tracks"}
        return cls(d["frames"], tuple(TrackReport.from_dict(t) for t in d["tracks"]), d["rounds"], d["input_video"],
                   d["output_video"], d["seconds"], {k: v for k, v in d.items() if k not in keys})


@dataclass(frozen=True)
class VideoAudit:
    """The sidecar checked against itself: per track figures, and what does not add up."""

    tracks: tuple[dict, ...]  # id, frames, swapped, filled, fallen_back, check_failures, pooled_passed, target
    problems: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.problems


def video_audit(report: VideoReport | dict | str | os.PathLike) -> VideoAudit:
    """Check a video report (or its sidecar): every frame of every handled track swapped, filled or
    fallen back exactly once, no frame failed, and each swapped track's pooled result beyond the threshold."""
    if isinstance(report, (str, os.PathLike)):
        report = json.loads(Path(report).read_text())
    if isinstance(report, dict):
        if report.get("format") != VIDEO_SIDECAR_FORMAT:
            return VideoAudit((), (f"not a {VIDEO_SIDECAR_FORMAT} sidecar: format {report.get('format')!r}",))
        report = VideoReport.from_dict(report)
    rows, problems = [], []
    for t in report.tracks:
        kinds = [*t.swapped, *t.filled, *t.fallen_back]
        pooled_ok = None if t.pooled is None else bool(t.pooled.get("passed"))
        rows.append({"id": t.id, "action": t.action, "frames": t.frames, "swapped": len(t.swapped),
                     "filled": len(t.filled), "fallen_back": len(t.fallen_back),
                     "fallback_frames": len(t.fallback_frames), "check_failures": t.check_failures,
                     "pooled_passed": pooled_ok, "target": None if t.target is None else t.target.get("id")})
        if t.action in ("kept", "missed"):
            continue
        if sorted(kinds) != list(range(t.first, t.last + 1)):
            problems.append(f"track {t.id}: frames {t.first}..{t.last} are not each swapped, filled or fallen "
                            f"back once ({len(kinds)} entries for {t.frames} frames)")
        if t.failed_frames:
            problems.append(f"track {t.id}: {len(t.failed_frames)} frame(s) still match the real face")
        if t.action == "swapped" and t.swapped and not pooled_ok:
            problems.append(f"track {t.id}: the pooled result is not beyond the threshold in every space")
    return VideoAudit(tuple(rows), tuple(problems))
