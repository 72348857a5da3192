"""The `facebank` command: thin Typer groups over the library."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from facebank.cli import (
    audit_cmds, bank_cmds, bank_format_cmds, build_cmd, generate_cmd, index_cmds, models_cmd, pick_cmd,
)

app = typer.Typer(
    name="facebank",
    help="Synthetic faces guaranteed dissimilar to the real faces they replace.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,  # locals hold embeddings and paths
    add_completion=True,  # --install-completion / --show-completion for bash, zsh, fish, PowerShell
)


def _version(value: bool) -> None:
    if value:
        from facebank._version import __version__

        typer.echo(f"facebank {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: Annotated[Optional[bool], typer.Option(
        "--version", callback=_version, is_eager=True, help="Print facebank's version and exit.")] = None) -> None:
    """Synthetic faces guaranteed dissimilar to the real faces they replace."""


for _group in (bank_cmds, build_cmd, generate_cmd, index_cmds, pick_cmd, audit_cmds, models_cmd, bank_format_cmds):
    _group.register(app)


def main() -> None:
    app()
