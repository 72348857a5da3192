"""`facebank bank upgrade`, `compact`, `verify` and `copy`: the bank's on-disk format."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from facebank.cli.common import bank_option, cli_errors, emit, examples, progress_bars

bank_app = typer.Typer(help="The bank's on-disk format (upgrade from version 1, compact fragments, verify, copy) and its "
                            "disputed gender labels (check-labels, accept-labels).",
                       no_args_is_help=True)

BankOpt = Annotated[Path, bank_option()]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")]


def upgrade(bank: BankOpt = None,
            target_rows: Annotated[int, typer.Option(help="Faces per fragment.")] = 2048,
            as_json: JsonOpt = False) -> None:
    """Convert a version-1 bank to version 2 in place (kill-safe; re-run to finish)."""
    from facebank.bank import upgrade_bank

    with cli_errors():
        result = upgrade_bank(bank, target_rows=target_rows)
        emit(result, as_json=as_json, human=(
            f"upgraded {result['bank']} to schema {result['schema_version']}: {result['faces']} faces, "
            f"{result['fragments']} fragments" if result["upgraded"]
            else f"{result['bank']} is already schema {result['schema_version']}; nothing to do"))


def compact(bank: BankOpt = None,
            target_rows: Annotated[int, typer.Option(help="Faces per merged fragment.")] = 2048,
            as_json: JsonOpt = False) -> None:
    """Merge small fragments; the content and content hash stay the same (index builds stay valid)."""
    from facebank.bank import compact_bank

    with cli_errors():
        result = compact_bank(bank, target_rows=target_rows)
        emit(result, as_json=as_json, human=f"compacted {result['bank']}: {result['fragments_before']} -> "
                                            f"{result['fragments']} fragments ({result['removed']} files removed)")


def verify(bank: BankOpt = None, as_json: JsonOpt = False) -> None:
    """Re-read every fragment file and check it against the digest the manifest records (a full read)."""
    from facebank.bank.digests import verify_bank

    with cli_errors():
        with progress_bars(unit="MB") as progress:
            result = verify_bank(bank, progress=progress)
        emit({"bank": str(bank), "ok": True, **result.to_dict()}, as_json=as_json,
             human=f"{bank}: {result.files} files, {result.bytes / 1e6:.1f} MB, every digest as recorded "
                   f"({result.seconds:.1f} s)")


def copy(bank: BankOpt,
         to: Annotated[Path, typer.Option("--to", help="The new bank file (its folder <to>.d is made beside it).")],
         as_json: JsonOpt = False) -> None:
    """Copy a bank (top file and fragments, hard-linked where possible) under a new bank id."""
    from facebank.bank import copy_bank

    with cli_errors():
        dst = copy_bank(bank, to)
        emit({"bank": str(bank), "copy": str(dst)}, as_json=as_json, human=f"copied {bank} to {dst}")


def register(app: typer.Typer) -> None:
    bank_app.command(epilog=examples("facebank bank upgrade --bank data/bank.h5",
                                     "facebank bank upgrade --bank data/bank.h5 --json"))(upgrade)
    bank_app.command(epilog=examples("facebank bank compact --bank data/bank.h5",
                                     "facebank bank compact --bank data/bank.h5 --target-rows 8192"))(compact)
    bank_app.command(epilog=examples("facebank bank verify --bank data/bank.h5",
                                     "facebank bank verify --bank data/bank.h5 --json"))(verify)
    bank_app.command(epilog=examples("facebank bank copy --bank data/bank.h5 --to backup/bank.h5",
                                     "facebank bank copy --bank data/bank.h5 --to backup/bank.h5 --json"))(copy)
    app.add_typer(bank_app, name="bank")
