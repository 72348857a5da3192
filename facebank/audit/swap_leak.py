"""Source vs Result: is a swapped photo still matched to the person? (`facebank audit --anonymize`)

Every labelled real face (photos, or aligned 112 crops padded to 224 px as small photos) gets a
target from the build (keyed by its file, so every swapper gets the same target) and is swapped.
Each result is matched against the same person's OTHER labelled faces, beside two baselines:

- `source`: the real photo itself (what a recogniser does with no anonymisation);
- `target`: the synthetic target alone (the paper's "Source vs Target");
- `result`: the swapped face, re-detected at its box (the paper's "Source vs Result").

A pair matches when its similarity is above the space's threshold at FAR 1e-2 / 1e-3,
calibrated on the impostor pairs of the same labelled faces, embedded the same way (every face
is aligned to the ArcFace 112 crop and embedded by `labelled.embed_crop`), in each build space
and each held-out recogniser. Rates come with 95% Clopper-Pearson intervals over pairs (pairs
sharing a face are correlated: the intervals are somewhat narrow). A result the detector no
longer finds counts as not matched, and the `detected` share says how often that happened.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import cv2
import numpy as np

from facebank.audit.calibration import calibrate
from facebank.audit.labelled import LabelledSet, embed_crop, read_identities
from facebank.audit.report import Section, write_csv
from facebank.audit.stats import clopper_pearson
from facebank.errors import FaceRejected, InputError, NoEligibleTarget
from facebank.progress import Progress, ProgressEvent

__all__ = ["SWAP_FARS", "SwapRun", "leak_rows", "parse_swapper", "run_swaps", "swap_leak_section"]

SWAP_FARS = (1e-2, 1e-3)
PAD_ALIGNED = 56  # an aligned 112 crop padded to 224 px: dlib's detector finds 59 of 60 (measured)
GRID_ROWS = 8


def parse_swapper(spec: str):
    """(label, Swapper) from "NAME" or "NAME:key=value,key=value" (e.g. "classical:geometry=warp")."""
    from facebank.swap import get_swapper

    name, _, rest = spec.partition(":")
    options = {}
    for part in filter(None, rest.split(",")):
        key, eq, value = part.partition("=")
        if not eq or not key:
            raise InputError(f"swapper option {part!r} in {spec!r} must be key=value")
        options[key.strip()] = value.strip()
    return spec, get_swapper(name, **options)


@dataclass
class SwapRun:
    """Embeddings of every labelled face and of its targets and results, per (swapper, pick mode)."""

    files: list[str]
    labels: list[str]
    source: dict[str, np.ndarray]  # space -> (n, d)
    crops: list[np.ndarray]  # the source faces' aligned 112 crops
    ages: list[float] = field(default_factory=list)
    genders: list[str] = field(default_factory=list)
    target: dict[tuple[str, str], dict[str, np.ndarray]] = field(default_factory=dict)  # (swapper, mode) -> space -> (n, d), NaN rows: no target
    result: dict[tuple[str, str], dict[str, np.ndarray]] = field(default_factory=dict)  # NaN rows: not swapped or not found
    quality: dict[tuple[str, str], list[dict]] = field(default_factory=dict)  # per face: detected, age, gender
    grid: dict[tuple[str, str], list[tuple[np.ndarray, np.ndarray]]] = field(default_factory=dict)  # (target, result) crops


def _largest(dets):
    return max(dets, key=lambda d: (d.box[2] - d.box[0]) * (d.box[3] - d.box[1])) if dets else None


def _iou(a, b) -> float:
    l, t, r, bt = max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])
    inter = max(r - l, 0.0) * max(bt - t, 0.0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _photos(labelled: LabelledSet, max_photos: int | None):
    """(file name, identity, RGB photo) of every labelled image; aligned crops padded to small photos."""
    from facebank.vision.image_io import decode_image

    rows = read_identities(Path(labelled.folder), labelled.csv)
    if max_photos is not None:
        rows = rows[:max_photos]
    for path, who in rows:
        image = decode_image(path.read_bytes(), name=path.name)
        if labelled.aligned:
            image = cv2.copyMakeBorder(image, *(PAD_ALIGNED,) * 4, cv2.BORDER_REPLICATE)
        yield path.name, who, image, len(rows)


def _embed(crop: np.ndarray, embedders: Mapping[str, Any]) -> dict[str, np.ndarray]:
    return {s: np.asarray(embed_crop(crop, s, e), np.float64) for s, e in embedders.items()}


def run_swaps(session: Any, labelled: LabelledSet, swappers: Mapping[str, Any], embedders: Mapping[str, Any], *,
              modes: Sequence[str] = ("random",), groups: bool = True, max_photos: int | None = None,
              progress: Progress | None = None) -> SwapRun:
    """Detect, pick, swap, re-detect and embed every labelled face (module docstring).

    embedders: space -> embedder for every space scored (the build's spaces and held-out ones).
    """
    from facebank.pick.analyse import PhotoFace
    from facebank.vision.align import align_face
    from facebank.vision.registry import load_attribute_model, load_detector

    missing = [s for s in session.spaces if s not in embedders]
    if missing:
        raise InputError(f"the swap audit needs an embedder for build space {missing[0]!r}")
    det, attr = load_detector("dlib"), load_attribute_model()
    run = SwapRun([], [], {s: [] for s in embedders}, [])
    keys = [(name, mode) for name in swappers for mode in modes]
    for k in keys:
        run.target[k], run.result[k] = {s: [] for s in embedders}, {s: [] for s in embedders}
        run.quality[k], run.grid[k] = [], []
    nan = {s: None for s in embedders}
    k = 0
    for k, (name, who, image, total) in enumerate(_photos(labelled, max_photos)):
        if progress is not None:
            progress(ProgressEvent("swap audit", k, total))
        d = _largest(det.detect(image))
        if d is None:
            continue
        try:
            crop = align_face(image, d.landmarks, 112)
            src = _embed(crop, embedders)
        except FaceRejected:
            continue
        a = attr.estimate(image, d)
        face = PhotoFace(box=[float(v) for v in d.box], age=float(a.age), gender=a.gender,
                         embeddings={s: src[s] for s in session.spaces},
                         landmarks=[[float(x), float(y)] for x, y in d.landmarks], score=float(d.score))
        run.files.append(name)
        run.labels.append(who)
        run.crops.append(crop)
        run.ages.append(face.age)
        run.genders.append(face.gender)
        for s in embedders:
            run.source[s].append(src[s])
        where = {"age": face.age, "gender": face.gender, "fallback": "widen_age"} if groups else {}
        for mode in modes:
            try:
                target = session.pick_target({s: src[s] for s in session.spaces}, mode=mode, key=name, **where)
                t_emb = _embed(target.aligned(112), embedders)
            except NoEligibleTarget:
                target, t_emb = None, nan
            for sw_name, swapper in swappers.items():
                key = (sw_name, mode)
                r_emb, q = _swap_and_embed(swapper, image, face, d, target, name, (det, attr), embedders)
                if target is not None and len(run.grid[key]) < GRID_ROWS:
                    run.grid[key].append((target.aligned(112), align_face(q.pop("_out"), d.landmarks, 112)))
                q.pop("_out", None)
                run.quality[key].append(q)
                for s in embedders:
                    run.target[key][s].append(t_emb[s])
                    run.result[key][s].append(r_emb[s])
    if progress is not None:
        progress(ProgressEvent("swap audit", k + 1, k + 1))
    if len(run.files) < 2:
        raise InputError(f"the swap audit found fewer than two labelled faces in {labelled.folder}")

    def stack(vs, dim):
        return np.stack([np.full(dim, np.nan) if v is None else v for v in vs])

    dims = {s: len(run.source[s][0]) for s in embedders}
    run.source = {s: np.stack(v) for s, v in run.source.items()}
    for key in keys:
        run.target[key] = {s: stack(v, dims[s]) for s, v in run.target[key].items()}
        run.result[key] = {s: stack(v, dims[s]) for s, v in run.result[key].items()}
    return run


def _swap_and_embed(swapper, image: np.ndarray, face, d, target, name: str, models, embedders: Mapping[str, Any]):
    """One swap of `face` with `target`, re-detected near the source box and embedded in every space:
    (result embeddings, None per space when no face came back; the quality row, with the swapped
    photo under "_out" for the grid)."""
    from facebank.vision.align import align_face

    det, attr = models
    r_emb, q = {s: None for s in embedders}, {"file": name, "target": None if target is None else target.id,
                                               "detected": False}
    if target is None:
        return r_emb, q
    out = swapper.swap(image, face, target)
    q["_out"] = out
    found = [x for x in det.detect(out) if _iou(x.box, d.box) > 0.3]
    if found:
        best = max(found, key=lambda x: _iou(x.box, d.box))
        ra = attr.estimate(out, best)
        try:
            r_emb = _embed(align_face(out, best.landmarks, 112), embedders)
            q.update(detected=True, age=float(ra.age), gender=ra.gender)
        except FaceRejected:
            pass
    return r_emb, q


def _rate(k: int, n: int) -> dict[str, float]:
    lo, hi = clopper_pearson(k, n) if n else (float("nan"), float("nan"))
    return {"matched": k, "rate": k / n if n else float("nan"), "ci95_low": lo, "ci95_high": hi}


def leak_rows(run: SwapRun, *, fars: Sequence[float] = SWAP_FARS, heldout: Sequence[str] = ()) -> tuple[list[dict], list[dict]]:
    """(threshold rows, match rows): per space, FAR, swapper and pick mode, how often the source,
    the target and the result is matched to the person's other faces."""
    labels = np.asarray(run.labels)
    cal = calibrate(run.source, labels, fars=fars, source="swap audit")
    i, j = np.nonzero((labels[:, None] == labels[None, :]) & ~np.eye(labels.size, dtype=bool))
    thr_rows, rows = [], []
    for s, sc in cal.spaces.items():
        kind = "held-out" if s in heldout else "build"
        ref = run.source[s][j]
        for t in sc.thresholds:
            thr_rows.append({"space": s, "kind": kind, "far": t.far, "threshold": t.threshold, "n_above": t.n_above,
                             "n_impostor_pairs": t.n_impostor_pairs, "supported": t.supported})
            src = np.einsum("nd,nd->n", run.source[s][i], ref)
            base = {"space": s, "kind": kind, "far": t.far, "pairs": int(i.size)}
            rows.append({**base, "swapper": "-", "mode": "-", "compared": "source (no swap)",
                         **_rate(int((src > t.threshold).sum()), int(i.size))})
            for (name, mode) in run.result:
                for what, emb in (("target", run.target[(name, mode)][s]), ("result", run.result[(name, mode)][s])):
                    sims = np.einsum("nd,nd->n", emb[i], ref)
                    rows.append({**base, "swapper": name, "mode": mode, "compared": what,
                                 **_rate(int((np.nan_to_num(sims, nan=-2.0) > t.threshold).sum()), int(i.size))})
    return thr_rows, rows


def quality_rows(run: SwapRun) -> list[dict]:
    """Per swapper and mode: share of results found again at the face's box, gender and age kept."""
    out = []
    for (name, mode), qs in run.quality.items():
        found = [(q, k) for k, q in enumerate(qs) if q["detected"]]
        n = len(qs)
        out.append({"swapper": name, "mode": mode, "faces": n, "swapped": sum(q["target"] is not None for q in qs),
                    "detected": len(found) / n if n else float("nan"),
                    "gender_kept": float(np.mean([q["gender"] == run.genders[k] for q, k in found])) if found else float("nan"),
                    "age_abs_diff": float(np.mean([abs(q["age"] - run.ages[k]) for q, k in found])) if found else float("nan")})
    return out


def write_grid(path: Path, run: SwapRun, mode: str) -> Path:
    """source | target | result of each swapper, one labelled face a row (the first GRID_ROWS)."""
    names = [name for name, m in run.grid if m == mode]
    n = min(len(run.crops), *(len(run.grid[(nm, mode)]) for nm in names)) if names else 0
    if n == 0:
        raise InputError("no swapped face to show")
    head = np.full((22, 112 * (2 + len(names)), 3), 255, np.uint8)
    for c, text in enumerate(["source", "target"] + [nm.replace("classical:geometry=", "") for nm in names]):
        cv2.putText(head, text[:16], (112 * c + 4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    rows = [head]
    for k in range(n):
        rows.append(np.hstack([run.crops[k], run.grid[(names[0], mode)][k][0]]
                              + [run.grid[(nm, mode)][k][1] for nm in names]))
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), cv2.cvtColor(np.vstack(rows), cv2.COLOR_RGB2BGR)):
        raise InputError(f"cannot write {path}")
    return path


def swap_leak_section(session: Any, labelled: LabelledSet, swapper_specs: Sequence[str], embedders: Mapping[str, Any], *,
                      heldout: Sequence[str] = (), modes: Sequence[str] = ("random", "furthest"), groups: bool = True,
                      out: Path, max_photos: int | None = None, progress: Progress | None = None) -> Section:
    """The report section: thresholds, match rates side by side, result quality, the grid."""
    swappers = dict(parse_swapper(s) for s in swapper_specs)
    run = run_swaps(session, labelled, swappers, embedders, modes=modes, groups=groups, max_photos=max_photos,
                    progress=progress)
    thr, rows = leak_rows(run, heldout=heldout)
    side = _side_by_side(rows)
    images = [write_grid(out / "images" / f"swap_grid_{m}.png", run, m) for m in modes]
    what = "aligned crops padded to 224 px photos" if labelled.aligned else "photos"
    text = (f"{len(run.files)} labelled {what} of {len(set(run.labels))} people from `{labelled.folder}`, each swapped "
            f"with {', '.join(f'`{s}`' for s in swappers)} onto a target picked ({', '.join(modes)}) from the build. "
            "Each pair is a swapped face against one of the same person's other faces: `source` = the real photo, "
            "`target` = the synthetic target alone, `result` = the swapped face re-detected at its box (not found = "
            "not matched). Thresholds at FAR 1e-2 / 1e-3 are calibrated on this set's impostor pairs, in every build "
            "space and held-out recogniser; rates with 95% Clopper-Pearson intervals over pairs.")
    write_csv(rows, out / "tables" / "raw_swap_audit_rates.csv")
    text += (" Every rate with its counts: [tables/raw_swap_audit_rates.csv](tables/raw_swap_audit_rates.csv). "
             "Quality: `detected` = share of results found again at the face's box; `gender_kept` and "
             "`age_abs_diff` compare the result's estimated gender and age with the real face's.")
    return Section("Source vs Result: the swapped photo", text,
                   {"swap audit: source vs target vs result": side, "swap audit thresholds": thr,
                    "swap audit result quality": quality_rows(run)}, images)


def _side_by_side(rows: list[dict]) -> list[dict]:
    """One row per (space, swapper, mode): source, target and result rates at each FAR, side by side."""
    src = {(r["space"], r["far"]): r for r in rows if r["compared"].startswith("source")}
    table: dict[tuple, dict] = {}
    for r in rows:
        if r["swapper"] == "-":
            continue
        key = (r["space"], r["swapper"], r["mode"])
        row = table.setdefault(key, {"space": r["space"], "kind": r["kind"], "swapper": r["swapper"], "mode": r["mode"],
                                     "pairs": r["pairs"]})
        f = f"{r['far']:g}"
        s = src[(r["space"], r["far"])]
        row[f"source@{f}"] = f"{s['rate']:.1%} [{s['ci95_low']:.1%}, {s['ci95_high']:.1%}]"
        row[f"{r['compared']}@{f}"] = f"{r['rate']:.1%} [{r['ci95_low']:.1%}, {r['ci95_high']:.1%}]"
    return list(table.values())
