"""`facebank bank check-labels` and `facebank bank accept-labels`: gender labels the model disputes.

A disputed face (facebank.bank.disputes) stays out of index builds until it is settled: a second
model sides with its label (`check-labels`), or an operator keeps the label or takes the model's
gender (`accept-labels`). Run `facebank index build` again afterwards.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from facebank.cli.bank_format_cmds import BankOpt, JsonOpt, bank_app
from facebank.cli.common import cli_errors, emit, examples


def check_labels(
    bank: BankOpt = None,
    model: Annotated[Path, typer.Option(
        "--model", help="InsightFace's gender-age model genderage_112.onnx (the second opinion).")] = ...,
    as_json: JsonOpt = False,
) -> None:
    """Ask a second model about every disputed face; those it calls as labelled are settled."""
    from facebank.bank.disputes import record_second_opinion
    from facebank.errors import InputError
    from facebank.vision.attributes import InsightFaceGenderAge112

    with cli_errors():
        if not bank.is_file():
            raise InputError(f"bank {bank} does not exist")
        opinions = record_second_opinion(bank, InsightFaceGenderAge112(model))
        sided = sum(o["agrees"] for o in opinions)
        emit({"bank": str(bank), "opinions": opinions, "settled": sided, "still_disputed": len(opinions) - sided},
             as_json=as_json, human=f"second opinion on {len(opinions)} disputed faces: {sided} as labelled "
                                    f"(settled), {len(opinions) - sided} still disputed "
                                    "(`facebank bank accept-labels` settles them; then `facebank index build`)")


def accept_labels(
    bank: BankOpt = None,
    face_id: Annotated[list[str], typer.Option("--id", help="A disputed face (repeatable).")] = [],
    all_: Annotated[bool, typer.Option("--all", help="Every disputed face.")] = False,
    use: Annotated[str, typer.Option(help="label: keep the source's label; model: take the model's gender.")] = "label",
    as_json: JsonOpt = False,
) -> None:
    """Settle disputed gender labels so that index builds serve those faces again."""
    from facebank.bank.disputes import accept_labels as accept
    from facebank.errors import InputError

    with cli_errors():
        if not bank.is_file():
            raise InputError(f"bank {bank} does not exist")
        if bool(face_id) == all_:
            raise InputError("give the faces to accept: --id ID (repeatable) or --all")
        done = accept(bank, None if all_ else list(face_id), use=use)
        emit({"bank": str(bank), "use": use, "accepted": done}, as_json=as_json,
             human=f"accepted {len(done)} disputed labels ({'label kept' if use == 'label' else 'model gender taken'}); "
                   "run `facebank index build` to serve them")


def register(app: typer.Typer) -> None:
    bank_app.command("check-labels", epilog=examples(
        "facebank bank check-labels --bank data/bank.h5 --model genderage_112.onnx"))(check_labels)
    bank_app.command("accept-labels", epilog=examples(
        "facebank bank accept-labels --bank data/bank.h5 --all",
        "facebank bank accept-labels --bank data/bank.h5 --id 3f2a9c01d4e5b6a7 --use model --json"))(accept_labels)
