"""`facebank index build|verify|info|use`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from facebank.cli.common import cli_errors, emit, parse_pairs
from facebank.config import DEFAULT_BUILDS

index_app = typer.Typer(help="Build, check and switch FAISS index builds.", no_args_is_help=True)
OutOpt = Annotated[Path, typer.Option("--out", help="The folder of index builds.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")]


@index_app.command("build")
def build_cmd(
    bank: Annotated[Path, typer.Option("--bank", "-b", help="The bank file.")],
    spaces: Annotated[Optional[str], typer.Option("--spaces", help="Comma-separated spaces (default: all).")] = None,
    out: OutOpt = Path(DEFAULT_BUILDS),
    kind: Annotated[str, typer.Option(help="FAISS index: flat (exact), ivf or hnsw.")] = "flat",
    threshold: Annotated[list[str], typer.Option("--threshold", help="SPACE=COSINE (repeatable).")] = [],
    threshold_from: Annotated[Optional[Path], typer.Option(help="A calibration report (facebank audit).")] = None,
    far: Annotated[float, typer.Option(help="False-accept rate read from --threshold-from or the shipped defaults (1e-3, 1e-4).")] = 1e-3,
    no_use: Annotated[bool, typer.Option("--no-use", help="Do not make it the current build.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Build one index per space, with group membership and a manifest bound to the bank."""
    from facebank.index.build import build_index
    from facebank.index.manifest import read_manifest
    from facebank.workflow import calibrated_thresholds

    with cli_errors():
        path = build_index(bank, spaces=[s.strip() for s in spaces.split(",")] if spaces else None, out=out, kind=kind,
                           thresholds=parse_pairs(threshold, "--threshold", shape="SPACE=COSINE", kind=float),
                           calibrated=calibrated_thresholds(str(threshold_from), far) if threshold_from else None,
                           make_current=not no_use)
        m = read_manifest(path)
        emit({"build": str(path), "manifest": m}, as_json=as_json,
             human=f"built {path} ({m['rows']} faces; " + ", ".join(
                 f"{s} thr {v['threshold']:.4f}" for s, v in m["spaces"].items()) + ")")


@index_app.command("verify")
def verify_cmd(
    build: Annotated[Optional[Path], typer.Argument(help="Build directory (default: the current one).")] = None,
    bank: Annotated[Optional[Path], typer.Option("--bank", "-b", help="Check against this bank.")] = None,
    out: OutOpt = Path(DEFAULT_BUILDS),
    as_json: JsonOpt = False,
) -> None:
    """Check a build against its bank; exits non-zero on any mismatch."""
    from facebank.index.build import resolve_build, verify_build

    with cli_errors():
        result = verify_build(resolve_build(build, out=out), bank_path=str(bank) if bank else None)
        emit(result, as_json=as_json, human=f"ok: build {result['build']} matches {result['bank']} "
                                            f"({result['rows']} faces, {result['checked_vectors']} vectors checked)")


@index_app.command("info")
def info_cmd(
    build: Annotated[Optional[Path], typer.Argument(help="Build directory (default: the current one).")] = None,
    out: OutOpt = Path(DEFAULT_BUILDS),
    as_json: JsonOpt = False,
) -> None:
    """Show a build's manifest."""
    from facebank.index.build import resolve_build
    from facebank.index.manifest import read_manifest

    with cli_errors():
        m = read_manifest(resolve_build(build, out=out))
        lines = [f"build {m['build_id']} ({m['created']}): {m['rows']} faces from {m['bank']['path']}"]
        for s, v in m["spaces"].items():
            lines.append(f"  {s}: dim {v['dim']} {v['index']['faiss_class']} threshold {v['threshold']:.4f} "
                         f"({v['threshold_source']})")
        lines.append("  groups: " + ", ".join(f"{k}={n}" for k, n in m["groups"].items()))
        emit(m, as_json=as_json, human="\n".join(lines))


@index_app.command("use")
def use_cmd(build: Annotated[Path, typer.Argument(help="Build directory to make current.")]) -> None:
    """Make BUILD the current build of its folder (atomic switch)."""
    from facebank.index.build import use_build

    with cli_errors():
        link = use_build(build)
        emit({}, as_json=False, human=f"{link} -> {build.name}")


def register(app: typer.Typer) -> None:
    app.add_typer(index_app, name="index")
