"""The `facebank` command: thin Typer groups over the library."""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from typing import Annotated, Optional

import typer
import typer.main
from typer.core import TyperGroup

from facebank.cli.clicks import ABORTS as _ABORTS
from facebank.cli.clicks import CLICK_ERRORS as _CLICK_ERRORS
from facebank.cli.clicks import EXITS as _EXITS
from facebank.cli.clicks import USAGE_ERRORS as _USAGE_ERRORS

from facebank.cli import (
    anonymize_cmd, audit_cmds, bank_cmds, bank_format_cmds, build_cmd, generate_cmd, index_cmds, labels_cmds, models_cmd,
    pick_cmd,
    show_cmd,
)

class _OneLineErrors(TyperGroup):
    """Bad command-line syntax (an unknown option, a value outside a choice) is one line too.

    Click would print a usage block; every other facebank error is `error: <Type>: <what>`, so
    scripts read one form. Help (no arguments, --help) still prints as usual.
    """

    def main(self, *args, standalone_mode: bool = True, **kwargs):
        with _signals() as interrupted:
            try:
                rv = self._main(*args, **kwargs)
            except SystemExit as done:
                if interrupted and done.code in (None, 0):
                    _swallowed(interrupted[0])
                raise
            if interrupted and rv in (None, 0):
                _swallowed(interrupted[0])
        return rv

    def _main(self, *args, **kwargs):
        try:
            rv = super().main(*args, standalone_mode=False, **kwargs)
        except _ABORTS:
            typer.echo("error: Aborted: interrupted", err=True)
            sys.exit(130)
        except _CLICK_ERRORS as exc:
            if type(exc).__name__ == "NoArgsIsHelpError":  # click >= 8.2: shows the help
                exc.show()
                sys.exit(exc.exit_code)
            what = " ".join(exc.format_message().split())
            typer.echo(f"error: {'UsageError' if isinstance(exc, _USAGE_ERRORS) else type(exc).__name__}: {what}",
                       err=True)
            sys.exit(exc.exit_code)
        except Exception as exc:  # escaped a command before its own cli_errors (an import at its top)
            from facebank.cli.common import cli_errors

            try:
                with cli_errors():
                    raise exc
            except _EXITS as done:
                sys.exit(done.exit_code)
        if isinstance(rv, int):  # typer.Exit(code) comes back as a return value here
            sys.exit(rv)
        return rv


def _swallowed(signum: int) -> None:
    """A Ctrl-C or SIGTERM that some library caught (h5py ignores exceptions raised in its callbacks):
    the command still never exits 0."""
    typer.echo(f"error: interrupted by {signal.Signals(signum).name}: finished work is kept; "
               f"re-run the command to continue", err=True)
    sys.exit(130 if signum == signal.SIGINT else 143)


@contextlib.contextmanager
def _signals():
    """SIGINT and SIGTERM raise in the main thread (KeyboardInterrupt, Terminated), so every command
    ends through its one-line error path and its `with` blocks (pools, writers) close; the signals seen
    are yielded so that one a library swallowed still ends the command non-zero."""
    from facebank.cli.common import Terminated

    seen: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield seen
        return

    def handler(signum, frame):
        seen.append(signum)
        raise KeyboardInterrupt if signum == signal.SIGINT else Terminated()

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield seen
    finally:
        for s, h in old.items():
            signal.signal(s, h)


app = typer.Typer(
    cls=_OneLineErrors,
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


for _group in (bank_cmds, build_cmd, generate_cmd, index_cmds, pick_cmd, show_cmd, audit_cmds, models_cmd,
               bank_format_cmds, labels_cmds, anonymize_cmd):
    _group.register(app)


def command_paths() -> list[list[str]]:
    """Every registered command as the words typed after `facebank` (["index", "build"], ...)."""
    out: list[list[str]] = []

    def walk(cmd, path: list[str]) -> None:
        if hasattr(cmd, "commands"):
            for name, sub in cmd.commands.items():
                walk(sub, path + [name])
        else:
            out.append(path)

    walk(typer.main.get_command(app), [])
    return out


def main() -> None:
    sys.unraisablehook = _quiet_failed_writes
    app()


def _quiet_failed_writes(unraisable) -> None:
    """HDF5 objects of a file whose write failed (a full disk) fail again as they are freed; the
    command reports the failure once, so these echoes are dropped. Anything else is shown."""
    from facebank._io.files import is_disk_full

    if not is_disk_full(unraisable.exc_value):
        sys.__unraisablehook__(unraisable)
