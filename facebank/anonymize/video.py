"""Videos: one synthetic identity per tracked person, and no frame left showing a real face.

Two passes over the file:

1. **Detect and track.** Every frame is decoded and analysed (faces, embeddings, age, gender)
   and the faces are linked into tracks (`tracks.Tracker`). Each track then gets ONE target,
   picked for the track's pooled face (mean embedding, median age) and keyed by (video key,
   track id), so a person keeps one synthetic identity and a re-run picks the same one.
2. **Render and check** (a *round*). The video is decoded again; in every frame each track's face
   is swapped with the track's target (at the detected face, or in a gap at the box and landmarks
   interpolated from the detections either side) and the result is checked on that frame. A
   swap that still matches the real face condemns the target for the whole track: the track
   takes its next target (or, after `tries` targets, the fallback blur for every frame), the
   rest of the round carries on checking, and the round is rendered again from the start, so
   earlier frames never keep the dropped identity. A swapped face that is not found again is a
   fault of that frame alone: that frame is blurred. Only a round in which nothing was dropped
   is encoded to the output (through a temporary file renamed at the end).

A track whose pooled result (the mean of its swapped faces' embeddings) is not beyond the
result threshold of the pooled real face in every space is dropped the same way, since an
observer can pool frames too.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from facebank.anonymize.check import check_result, cosine
from facebank.anonymize.options import AnonymizeOptions
from facebank.anonymize.photo import Anonymizer, _validate
from facebank.anonymize.tracks import Track, Tracker, TrackerOptions
from facebank.anonymize.video_io import VideoOut, probe, read_frames
from facebank.anonymize.video_report import TrackReport, VideoReport
from facebank.errors import FacebankError, InputError, NoEligibleTarget
from facebank.pick.session import FaceBank
from facebank.progress import Progress, ProgressEvent

__all__ = ["FILLS", "VideoAnonymizer", "VideoOptions"]

FILLS = ("swap", "fallback")
STAGES = ("decode", "detect", "track", "pick", "swap", "check", "encode")


@dataclass(frozen=True)
class VideoOptions:
    """How a video is tracked and how its gaps are filled (the per-face choices are AnonymizeOptions').

    max_gap: frames a track may go undetected and continue; its gaps are filled.
    fill: "swap" (the track's target at the interpolated face, checked; blurred if it matches)
        or "fallback" (the fallback over the interpolated box).
    """

    max_gap: int = 15
    fill: str = "swap"
    min_iou: float = 0.1

    def check(self) -> VideoOptions:
        if self.fill not in FILLS:
            raise InputError(f"fill must be one of {', '.join(FILLS)}, got {self.fill!r}")
        self.tracker()
        return self

    def tracker(self) -> TrackerOptions:
        return TrackerOptions(max_gap=self.max_gap, min_iou=self.min_iou).check()


class _Clock:
    """Seconds per stage."""

    def __init__(self):
        self.seconds = dict.fromkeys(STAGES, 0.0)

    @contextmanager
    def __call__(self, stage: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] += time.perf_counter() - t0

    def frames(self, path) -> Iterator[np.ndarray]:
        it = read_frames(path)
        while True:
            with self("decode"):
                frame = next(it, None)
            if frame is None:
                return
            yield frame


class _TrackState:
    """A track during the rounds: its target, the targets dropped, and this round's frame lists."""

    def __init__(self, track: Track, action: str, reason: str = ""):
        self.track, self.action, self.reason = track, action, reason
        self.pooled_real = track.mean_embeddings()
        self.target = None
        self.tried: set[str] = set()
        self.replaced: list[dict] = []
        self.check_failures = 0
        self.reset()

    def reset(self) -> None:
        self.dropped_now = False
        self.lists: dict[str, list[int]] = {k: [] for k in ("swapped", "filled", "fallen_back", "fallback_frames",
                                                            "failed_frames")}
        self.result_sum: dict[str, np.ndarray] = {}
        self.result_n = 0

    def add_result(self, face) -> None:
        for s, v in face.embeddings.items():
            u = np.asarray(v, np.float64) / max(float(np.linalg.norm(v)), 1e-12)
            self.result_sum[s] = self.result_sum.get(s, 0) + u
        self.result_n += 1

    def pooled(self, thresholds: dict[str, float]) -> dict | None:
        if not self.result_n:
            return None
        sims = {s: cosine(self.result_sum[s], self.pooled_real[s]) for s in thresholds}
        return {"frames": self.result_n, "similarities": {s: round(v, 4) for s, v in sims.items()},
                "thresholds": {s: round(t, 6) for s, t in thresholds.items()},
                "passed": all(sims[s] <= t for s, t in thresholds.items())}

    def report(self, thresholds: dict[str, float]) -> TrackReport:
        tr = self.track
        return TrackReport(tr.id, tr.first, tr.last, len(tr.faces), self.action,
                           None if self.target is None else _target_summary(self.target),
                           check_failures=self.check_failures, replaced_targets=tuple(self.replaced),
                           pooled=self.pooled(thresholds), reason=self.reason,
                           **{k: tuple(v) for k, v in self.lists.items()})


def _target_summary(target) -> dict:
    t = target.to_dict()
    return {"id": t["id"], "source_id": t["source_id"], "group": t["group"], "requested_group": t["requested_group"],
            "pick_fallback": t["fallback"], "mode": t["mode"],
            "source_vs_target": {s: round(float(v), 4) for s, v in t["similarities"].items()}}


class VideoAnonymizer:
    """Anonymise videos against one build; models, swappers and thresholds load once (an Anonymizer's)."""

    def __init__(self, session: FaceBank, options: AnonymizeOptions, video: VideoOptions = VideoOptions()):
        self.anon = Anonymizer(session, options)
        self.options, self.video = options, video.check()

    def run(self, src, out, *, key: str, progress: Progress | None = None) -> VideoReport:
        """Anonymise the video `src` into `out` (written atomically); returns the report (not yet the sidecar)."""
        info = probe(src)
        clock = _Clock()
        done, total = 0, 2 * max(info.frames, 1)

        def tick() -> None:
            nonlocal done
            done += 1
            if progress is not None:
                progress(ProgressEvent("anonymize video", done, max(total, done)))

        tracks, n = self._track(src, clock, tick)
        total = done + n
        states = self._plan(tracks, key, clock)
        rounds = 0
        while True:
            rounds += 1
            for st in states:
                st.reset()
            writer, clean = self._round(src, out, info, states, key, clock, tick)
            if clean:
                with clock("encode"):
                    writer.finish()
                break
            writer.discard()
            total += n  # one more round
        a = self.anon
        return VideoReport(n, tuple(st.report(a.result_t) for st in states), rounds, info.to_dict(),
                           {"width": info.width, "height": info.height, "fps": round(info.fps, 4),
                            "fourcc": writer.fourcc, "frames": writer.frames, "audio": False},
                           dict(clock.seconds), {**a.provenance(key), **self._describe()})

    def _describe(self) -> dict:
        return {"max_gap": self.video.max_gap, "fill": self.video.fill, "tracker_min_iou": self.video.min_iou}

    # -- pass 1 --
    def _track(self, src, clock: _Clock, tick) -> tuple[list[Track], int]:
        tracker = Tracker({s: self.anon.session.thresholds[s] for s in self.anon.session.spaces},
                          self.video.tracker())
        n = 0
        for frame in clock.frames(src):
            with clock("detect"):
                faces = self.anon.analyser.get(frame)
            with clock("track"):
                tracker.update(n, faces)
            n += 1
            tick()
        if n == 0:
            raise InputError(f"video {src} has no frame OpenCV can decode")
        return tracker.tracks(), n

    def _plan(self, tracks: list[Track], key: str, clock: _Clock) -> list[_TrackState]:
        """Each track: kept (consent), missed (too small everywhere) or to swap, with its first target."""
        a = self.anon
        states = []
        for tr in tracks:
            biggest = max(min(f.box[2] - f.box[0], f.box[3] - f.box[1]) for f in tr.faces.values())
            kept = a.keep.match(tr.representative(), a.session.thresholds)
            if kept is not None:
                states.append(_TrackState(tr, "kept", f"matches the kept person {kept['label']}: left as it is"))
            elif biggest < self.options.min_face:
                states.append(_TrackState(tr, "missed", f"smaller than min_face {self.options.min_face} px: left"))
            else:
                states.append(_TrackState(tr, "swapped"))
        todo = [st for st in states if st.action == "swapped"]
        self._reps = [st.track.representative(st.pooled_real) for st in todo]
        self._index = {st.track.id: i for i, st in enumerate(todo)}
        if todo:
            with clock("pick"):
                try:
                    targets = a._pick(self._reps, key, set())
                except NoEligibleTarget as exc:
                    targets = [None] * len(todo)
                    for st in todo:
                        st.reason = f"no eligible target: {exc}"
            for st, t in zip(todo, targets):
                self._take(st, t)
        return states

    def _take(self, st: _TrackState, target) -> None:
        st.target = target
        if target is None:
            st.action = "fallback"
            st.reason = st.reason or "no other eligible target"
        else:
            st.tried.add(target.id)

    def _drop(self, st: _TrackState, t: int, why: str, sims: dict, states, key: str, clock: _Clock) -> None:
        """The track's target failed: the next one for the whole track, or the fallback after `tries`."""
        st.replaced.append({"id": st.target.id, "frame": t, "why": why,
                            "similarities": {s: round(v, 4) for s, v in sims.items()}})
        st.dropped_now = True
        st.reason = why
        others = {o.target.id for o in states if o is not st and o.target is not None}
        nxt = None
        if len(st.tried) < self.options.tries:
            with clock("pick"):
                nxt = self.anon._repick(self._reps, self._index[st.track.id],
                                        f"{key}|track", len(st.tried), st.tried | others)
        self._take(st, nxt)

    # -- pass 2 --
    def _round(self, src, out, info, states: list[_TrackState], key: str, clock: _Clock, tick):
        writer = VideoOut(out, info)
        try:
            return writer, self._render(src, writer, states, key, clock, tick)
        except BaseException:
            writer.discard()
            raise

    def _render(self, src, writer: VideoOut, states: list[_TrackState], key: str, clock: _Clock, tick) -> bool:
        """One round; True when nothing was dropped (the frames written are the output)."""
        live = [st for st in states if st.action in ("swapped", "fallback")]
        n = 0
        for frame in clock.frames(src):
            img = frame
            for st in live:
                if st.track.first <= n <= st.track.last:
                    img = self._frame(img, n, st, states, key, clock)
            if not any(st.dropped_now for st in states):
                with clock("encode"):
                    writer.write(img)
            n += 1
            tick()
        for st in live:
            if st.action == "swapped" and not st.dropped_now:
                p = st.pooled(self.anon.result_t)
                if p is not None and not p["passed"]:
                    st.check_failures += 1
                    self._drop(st, st.track.last, "the pooled result still matches the pooled real face",
                               p["similarities"], states, key, clock)
        return not any(st.dropped_now for st in states)

    def _frame(self, img: np.ndarray, t: int, st: _TrackState, states, key: str, clock: _Clock) -> np.ndarray:
        a = self.anon
        detected = t in st.track.faces
        face = st.track.face_at(t, st.pooled_real)
        kind = "swapped" if detected else "filled"
        if st.action == "swapped" and (detected or self.video.fill == "swap") and face.landmarks:
            with clock("swap"):
                try:
                    result = _validate(a.swapper.swap(img, face, st.target), img, a.swapper.name)
                except FacebankError:
                    result = None
            if result is not None:
                found: list = []
                with clock("check"):
                    chk = check_result(a.analyser, result, face, a.result_t, need_face=detected, found=found)
                if chk.passed:
                    st.lists[kind].append(t)
                    if detected:
                        st.add_result(found[0])
                    return result
                st.check_failures += 1
                if detected and chk.redetected:
                    self._drop(st, t, "the result still matches the real face", chk.similarities, states, key, clock)
        # The fallback over this frame's face: the whole track's, a gap's, or a frame whose swap was not found again.
        st.lists["fallen_back" if detected else "filled"].append(t)
        st.lists["fallback_frames"].append(t)
        if a.fallback is None:
            st.lists["failed_frames"].append(t)
            return img
        with clock("swap"):
            result = _validate(a.fallback.swap(img, face, None), img, a.fallback.name)
        with clock("check"):
            chk = check_result(a.analyser, result, face, a.result_t, need_face=False)
        if not chk.passed:
            st.lists["failed_frames"].append(t)
        return result

