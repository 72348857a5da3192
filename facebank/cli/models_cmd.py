"""`facebank models fetch|list`: InsightFace model packs (non-commercial research use only)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from facebank.cli.common import cli_errors, emit, err, examples

models_app = typer.Typer(
    help="Fetch and list InsightFace model packs (buffalo_l, ...). Non-commercial research use only.",
    no_args_is_help=True,
)
DestOpt = Annotated[Path, typer.Option("--dest", help="The models directory (packs are its subdirectories).")]
UrlOpt = Annotated[Optional[str], typer.Option(help="Zip URL (http(s), file://) or local path; default: official.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")]
_DEFAULT_DEST = Path("~/.insightface/models")  # = model_packs.DEFAULT_DEST, without importing it at startup


def fetch_cmd(
    name: Annotated[str, typer.Argument(help="Pack name: buffalo_l, buffalo_m, buffalo_s, buffalo_sc.")],
    dest: DestOpt = _DEFAULT_DEST,
    url: UrlOpt = None,
    sha256: Annotated[Optional[str], typer.Option("--sha256", help="Expected sha256 of the zip.")] = None,
    cache_dir: Annotated[Optional[Path], typer.Option(help="Where the downloaded zip is kept (default: DEST/.downloads).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Download a pack once (zip checksum recorded, or pinned with --sha256), extract it, check its models."""
    from facebank.vision.model_packs import LICENSE_NOTICE, fetch_pack

    with cli_errors():
        result = fetch_pack(name, dest=dest, url=url, expected_sha256=sha256, cache_dir=cache_dir)
        # After the fetch, so that a failure is the one `error:` line and nothing else.
        err.print(f"note: {LICENSE_NOTICE}", markup=False, highlight=False, soft_wrap=True)
        where = "fetched into" if result["status"] == "fetched" else "already present at"
        human = f"{name}: {where} {result['path']} (zip sha256 {result['zip_sha256'] or 'unknown'})"
        emit(result, as_json=as_json, human=human)


def list_cmd(dest: DestOpt = _DEFAULT_DEST, as_json: JsonOpt = False) -> None:
    """Which packs are present under --dest, with their files' sha256."""
    from facebank.vision.model_packs import list_packs

    with cli_errors():
        entries = list_packs(dest)
        lines = []
        for e in entries:
            if not e["present"]:
                lines.append(f"{e['name']}: not present")
                continue
            state = "recorded" if e["recorded"] else "not fetched by facebank"
            if e["changed"]:
                state = f"CHANGED since fetch: {', '.join(e['changed'])}"
            if e["missing"]:
                state += f"; missing {', '.join(e['missing'])}"
            if e.get("error"):
                state += f"; {e['error']}"
            lines.append(f"{e['name']}: {e['path']} ({state})")
            lines += [f"  {f['sha256']}  {path}" for path, f in e["files"].items()]
        emit(entries, as_json=as_json, human="\n".join(lines))


def register(app: typer.Typer) -> None:
    models_app.command("fetch", epilog=examples(
        "facebank models fetch buffalo_l", "facebank models fetch buffalo_l --sha256 HEX --dest models/",
    ))(fetch_cmd)
    models_app.command("list", epilog=examples("facebank models list", "facebank models list --json"))(list_cmd)
    app.add_typer(models_app, name="models")
