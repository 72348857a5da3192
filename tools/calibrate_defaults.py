"""Calibrate facebank's default thresholds on identity-labelled real faces.

Writes facebank/index/default_thresholds.json: per space and per FAR (1e-3, 1e-4, 1e-2), the cosine
at which a recogniser using that space accepts impostor pairs at that rate, chosen on the privacy
side by default: the 95% Clopper-Pearson LOWER bound on the achieved FAR is >= the asked FAR, so
the threshold lies at or below the score where a recogniser run at that FAR starts accepting, and
every target under it is one that recogniser rejects. Beside it: the point estimate and the
other bound (upper <= FAR), with the impostor pair count, how many lie above each, the interval,
and the data (names, counts, sha256).
Both labelled sets are pooled; pairs are only scored inside each set.

Run: python tools/calibrate_defaults.py     (defaults: ../shared/assets/{deepface_faces,labelled_aligned112})
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from facebank.audit.api import calibrate, load_embedders
from facebank.audit.calibration import threshold_at_far
from facebank.audit.labelled import LabelledSet

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT.parent / "shared/assets"


def _entry(t) -> dict:
    return {"threshold": round(t.threshold, 6), "n_impostor_pairs": t.n_impostor_pairs, "n_above": t.n_above,
            "achieved_far": t.achieved_far, "ci95": [t.ci_low, t.ci_high], "supported": t.supported,
            "conservative": t.conservative, "bound": t.bound}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--photos", default=str(ASSETS / "deepface_faces"), help="labelled photos (detected)")
    ap.add_argument("--aligned", default=str(ASSETS / "labelled_aligned112"), help="labelled aligned 112 crops")
    ap.add_argument("--fars", default="1e-3,1e-4,1e-2")  # 1e-2: the anonymize result check
    ap.add_argument("--default-far", type=float, default=1e-3, help="the FAR a build uses unless told")
    ap.add_argument("--bound", choices=("privacy", "far", "none"), default="privacy",
                    help="privacy: lower bound >= FAR (default); far: upper bound <= FAR; none: point estimate")
    ap.add_argument("--onnx", default=str(ASSETS / "onnx_embedders/mobilefacenet_128d.onnx"))
    ap.add_argument("--out", default=str(ROOT / "facebank/index/default_thresholds.json"))
    args = ap.parse_args()
    fars = tuple(float(f) for f in args.fars.split(","))
    embedders = load_embedders(["dlib", "mobilefacenet_128d"], {"mobilefacenet_128d": args.onnx})
    sets = [LabelledSet(Path(args.photos)), LabelledSet(Path(args.aligned), aligned=True)]
    report = calibrate(sets, embedders=embedders, fars=fars,
                       conservative=False if args.bound == "none" else args.bound)
    data = [{k: d[k] for k in ("folder", "files", "identities", "faces_used", "aligned", "sha256")} for d in report.data]
    out = {"comment": ("written by tools/calibrate_defaults.py; thresholds are cosines: sim <= threshold is "
                       "dissimilar. A recogniser accepts a pair when sim > threshold; at_far[FAR] holds the "
                       "threshold, the impostor pairs above it and the 95% Clopper-Pearson interval on its FAR"),
           "far": args.default_far, "fars": list(fars), "conservative": report.conservative, "bound": report.bound,
           "interval": "Clopper-Pearson, two-sided 95%, over impostor pairs (pairs sharing a face are correlated: "
                       "the interval treats them as independent)",
           "data": data, "spaces": {}}
    for s, cal in report.spaces.items():
        at = {f"{t.far:g}": _entry(t) for t in cal.thresholds}
        for t in cal.thresholds:  # the point estimate and the other bound beside it: what the bound costs
            for name, how in (("plain", False), ("far_bound", "far"), ("privacy_bound", "privacy")):
                other = threshold_at_far(report.scores[s][1], t.far, conservative=how)
                at[f"{t.far:g}"][f"{name}_threshold"] = round(other.threshold, 6)
                at[f"{t.far:g}"][f"{name}_n_above"] = other.n_above
        d = at[f"{args.default_far:g}"]
        out["spaces"][s] = {
            "threshold": d["threshold"], "model": embedders[s].info.name, "sha256": embedders[s].info.sha256,
            "n_genuine_pairs": cal.n_genuine, "eer": round(cal.eer, 6), "eer_resolved": cal.eer_resolved,
            "at_far": at,
            "source": (f"default: {'' if report.bound == 'none' else report.bound + '-bound '}impostor threshold at FAR "
                       f"{args.default_far:g} on {report.n_faces} labelled real faces of {report.n_identities} people "
                       f"({' + '.join(x['folder'] for x in data)}): {d['n_above']} of {d['n_impostor_pairs']:,} impostor "
                       f"pairs above, FAR 95% CI [{d['ci95'][0]:.2e}, {d['ci95'][1]:.2e}]"),
        }
        print(s, json.dumps(out["spaces"][s], indent=1))
    Path(args.out).write_text(json.dumps(out, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
