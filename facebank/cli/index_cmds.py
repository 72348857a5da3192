"""`facebank index build|verify|info|use`.

Options follow the one convention (README): `--bank`, `--build` (a build directory, or a builds
folder whose current build is meant), `--builds` (the folder of builds), repeatable `--space`
and `--threshold SPACE=COS`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from facebank.cli.choices import Kind
from facebank.cli.common import bank_option, build_option, cli_errors, emit, err, examples, parse_pairs, progress_bars
from facebank.config import DEFAULT_BUILDS

if TYPE_CHECKING:
    from facebank.index.manifest import BuildManifest

index_app = typer.Typer(help="Build, check and switch FAISS index builds.", no_args_is_help=True)
BuildsOpt = Annotated[Path, typer.Option("--builds", help="The folder of index builds.")]
BuildOpt = Annotated[Optional[Path], build_option()]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")]
_BUILDS = Path(DEFAULT_BUILDS)


def build_cmd(
    bank: Annotated[Path, bank_option()] = None,
    space: Annotated[list[str], typer.Option("--space", help="A space to index (repeatable; default: all).")] = [],
    builds: BuildsOpt = _BUILDS,
    kind: Annotated[Kind, typer.Option(help="FAISS index: flat (exact), ivf or hnsw.")] = Kind.flat,
    threshold: Annotated[list[str], typer.Option("--threshold", help="SPACE=COS (repeatable).")] = [],
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
        with progress_bars(unit=None) as progress:
            path = build_index(bank, spaces=space or None, out=builds, kind=kind.value,
                               thresholds=parse_pairs(threshold, "--threshold", shape="SPACE=COS", kind=float),
                               calibrated=calibrated_thresholds(str(threshold_from), far) if threshold_from else None,
                               make_current=not no_use, progress=progress)
        m = read_manifest(path)
        cap = build_capacity(path, m)
        for w in cap["warnings"]:
            err.print(f"warning: {w}", markup=False, highlight=False, soft_wrap=True)
        emit({"build": str(path), "manifest": m.to_dict(), "capacity": cap}, as_json=as_json,
             human=f"built {path} ({m.rows} faces; " + ", ".join(
                 f"{s} thr {v.threshold:.4f}" for s, v in m.spaces.items()) + ")")


def build_capacity(path: Path, m: BuildManifest) -> dict:
    """Faces and distinct identities per group of the new build, at its thresholds (facebank.index.capacity)."""
    import numpy as np

    from facebank.bank import open_bank
    from facebank.index.capacity import bank_capacity

    with open_bank(m.bank.path) as b:
        cap = bank_capacity(b, m.thresholds, source=f"build {m.build_id}", rows=np.load(path / "rows.npy")).to_dict()
    disputed = (m.excluded or {}).get("label_disputed", 0)
    if disputed:
        cap["warnings"].append(f"{disputed} faces left out: the attribute model disputes their gender label "
                               "(facebank info lists them; facebank bank check-labels / accept-labels settle them)")
    return cap


def verify_cmd(
    build: BuildOpt = None,
    bank: Annotated[Optional[Path], typer.Option("--bank", "-b", help="Check against this bank.")] = None,
    builds: BuildsOpt = _BUILDS,
    as_json: JsonOpt = False,
) -> None:
    """Check a build against its bank; exits non-zero on any mismatch."""
    from facebank.index.build import resolve_build, verify_build

    with cli_errors():
        result = verify_build(resolve_build(build, out=builds),
                              bank_path=str(bank) if bank else None)
        emit(result, as_json=as_json, human=f"ok: build {result['build']} matches {result['bank']} "
                                            f"({result['rows']} faces, {result['checked_vectors']} vectors checked)")


def info_cmd(
    build: BuildOpt = None,
    builds: BuildsOpt = _BUILDS,
    as_json: JsonOpt = False,
) -> None:
    """Show a build's manifest."""
    from facebank.index.build import resolve_build
    from facebank.index.manifest import read_manifest

    with cli_errors():
        m = read_manifest(resolve_build(build, out=builds))
        # the descriptive fields may be absent (older builds): shown as "?"
        lines = [f"build {m.build_id} ({m.created or '?'}): {m.rows} faces from {m.bank.path}"]
        for s, v in m.spaces.items():
            lines.append(f"  {s}: dim {v.dim} {v.index.faiss_class or '?'} threshold {v.threshold:.4f} "
                         f"({v.threshold_source or '?'})")
        groups = m.groups
        lines.append("  groups: " + (", ".join(f"{k}={n}" for k, n in groups.items()) if groups is not None
                                     else repr(groups)))
        emit(m.to_dict(), as_json=as_json, human="\n".join(lines))


def use_cmd(
    build: Annotated[Optional[Path], typer.Option("--build", help="Build directory to make current.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Make a build the current one of its folder (atomic switch)."""
    from facebank.errors import InputError
    from facebank.index.build import use_build

    with cli_errors():
        if build is None:
            raise InputError("give the build to use: --build DIR")
        link = use_build(build)
        emit({"current": str(link), "build": str(build)}, as_json=as_json, human=f"{link} -> {build.name}")


def list_cmd(builds: BuildsOpt = _BUILDS, as_json: JsonOpt = False) -> None:
    """List the builds of a builds folder, oldest first; `*` marks the current one."""
    from facebank.index.builds import list_builds

    with cli_errors():
        entries = list_builds(builds)
        lines = [f"{'*' if e.current else ' '} {e.build_id}  {e.created}  {e.rows} faces  "
                 f"{','.join(e.spaces)}  {e.bytes / 1e6:.1f} MB  {e.bank}" for e in entries]
        emit({"builds": str(builds), "entries": [e.to_dict() for e in entries]}, as_json=as_json,
             human="\n".join(lines) or f"no builds in {builds}")


def prune_cmd(
    keep: Annotated[int, typer.Option("--keep", help="How many of the newest builds to keep (the current one "
                                                     "always stays).")],
    builds: BuildsOpt = _BUILDS,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show what would be removed; remove nothing.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Remove old builds, keeping the newest N and the current one."""
    from facebank.index.builds import prune_builds

    with cli_errors():
        gone = prune_builds(builds, keep, dry_run=dry_run)
        verb = "would remove" if dry_run else "removed"
        emit({"builds": str(builds), "dry_run": dry_run, "removed": [e.to_dict() for e in gone]}, as_json=as_json,
             human=f"{verb} {len(gone)} builds" + "".join(f"\n  {e.build_id} ({e.bytes / 1e6:.1f} MB)" for e in gone))


def register(app: typer.Typer) -> None:
    index_app.command("list", epilog=examples("facebank index list", "facebank index list --builds my_builds --json"))(
        list_cmd)
    index_app.command("prune", epilog=examples("facebank index prune --keep 3 --dry-run",
                                               "facebank index prune --keep 1 --builds my_builds"))(prune_cmd)
    index_app.command("build", epilog=examples(
        "facebank index build --bank data/bank.h5",
        "facebank index build --bank data/bank.h5 --space dlib --space arcface --kind hnsw --threshold arcface=0.3",
    ))(build_cmd)
    index_app.command("verify", epilog=examples(
        "facebank index verify", "facebank index verify --build index_builds/20260101-120000 --bank data/bank.h5",
    ))(verify_cmd)
    index_app.command("info", epilog=examples("facebank index info --json",
                                              "facebank index info --builds my_builds"))(info_cmd)
    index_app.command("use", epilog=examples("facebank index use --build index_builds/20260101-120000"))(use_cmd)
    app.add_typer(index_app, name="index")
