"""The tracker on faces whose truth is known: people keep their track across gaps and crossings,
a face gone longer than max_gap starts a new track, and the gaps are interpolated."""

from __future__ import annotations

import numpy as np
import pytest

from facebank.anonymize.tracks import Tracker, TrackerOptions
from facebank.errors import InputError
from facebank.pick.analyse import PhotoFace

T = {"space": 0.5}  # the build threshold of the one space: cos 0.5 is "same person"


def _person(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=64)
    return v / np.linalg.norm(v)


def _face(person: np.ndarray, x: float, y: float = 50.0, seed: int = 0, size: float = 80.0) -> PhotoFace:
    noise = np.random.default_rng(seed).normal(scale=0.02, size=person.shape)  # a frame's own embedding
    lm = [[x + 25, y + 30], [x + 55, y + 30], [x + 40, y + 45], [x + 28, y + 60], [x + 52, y + 60]]
    return PhotoFace(box=[x, y, x + size, y + size], age=30.0, gender="female", embeddings={"space": person + noise},
                     landmarks=lm, score=1.0)


def _who(track, people) -> set[int]:
    return {int(np.argmax([f.embeddings["space"] @ p for p in people])) for f in track.faces.values()}


def test_two_people_who_swap_places_during_a_gap_keep_their_tracks():
    p, q = _person(1), _person(2)
    tr = Tracker(T, TrackerOptions(max_gap=5))
    for t in range(10):  # p left, q right
        tr.update(t, [_face(p, 10 + t, seed=t), _face(q, 300 - t, seed=100 + t)])
    for t in range(13, 20):  # after 3 missed frames they stand where the other one was
        tr.update(t, [_face(q, 20 + t, seed=200 + t), _face(p, 280 - t, seed=300 + t)])
    tracks = tr.tracks()
    assert len(tracks) == 2
    assert [_who(t, [p, q]) for t in tracks] == [{0}, {1}]  # box overlap alone would have swapped them
    assert tracks[0].gaps() == [10, 11, 12] and tracks[1].gaps() == [10, 11, 12]


def test_crossing_boxes_follow_the_embedding():
    p, q = _person(3), _person(4)
    tr = Tracker(T)
    for t in range(30):  # walking through each other: the boxes overlap in the middle frames
        tr.update(t, [_face(p, 50 + 8 * t, seed=t), _face(q, 290 - 8 * t, seed=50 + t)])
    assert [_who(t, [p, q]) for t in tr.tracks()] == [{0}, {1}]


def test_a_face_gone_longer_than_max_gap_starts_a_new_track_and_gaps_interpolate():
    p = _person(5)
    tr = Tracker(T, TrackerOptions(max_gap=3))
    for t in (0, 1, 2, 6):  # 3 missed frames: still the track
        tr.update(t, [_face(p, 10 * t, seed=t)])
    for t in (11, 12):  # 4 missed frames: a new one
        tr.update(t, [_face(p, 10 * t, seed=t)])
    a, b = tr.tracks()
    assert (a.first, a.last, a.gaps()) == (0, 6, [3, 4, 5])
    assert (b.id, b.first, b.last) == (1, 11, 12)
    mid = a.face_at(4)
    assert mid.box == pytest.approx([40.0, 50.0, 120.0, 130.0])  # half-way from x=20 (frame 2) to x=60 (frame 6)
    assert mid.landmarks[0] == pytest.approx([65.0, 80.0])
    assert mid.embeddings["space"] @ p > 0.99  # the pooled face of the track
    with pytest.raises(InputError):
        a.face_at(7)
    rep = a.representative()
    assert rep.age == 30.0 and rep.gender == "female"


def test_options_are_checked():
    with pytest.raises(InputError):
        TrackerOptions(max_gap=-1).check()
    with pytest.raises(InputError):
        TrackerOptions(min_iou=0).check()
