"""What every command shares: error mapping, progress bars on stderr, JSON or table output."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
from rich.progress import Progress as RichProgress

from facebank.cli.clicks import ABORTS, CLICK_ERRORS, EXITS
from facebank._io.files import disk_full, is_disk_full
from facebank.errors import DiskFull, FacebankError, InputError
from facebank.progress import Progress, ProgressEvent

err = Console(stderr=True)
out = Console()


def _line(text: str) -> None:
    """One line on stderr, whatever the message holds (HDF5 and zip errors span several lines)."""
    err.print(" ".join(str(text).split()), markup=False, highlight=False, soft_wrap=True)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread (facebank.cli installs the handler): ends a command like Ctrl-C."""


def _full(message: str) -> None:
    _line(f"error: DiskFull: {message}")
    raise typer.Exit(1) from None


@contextmanager
def cli_errors() -> Iterator[None]:
    """Turn facebank's errors (and OS errors on user paths) into one line on stderr and an exit code.

    2: bad input (a path, an option, a file of the wrong kind); 1: anything else facebank refused;
    3: a bug (any other exception: `error: internal: ...`; FACEBANK_DEBUG=1 shows the traceback).
    """
    try:
        yield
    except (*EXITS, *ABORTS, *CLICK_ERRORS):
        raise
    except DiskFull as exc:
        _full(str(exc))
    except InputError as exc:
        _line(f"error: {type(exc).__name__}: {exc}")
        raise typer.Exit(2) from None
    except FacebankError as exc:
        _line(f"error: {type(exc).__name__}: {exc}")
        raise typer.Exit(1) from None
    except (PermissionError, FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
        _line(f"error: {type(exc).__name__}: {exc.strerror}: {exc.filename}")
        raise typer.Exit(2) from None
    except OSError as exc:  # a full disk, a read-only file system: the system's words, one line
        if is_disk_full(exc):
            _full(str(disk_full(exc.filename or "a file", exc)))
        _line(f"error: {type(exc).__name__}: {exc.strerror or exc}: {exc.filename or ''}")
        raise typer.Exit(1) from None
    except ImportError as exc:  # an optional dependency (faiss, insightface): name the extra to install
        from facebank._io.deps import missing_dependency

        e = missing_dependency(exc)
        err.print(f"error: {type(e).__name__}: {e}", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    except Terminated:
        _line("error: terminated by SIGTERM: finished work is kept; re-run the command to continue")
        raise typer.Exit(143) from None
    except KeyboardInterrupt:
        err.print("interrupted: finished work is kept; re-run the command to continue")
        raise typer.Exit(130) from None
    except Exception as exc:  # a bug: one reportable line, the traceback only on request
        if is_disk_full(exc):  # HDF5's own error for a failed write
            _full(str(disk_full("a file", exc)))
        if os.environ.get("FACEBANK_DEBUG") == "1":
            raise
        _line(f"error: internal: {type(exc).__name__}: {exc} (FACEBANK_DEBUG=1 shows the traceback)")
        raise typer.Exit(3) from None


@contextmanager
def progress_bars(title: str | None = None, *, unit: str | None = "faces",
                  log_as: str | None = None) -> Iterator[Progress]:
    """Draws a stage's `ProgressEvent`s as rich bars on stderr: yields the `Progress` to pass it.

    One bar per stage, or one bar named `title` for every event. The bars appear on the first
    event, so work that fails while it is still setting up (a bad model file, a bank of another
    version) leaves only its one-line error. `unit`: the rate column ("faces/s"; None: none).
    `log_as`: where rich draws nothing (a log file, CI), one line per quarter of each stage,
    `<log_as>: <stage> <done>/<total>`.
    """
    columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn()]
    columns += [TextColumn("{task.fields[rate]}")] if unit else []
    prog = RichProgress(*columns, TimeRemainingColumn(), console=err, transient=False)
    tasks: dict[str, int] = {}
    if log_as is not None and not err.is_terminal:
        shown: dict[str, int] = {}

        def plain(e: ProgressEvent) -> None:
            quarter = 4 * e.done // e.total if e.total else 4
            if shown.get(e.stage, -1) < quarter:
                shown[e.stage] = quarter
                err.print(f"{log_as}: {e.stage} {e.done}/{e.total}", markup=False, highlight=False, soft_wrap=True)

        yield plain
        return

    def draw(e: ProgressEvent) -> None:
        name = title or e.stage
        if not tasks:
            prog.start()
        if name not in tasks:
            tasks[name] = prog.add_task(name, total=e.total, rate="")
        t = tasks[name]
        prog.update(t, completed=e.done, total=e.total)
        speed = prog.tasks[t].speed
        if unit and speed:
            prog.update(t, rate=f"{speed:.1f} {unit}/s")

    try:
        yield draw
    finally:
        if tasks:
            prog.stop()


def parse_pairs(items: list[str], option: str, *, shape: str = "SPACE=VALUE", kind=str,
                must_exist: bool = False) -> dict:
    """`SPACE=VALUE` options (repeatable) as a dict; malformed ones are a one-line InputError."""
    from pathlib import Path

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key or not value:
            raise InputError(f"{option} takes {shape}, got {item!r}")
        try:
            out[key] = kind(value)
        except ValueError:
            raise InputError(f"{option} {key}: {value!r} is not a {kind.__name__}") from None
        if must_exist and not Path(value).exists():
            raise InputError(f"{option} {key}: {value} does not exist")
    return out


JSON_FORMAT = "facebank.cli/1"  # the envelope's version: bump it when its shape (not a result) changes


def _plain(value):
    """JSON-safe values: numpy scalars and arrays as Python ones, NaN and infinity as null, paths as str."""
    import math

    import numpy as np

    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (str, int, bool)):
        return value
    return str(value)


def _command_name() -> str | None:
    """The command as typed after `facebank` ("index build"), read from the running context."""
    import importlib

    ctx = None
    for name in ("typer._click.globals", "click.globals"):  # typer >= 0.16 runs on its own copy of click
        try:
            ctx = ctx or importlib.import_module(name).get_current_context(silent=True)
        except ImportError:
            continue
    names = []
    while ctx is not None and ctx.parent is not None:  # the root context is the program itself
        names.append(ctx.info_name)
        ctx = ctx.parent
    return " ".join(reversed(names)) or None


def envelope(result, command: str | None = None) -> dict:
    """The one JSON shape every command prints with --json (README, "CLI convention")."""
    return {"format": JSON_FORMAT, "command": command or _command_name(), "result": _plain(result)}


def read_envelope(text: str, command: str | None = None):
    """The result of a command's --json output (`text` from its first line that opens a JSON object;
    anything a library printed before it is skipped); checks the envelope and, if given, the command."""
    start = 0 if text.startswith("{") else text.index("\n{") + 1
    doc = json.loads(text[start:])
    if not isinstance(doc, dict) or doc.get("format") != JSON_FORMAT or set(doc) != {"format", "command", "result"}:
        raise ValueError(f"not a {JSON_FORMAT} envelope: {str(doc)[:80]}")
    if command is not None and doc["command"] != command:
        raise ValueError(f"envelope of {doc['command']!r}, expected {command!r}")
    return doc["result"]


def emit(data: dict | list, *, as_json: bool, human: str | None = None) -> None:
    """Data on stdout: the JSON envelope for scripts, or a human summary."""
    if as_json:
        sys.stdout.write(json.dumps(envelope(data), indent=2, sort_keys=True, allow_nan=False) + "\n")
    elif human is not None:
        out.print(human, markup=False, highlight=False, soft_wrap=True)


def examples(*lines: str) -> str:
    """A command's help epilog: 'Examples:' and one command per paragraph (kept apart by Typer)."""
    return "Examples:\n\n" + "\n\n".join(f"  $ {line}" for line in lines)


def _bank_default(value):
    """--bank, else FACEBANK_BANK, else the user config's `bank` (facebank.config.operator_defaults)."""
    from pathlib import Path

    from facebank.config import operator_defaults, user_config_file

    if value is not None:
        return value
    found = operator_defaults().bank
    if found:
        return Path(found)
    raise typer.BadParameter(f"no bank given: pass --bank PATH, set FACEBANK_BANK, or put bank = \"PATH\" in "
                             f"{user_config_file()}", param_hint="'--bank'")


def _build_default(value):
    """--build, else FACEBANK_BUILD, else the user config's `build`, else None (index_builds/current here)."""
    from pathlib import Path

    from facebank.config import operator_defaults

    if value is not None:
        return value
    found = operator_defaults().build
    return Path(found) if found else None


def bank_option(help: str = "The bank file.") -> typer.models.OptionInfo:
    """The --bank/-b option of every command: FACEBANK_BANK or the user config's `bank` when not given."""
    return typer.Option("--bank", "-b", callback=_bank_default,
                        help=f"{help} Default: $FACEBANK_BANK, else `bank` in ~/.config/facebank/config.toml.")


def build_option(help: str = "Index build directory, or a folder of builds (its current one).") -> typer.models.OptionInfo:
    """The --build option: FACEBANK_BUILD or the user config's `build` when not given."""
    return typer.Option("--build", callback=_build_default,
                        help=f"{help} Default: $FACEBANK_BUILD, else `build` in ~/.config/facebank/config.toml, "
                             "else index_builds/current.")
