"""Faces linked across frames into tracks: one track per person, so one target per person.

The tracker is online and small (no library of this kind installs cleanly with our pins): each
frame's detections are assigned to the open tracks by the Hungarian method
(scipy.optimize.linear_sum_assignment) on the cost

    (1 - IoU(predicted box, detection box)) + d,   d = mean over spaces of (1 - cos) / (1 - t_space)

where the predicted box moves the track's last box at its last velocity, cos compares the
detection's embedding with the track's last one, and t_space is the build's threshold (d is 1
exactly at "same person" for the build). A pair may link when the boxes overlap (IoU >= min_iou)
and d <= max_distance, or, whatever the boxes, when d <= 1 (the build itself says "same person":
a face that moved far during a gap). A detection that links to no track starts one; a track not
seen for more than max_gap frames ends, and the frames it missed in between are its gaps, filled
from its neighbouring detections (box and landmarks interpolated).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from facebank.anonymize.check import iou
from facebank.errors import InputError
from facebank.pick.analyse import PhotoFace

__all__ = ["Track", "Tracker", "TrackerOptions"]

_BLOCKED = 1e6  # the cost of a pair that may not link


@dataclass(frozen=True)
class TrackerOptions:
    max_gap: int = 15  # frames a track may go undetected and continue (0.5 s at 30 fps)
    min_iou: float = 0.1  # boxes overlapping this much may link on a looser embedding distance
    max_distance: float = 2.0  # d allowed with overlapping boxes (1.0: the build's "same person")

    def check(self) -> TrackerOptions:
        if isinstance(self.max_gap, bool) or not isinstance(self.max_gap, int) or not 0 <= self.max_gap <= 10_000:
            raise InputError(f"max_gap must be an integer number of frames in 0..10000, got {self.max_gap!r}")
        if not 0.0 < float(self.min_iou) <= 1.0:
            raise InputError(f"min_iou must be in (0, 1], got {self.min_iou}")
        if not 0.0 < float(self.max_distance) <= 10.0:
            raise InputError(f"max_distance must be in (0, 10], got {self.max_distance}")
        return self


def _unit(v) -> np.ndarray:
    v = np.asarray(v, np.float64)
    return v / max(float(np.linalg.norm(v)), 1e-12)


@dataclass
class Track:
    """One person across frames: the detections by frame, and the frames between them it missed."""

    id: int  # 0, 1, ... in order of birth
    faces: dict[int, PhotoFace] = field(default_factory=dict)  # frame -> the face detected there

    @property
    def first(self) -> int:
        return min(self.faces)

    @property
    def last(self) -> int:
        return max(self.faces)

    def frames(self) -> range:
        return range(self.first, self.last + 1)

    def gaps(self) -> list[int]:
        return [t for t in self.frames() if t not in self.faces]

    def mean_embeddings(self) -> dict[str, np.ndarray]:
        """Space -> the unit mean of the track's unit embeddings: the person's face, pooled."""
        spaces = next(iter(self.faces.values())).embeddings
        return {s: _unit(np.mean([_unit(f.embeddings[s]) for f in self.faces.values()], axis=0)) for s in spaces}

    def representative(self, pooled: Mapping[str, np.ndarray] | None = None) -> PhotoFace:
        """The track as one face for the picker: pooled embeddings, median age, the most frequent gender,
        at its first detection's box."""
        faces = list(self.faces.values())
        genders = [f.gender for f in faces]
        return PhotoFace(box=list(faces[0].box), age=float(np.median([f.age for f in faces])),
                         gender=max(sorted(set(genders)), key=genders.count),
                         embeddings=dict(pooled if pooled is not None else self.mean_embeddings()),
                         landmarks=list(faces[0].landmarks))

    def face_at(self, t: int, pooled: Mapping[str, np.ndarray] | None = None) -> PhotoFace:
        """The face at frame t: the detection, or in a gap the box and landmarks interpolated between
        the detections either side, with the track's pooled embeddings (`pooled`, else computed)."""
        if t in self.faces:
            return self.faces[t]
        if not self.first < t < self.last:
            raise InputError(f"frame {t} is outside track {self.id} ({self.first}..{self.last})")
        before = max(k for k in self.faces if k < t)
        after = min(k for k in self.faces if k > t)
        a, b = self.faces[before], self.faces[after]
        w = (t - before) / (after - before)

        def mix(x, y):
            return np.round((1 - w) * np.asarray(x, float) + w * np.asarray(y, float), 1).tolist()

        near = a if w <= 0.5 else b
        return PhotoFace(box=mix(a.box, b.box), age=near.age, gender=near.gender,
                         embeddings=dict(pooled if pooled is not None else self.mean_embeddings()),
                         landmarks=mix(a.landmarks, b.landmarks) if a.landmarks and b.landmarks else [],
                         score=float("nan"))


class Tracker:
    """Feed it each frame's faces in order (`update`); `tracks()` gives the tracks, ids by birth."""

    def __init__(self, thresholds: Mapping[str, float], options: TrackerOptions = TrackerOptions()):
        self.options = options.check()
        self.thresholds = dict(thresholds)
        self._tracks: list[Track] = []
        self._open: list[Track] = []

    def _distance(self, a: PhotoFace, b: PhotoFace) -> float:
        ds = [(1.0 - float(_unit(a.embeddings[s]) @ _unit(b.embeddings[s]))) / max(1.0 - t, 1e-6)
              for s, t in self.thresholds.items()]
        return float(np.mean(ds))

    @staticmethod
    def _predicted(track: Track, t: int) -> list[float]:
        """The last box moved on at the track's last velocity (per frame) to frame t."""
        seen = sorted(track.faces)
        last = np.asarray(track.faces[seen[-1]].box, float)
        if len(seen) < 2:
            return last.tolist()
        prev = np.asarray(track.faces[seen[-2]].box, float)
        v = (last - prev) / (seen[-1] - seen[-2])
        return (last + v * (t - seen[-1])).tolist()

    def _cost(self, t: int, faces: Sequence[PhotoFace]) -> np.ndarray:
        o = self.options
        cost = np.full((len(self._open), len(faces)), _BLOCKED)
        for i, tr in enumerate(self._open):
            box = self._predicted(tr, t)
            ref = tr.faces[tr.last]
            for j, f in enumerate(faces):
                ov, d = iou(box, f.box), self._distance(ref, f)
                if (ov >= o.min_iou and d <= o.max_distance) or d <= 1.0:
                    cost[i, j] = (1.0 - ov) + d
        return cost

    def update(self, t: int, faces: Sequence[PhotoFace]) -> list[int]:
        """Link frame t's faces; returns the track id of each face, in the order given."""
        from scipy.optimize import linear_sum_assignment

        self._open = [tr for tr in self._open if t - tr.last <= self.options.max_gap + 1]
        ids = [-1] * len(faces)
        if self._open and faces:
            cost = self._cost(t, faces)
            for i, j in zip(*linear_sum_assignment(cost)):
                if cost[i, j] < _BLOCKED:
                    self._open[i].faces[t] = faces[j]
                    ids[j] = self._open[i].id
        for j, f in enumerate(faces):
            if ids[j] < 0:
                tr = Track(len(self._tracks), {t: f})
                self._tracks.append(tr)
                self._open.append(tr)
                ids[j] = tr.id
        return ids

    def tracks(self) -> list[Track]:
        return list(self._tracks)
