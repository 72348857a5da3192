"""What every command shares: error mapping, progress bars on stderr, JSON or table output."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from facebank.errors import FacebankError, InputError

err = Console(stderr=True)
out = Console()


@contextmanager
def cli_errors() -> Iterator[None]:
    """Turn facebank's errors (and OS errors on user paths) into one line on stderr and an exit code.

    2: bad input (a path, an option, a file of the wrong kind); 1: anything else facebank refused.
    """
    try:
        yield
    except typer.Exit:
        raise
    except InputError as exc:
        err.print(f"error: {type(exc).__name__}: {exc}", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    except FacebankError as exc:
        err.print(f"error: {type(exc).__name__}: {exc}", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    except (PermissionError, FileNotFoundError, IsADirectoryError) as exc:
        err.print(f"error: {exc.strerror}: {exc.filename}", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        err.print("interrupted: finished work is kept; re-run the command to continue")
        raise typer.Exit(130) from None


@contextmanager
def progress_bar(description: str, total: int | None = None, *, unit: str = "faces") -> Iterator:
    """A rich progress bar on stderr; yields (advance(n), set_total(n))."""
    columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[rate]}"), TimeRemainingColumn()]
    with Progress(*columns, console=err, transient=False, disable=not err.is_terminal and False) as prog:
        task = prog.add_task(description, total=total, rate="")

        def advance(n: int = 1) -> None:
            prog.advance(task, n)
            speed = prog.tasks[task].speed
            if speed:
                prog.update(task, rate=f"{speed:.1f} {unit}/s")

        def set_total(n: int) -> None:
            prog.update(task, total=n)

        yield advance, set_total


def emit(data: dict | list, *, as_json: bool, human: str | None = None) -> None:
    """Data on stdout: JSON for scripts, or a human summary."""
    if as_json:
        sys.stdout.write(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
    elif human is not None:
        out.print(human, markup=False, highlight=False, soft_wrap=True)
