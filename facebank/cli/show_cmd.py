"""`facebank show ID`: one face's record; `--out DIR` writes its image, crop and sidecar (as `pick --save`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from facebank.cli.common import bank_option, cli_errors, emit, examples


def show(
    face_id: Annotated[str, typer.Argument(
        metavar="ID", help="The face's id (as pick and info print it), a unique prefix of it, or its source id.")],
    bank: Annotated[Path, bank_option()] = None,
    out: Annotated[Optional[Path], typer.Option(
        "--out", "-o", help="Write the face's original image, its aligned crop and a JSON sidecar here.")] = None,
    aligned: Annotated[list[int], typer.Option(
        "--aligned", help="With --out: also the crop a swapper takes at this size (112, 128, 224, 256; repeatable).")] = [],
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")] = False,
) -> None:
    """Show what the bank holds about one face: source, attributes, landmarks, spaces."""
    import numpy as np

    from facebank.bank import open_bank
    from facebank.bank.disputes import disputed_rows, disputes
    from facebank.bank.export import export_face, face_record
    from facebank.errors import InputError

    with cli_errors():
        if not bank.is_file():
            raise InputError(f"bank {bank} does not exist")
        with open_bank(bank) as b:
            face = b.face(resolve_face(b, face_id))  # UnknownFace for an id the bank does not hold
            record = face_record(face)
            disputed = next(iter(disputes(b, np.array([face.row]) if face.row in set(
                disputed_rows(b).tolist()) else np.empty(0, np.int64))), None)
            if aligned and out is None:
                raise InputError("--aligned needs --out DIR")
            files = export_face(out, face.id, face, aligned=aligned) if out is not None else None
        a = record["attributes"]
        lines = [f"face {record['id']} (row {record['row']}): {record['source']} {record['source_id']}",
                 f"  age {_fmt(a['age'], '.1f')} ({a['age_source']}), gender {a['gender']} ({a['gender_source']})",
                 f"  box {record['box']}", f"  landmarks {record['landmarks']}",
                 "  spaces: " + (", ".join(record["spaces"]) or "none")]
        if disputed:
            d = disputed
            lines.append(f"  warning: gender label disputed: labelled {d['label']}, the model says {d['model']} "
                         f"({d['model_confidence']:.2f}); not served until `facebank bank accept-labels --id {record['id']}`")
        if files:
            lines.append("wrote " + ", ".join(files.values()))
        emit({"bank": str(bank), "face": record, "files": files, "label_disputed": disputed}, as_json=as_json, human="\n".join(lines))


def resolve_face(b, key: str) -> int:
    """The row of a face given by its id, a unique prefix of its id, or its source id."""
    from facebank.errors import InputError, UnknownFace

    try:
        return b.row(key)
    except UnknownFace:
        pass
    ids = [str(i) for i in b.ids]
    by_prefix = [k for k, i in enumerate(ids) if key and i.startswith(key)]
    by_source = [k for k, s in enumerate(b.column("source_id")) if str(s) == key]
    found = sorted(set(by_prefix) | set(by_source))
    if len(found) == 1:
        return found[0]
    if found:
        raise InputError(f"{key!r} matches {len(found)} faces ({', '.join(ids[k] for k in found[:5])}"
                         f"{' ...' if len(found) > 5 else ''}): give more of the id, or the whole id")
    raise UnknownFace(f"face {key!r} is not in {b.path} (as an id, an id prefix or a source id)")


def _fmt(value, spec: str) -> str:
    return "unknown" if value is None else format(value, spec)


def register(app: typer.Typer) -> None:
    app.command(epilog=examples(
        "facebank show 3f2a9c01d4e5b6a7 --bank data/bank.h5",
        "facebank show 3f2a9c01d4e5b6a7 --bank data/bank.h5 --out out/ --aligned 224 --aligned 256 --json",
    ))(show)
