"""Videos: two people tracked across frames, one target each, every frame of every track swapped,
filled or blurred, and no output frame that shows a real face matching in the build space.

The test video is written here from the shared real photos (nothing large enters the repository):
person A (deepface id00) moves across 426x240 frames, person B (id01) enters half-way, A's face is
blurred in three frames and one frame is black, so the detector misses them (gaps to fill).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest

from facebank.anonymize.video_io import probe, read_frames
from facebank.pick.analyse import FaceAnalyser
from facebank.vision.align import arcface_template

N = 100  # frames
SIZE = (426, 240)
BLURRED = (30, 31, 32)  # A's face blurred: the detector misses it
BLANK = (75,)  # a black frame: both people missed
B_ENTERS = N // 2


def paste_aligned(image, face, target):
    """A swapper: the target's aligned 112 crop warped onto the real face's 5 points, under a soft ellipse."""
    return _paste(image, face, target.aligned(112))


def _paste(image, face, crop):
    m, _ = cv2.estimateAffinePartial2D(arcface_template(112).astype(np.float32),
                                       np.asarray(face.landmarks, np.float32), method=cv2.LMEDS)
    h, w = image.shape[:2]
    warped = cv2.warpAffine(crop, m, (w, h))
    mask = np.zeros((112, 112), np.float32)
    cv2.ellipse(mask, (56, 60), (50, 58), 0, 0, 360, 1.0, -1)
    mask = cv2.warpAffine(cv2.GaussianBlur(mask, (9, 9), 0), m, (w, h))[:, :, None]
    return np.clip(image * (1 - mask) + warped * mask + 0.5, 0, 255).astype(np.uint8)


def unchanged(image, face, target):
    """A swapper that changes nothing: its result always matches, so every target is dropped."""
    return image.copy()


def _patch(analyser, path, box_px=110, margin=0.2):
    """The photo's face with a margin, scaled so the face box is `box_px` wide (the detector needs ~80 px)."""
    im = cv2.imread(str(path))[:, :, ::-1].copy()
    f = max(analyser.get(im), key=lambda f: f.box[2] - f.box[0])
    x0, y0, x1, y1 = f.box
    m, s = margin * (x1 - x0), box_px / (x1 - x0)
    crop = im[max(0, int(y0 - m)):int(y1 + m), max(0, int(x0 - m)):int(x1 + m)]
    return cv2.resize(crop, (int(crop.shape[1] * s), int(crop.shape[0] * s)), interpolation=cv2.INTER_AREA)


def _write_video(path, a, b, n=N, fps=24.0):
    w, h = SIZE
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (w, h))
    yy, xx = np.mgrid[0:h, 0:w]
    background = np.stack([90 + 40 * np.sin(xx / 37.0), 100 + 30 * np.cos(yy / 23.0), 110 + 0 * xx], -1)
    for t in range(n):
        frame = background.astype(np.uint8)
        u = t / (n - 1)
        ax, ay = int(10 + 120 * (1 - abs(2 * u - 1))), int(min(h - a.shape[0], 40 + 30 * np.sin(2 * np.pi * u)))
        frame[ay:ay + a.shape[0], ax:ax + a.shape[1]] = cv2.GaussianBlur(a, (0, 0), 12) if t in BLURRED else a
        if b is not None and t >= n // 2:
            frame[60:60 + b.shape[0], w - b.shape[1] - 6:w - 6] = b
        if t in BLANK:
            frame[:] = 0
        writer.write(np.ascontiguousarray(frame[:, :, ::-1]))
    writer.release()


@pytest.fixture(scope="module")
def people(assets):
    """(patch A, patch B, {person: [dlib embeddings of every photo of them and of the patch]})."""
    faces = assets / "deepface_faces"
    ids = dict(line.split(",") for line in (faces / "identities.csv").read_text().split()[1:])
    analyser = FaceAnalyser(["dlib"])
    a, b = _patch(analyser, faces / "img1.jpg"), _patch(analyser, faces / "img26.jpg")
    real = {}
    for person, patch in (("id00", a), ("id01", b)):
        photos = [faces / f for f, p in ids.items() if p == person]
        real[person] = [f.embeddings["dlib"] for im in [patch, *photos] for f in analyser.get(im if isinstance(
            im, np.ndarray) else str(im))]
    return a, b, real


@pytest.fixture(scope="module")
def video_run(people, small_build, tmp_path_factory):
    """The two-person video anonymised once through the CLI (--json), as the tests below read it."""
    from typer.testing import CliRunner

    from facebank.cli import app
    from facebank.cli.common import read_envelope
    from facebank.swap import get_swapper, register_swapper

    register_swapper("paste_aligned", lambda: get_swapper(paste_aligned))
    root = tmp_path_factory.mktemp("video")
    src, out = root / "two.avi", root / "out" / "two.avi"
    _write_video(src, people[0], people[1])
    r = CliRunner().invoke(app, ["anonymize", str(src), "--out", str(out), "--build", str(small_build[2]),
                                 "--swapper", "paste_aligned", "--json"])
    assert r.exit_code == 0, r.output
    return src, out, read_envelope(r.stdout)


def _a_box(t: int, a) -> tuple[int, int, int, int]:
    """Where person A's patch is in frame t (the geometry _write_video draws)."""
    u = t / (N - 1)
    ax, ay = int(10 + 120 * (1 - abs(2 * u - 1))), int(min(SIZE[1] - a.shape[0], 40 + 30 * np.sin(2 * np.pi * u)))
    return ax, ay, ax + a.shape[1], ay + a.shape[0]


def _b_box(b) -> tuple[int, int, int, int]:
    return SIZE[0] - b.shape[1] - 6, 60, SIZE[0] - 6, 60 + b.shape[0]


def test_two_people_keep_one_target_each_and_every_track_frame_is_handled(video_run):
    from facebank.anonymize import video_audit

    src, out, data = video_run
    assert data["format"] == "facebank.anonymize.video/1" and data["status"] == "ok"
    assert data["frames"] == N and data["output_video"]["audio"] is False
    tracks = data["tracks"]
    assert len(tracks) == 2, [(t["first"], t["last"]) for t in tracks]
    a, b = tracks
    assert (a["first"], a["last"]) == (0, N - 1)
    assert B_ENTERS <= b["first"] <= B_ENTERS + 2 and b["last"] == N - 1
    assert a["action"] == b["action"] == "swapped"
    assert a["target"]["id"] != b["target"]["id"]  # two people, two synthetic identities
    # The frames the detector missed are filled from the track, never left as they were.
    assert set(BLURRED) | set(BLANK) <= set(a["filled"])
    assert set(BLANK) <= set(b["filled"])
    for t in tracks:
        c = t["counts"]
        assert c["swapped"] + c["filled"] + c["fallen_back"] == c["frames"] == t["last"] - t["first"] + 1
        assert c["failed"] == 0 and t["pooled"]["passed"]
        assert t["pooled"]["frames"] == c["swapped"]
    audit = video_audit(out.with_suffix(".json"))
    assert audit.ok, audit.problems
    assert [r["target"] for r in audit.tracks] == [a["target"]["id"], b["target"]["id"]]
    side = json.loads(out.with_suffix(".json").read_text())
    assert side["counts"] == data["counts"] and side["counts"]["tracks"] == 2


def test_no_output_frame_shows_a_real_face(video_run, people, small_build):
    from facebank.pick.session import FaceBank

    src, out, data = video_run
    a_patch, b_patch, real = people
    info_in, info_out = probe(src), probe(out)
    assert (info_out.width, info_out.height, info_out.fps) == (info_in.width, info_in.height, info_in.fps)
    assert info_out.fourcc == info_in.fourcc == "MJPG"
    with FaceBank(small_build[2]) as fb:
        threshold = fb.thresholds["dlib"]
    refs = np.array([v / np.linalg.norm(v) for vs in real.values() for v in vs])
    # A more thorough detector than the pipeline's (full resolution, not 256 px): it finds the faces of every frame.
    seer = FaceAnalyser(["dlib"], detector_options={"max_side": None}, min_face_px=0)
    seen, worst = 0, -1.0
    for t, (before, after) in enumerate(zip(read_frames(src), read_frames(out))):
        for f in seer.get(after):
            e = f.embeddings["dlib"] / np.linalg.norm(f.embeddings["dlib"])
            worst = max(worst, float((refs @ e).max()))
            seen += 1
        boxes = [_a_box(t, a_patch)] + ([_b_box(b_patch)] if t >= data["tracks"][1]["first"] else [])
        for x0, y0, x1, y1 in boxes:  # each face region changed in every frame of its track
            core = (slice(y0 + 30, y1 - 30), slice(x0 + 30, x1 - 30))
            diff = np.abs(before[core].astype(int) - after[core].astype(int)).mean()
            assert diff > 8, (t, (x0, y0), diff)
    assert t == N - 1
    assert seen >= N  # the swapped faces are found: the check below is not vacuous
    assert worst <= threshold, f"an output face matches a real person: cos {worst:.4f} > {threshold:.4f}"


def _one_person(people, path, n):
    _write_video(path, people[0], None, n=n)
    return path


def test_a_target_that_fails_on_one_frame_is_replaced_on_every_frame_of_the_track(people, small_build, tmp_path):
    from facebank.anonymize import anonymize_video

    src = _one_person(people, tmp_path / "one.avi", 40)
    crops: dict[str, np.ndarray] = {}

    def fickle(image, face, target):
        """Swaps well, except that the first target ever given is left unswapped once the face moves right."""
        crops.setdefault(target.id, target.aligned(112))
        if target.id == next(iter(crops)) and face.box[0] > 100:
            return image.copy()
        return _paste(image, face, crops[target.id])

    r = anonymize_video(src, tmp_path / "out.avi", build=small_build[2], swapper=fickle)
    (track,) = r.report.tracks
    first, second = list(crops)
    assert [d["id"] for d in track.replaced_targets] == [first]
    dropped_at = track.replaced_targets[0]["frame"]
    assert 5 < dropped_at < 20 and track.target["id"] == second and r.report.rounds == 2
    assert len(track.swapped) + len(track.filled) == 40 and not track.fallen_back
    # The frames before the failure were rendered again with the second target, not kept with the first.
    analyser = FaceAnalyser(["dlib"])
    for t, (before, after) in enumerate(zip(read_frames(src), read_frames(tmp_path / "out.avi"))):
        if t in (0, dropped_at - 2):
            (face,) = analyser.get(before)
            err = {k: np.abs(_paste(before, face, c).astype(int) - after).mean() for k, c in crops.items()}
            assert err[second] < err[first] / 2, (t, err)


def test_a_track_no_target_passes_is_blurred_on_every_frame(people, small_build, tmp_path):
    from facebank.anonymize import anonymize_video, video_audit

    src = _one_person(people, tmp_path / "one.avi", 20)
    r = anonymize_video(src, tmp_path / "out.avi", build=small_build[2], swapper=unchanged, tries=2)
    (track,) = r.report.tracks
    assert track.action == "fallback" and track.target is None and len(track.replaced_targets) == 2
    assert list(track.fallback_frames) == list(range(20)) and not track.swapped and not track.failed_frames
    assert r.passed and video_audit(r.report).ok
    seer = FaceAnalyser(["dlib"], detector_options={"max_side": None})
    refs = np.array([v / np.linalg.norm(v) for v in people[2]["id00"]])
    for frame in list(read_frames(tmp_path / "out.avi"))[::5]:
        for f in seer.get(frame):
            assert float((refs @ (f.embeddings["dlib"] / np.linalg.norm(f.embeddings["dlib"]))).max()) < 0.9


def test_killed_mid_video_then_rerun_gives_one_complete_output(people, small_build, tmp_path):
    from facebank.anonymize import anonymize_video

    n = 60
    src, out = _one_person(people, tmp_path / "one.avi", n), tmp_path / "out" / "one.avi"
    cmd = [sys.executable, "-m", "facebank.cli", "anonymize", str(src), "--out", str(out),
           "--build", str(small_build[2]), "--swapper", "pixelate"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    partial = None
    deadline = time.monotonic() + 600
    while proc.poll() is None and time.monotonic() < deadline:  # wait until frames are being written
        partial = next((p for p in (tmp_path / "out").glob(".one.partial-*.avi") if p.stat().st_size > 0), None) \
            if (tmp_path / "out").is_dir() else None
        if partial is not None:
            break
        time.sleep(0.05)
    assert partial is not None and proc.poll() is None, "the run ended before it was killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not out.exists() and not out.with_suffix(".json").exists()  # nothing under the output's name
    r = anonymize_video(src, out, build=small_build[2], swapper="pixelate")
    assert not r.skipped and not partial.exists() and sorted(p.name for p in out.parent.iterdir()) == [
        "one.avi", "one.json"]
    assert sum(1 for _ in read_frames(out)) == n
    side = json.loads(out.with_suffix(".json").read_text())
    (track,) = side["tracks"]
    handled = track["swapped"] + track["filled"] + track["fallen_back"]
    assert sorted(handled) == list(range(n)) and side["rounds"] == 1  # each frame recorded once
    stamp = out.with_suffix(".json").stat().st_mtime_ns
    again = anonymize_video(src, out, build=small_build[2], swapper="pixelate")
    assert again.skipped and out.with_suffix(".json").stat().st_mtime_ns == stamp
    assert again.report.to_dict()["tracks"] == side["tracks"]
