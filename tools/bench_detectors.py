"""Which detector finds the faces an anonymiser must not miss, and at what cost.

Two sets: the 61 real deepface photos (one labelled person each, some with people behind; close-up
portraits up to 2400 px) and a 1920x1080 frame holding three real faces scaled to 40 px wide
(placed where dlib finds them in the originals, so the expectation does not come from the
detectors compared). Per detector: faces found, photos where none is found, how many of the three
small faces are found (a detection centred within 20 px), and the median time per photo; dlib,
the offline default, is the baseline.

Run: python tools/bench_detectors.py
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import cv2
import numpy as np

from facebank.vision.image_io import decode_image
from facebank.vision.registry import load_detector

ASSETS = Path(__file__).resolve().parents[2] / "shared/assets"


def _frame(images: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    dlib = load_detector("dlib")
    frame = np.random.default_rng(0).integers(70, 110, (1080, 1920, 3)).astype(np.uint8)
    where = []
    for (x, y), name in zip([(300, 500), (900, 300), (1500, 700)], ["img1.jpg", "img11.jpg", "img20.jpg"]):
        image = images[name]
        b = dlib.detect(image)[0].box
        side = b[2] - b[0]
        scale = 40.0 / side
        x0, y0 = int(max(0, b[0] - side)), int(max(0, b[1] - side))
        x1, y1 = int(min(image.shape[1], b[2] + side)), int(min(image.shape[0], b[3] + side))
        crop = cv2.resize(image[y0:y1, x0:x1], None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        frame[y:y + crop.shape[0], x:x + crop.shape[1]] = crop
        where.append((x + ((b[0] + b[2]) / 2 - x0) * scale, y + ((b[1] + b[3]) / 2 - y0) * scale))
    return frame, np.array(where)


def main() -> None:
    photos = sorted((ASSETS / "deepface_faces").glob("img*.jpg"), key=lambda p: int(p.stem[3:]))
    images = {p.name: decode_image(p.read_bytes()) for p in photos}
    frame, where = _frame(images)
    scrfd, yunet = ASSETS / "insightface_scrfd/det_2.5g.onnx", ASSETS / "yunet"
    runs = [("dlib (HOG)", "dlib", None, {}, "dlib"),
            ("SCRFD det_2.5g @640", "scrfd", scrfd, {}, "scrfd640"),
            ("SCRFD det_2.5g @1280", "scrfd", scrfd, {"input_size": (1280, 1280)}, "scrfd1280"),
            ("SCRFD det_2.5g 640+1280", "scrfd", scrfd, {"fine_size": 1280}, "scrfd_two_pass"),
            ("YuNet 640 fixed", "yunet", yunet / "face_detection_yunet_2023mar.onnx", {}, "yunet640"),
            ("YuNet dynamic, native", "yunet", yunet / "yunet_s_dynamic.onnx", {}, "yunet_native"),
            ("YuNet dynamic 640+1920", "yunet", yunet / "yunet_s_dynamic.onnx", {"fine_size": 1920}, "yunet_two_pass")]
    print(f"{'detector':26}{'faces':>7}{'no face':>9}{'2+ faces':>10}{'40px found':>12}{'ms/photo':>10}{'x dlib':>8}")
    base = None
    result = []
    for label, name, path, opts, key in runs:
        det = load_detector(name, path, **opts)
        det.detect(images["img1.jpg"])  # warm
        times, counts = [], []
        for image in images.values():
            t = time.perf_counter()
            counts.append(len(det.detect(image)))
            times.append(time.perf_counter() - t)
        centres = np.array([(d.box[:2] + d.box[2:]) / 2 for d in det.detect(frame)]).reshape(-1, 2)
        small = sum(bool(len(centres)) and np.linalg.norm(centres - w, axis=1).min() < 20 for w in where)
        ms = statistics.median(times) * 1e3
        base = base or ms
        print(f"{label:26}{sum(counts):>7}{sum(c == 0 for c in counts):>9}{sum(c > 1 for c in counts):>10}"
              f"{small:>10}/3{ms:>10.0f}{ms / base:>8.1f}")
        result.append(f"{key}_small={small} {key}_no_face={sum(c == 0 for c in counts)} {key}_ms={ms:.0f}")
    print("RESULT " + " ".join(result))


if __name__ == "__main__":
    main()
