"""`facebank audit`: the audit functions wired to a bank, an index build, real photos and a report folder.

Sections of the report (each one only when its inputs are given):

1. bank distributions per space (always): sampled pairwise similarities, nearest neighbours with
   near-duplicates flagged, counts per age group x gender x source;
2. calibration (`labelled` + `identities`): the largest face of every labelled photo embedded in
   every space; genuine/impostor scores, DET, EER, thresholds per FAR; saved as
   `calibration.json`, which `facebank index build --threshold-from` reads;
3. pick audit (`queries`, needs `build`): every face of every query photo, picked with one space
   in random and furthest modes, the pick scored in every space ("Source vs Target");
4. pixel metrics: SSIM/RMSE/PSNR of query crop vs picked crop, and furthest picks by each metric;
5. Source vs Result (`anonymize`, needs `build` and `labelled`): the labelled faces swapped, and how
   often the target and the result are matched to the person's other faces (audit.swap_leak).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from facebank.audit import distributions as D
from facebank.audit import pixel_metrics as P
from facebank.audit import plots
from facebank.audit.calibration import bound_name, calibrate, eer, roc_det
from facebank.audit.calibration_report import CalibrationReport
from facebank.audit.labelled import LabelledSet, load_labelled, read_identities
from facebank.audit.pick_audit import match_rate_table, per_query_rows
from facebank.audit.report import Section, write_csv, write_report
from facebank.audit.verdict import verdict_section
from facebank._io.files import atomic_write_text
from facebank.bank import open_bank
from facebank.bank.schema import STATUS_ANNOTATED, gender_name
from facebank.errors import FaceRejected, InputError, NoEligibleTarget
from facebank.index import groups as G
from facebank.index.cosine import cosine_of
from facebank.index.picker import MODES
from facebank.progress import Progress, ProgressEvent
from facebank.sources.base import IMAGE_SUFFIXES

__all__ = ["AuditConfig", "run_audit"]



@dataclass
class _Face:
    """One face of a real photo: what calibration and the pick audit need."""

    photo: str  # file name
    index: int  # 0 = the largest face of the photo
    embeddings: dict[str, np.ndarray]
    crop: np.ndarray  # aligned 112x112 RGB
    age: float | None = None  # estimated only when picks use age/gender groups
    gender: str | None = None

    @property
    def name(self) -> str:
        return f"{self.photo}#{self.index}"


@dataclass
class _Photos:
    """Detects and embeds real photos once; calibration and queries share the results."""

    spaces: list[str]
    models: Mapping[str, str]
    bank: Any
    attributes: bool = False  # estimate age and gender of every face (group-constrained picks)
    skipped: list[dict] = field(default_factory=list)
    _cache: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        from facebank.vision.registry import load_attribute_model, load_detector, load_embedder

        self.detector = load_detector("dlib")
        self.attr = load_attribute_model() if self.attributes else None
        self.embedders = {}
        for s in self.spaces:
            if s != "dlib" and s not in self.models:
                raise InputError(f"space {s!r} needs its model to embed real photos: pass --model {s}=PATH")
            e = load_embedder(s, self.models.get(s))
            want = self.bank.space_info(s).get("sha256")
            if want and e.info.sha256 != want:
                # Query vectors from another model would be compared with the bank's meaninglessly.
                raise InputError(f"the model given for space {s!r} ({e.info.name}, {e.info.sha256[:12]}) is not "
                                 f"the one that made the bank's vectors ({want[:12]})")
            self.embedders[s] = e

    def faces(self, path: Path, min_face_px: int = 20) -> list[_Face]:
        """Every face of the photo, largest first; [] (and a `skipped` row) when there is none."""
        from facebank.vision.align import align_face
        from facebank.vision.image_io import decode_image

        key = path.resolve()
        if key in self._cache:
            return self._cache[key]
        out: list[_Face] = []
        try:
            image = decode_image(path.read_bytes(), name=path.name)
            dets = [d for d in self.detector.detect(image)
                    if min(d.box[2] - d.box[0], d.box[3] - d.box[1]) >= min_face_px]
            dets.sort(key=lambda d: -(d.box[2] - d.box[0]) * (d.box[3] - d.box[1]))
            for k, d in enumerate(dets):
                a = self.attr.estimate(image, d) if self.attr else None
                out.append(_Face(path.name, k, {s: e.embed(image, d) for s, e in self.embedders.items()},
                                 align_face(image, d.landmarks, 112), a and float(a.age), a and a.gender))
            if not out:
                self.skipped.append({"photo": path.name, "reason": "no_face"})
        except FaceRejected as exc:
            self.skipped.append({"photo": path.name, "reason": exc.reason, "detail": exc.detail})
        self._cache[key] = out
        return out


def _tick(progress: Progress | None, stage: str, done: int, total: int) -> None:
    if progress is not None:
        progress(ProgressEvent(stage, done, total))


def _hist_rows(values: np.ndarray, bins: int = 50, **labels: Any) -> list[dict]:
    counts, edges = np.histogram(values, bins=bins)
    return [{**labels, "lo": float(edges[k]), "hi": float(edges[k + 1]), "count": int(c)} for k, c in enumerate(counts)]


def _raw(out: Path, rows: list[dict], name: str) -> str:
    """Per-item numbers too long for report.md: CSV beside the report; returns a markdown link."""
    write_csv(rows, out / "tables" / f"raw_{name}.csv")
    return f"[tables/raw_{name}.csv](tables/raw_{name}.csv)"


def _bank_section(bank, spaces, build_thr, *, max_pairs, cut, seed, out, progress) -> tuple[Section, dict]:
    img_dir = out / "images"
    status = bank.column("status")
    annotated = status == STATUS_ANNOTATED
    ages, genders, sources = bank.column("age"), bank.column("gender"), bank.column("source")
    counts = D.group_counts({
        "age_group": np.array([G.age_group(float(a)) if np.isfinite(a) and a >= 0 else "unknown" for a in ages[annotated]]),
        "gender": np.array([gender_name(int(g)) for g in genders[annotated]]),
        "source": sources[annotated],
    })
    stats, dups, nn_rows, hists, images, pair_sims, text = [], [], [], [], [], {}, []
    for k, s in enumerate(spaces):
        _tick(progress, "bank distributions", k, len(spaces))
        rows = np.flatnonzero(annotated & bank.present(s))
        if rows.size < 2:
            text.append(f"- **{s}**: {rows.size} annotated faces with a vector; no distribution.")
            continue
        x = bank.vectors(s)[rows]
        sims, total, sampled = D.pairwise_similarities(x, max_pairs=max_pairs, rng=seed)
        nn_i, nn_s = D.nearest_neighbour(x)
        c = cut[s]
        pairs = D.near_duplicates(nn_i, nn_s, c)
        pair_sims[s] = sims
        ids = bank.ids[rows]
        nn_rows += [{"space": s, "id": ids[i], "nn_id": ids[nn_i[i]], "nn_sim": float(nn_s[i])} for i in range(rows.size)]
        dups += [{"space": s, "id_kept": ids[i], "id_duplicate": ids[j], "row_kept": int(rows[i]),
                  "row_duplicate": int(rows[j]), "sim": sim} for i, j, sim in pairs]
        p01, p50, p99 = np.percentile(sims, [1, 50, 99])
        stats.append({"space": s, "faces": int(rows.size), "pairs_total": total, "pairs_scored": int(sims.size),
                      "sampled": sampled, "mean": float(sims.mean()), "p01": float(p01), "median": float(p50),
                      "p99": float(p99), "max": float(sims.max()), "nn_median": float(np.median(nn_s)),
                      "near_duplicate_above": c, "near_duplicate_pairs": len(pairs),
                      "build_threshold": build_thr.get(s)})
        hists += _hist_rows(sims, space=s)
        marks = {"build threshold": build_thr[s]} if s in build_thr else {}
        images.append(plots.plot_score_histogram(img_dir / f"bank_pairs_{s}.png", bank=sims, thresholds=marks,
                                                 title=f"{s}: pairwise similarity inside the bank"))
        images.append(plots.plot_nn_histogram(img_dir / f"bank_nn_{s}.png", nn_s, near_duplicate_above=c,
                                              title=f"{s}: nearest-neighbour similarity"))
        how = f"a uniform sample of {sims.size:,} of {total:,} pairs" if sampled else f"all {total:,} pairs"
        text.append(f"- **{s}**: {rows.size:,} annotated faces; pairwise histogram over {how}; "
                    f"{len(pairs)} near-duplicate pairs (nearest neighbour above {c:g}).")
    head = (f"{len(bank):,} faces, {int(annotated.sum()):,} annotated (status counts: "
            + ", ".join(f"{v}={int((status == v).sum())}" for v in np.unique(status)) + "). "
            "Near-duplicates: `facebank dedupe --bank B --space S --above SIM` removes one face of each pair.")
    _tick(progress, "bank distributions", len(spaces), len(spaces))
    text.append(f"\nPer-item numbers: pairwise histogram bins {_raw(out, hists, 'bank_pairwise_histogram')}, "
                f"every face's nearest neighbour {_raw(out, nn_rows, 'bank_nearest_neighbours')}.")
    tables = {"bank similarity stats": stats, "near duplicates": dups, "bank group counts": counts}
    return Section("Bank distributions", head + "\n\n" + "\n".join(text), tables, images), pair_sims


def _read_identities(labelled: Path, identities: Path) -> list[tuple[Path, str]]:
    return read_identities(labelled, identities)


def _labelled_faces(photos, labelled, identities, spaces, aligned, progress):
    """(file names, labels, space -> embeddings, aligned crops) of the labelled set."""
    if aligned:
        lf = load_labelled(LabelledSet(labelled, identities, True), photos.embedders, progress=progress)
        photos.skipped += lf.skipped
        return lf.files, lf.labels, lf.embeddings, lf.crops
    listed = _read_identities(labelled, identities)
    faces, labels = [], []
    for k, (path, who) in enumerate(listed):
        _tick(progress, "calibration photos", k, len(listed))
        found = photos.faces(path)
        if found:
            faces.append(found[0])  # the largest face is the labelled person
            labels.append(who)
    _tick(progress, "calibration photos", len(listed), len(listed))
    return ([f.photo for f in faces], labels, {s: np.stack([f.embeddings[s] for f in faces]) for s in spaces},
            [f.crop for f in faces])


def _calibration_section(photos, labelled, identities, spaces, fars, build_thr, pair_sims, *,
                         out, progress, aligned=False, conservative=False) -> tuple[Section, CalibrationReport, tuple]:
    img_dir = out / "images"
    n_listed = len(_read_identities(labelled, identities))
    files, labels, emb, crops = _labelled_faces(photos, labelled, identities, spaces, aligned, progress)
    if len(files) < 2:
        raise InputError(f"fewer than two labelled faces found in {labelled}")
    report = calibrate(emb, np.array(labels), fars=fars, source=str(labelled), conservative=conservative)
    report.save(out / "calibration.json")
    i, j = np.triu_indices(len(files), k=1)
    same = np.array(labels)[i] == np.array(labels)[j]
    score_rows, images, text = [], [], []
    for s, cal in report.spaces.items():
        gen, imp = report.scores[s]
        # pair_scores returns genuine then impostor pairs, each in row-major (i, j) order.
        for (a, b), sc in zip(zip(i[same], j[same]), gen):
            score_rows.append({"space": s, "photo_a": files[a], "photo_b": files[b], "genuine": True, "score": sc})
        for (a, b), sc in zip(zip(i[~same], j[~same]), imp):
            score_rows.append({"space": s, "photo_a": files[a], "photo_b": files[b], "genuine": False, "score": sc})
        marks = {f"FAR {t.far:g}": t.threshold for t in cal.thresholds if t.supported}
        ops = {**marks, **({"build": build_thr[s]} if s in build_thr else {})}
        marks.update({"EER": cal.eer_threshold, **({"build": build_thr[s]} if s in build_thr else {})})
        images.append(plots.plot_score_histogram(img_dir / f"calibration_{s}.png", genuine=gen, impostor=imp,
                                                 bank=pair_sims.get(s), thresholds=marks,
                                                 title=f"{s}: genuine, impostor and bank-pair similarities"))
        images.append(plots.plot_det(img_dir / f"det_{s}.png", roc_det(gen, imp), eer=eer(gen, imp),
                                     operating_points=ops, title=f"{s}: DET"))
        figs = "; ".join(f"FAR {t.far:g}: {t.threshold:.4f}, {t.n_above:,} of {t.n_impostor_pairs:,} impostor pairs above "
                         f"(FAR {t.achieved_far:.2e}, 95% CI [{t.ci_low:.2e}, {t.ci_high:.2e}])"
                         + ("" if t.supported else " NOT supported") for t in cal.thresholds)
        text.append(f"- **{s}**: {cal.n_genuine:,} genuine / {cal.n_impostor:,} impostor pairs; "
                    f"{cal.eer_text} at {cal.eer_threshold:.4f}; {figs}.")
    what = "aligned crops (embedded as they are)" if aligned else "photos (largest face of each)"
    how = {"far": "bound far: each threshold is the lowest whose 95% Clopper-Pearson upper bound on the "
                  "FAR is <= the asked FAR",
           "privacy": "bound privacy (the shipped defaults' choice): each threshold is the highest whose 95% Clopper-Pearson lower bound "
                      "on the FAR is >= the asked FAR, so it lies at or below a recogniser's own threshold at that FAR",
           }.get(report.bound, "bound none: each threshold is the lowest whose measured FAR is <= the asked FAR (the point "
                         "estimate; looser than the shipped defaults)")
    head = (f"{len(files)} of {n_listed} labelled {what} of {report.n_identities} identities from `{labelled}`; {how}. "
            f"A figure is supported when at least 30 impostor pairs lie above its threshold, or when its 95% upper "
            f"bound is <= the asked FAR. Intervals treat pairs as independent (pairs sharing a face are not), so "
            f"they are somewhat narrow. Saved as `calibration.json`: "
            f"`facebank index build --threshold-from calibration.json --far 1e-3`.")
    text.append(f"\nEvery pair's score: {_raw(out, score_rows, 'calibration_scores')}.")
    tables = {"calibration thresholds": report.rows()}
    return Section("Calibration", head + "\n\n" + "\n".join(text), tables, images), report, (labels, emb, crops)


def _list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _score(face: _Face, bank, row: int, spaces: Sequence[str]) -> dict[str, float]:
    """Similarity of the query to bank row `row` in every space: the picker's (facebank.index.cosine)."""
    return {s: cosine_of(face.embeddings[s], bank.vector(s, row)) for s in spaces}


def _pick_sections(session, bank, photos, queries, score_thr, *, seed, max_pixel_candidates, groups,
                   out, progress) -> list[Section]:
    img_dir = out / "images"
    faces = [f for p in _list_images(queries) for f in photos.faces(p)]
    if not faces:
        raise InputError(f"no face found in any photo of {queries}")
    spaces, rng = session.spaces, np.random.default_rng(seed)
    names = [f.name for f in faces]
    # picks[(picked_with, mode)] -> per query (row or None, {space: sim})
    picks: dict[tuple[str, str], list[tuple[int | None, dict[str, float]]]] = {}
    total = len(spaces) * len(MODES) * len(faces)
    done = 0
    for a in spaces:
        for mode in MODES:
            got = []
            for f in faces:
                try:
                    where = {"age": f.age, "gender": f.gender, "fallback": "widen_age"} if groups else {}
                    t = session.pick_target({a: f.embeddings[a]}, mode=mode, rng=rng, **where)
                    got.append((t.row, _score(f, bank, t.row, spaces)))
                except NoEligibleTarget:
                    got.append((None, {s: float("nan") for s in spaces}))
                done += 1
                _tick(progress, "picks", done, total)
            picks[(a, mode)] = got
    # Pixel-metric picks (furthest; a random pixel pick without a threshold is just a random face).
    cand = np.asarray(session.rows)
    if cand.size > max_pixel_candidates:
        cand = np.sort(rng.choice(cand, size=max_pixel_candidates, replace=False))
    crops = np.stack([bank.crop(int(r)) for r in cand])
    for k, metric in enumerate(P.METRICS):
        got = []
        for f in faces:
            pp = P.pick_by_pixel_metric(f.crop, crops, metric=metric, mode="furthest")
            row = int(cand[pp.index])
            got.append((row, {**_score(f, bank, row, spaces), f"pixel:{metric}": pp.value}))
        picks[(f"pixel:{metric}", "furthest")] = got
        _tick(progress, "pixel picks", k + 1, len(P.METRICS))
    match, per_query, pixel_rows, grids = [], [], [], {"emb": [], "pix": []}
    for (a, mode), got in picks.items():
        sims = {a: {b: np.array([g[1][b] for g in got]) for b in spaces}}
        ids = [None if r is None else bank.ids[r] for r, _ in got]
        match += match_rate_table(sims, score_thr, mode=mode)
        per_query += per_query_rows(names, sims, score_thr, mode=mode, target_ids={a: ids})
        tcrops = [None if r is None else bank.crop(r) for r, _ in got]
        for f, (_, sc), tid, tc in zip(faces, got, ids, tcrops):
            row = {"query": f.name, "picked_with": a, "mode": mode, "target": tid}
            if tc is not None:
                row.update(ssim=P.ssim(f.crop, tc), rmse=P.rmse(f.crop, tc), psnr=P.psnr(f.crop, tc))
            pixel_rows.append({**row, **{f"sim_{s}": sc[s] for s in spaces}})
        ok = [k for k, tc in enumerate(tcrops) if tc is not None]
        if ok:
            shown = ([a] if a.startswith("pixel:") else []) + list(spaces)  # a pixel grid shows its metric first
            caps = [f"{faces[k].name}: " + " / ".join(f"{s} {got[k][1][s]:.2f}" for s in shown) for k in ok]
            grids["pix" if a.startswith("pixel:") else "emb"].append(plots.plot_pick_grid(
                img_dir / f"picks_{a.replace(':', '_')}_{mode}.png", np.stack([faces[k].crop for k in ok]),
                np.stack([tcrops[k] for k in ok]), captions=caps, title=f"picked with {a}, {mode}"))
    summary = []
    for (a, mode) in picks:
        mine = [r for r in pixel_rows if r["picked_with"] == a and r["mode"] == mode and "ssim" in r]
        summary.append({"picked_with": a, "mode": mode, "n": len(mine),
                        **{f"mean_{m}": float(np.mean([r[m] for r in mine])) if mine else float("nan") for m in P.METRICS}})
    group_text = ("from the face's estimated age/gender group, widened by age when empty" if groups
                  else "from the whole build, no age/gender group")
    thr_text = ", ".join(f"{s} {t:.4f}" for s, t in score_thr.items())
    text = (f"{len(faces)} faces in {len(_list_images(queries))} photos of `{queries}`. Each face is picked with one "
            f"space at the build's threshold ({group_text}), seed {seed}, then scored in every space. "
            f"A recogniser *matches* when similarity > threshold ({thr_text}). Rows picked with A and scored with "
            "B != A show whether the guarantee in A carries over to B; `any` = matched in at least one space.")
    pix = (f"SSIM/RMSE/PSNR between each query's aligned crop and its target's crop (higher SSIM/PSNR and lower RMSE "
           f"= more alike). `pixel:<metric>` rows pick the furthest of {crops.shape[0]:,} bank crops by that metric; "
           "their embedding similarities are in the pick audit tables above (RMSE and PSNR, both functions of "
           f"the MSE, pick the same face). Per query: {_raw(out, pixel_rows, 'pixel_metrics')}.")
    text += f"\n\nEvery pick, scored in every space: {_raw(out, per_query, 'pick_similarities')}."
    return [Section("Pick audit: Source vs Target", text,
                    {"match rates": match}, grids["emb"]),
            Section("Pixel metrics", pix, {"pixel metrics summary": summary}, grids["pix"])]


def _cuts(near_duplicate_above: float | Mapping[str, float], spaces: Sequence[str]) -> dict[str, float]:
    if isinstance(near_duplicate_above, Mapping):
        return {s: float(near_duplicate_above.get(s, 0.99)) for s in spaces}
    return {s: float(near_duplicate_above) for s in spaces}


@dataclass(frozen=True)
class AuditConfig:
    """What an audit reads and how: the inputs of `run_audit`, each section only when its inputs are given."""

    bank: str | os.PathLike
    out: str | os.PathLike  # the report folder
    build: str | os.PathLike | None = None  # index build dir; needed for the pick audit
    labelled: str | os.PathLike | None = None  # folder of identity-labelled real photos
    identities: str | os.PathLike | None = None  # CSV file,identity_id (default: labelled/identities.csv)
    queries: str | os.PathLike | None = None  # folder of real photos; every face is a query
    far_levels: Sequence[float] = (1e-2, 1e-3, 1e-4)
    score_far: float = 1e-3  # the calibrated threshold picks are scored at (if supported)
    max_pairs: int = 200_000  # bank pairs scored per space (sampled above it)
    near_duplicate_above: float | Mapping[str, float] = 0.99  # per space, or one cut for all
    max_pixel_candidates: int = 500  # bank crops the pixel-metric picks search
    groups: bool = True  # pick from the query's estimated age/gender group, as the pipeline does
    seed: int = 0
    models: Mapping[str, str] | None = None  # space -> ONNX path for non-dlib spaces
    aligned: bool = False  # labelled images are aligned 112 crops (facebank.audit.labelled)
    # Which 95% bound picks each calibrated threshold (facebank.audit.calibration): "privacy" (the
    # lower bound on the FAR is >= the FAR: at or below a recogniser's own threshold; the shipped
    # defaults' choice, so the default here), "far" (the upper bound <= the FAR) or "none" (the point estimate).
    bound: str = "privacy"
    conservative: bool | str | None = None  # the old spelling of bound: True = "far", False = "none", "privacy"
    heldout: Mapping[str, str] | None = None  # space -> model of recognisers the build does not use
    transfer: bool = False  # the privacy margin's leave-one-out transfer table (needs labelled + build)
    anonymize: Sequence[str] = ()  # swappers ("classical:geometry=warp") run on the labelled faces: Source vs Result
    anonymize_max_photos: int | None = None  # the first N labelled faces only (None: all)


def run_audit(config: AuditConfig | None = None, /, *, progress: Progress | None = None, **fields: Any) -> Path:
    """Write the audit report folder `config.out` and return the path of its `report.md`.

    `run_audit(AuditConfig(bank=..., out=...))`, or the same fields as keywords.
    """
    return _run_audit(config if config is not None else AuditConfig(**fields), progress)


def _run_audit(cfg: AuditConfig, progress: Progress | None) -> Path:
    from facebank.pick.session import FaceBank

    bank, build, labelled, identities, queries, out = cfg.bank, cfg.build, cfg.labelled, cfg.identities, \
        cfg.queries, cfg.out
    far_levels, score_far, max_pairs, near_duplicate_above = cfg.far_levels, cfg.score_far, cfg.max_pairs, \
        cfg.near_duplicate_above
    max_pixel_candidates, groups, seed, models = cfg.max_pixel_candidates, cfg.groups, cfg.seed, cfg.models
    aligned, heldout = cfg.aligned, cfg.heldout
    conservative = bound_name(cfg.bound if cfg.conservative is None else cfg.conservative)
    out = Path(out)
    bank_path = Path(bank)
    if not bank_path.is_file():
        raise InputError(f"bank {bank_path} does not exist")
    for name, p in (("labelled", labelled), ("queries", queries)):
        if p is not None and not Path(p).is_dir():
            raise InputError(f"--{name} {p} is not a folder")
    if identities is None and labelled is not None:
        identities = Path(labelled) / "identities.csv"
    if identities is not None and not Path(identities).is_file():
        raise InputError(f"identities CSV {identities} does not exist")
    if cfg.anonymize and (build is None or labelled is None):
        raise InputError("the swap audit (--anonymize) needs an index build (--build) and labelled faces (--labelled)")
    if queries is not None and build is None:
        raise InputError("the pick audit (--queries) needs an index build (--build)")
    fars = tuple(sorted({float(f) for f in far_levels} | {float(score_far)}, reverse=True))
    (out / "images").mkdir(parents=True, exist_ok=True)
    session = FaceBank(build, bank=bank_path) if build is not None else None
    b = session.bank if session else open_bank(bank_path)
    try:
        spaces = session.spaces if session else b.spaces
        build_thr = dict(session.thresholds) if session else {}
        config = {"bank": str(bank_path.resolve()), "bank_content_hash": b.content_hash,
                  "build": str(session.build_dir) if session else None, "spaces": spaces,
                  "labelled": str(labelled) if labelled else None, "identities": str(identities) if identities else None,
                  "queries": str(queries) if queries else None, "far_levels": list(fars), "score_far": score_far,
                  "max_pairs": max_pairs, "near_duplicate_above": _cuts(near_duplicate_above, spaces),
                  "max_pixel_candidates": max_pixel_candidates, "groups": groups, "seed": seed, "models": dict(models or {}),
                  "aligned": aligned, "bound": conservative, "heldout": dict(heldout or {}),
                  "transfer": cfg.transfer, "anonymize": list(cfg.anonymize)}
        sec, pair_sims = _bank_section(b, spaces, build_thr, max_pairs=max_pairs, seed=seed, out=out,
                                       cut=_cuts(near_duplicate_above, spaces), progress=progress)
        sections = [sec]
        photos = _Photos(spaces, dict(models or {}), b, groups) if (labelled or queries) else None
        report = None
        if labelled is not None:
            sec, report, lab = _calibration_section(photos, Path(labelled), Path(identities), spaces, fars, build_thr,
                                                    pair_sims, out=out, progress=progress, aligned=aligned,
                                                    conservative=conservative)
            sections.append(sec)
            if session is not None:
                from facebank.audit.api import load_embedders
                from facebank.audit.privacy import privacy_section

                held = load_embedders(list(heldout or {}), heldout) if heldout else {}
                sections.append(privacy_section(session, b, report, labels=lab[0], embeddings=lab[1], crops=lab[2],
                                                heldout=held, out=out, seed=seed, progress=progress))
                if cfg.transfer:
                    from facebank.audit.margin_transfer import TransferConfig, transfer_section

                    sections.append(transfer_section(session, b, labels=lab[0], embeddings=lab[1], crops=lab[2],
                                                     heldout=held, out=out, config=TransferConfig(seed=seed),
                                                     progress=progress))
                if cfg.anonymize:
                    from facebank.audit.swap_leak import swap_leak_section

                    sections.append(swap_leak_section(
                        session, LabelledSet(Path(labelled), Path(identities), aligned), cfg.anonymize,
                        {**photos.embedders, **held}, heldout=list(held), groups=groups, out=out,
                        max_photos=cfg.anonymize_max_photos, progress=progress))
        score_thr, thr_rows = {}, []
        for s in spaces:
            entry = report.spaces[s].at_far(score_far) if report else None
            if entry is not None and entry.supported:
                score_thr[s], src = entry.threshold, f"calibrated at FAR {score_far:g} ({entry.n_impostor_pairs:,} impostor pairs)"
            elif s in build_thr:
                score_thr[s], src = build_thr[s], "build: " + (session.manifest.spaces[s].threshold_source or "?")
            else:
                continue
            thr_rows.append({"space": s, "build_threshold": build_thr.get(s), "score_threshold": score_thr[s], "source": src})
        if queries is not None:
            sections += _pick_sections(session, b, photos, Path(queries), score_thr, seed=seed, out=out,
                                       max_pixel_candidates=max_pixel_candidates, groups=groups, progress=progress)
        run_tables = {"config": [{"key": k, "value": json.dumps(v) if isinstance(v, (dict, list)) else v}
                                 for k, v in config.items()], "thresholds used": thr_rows}
        if photos is not None:
            run_tables["skipped photos"] = photos.skipped
        sections.insert(0, Section("Run", "Inputs and thresholds of this audit (also in `config.json`).", run_tables))
        _tick(progress, "verdict", 0, 1)
        sections.insert(0, verdict_section(b, session, report, sections))  # the first screen
        _tick(progress, "verdict", 1, 1)
        atomic_write_text(out / "config.json", json.dumps(config, indent=1) + "\n")
        return write_report(out, sections, title="facebank audit")
    finally:
        (session or b).close()
