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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from facebank.audit.calibration import bound_name
from facebank.audit.labelled import LabelledSet
from facebank.audit.photos import AuditPhotos
from facebank.audit.report import Section, write_report
from facebank.audit.sections import bank_section, calibration_section, pick_sections, tick
from facebank.audit.verdict import verdict_section
from facebank._io.files import atomic_write_text
from facebank.bank import open_bank
from facebank.errors import InputError
from facebank.progress import Progress

__all__ = ["AuditConfig", "run_audit"]


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


def _checked_identities(cfg: AuditConfig) -> Path | None:
    """Every input checked before any work: the identities CSV of the labelled photos (or None)."""
    if not Path(cfg.bank).is_file():
        raise InputError(f"bank {Path(cfg.bank)} does not exist")
    for name, p in (("labelled", cfg.labelled), ("queries", cfg.queries)):
        if p is not None and not Path(p).is_dir():
            raise InputError(f"--{name} {p} is not a folder")
    identities = cfg.identities
    if identities is None and cfg.labelled is not None:
        identities = Path(cfg.labelled) / "identities.csv"
    if identities is not None and not Path(identities).is_file():
        raise InputError(f"identities CSV {identities} does not exist")
    if cfg.anonymize and (cfg.build is None or cfg.labelled is None):
        raise InputError("the swap audit (--anonymize) needs an index build (--build) and labelled faces (--labelled)")
    if cfg.queries is not None and cfg.build is None:
        raise InputError("the pick audit (--queries) needs an index build (--build)")
    return None if identities is None else Path(identities)


def _held_out_sections(cfg: AuditConfig, session, b, report, lab, photos, identities: Path, out: Path,
                       progress: Progress | None) -> list[Section]:
    """Privacy against held-out recognisers, the margin's transfer and Source vs Result (need a build)."""
    from facebank.audit.api import load_embedders
    from facebank.audit.privacy import privacy_section

    held = load_embedders(list(cfg.heldout or {}), cfg.heldout) if cfg.heldout else {}
    out_sections = [privacy_section(session, b, report, labels=lab[0], embeddings=lab[1], crops=lab[2],
                                    heldout=held, out=out, seed=cfg.seed, progress=progress)]
    if cfg.transfer:
        from facebank.audit.margin_transfer import TransferConfig, transfer_section

        out_sections.append(transfer_section(session, b, labels=lab[0], embeddings=lab[1], crops=lab[2],
                                             heldout=held, out=out, config=TransferConfig(seed=cfg.seed),
                                             progress=progress))
    if cfg.anonymize:
        from facebank.audit.swap_leak import swap_leak_section

        out_sections.append(swap_leak_section(
            session, LabelledSet(Path(cfg.labelled), identities, cfg.aligned), cfg.anonymize,
            {**photos.embedders, **held}, heldout=list(held), groups=cfg.groups, out=out,
            max_photos=cfg.anonymize_max_photos, progress=progress))
    return out_sections


def _score_thresholds(spaces, report, build_thr: dict, session, score_far: float) -> tuple[dict, list[dict]]:
    """The threshold each space's picks are scored at (calibrated at `score_far` when supported, else
    the build's), and the table rows that say which."""
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
    return score_thr, thr_rows


def _run_audit(cfg: AuditConfig, progress: Progress | None) -> Path:
    from facebank.pick.session import FaceBank

    identities = _checked_identities(cfg)
    conservative = bound_name(cfg.bound if cfg.conservative is None else cfg.conservative)
    out, bank_path = Path(cfg.out), Path(cfg.bank)
    fars = tuple(sorted({float(f) for f in cfg.far_levels} | {float(cfg.score_far)}, reverse=True))
    (out / "images").mkdir(parents=True, exist_ok=True)
    session = FaceBank(cfg.build, bank=bank_path) if cfg.build is not None else None
    b = session.bank if session else open_bank(bank_path)
    try:
        spaces = session.spaces if session else b.spaces
        build_thr = dict(session.thresholds) if session else {}
        cuts = _cuts(cfg.near_duplicate_above, spaces)
        config = {"bank": str(bank_path.resolve()), "bank_content_hash": b.content_hash,
                  "build": str(session.build_dir) if session else None, "spaces": spaces,
                  "labelled": str(cfg.labelled) if cfg.labelled else None,
                  "identities": str(identities) if identities else None,
                  "queries": str(cfg.queries) if cfg.queries else None, "far_levels": list(fars),
                  "score_far": cfg.score_far, "max_pairs": cfg.max_pairs, "near_duplicate_above": cuts,
                  "max_pixel_candidates": cfg.max_pixel_candidates, "groups": cfg.groups, "seed": cfg.seed,
                  "models": dict(cfg.models or {}), "aligned": cfg.aligned, "bound": conservative,
                  "heldout": dict(cfg.heldout or {}), "transfer": cfg.transfer, "anonymize": list(cfg.anonymize)}
        sec, pair_sims = bank_section(b, spaces, build_thr, max_pairs=cfg.max_pairs, seed=cfg.seed, out=out,
                                      cut=cuts, progress=progress)
        sections = [sec]
        photos = AuditPhotos(spaces, dict(cfg.models or {}), b, cfg.groups) if (cfg.labelled or cfg.queries) else None
        report = None
        if cfg.labelled is not None:
            sec, report, lab = calibration_section(photos, Path(cfg.labelled), identities, spaces, fars, build_thr,
                                                   pair_sims, out=out, progress=progress, aligned=cfg.aligned,
                                                   conservative=conservative)
            sections.append(sec)
            if session is not None:
                sections += _held_out_sections(cfg, session, b, report, lab, photos, identities, out, progress)
        score_thr, thr_rows = _score_thresholds(spaces, report, build_thr, session, cfg.score_far)
        if cfg.queries is not None:
            sections += pick_sections(session, b, photos, Path(cfg.queries), score_thr, seed=cfg.seed, out=out,
                                      max_pixel_candidates=cfg.max_pixel_candidates, groups=cfg.groups,
                                      progress=progress)
        run_tables = {"config": [{"key": k, "value": json.dumps(v) if isinstance(v, (dict, list)) else v}
                                 for k, v in config.items()], "thresholds used": thr_rows}
        if photos is not None:
            run_tables["skipped photos"] = photos.skipped
        sections.insert(0, Section("Run", "Inputs and thresholds of this audit (also in `config.json`).", run_tables))
        tick(progress, "verdict", 0, 1)
        sections.insert(0, verdict_section(b, session, report, sections))  # the first screen
        tick(progress, "verdict", 1, 1)
        atomic_write_text(out / "config.json", json.dumps(config, indent=1) + "\n")
        return write_report(out, sections, title="facebank audit")
    finally:
        (session or b).close()
