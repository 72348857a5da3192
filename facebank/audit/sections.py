"""The sections of `facebank audit`'s report that read the bank and real photos: bank
distributions, calibration on identity-labelled faces, and the pick audit with pixel metrics
(the module docstring of `facebank.audit.run` lists them; `run` wires them together)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from facebank.audit import distributions as D
from facebank.audit import pixel_metrics as P
from facebank.audit import plots
from facebank.audit.calibration import calibrate, eer, roc_det
from facebank.audit.calibration_report import CalibrationReport
from facebank.audit.labelled import LabelledSet, load_labelled, read_identities
from facebank.audit.photos import AuditFace, list_images
from facebank.audit.pick_audit import match_rate_table, per_query_rows
from facebank.audit.report import Section, write_csv
from facebank.bank.schema import STATUS_ANNOTATED, gender_name
from facebank.errors import InputError, NoEligibleTarget
from facebank.index import groups as G
from facebank.index.cosine import cosine_of
from facebank.index.picker import MODES
from facebank.progress import Progress, ProgressEvent

__all__ = ["bank_section", "calibration_section", "pick_sections", "tick"]


def tick(progress: Progress | None, stage: str, done: int, total: int) -> None:
    if progress is not None:
        progress(ProgressEvent(stage, done, total))


def hist_rows(values: np.ndarray, bins: int = 50, **labels: Any) -> list[dict]:
    counts, edges = np.histogram(values, bins=bins)
    return [{**labels, "lo": float(edges[k]), "hi": float(edges[k + 1]), "count": int(c)} for k, c in enumerate(counts)]


def raw_table(out: Path, rows: list[dict], name: str) -> str:
    """Per-item numbers too long for report.md: CSV beside the report; returns a markdown link."""
    write_csv(rows, out / "tables" / f"raw_{name}.csv")
    return f"[tables/raw_{name}.csv](tables/raw_{name}.csv)"


def bank_section(bank, spaces, build_thr, *, max_pairs, cut, seed, out, progress) -> tuple[Section, dict]:
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
        tick(progress, "bank distributions", k, len(spaces))
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
        hists += hist_rows(sims, space=s)
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
    tick(progress, "bank distributions", len(spaces), len(spaces))
    text.append(f"\nPer-item numbers: pairwise histogram bins {raw_table(out, hists, 'bank_pairwise_histogram')}, "
                f"every face's nearest neighbour {raw_table(out, nn_rows, 'bank_nearest_neighbours')}.")
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
        tick(progress, "calibration photos", k, len(listed))
        found = photos.faces(path)
        if found:
            faces.append(found[0])  # the largest face is the labelled person
            labels.append(who)
    tick(progress, "calibration photos", len(listed), len(listed))
    return ([f.photo for f in faces], labels, {s: np.stack([f.embeddings[s] for f in faces]) for s in spaces},
            [f.crop for f in faces])


def calibration_section(photos, labelled, identities, spaces, fars, build_thr, pair_sims, *,
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
    text.append(f"\nEvery pair's score: {raw_table(out, score_rows, 'calibration_scores')}.")
    tables = {"calibration thresholds": report.rows()}
    return Section("Calibration", head + "\n\n" + "\n".join(text), tables, images), report, (labels, emb, crops)


def _score(face: AuditFace, bank, row: int, spaces: Sequence[str]) -> dict[str, float]:
    """Similarity of the query to bank row `row` in every space: the picker's (facebank.index.cosine)."""
    return {s: cosine_of(face.embeddings[s], bank.vector(s, row)) for s in spaces}


def pick_sections(session, bank, photos, queries, score_thr, *, seed, max_pixel_candidates, groups,
                   out, progress) -> list[Section]:
    img_dir = out / "images"
    faces = [f for p in list_images(queries) for f in photos.faces(p)]
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
                tick(progress, "picks", done, total)
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
        tick(progress, "pixel picks", k + 1, len(P.METRICS))
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
    text = (f"{len(faces)} faces in {len(list_images(queries))} photos of `{queries}`. Each face is picked with one "
            f"space at the build's threshold ({group_text}), seed {seed}, then scored in every space. "
            f"A recogniser *matches* when similarity > threshold ({thr_text}). Rows picked with A and scored with "
            "B != A show whether the guarantee in A carries over to B; `any` = matched in at least one space.")
    pix = (f"SSIM/RMSE/PSNR between each query's aligned crop and its target's crop (higher SSIM/PSNR and lower RMSE "
           f"= more alike). `pixel:<metric>` rows pick the furthest of {crops.shape[0]:,} bank crops by that metric; "
           "their embedding similarities are in the pick audit tables above (RMSE and PSNR, both functions of "
           f"the MSE, pick the same face). Per query: {raw_table(out, pixel_rows, 'pixel_metrics')}.")
    text += f"\n\nEvery pick, scored in every space: {raw_table(out, per_query, 'pick_similarities')}."
    return [Section("Pick audit: Source vs Target", text,
                    {"match rates": match}, grids["emb"]),
            Section("Pixel metrics", pix, {"pixel metrics summary": summary}, grids["pix"])]
