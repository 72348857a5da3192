"""The whole-pipeline build (`facebank build`): every stage from a config, resumable at every stage.

sources -> bank (ingest / generate + annotate) -> embeddings per space -> index build -> sample
picks. Each stage skips what the bank already holds, so re-running after a kill finishes the job.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import numpy as np

from facebank._io.deps import require
from facebank.config import BuildConfig, SourceConfig
from facebank.errors import SourceError
from facebank.progress import Progress, relabel


def calibrated_thresholds(report: str | os.PathLike, far: float):
    """The thresholds of a calibration report (facebank audit) at `far`, as `index.build.Calibrated`,
    with the figures behind each one (counts, interval, data) for the build's manifest."""
    from facebank.audit.calibration import CalibrationReport, thresholds_from_report
    from facebank.index.build import Calibrated

    thresholds = thresholds_from_report(report, far)
    rep = CalibrationReport.load(report)
    figures = {}
    for space in thresholds:
        t = rep.spaces[space].at_far(far)
        figures[space] = {"far": far, "threshold": t.threshold, "n_impostor_pairs": t.n_impostor_pairs,
                          "n_above": t.n_above, "achieved_far": t.achieved_far, "ci95": [t.ci_low, t.ci_high],
                          "supported": t.supported, "conservative": t.conservative,
                          "data": list(rep.data) or rep.source}
    return Calibrated(thresholds, f"calibration report {report} at FAR {far:g}", figures)


def build_index(bank_path: str | os.PathLike, *, threshold_from: str | None = None, far: float = 1e-3,
                **options) -> Path:
    """Build indexes for the bank's spaces; returns the build directory (`facebank.build_index`).

    threshold_from / far: a calibration report (facebank audit) and the false-accept rate to read
    it at. The other options are those of the index stage, facebank.index.build.build_index
    (spaces, out, kind, thresholds, build_id, make_current), which takes calibrated thresholds
    as values: this reads them from the report first.
    """
    from facebank.index import build

    calibrated = calibrated_thresholds(threshold_from, far) if threshold_from else None
    return build.build_index(bank_path, calibrated=calibrated, far=far, **options)


def _run_source(cfg: BuildConfig, src: SourceConfig, progress: Progress | None) -> dict:
    from facebank.engine import run_annotate, run_generate, run_ingest

    eng = cfg.engine
    if src.kind == "stylegan":
        from facebank.sources.stylegan_source import GenerateConfig

        gen = GenerateConfig(network=src.path, seeds=src.seeds, psi=src.psi, class_idx=src.class_idx,
                             device=src.device, image_format=src.image_format, cache_dir=cfg.cache_dir,
                             sha256=src.sha256)
        try:
            # One overlapped pass: the generator makes faces while worker processes encode,
            # annotate and embed them, so a GPU is not kept waiting on the CPU stages.
            g = run_generate(cfg.bank, gen, engine=eng, vision=cfg.vision, spaces=cfg.spaces, workers=cfg.workers,
                             progress=progress)
        except SourceError as exc:
            raise SourceError(
                f"the StyleGAN source {src.path} cannot be had ({exc}). Offline or no network pickle yet? "
                "Give a local face source instead: `make bank SOURCE=<folder or generated.photos export>` "
                "or `facebank build --source PATH`"
            ) from exc
        # Finishes faces a run of `facebank generate --no-annotate` (or an older version) left behind.
        a = run_annotate(cfg.bank, cfg.vision, engine=eng, progress=progress, workers=cfg.workers)
        rejected = g.rejected + a.rejected
        return {"kind": "stylegan", "path": src.path, "device": g.device, "image_format": g.image_format,
                "generated": g.generated, "already": g.already_in_bank, "annotated": g.annotated + a.added,
                "rejected": dict(rejected)}
    if src.kind == "generated_photos":
        from facebank.sources.generated_photos import iter_generated_photos as iterate
    else:
        from facebank.sources.folder import iter_folder as iterate
    items = list(iterate(src.path))
    s = run_ingest(cfg.bank, items, engine=eng, vision=cfg.vision, spaces=cfg.spaces,
                   progress=relabel(progress, f"ingest {Path(src.path).name}"), workers=cfg.workers)
    return {"kind": src.kind, "path": src.path, "added": s.added, "already": s.already_in_bank,
            "duplicates": len(s.duplicates), "rejected": dict(s.rejected)}


def require_for_build(cfg: BuildConfig) -> None:
    """Every optional module `cfg`'s stages need, checked before any work (MissingDependency names
    what installs it), so a plain install fails in its first second, not after the embeddings."""
    require("faiss")  # the index stage
    if any(src.kind == "stylegan" for src in cfg.sources):
        require("torch")
    if cfg.engine.kind == "ray":
        require("ray")


def run_build(cfg: BuildConfig, *, progress: Progress | None = None) -> dict:
    """Run every stage of `cfg`; returns a summary (and a `text` for people)."""
    from facebank.pick.api import open_facebank
    from facebank.bank import open_bank
    from facebank.index.build import build_index as build_stage, resolve_build
    from facebank.index.manifest import read_manifest
    from facebank.engine import engine_session, run_embed

    require_for_build(cfg)
    if not cfg.sources:
        raise SourceError(
            "no face source: the config names none. Give one: `make bank SOURCE=<folder or generated.photos "
            "export>` or `facebank build --source PATH`"
        )
    Path(cfg.bank).parent.mkdir(parents=True, exist_ok=True)
    result: dict = {"bank": cfg.bank, "sources": [], "spaces": {}, "engine": cfg.engine.kind}
    with engine_session(cfg.engine):  # one Ray connection for every stage
        for src in cfg.sources:
            result["sources"].append(_run_source(cfg, src, progress))
        for space in cfg.spaces:
            e = run_embed(cfg.bank, space, engine=cfg.engine, progress=progress, workers=cfg.workers)
            result["spaces"][space.space] = {"embedded": e.embedded, "already": e.already_in_bank}
    with open_bank(cfg.bank) as bank:
        content = bank.content_hash
        faces = len(bank)
    spaces = list(cfg.index.spaces) or [s.space for s in cfg.spaces]
    build_dir = None
    with contextlib.suppress(Exception):  # reuse the current build when it already matches the bank
        current = resolve_build(None, out=cfg.index.out)
        m = read_manifest(current)
        if m["bank"]["content_hash"] == content and sorted(m["spaces"]) == sorted(spaces) \
                and Path(m["bank"]["path"]) == Path(cfg.bank).resolve():
            build_dir = current
    if build_dir is None:
        build_dir = build_stage(cfg.bank, spaces=spaces, out=cfg.index.out, kind=cfg.index.kind,
                                thresholds=dict(cfg.index.thresholds) or None, margin=cfg.index.margin,
                                pipeline=cfg.to_dict(), progress=progress)
    result["build"] = str(build_dir)
    session = open_facebank(build_dir, bank=cfg.bank)
    rng = np.random.default_rng(0)
    picks = []
    for idx in rng.choice(len(session.ids), size=min(cfg.sample_picks, len(session.ids)), replace=False):
        query_id = session.ids[idx].decode()
        face = session.bank.face(query_id)
        t = session.pick_target({s: face.embeddings[s] for s in session.spaces}, age=face.age, gender=face.gender,
                                rng=rng, exclude=[query_id], fallback="widen_age")
        picks.append({"query": query_id, "target": t.id, "group": t.group, "similarities": t.similarities,
                      "thresholds": t.thresholds})
    result["sample_picks"] = picks
    lines = [f"bank {cfg.bank}: {faces} faces"]
    for s in result["sources"]:
        lines.append(f"  source {s['kind']} {s['path']}: " + ", ".join(
            f"{k}={v}" for k, v in s.items() if k not in ("kind", "path")))
    lines.append(f"index build {build_dir} (spaces {', '.join(spaces)})")
    for p in picks:
        sims = ", ".join(f"{s} {v:.3f} <= {p['thresholds'][s]:.3f}" for s, v in p["similarities"].items())
        lines.append(f"  pick for {p['query']} -> {p['target']} ({p['group']}): {sims}")
    result["text"] = "\n".join(lines)
    return result
