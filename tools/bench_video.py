"""Frames per second of `facebank anonymize VIDEO` at 480p and 720p, and where the time goes.

A test video is written from a real photo (one face, a third of the frame high, moving across
it) at each size; then, side by side in one run:

- the video path (`facebank.anonymize_video`): decode and detect every frame, track, one pick
  per track, then decode again, swap, check and encode every frame; the split per stage
  (decode, detect, track, pick, swap, check, encode) comes from the run's own clock;
- the baseline a user would otherwise run: every frame anonymised as a photo
  (`FaceBank.anonymize_image`, models loaded once), which detects, picks, swaps and checks
  each frame on its own (a new identity per frame, no gap filling, no encode), timed per frame.

    python tools/bench_video.py --build index_builds/current [--swapper classical] [--frames 60]
        [--photo ../shared/assets/deepface_faces/img26.jpg] [--detector scrfd --detector-model det_2.5g.onnx]
        [--mode furthest] [--tries 3]

Last line: RESULT video_fps_480p=<a> video_fps_720p=<b> photo_fps_480p=<c> photo_fps_720p=<d>
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

SIZES = {"480p": (854, 480), "720p": (1280, 720)}
STAGES = ("decode", "detect", "track", "pick", "swap", "check", "encode")


def face_patch(photo: Path, height: int) -> np.ndarray:
    """The photo's face with a margin, scaled to `height` pixels (RGB)."""
    import cv2

    from facebank.pick.analyse import FaceAnalyser

    im = cv2.imread(str(photo))[:, :, ::-1].copy()
    f = max(FaceAnalyser(["dlib"]).get(im), key=lambda f: f.box[2] - f.box[0])
    x0, y0, x1, y1 = f.box
    m = 0.25 * (x1 - x0)
    crop = im[max(0, int(y0 - m)):int(y1 + m), max(0, int(x0 - m)):int(x1 + m)]
    s = height / crop.shape[0]
    return cv2.resize(crop, (int(crop.shape[1] * s), height), interpolation=cv2.INTER_AREA)


def write_video(path: Path, patch: np.ndarray, size: tuple[int, int], frames: int, fps: float = 30.0) -> None:
    import cv2

    w, h = size
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    yy, xx = np.mgrid[0:h, 0:w]
    bg = np.stack([90 + 40 * np.sin(xx / 37.0), 100 + 30 * np.cos(yy / 23.0), 110 + 0 * xx], -1).astype(np.uint8)
    for t in range(frames):
        frame = bg.copy()
        x = int((w - patch.shape[1]) * (0.1 + 0.8 * t / max(frames - 1, 1)))
        y = (h - patch.shape[0]) // 2
        frame[y:y + patch.shape[0], x:x + patch.shape[1]] = patch
        writer.write(np.ascontiguousarray(frame[:, :, ::-1]))
    writer.release()


def bench_size(label: str, size, args, opts: dict, tmp: Path) -> dict:
    from facebank.anonymize import anonymize_video
    from facebank.anonymize.video_io import read_frames
    from facebank.pick.session import FaceBank

    src = tmp / f"{label}.mp4"
    write_video(src, face_patch(args.photo, size[1] // 3), size, args.frames)
    t0 = time.perf_counter()
    r = anonymize_video(src, tmp / f"{label}.out.mp4", build=args.build, **opts)
    wall = time.perf_counter() - t0
    rep = r.report
    per_stage = {s: 1000.0 * rep.seconds.get(s, 0.0) / rep.frames for s in STAGES}
    # The baseline: each frame as a photo (models loaded once, before the clock starts).
    photo_ms = []
    with FaceBank(args.build) as fb:
        frames = list(read_frames(src))[:args.photo_frames]
        fb.anonymize_image(frames[0], key="warm", **opts)
        for i, fr in enumerate(frames):
            t1 = time.perf_counter()
            fb.anonymize_image(fr, key=f"f{i}", **opts)
            photo_ms.append(1000.0 * (time.perf_counter() - t1))
    tracks = [t.to_dict()["counts"] for t in rep.tracks]
    return {"fps": rep.frames / wall, "wall": wall, "frames": rep.frames, "rounds": rep.rounds, "stages": per_stage,
            "tracks": tracks, "photo_ms": float(np.median(photo_ms)), "photo_fps": 1000.0 / float(np.median(photo_ms)),
            "fourcc": rep.output.get("fourcc")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default=None, help="index build (default: index_builds/current)")
    ap.add_argument("--photo", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "assets"
                    / "deepface_faces" / "img26.jpg")
    ap.add_argument("--frames", type=int, default=60)
    ap.add_argument("--photo-frames", type=int, default=10, help="frames timed through the photo path")
    ap.add_argument("--swapper", default="classical")
    ap.add_argument("--mode", default="random", help="target pick: random or furthest")
    ap.add_argument("--tries", type=int, default=3, help="targets per track (per face for the photo path)")
    ap.add_argument("--detector", default="dlib")
    ap.add_argument("--detector-model", default=None)
    ap.add_argument("--sizes", default="480p,720p")
    args = ap.parse_args()
    from facebank.errors import FacebankError
    from facebank.swap import get_swapper

    try:
        get_swapper(args.swapper)
    except (FacebankError, ImportError) as exc:  # e.g. classical before the swap branch is merged
        raise SystemExit(f"swapper {args.swapper!r} is not available here: {exc}") from None
    opts = {"swapper": args.swapper, "detector": args.detector, "detector_model": args.detector_model,
            "mode": args.mode, "tries": args.tries}
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label in args.sizes.split(","):
            results[label] = res = bench_size(label, SIZES[label], args, opts, Path(tmp))
            print(f"{label} {SIZES[label][0]}x{SIZES[label][1]}, {res['frames']} frames, swapper {args.swapper}, "
                  f"detector {args.detector}, mode {args.mode}, tries {args.tries}: video path {res['fps']:.2f} frames/s ({res['wall']:.1f} s, "
                  f"{res['rounds']} round(s), written {res['fourcc']}); each frame as a photo "
                  f"{res['photo_fps']:.2f} frames/s (median {res['photo_ms']:.0f} ms); "
                  f"ratio {res['fps'] / res['photo_fps']:.2f}x")
            print("  ms/frame: " + ", ".join(f"{s} {v:.1f}" for s, v in res["stages"].items())
                  + f" (sum {sum(res['stages'].values()):.1f})")
            print(f"  tracks: {res['tracks']}")
    print("RESULT " + " ".join(f"video_fps_{k}={v['fps']:.3f}" for k, v in results.items()) + " "
          + " ".join(f"photo_fps_{k}={v['photo_fps']:.3f}" for k, v in results.items()))


if __name__ == "__main__":
    main()
