"""The click exceptions a command line can raise, from whichever click is present.

typer >= 0.16 runs on its own copy (`typer._click`) and does not install click; older typer
runs on click itself. Checking both keeps one-line errors working with either, and importing
neither by name keeps a plain install (no click) working.
"""

from __future__ import annotations

import importlib

import typer

_mods = []
for _name in ("typer._click.exceptions", "click.exceptions"):
    try:
        _mods.append(importlib.import_module(_name))
    except ImportError:
        pass

CLICK_ERRORS: tuple[type[BaseException], ...] = tuple({m.ClickException for m in _mods})
USAGE_ERRORS: tuple[type[BaseException], ...] = tuple({m.UsageError for m in _mods})
# typer's own Abort/Exit live in typer.exceptions; click's (older typer) are click's.
ABORTS: tuple[type[BaseException], ...] = tuple({typer.Abort, *(getattr(m, "Abort", typer.Abort) for m in _mods)})
EXITS: tuple[type[BaseException], ...] = tuple({typer.Exit, *(getattr(m, "Exit", typer.Exit) for m in _mods)})
