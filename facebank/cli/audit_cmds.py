"""`facebank audit` (the report folder) and `facebank dedupe` (drop near-duplicate faces)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from facebank.cli.choices import Bound
from facebank.cli.common import bank_option, cli_errors, emit, examples, parse_pairs, progress_bars

BankOpt = Annotated[Path, bank_option()]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")]


def _check_path(option: str, path: Optional[Path], *, folder: bool) -> None:
    from facebank.errors import InputError

    if path is not None and not (path.is_dir() if folder else path.is_file()):
        raise InputError(f"{option} {path}: no such {'folder' if folder else 'file'}")


def audit_cmd(
    bank: BankOpt = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="The report folder (created).")] = ...,
    build: Annotated[Optional[Path], typer.Option("--build", help="Index build directory (for the pick audit).")] = None,
    labelled: Annotated[Optional[Path], typer.Option(help="Folder of identity-labelled real photos.")] = None,
    identities: Annotated[Optional[Path], typer.Option(help="CSV file,identity_id (default: LABELLED/identities.csv).")] = None,
    queries: Annotated[Optional[Path], typer.Option(help="Folder of real photos; every face is a query.")] = None,
    model: Annotated[list[str], typer.Option("--model", help="SPACE=PATH of a non-dlib embedder (repeatable).")] = [],
    max_pairs: Annotated[int, typer.Option(help="Bank pairs scored per space (sampled above it).")] = 200_000,
    near_duplicate_above: Annotated[float, typer.Option(help="Flag faces whose nearest neighbour is above this.")] = 0.99,
    groups: Annotated[bool, typer.Option("--groups/--no-groups",
                                         help="Pick from each query's estimated age/gender group (as the pipeline does).")] = True,
    seed: Annotated[int, typer.Option(help="Seed of the pair sample and the random picks.")] = 0,
    aligned: Annotated[bool, typer.Option("--aligned", help="LABELLED holds aligned 112 crops, not photos.")] = False,
    bound: Annotated[Bound, typer.Option(
        "--bound", help="Which 95% bound picks each threshold: privacy (lower bound on the FAR >= the FAR: at or "
                        "below a recogniser's own threshold; the shipped defaults' choice), far (upper bound <= "
                        "the FAR) or none (the point estimate, looser).")] = Bound.privacy,
    heldout: Annotated[list[str], typer.Option("--heldout",
                                               help="SPACE=MODEL of a recogniser the build does not use (repeatable; dlib=dlib).")] = [],
    transfer: Annotated[bool, typer.Option(
        "--transfer", help="Privacy margin: hold each recogniser out in turn and measure every margin's "
                           "held-out match (needs --labelled and --build).")] = False,
    anonymize: Annotated[list[str], typer.Option(
        "--anonymize", help="Swap the labelled faces with SWAPPER[:key=value,...] and report Source vs Result "
                            "(repeatable; e.g. classical:geometry=warp).")] = [],
    as_json: JsonOpt = False,
) -> None:
    """Write an audit report: bank distributions, calibration, pick audit, pixel metrics, plots."""
    with cli_errors():
        from facebank.audit.run import AuditConfig, run_audit  # needs the `audit` extra: one line if missing

        _check_path("--bank", bank, folder=False)
        _check_path("--build", build, folder=True)
        _check_path("--labelled", labelled, folder=True)
        _check_path("--identities", identities, folder=False)
        _check_path("--queries", queries, folder=True)
        models = parse_pairs(model, "--model", shape="SPACE=PATH", must_exist=True)
        held = parse_pairs(heldout, "--heldout", shape="SPACE=MODEL")
        if transfer and (labelled is None or build is None):
            from facebank.errors import InputError

            raise InputError("--transfer needs --labelled (identity-labelled real faces) and --build")
        with progress_bars(unit=None, log_as="audit") as progress:
            cfg = AuditConfig(bank=bank, out=out, build=build, labelled=labelled, identities=identities,
                              queries=queries, max_pairs=max_pairs, near_duplicate_above=near_duplicate_above, seed=seed,
                              groups=groups, models=models, aligned=aligned,
                              bound=bound.value,
                              heldout=held or None, transfer=transfer, anonymize=tuple(anonymize))
            path = run_audit(cfg, progress=progress)
        cal = path.parent / "calibration.json"
        data = {"report": str(path), "folder": str(path.parent), "calibration": str(cal) if cal.exists() else None}
        emit(data, as_json=as_json, human=f"wrote {path}" + (
            f"\ncalibration: {data['calibration']} (facebank index build --threshold-from it --far 1e-3)"
            if data["calibration"] else ""))


def dedupe_cmd(
    bank: BankOpt = None,
    space: Annotated[str, typer.Option(help="The identity space compared.")] = "dlib",
    above: Annotated[Optional[float], typer.Option(help="Remove one face of every pair more similar than SIM.")] = None,
    below: Annotated[Optional[float], typer.Option(help="Alias: keep only faces whose nearest neighbour is below SIM.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show what would be removed; change nothing.")] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Remove without asking (needed when not at a terminal).")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Mark near-duplicate faces as removed (the first of each pair stays); asks first; recorded and resumable."""
    import sys

    from facebank.audit.dedupe import dedupe_bank
    from facebank.errors import InputError

    def confirm(result: dict) -> bool:
        n, m = len(result["removed"]), result["considered"]
        what = f"remove {n} of {m} faces ({n / m:.0%}) above {result['cut']:g} in {space}"
        if yes:
            return True
        if not sys.stdin.isatty():
            raise InputError(f"dedupe would {what}: re-run with --yes to remove them, or --dry-run to list them")
        return typer.confirm(f"{what}?", err=True)

    with cli_errors():
        _check_path("--bank", bank, folder=False)
        result = dedupe_bank(bank, space=space, above=above, below=below, dry_run=dry_run, confirm=confirm)
        verb = "would remove" if dry_run else "cancelled: would remove" if result["cancelled"] else "removed"
        lines = [f"{verb} {len(result['removed'])} of {result['considered']} faces "
                 f"({result['pairs_above']} pairs above {result['cut']:g} in {space})"]
        lines += [f"  {r['id']} (sim {r['sim']:.4f} to {r['kept_id']})" for r in result["removed"][:20]]
        if result["removed"] and not dry_run and not result["cancelled"]:
            lines.append("index builds still hold the removed faces: run `facebank index build` again")
        emit(result, as_json=as_json, human="\n".join(lines))


def register(app: typer.Typer) -> None:
    app.command("audit", epilog=examples(
        "facebank audit --bank data/bank.h5 --out report/",
        "facebank audit --bank data/bank.h5 --labelled labelled/ --queries photos/ --build index_builds/current "
        "--model mobilefacenet_128d=mobilefacenet.onnx --out report/",
    ))(audit_cmd)
    app.command("dedupe", epilog=examples(
        "facebank dedupe --bank data/bank.h5 --space dlib --above 0.995 --dry-run",
        "facebank dedupe --bank data/bank.h5 --space dlib --above 0.995 --yes --json",
    ))(dedupe_cmd)
