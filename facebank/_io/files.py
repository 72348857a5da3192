"""Atomic file writes: a temporary file in the same folder, fsync, then `os.replace`.

Every file facebank writes (manifests, caches, reports, plots) goes through here, so a reader
sees the old file or the new one, never half of one.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

__all__ = ["atomic_write_bytes", "atomic_write_json", "atomic_write_text", "pid_alive"]


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
