"""The `facebank` command: thin Typer groups over the library."""

from __future__ import annotations

import typer

from facebank.cli import (
    audit_cmds, bank_cmds, bank_format_cmds, build_cmd, generate_cmd, index_cmds, models_cmd, pick_cmd,
)

app = typer.Typer(
    name="facebank",
    help="Synthetic faces guaranteed dissimilar to the real faces they replace.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,  # locals hold embeddings and paths
    add_completion=False,
)
for _group in (bank_cmds, build_cmd, generate_cmd, index_cmds, pick_cmd, audit_cmds, models_cmd, bank_format_cmds):
    _group.register(app)


def main() -> None:
    app()
