"""The `facebank` command: thin Typer groups over the library."""

from __future__ import annotations

import typer

from facebank.cli import bank_cmds

app = typer.Typer(
    name="facebank",
    help="Synthetic faces guaranteed dissimilar to the real faces they replace.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,  # locals hold embeddings and paths
    add_completion=False,
)
bank_cmds.register(app)

for _module in ("generate_cmd", "index_cmds", "pick_cmd", "audit_cmds"):
    try:  # each group registers itself; a group whose module is absent is simply not offered
        __import__(f"facebank.cli.{_module}", fromlist=["register"]).register(app)
    except ModuleNotFoundError as _exc:
        if _exc.name != f"facebank.cli.{_module}":
            raise


def main() -> None:
    app()
