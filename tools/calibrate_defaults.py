"""Calibrate facebank's default thresholds on identity-labelled real photos.

Writes facebank/index/default_thresholds.json: per space, the cosine at which a recogniser using
that space accepts impostor pairs at the chosen FAR, with how many impostor pairs it rests on.
Run: python tools/calibrate_defaults.py --photos ../shared/assets/deepface_faces --far 1e-3
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np

from facebank.audit.calibration import calibrate
from facebank.vision.image_io import decode_image
from facebank.vision.registry import load_detector, load_embedder

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--photos", default=str(ROOT.parent / "shared/assets/deepface_faces"))
    ap.add_argument("--identities", default=None)
    ap.add_argument("--far", type=float, default=1e-3)
    ap.add_argument("--onnx", default=str(ROOT.parent / "shared/assets/onnx_embedders/mobilefacenet_128d.onnx"))
    ap.add_argument("--out", default=str(ROOT / "facebank/index/default_thresholds.json"))
    args = ap.parse_args()
    photos = Path(args.photos)
    ident = dict(csv.reader(open(args.identities or photos / "identities.csv")))
    ident.pop("file", None)
    detector = load_detector("dlib")
    embedders = {"dlib": load_embedder("dlib")}
    if Path(args.onnx).exists():
        embedders["mobilefacenet_128d"] = load_embedder("mobilefacenet_128d", args.onnx)
    vecs = {s: [] for s in embedders}
    labels = []
    for name, who in sorted(ident.items()):
        image = decode_image((photos / name).read_bytes(), name=name)
        dets = detector.detect(image)
        if not dets:
            print(f"skip {name}: no face")
            continue
        det = max(dets, key=lambda d: (d.box[2] - d.box[0]) * (d.box[3] - d.box[1]))
        for s, e in embedders.items():
            vecs[s].append(e.embed(image, det))
        labels.append(who)
    report = calibrate({s: np.stack(v) for s, v in vecs.items()}, np.array(labels), fars=(1e-2, args.far),
                       source=str(photos))
    out = {"comment": "written by tools/calibrate_defaults.py; thresholds are cosines: sim <= threshold is dissimilar",
           "far": args.far, "spaces": {}}
    for s, cal in report.spaces.items():
        t = next(t for t in cal.thresholds if t.far == args.far)
        out["spaces"][s] = {
            "threshold": round(float(t.threshold), 6), "model": embedders[s].info.name, "sha256": embedders[s].info.sha256,
            "source": (f"impostor score at FAR {args.far:g} on {len(labels)} identity-labelled real photos of "
                       f"{len(set(labels))} people ({t.n_impostor_pairs} impostor pairs, "
                       f"{'supported' if t.supported else 'NOT supported: ' + t.note}); EER {cal.eer:.3f}"),
        }
        print(s, out["spaces"][s])
    Path(args.out).write_text(json.dumps(out, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
