"""Atomic file writes: a temporary file in the same folder, fsync, then `os.replace`.

Every file facebank writes (manifests, caches, reports, plots) goes through here, so a reader
sees the old file or the new one, never half of one.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

__all__ = ["as_path", "atomic_write_bytes", "atomic_write_json", "atomic_write_text", "pid_alive"]


def as_path(value, what: str) -> Path:
    """`value` as a Path, or InputError naming `what`: not a str or os.PathLike, or not encodable as a file
    name (a NUL byte, a lone surrogate), so an API caller gets a facebank error, not a TypeError."""
    from facebank.errors import InputError

    if isinstance(value, bytes) or not isinstance(value, (str, os.PathLike)):
        raise InputError(f"{what} must be a path (str or os.PathLike), got {type(value).__name__}")
    try:
        path = Path(value)
        os.fsencode(path)
    except (TypeError, ValueError) as exc:  # UnicodeEncodeError is a ValueError
        raise InputError(f"{what} {str(value)!r} is not a valid file name ({type(exc).__name__})") from None
    if "\0" in str(path):
        raise InputError(f"{what} {str(value)!r} contains a NUL byte")
    if not str(path):
        raise InputError(f"{what} is empty")
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, mode: int = 0o644) -> Path:
    """Write `data` to `path` atomically (the folder is created when missing)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)  # mkstemp makes 0600
        os.replace(tmp, path)
    except BaseException:
        # Leave no temporary file behind, whatever went wrong.
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """`atomic_write_bytes` for UTF-8 text."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, data, *, indent: int = 2) -> Path:
    """`data` as sorted, indented JSON with a final newline."""
    return atomic_write_text(path, json.dumps(data, indent=indent, sort_keys=True, default=str) + "\n")


def pid_alive(pid: int) -> bool:
    """True when a process with this id exists (or may: another user's). For temporary names
    that carry their writer's pid: only a dead writer's leftovers may be removed."""
    if pid <= 0:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
