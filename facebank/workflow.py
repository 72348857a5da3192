"""The whole-pipeline build (`facebank build`): every stage from a config, resumable at every stage.

sources -> bank (ingest / generate + annotate) -> embeddings per space -> index build -> sample
picks. Each stage skips what the bank already holds, so re-running after a kill finishes the job.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np

from facebank._io.deps import require
from facebank.config import BuildConfig, SourceConfig
from facebank.errors import SourceError
from facebank.progress import Progress, relabel



def calibrated_thresholds(report: str | os.PathLike, far: float):
    """The thresholds of a calibration report (facebank audit) at `far`, as `index.build.Calibrated`,
    with the figures behind each one (counts, interval, data) for the build's manifest."""
    from facebank.audit.calibration_report import CalibrationReport, thresholds_from_report
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


def _run_source(cfg: BuildConfig, src: SourceConfig, progress: Progress | None) -> SourceRun:
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
        return SourceRun("stylegan", src.path, MappingProxyType({
            "device": g.device, "image_format": g.image_format, "generated": g.generated,
            "already": g.already_in_bank, "annotated": g.annotated + a.added, "rejected": dict(rejected)}))
    if src.kind == "generated_photos":
        from facebank.sources.generated_photos import iter_generated_photos as iterate
    else:
        from facebank.sources.folder import iter_folder as iterate
    items = list(iterate(src.path))
    s = run_ingest(cfg.bank, items, engine=eng, vision=cfg.vision, spaces=cfg.spaces,
                   progress=relabel(progress, f"ingest {Path(src.path).name}"), workers=cfg.workers)
    return SourceRun(src.kind, src.path, MappingProxyType({
        "added": s.added, "already": s.already_in_bank, "duplicates": len(s.duplicates), "rejected": dict(s.rejected)}))


def require_for_build(cfg: BuildConfig) -> None:
    """Every optional module `cfg`'s stages need, checked before any work (MissingDependency names
    what installs it), so a plain install fails in its first second, not after the embeddings."""
    require("faiss")  # the index stage
    if any(src.kind == "stylegan" for src in cfg.sources):
        require("torch")
    if cfg.engine.kind == "ray":
        require("ray")


@dataclass(frozen=True)
class SourceRun:
    """What one source of `facebank build` did."""

    kind: str  # folder, generated_photos or stylegan
    path: str
    counts: Mapping[str, Any]  # in display order: added, already, duplicates, rejected (StyleGAN: generated, ...)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "path": self.path, **self.counts}


@dataclass(frozen=True)
class SamplePick:
    """One pick of the new build for a face of the bank (a target is never the query itself)."""

    query: str
    target: str
    group: str
    similarities: Mapping[str, float]  # space -> cosine to the query
    thresholds: Mapping[str, float]  # space -> the threshold it is at or below

    def to_dict(self) -> dict:
        return {"query": self.query, "target": self.target, "group": self.group,
                "similarities": dict(self.similarities), "thresholds": dict(self.thresholds)}


@dataclass(frozen=True)
class BuildRun:
    """The result of `run_build`; the CLI renders it (`facebank.cli.build_cmd`)."""

    bank: str
    faces: int  # in the bank after the run
    engine: str  # local or ray
    sources: tuple[SourceRun, ...]
    embedded: Mapping[str, Mapping[str, int]]  # space -> {"embedded", "already"}
    build: str  # the build directory picks use
    build_spaces: tuple[str, ...]
    reused: bool  # the current build already matched the bank: nothing was built
    sample_picks: tuple[SamplePick, ...]

    def to_dict(self) -> dict:
        """The JSON of `facebank build --json` (without the CLI's `capacity` and `text`)."""
        return {"bank": self.bank, "sources": [s.to_dict() for s in self.sources],
                "spaces": {s: dict(v) for s, v in self.embedded.items()}, "engine": self.engine,
                "build": self.build, "sample_picks": [p.to_dict() for p in self.sample_picks]}


def run_build(cfg: BuildConfig, *, progress: Progress | None = None) -> BuildRun:
    """Run every stage of `cfg`; returns what each did, the build and a few sample picks."""
    from facebank.bank import open_bank
    from facebank.engine import engine_session, run_embed
    from facebank.index.build import build_index as build_stage

    require_for_build(cfg)
    if not cfg.sources:
        raise SourceError(
            "no face source: the config names none. Give one: `make bank SOURCE=<folder or generated.photos "
            "export>` or `facebank build --source PATH`"
        )
    Path(cfg.bank).parent.mkdir(parents=True, exist_ok=True)
    sources, embedded = [], {}
    with engine_session(cfg.engine):  # one Ray connection for every stage
        for src in cfg.sources:
            sources.append(_run_source(cfg, src, progress))
        for space in cfg.spaces:
            e = run_embed(cfg.bank, space, engine=cfg.engine, progress=progress, workers=cfg.workers)
            embedded[space.space] = MappingProxyType({"embedded": e.embedded, "already": e.already_in_bank})
    with open_bank(cfg.bank) as bank:
        content = bank.content_hash
        faces = len(bank)
    spaces = list(cfg.index.spaces) or [s.space for s in cfg.spaces]
    build_dir = _matching_build(cfg, content, spaces)
    reused = build_dir is not None
    if build_dir is None:
        build_dir = build_stage(cfg.bank, spaces=spaces, out=cfg.index.out, kind=cfg.index.kind,
                                thresholds=dict(cfg.index.thresholds) or None, margin=cfg.index.margin,
                                pipeline=cfg.to_dict(), progress=progress)
    return BuildRun(bank=cfg.bank, faces=faces, engine=cfg.engine.kind, sources=tuple(sources),
                    embedded=MappingProxyType(embedded), build=str(build_dir), build_spaces=tuple(spaces),
                    reused=reused, sample_picks=_sample_picks(cfg, build_dir))


def _matching_build(cfg: BuildConfig, content: str, spaces: list[str]) -> Path | None:
    """The current build, when it was made from this bank's content over these spaces (reused)."""
    from facebank.index.build import resolve_build
    from facebank.index.manifest import read_manifest

    with contextlib.suppress(Exception):  # no current build, or an unreadable one: build anew
        current = resolve_build(None, out=cfg.index.out)
        m = read_manifest(current)
        if m.bank.content_hash == content and sorted(m.spaces) == sorted(spaces) \
                and Path(m.bank.path) == Path(cfg.bank).resolve():
            return current
    return None


def _sample_picks(cfg: BuildConfig, build_dir: Path) -> tuple[SamplePick, ...]:
    """`cfg.sample_picks` picks for random faces of the bank (seed 0), each excluding its own face."""
    from facebank.pick.api import open_facebank

    session = open_facebank(build_dir, bank=cfg.bank)
    rng = np.random.default_rng(0)
    picks = []
    for idx in rng.choice(len(session.ids), size=min(cfg.sample_picks, len(session.ids)), replace=False):
        query_id = session.ids[idx].decode()
        face = session.bank.face(query_id)
        t = session.pick_target({s: face.embeddings[s] for s in session.spaces}, age=face.age, gender=face.gender,
                                rng=rng, exclude=[query_id], fallback="widen_age")
        picks.append(SamplePick(query_id, t.id, t.group, MappingProxyType(dict(t.similarities)),
                                MappingProxyType(dict(t.thresholds))))
    return tuple(picks)
