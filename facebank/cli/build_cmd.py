"""`facebank build`: the whole pipeline from a config (facebank.workflow)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from facebank.cli.common import cli_errors, emit, examples, progress_bars
from facebank.cli.engine_opts import RayAddressOpt, engine_config

if TYPE_CHECKING:
    from facebank.workflow import BuildRun

JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")]


def build(
    config: Annotated[str, typer.Option(help="Build config: a TOML file, or 'default' (shipped with facebank).")] = "default",
    source: Annotated[list[str], typer.Option("--source", help="Use this face source instead of the config's (repeatable).")] = [],
    bank: Annotated[Optional[Path], typer.Option("--bank", "-b", help="Override the config's bank path.")] = None,
    cache_dir: Annotated[Optional[Path], typer.Option(
        help="Where downloads are kept (default: the config's, else $FACEBANK_CACHE or the user cache).")] = None,
    as_json: JsonOpt = False,
    engine: Annotated[Optional[str], typer.Option(
        "--engine", help="local or ray; default: the config's [engine] kind (local).")] = None,
    ray_address: RayAddressOpt = None,
) -> None:
    """Run the whole pipeline from a config: sources -> bank -> embeddings -> index -> sample picks."""
    from facebank.cli.index_cmds import build_capacity
    from facebank.config import load_config, source_from_path
    from facebank.index.manifest import read_manifest
    from facebank.workflow import require_for_build, run_build

    with cli_errors():
        cfg = load_config(config)
        if source:
            cfg = cfg.__class__(**{**cfg.__dict__, "sources": tuple(source_from_path(s) for s in source)})
        if bank:
            cfg = cfg.__class__(**{**cfg.__dict__, "bank": str(bank)})
        if cache_dir:
            cfg = cfg.__class__(**{**cfg.__dict__, "cache_dir": str(cache_dir)})
        cfg = cfg.__class__(**{**cfg.__dict__, "engine": engine_config(engine or cfg.engine.kind, ray_address, cfg.engine)})
        require_for_build(cfg)  # a missing extra is one line now, before any progress bar
        with progress_bars() as progress:
            run = run_build(cfg, progress=progress)
        # what the new bank can serve, as `facebank index build` says it
        capacity = build_capacity(Path(run.build), read_manifest(run.build))
        text = "\n".join([render(run), *(f"warning: {w}" for w in capacity["warnings"])])
        emit({**run.to_dict(), "capacity": capacity, "text": text}, as_json=as_json, human=text)


def render(run: BuildRun) -> str:
    """The run for people: the bank, each source's counts, the build and the sample picks."""
    lines = [f"bank {run.bank}: {run.faces} faces"]
    for s in run.sources:
        lines.append(f"  source {s.kind} {s.path}: " + ", ".join(f"{k}={v}" for k, v in s.counts.items()))
    lines.append(f"index build {run.build} (spaces {', '.join(run.build_spaces)})")
    for p in run.sample_picks:
        sims = ", ".join(f"{s} {v:.3f} <= {p.thresholds[s]:.3f}" for s, v in p.similarities.items())
        lines.append(f"  pick for {p.query} -> {p.target} ({p.group}): {sims}")
    return "\n".join(lines)


def register(app: typer.Typer) -> None:
    app.command(epilog=examples(
        "facebank build --source ../shared/assets/generated_photos",
        "facebank build --config my_build.toml --bank data/bank.h5 --json",
    ))(build)
