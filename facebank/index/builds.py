"""The folder of index builds: list them, and prune the old ones.

Every `facebank index build` adds a folder (`<UTC time>-<bank hash>`); nothing removed them. Pruning
keeps the newest N by creation time and always the current one (what picks use), and removes the
rest whole (rename to a hidden name first, so a half-removed build is never listed or used).
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from facebank.errors import InputError
from facebank.index.build import CURRENT
from facebank.index.manifest import KIND

__all__ = ["BuildEntry", "list_builds", "prune_builds"]


@dataclass(frozen=True)
class BuildEntry:
    """One build folder of a builds folder."""

    path: Path
    build_id: str
    created: str  # ISO time from the manifest ("" when unreadable)
    rows: int | None
    bank: str | None
    spaces: tuple[str, ...]
    current: bool
    bytes: int

    def to_dict(self) -> dict:
        return {"path": str(self.path), "build_id": self.build_id, "created": self.created, "rows": self.rows,
                "bank": self.bank, "spaces": list(self.spaces), "current": self.current, "bytes": self.bytes}


def _size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


def list_builds(builds: str | os.PathLike) -> list[BuildEntry]:
    """Every build in `builds`, oldest first (by the manifest's creation time, then name)."""
    builds = Path(builds)
    if not builds.is_dir():
        raise InputError(f"no folder of builds at {builds}")
    link = builds / CURRENT
    current = link.resolve() if link.exists() else None
    out = []
    for p in sorted(builds.iterdir()):
        if p.name.startswith(".") or p.name == CURRENT or not p.is_dir() or not (p / "manifest.json").is_file():
            continue
        try:
            m = json.loads((p / "manifest.json").read_text())
            assert m.get("kind") == KIND
        except (OSError, ValueError, AssertionError):
            m = {}
        out.append(BuildEntry(p, str(m.get("build_id", p.name)), str(m.get("created", "")), m.get("rows"),
                              (m.get("bank") or {}).get("path"), tuple(m.get("spaces") or ()),
                              p.resolve() == current, _size(p)))
    return sorted(out, key=lambda e: (e.created, e.path.name))


def prune_builds(builds: str | os.PathLike, keep: int, *, dry_run: bool = False) -> list[BuildEntry]:
    """Remove all but the newest `keep` builds (the current one always stays); returns those removed."""
    if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
        raise InputError(f"keep must be an int >= 1, got {keep!r}")
    entries = list_builds(builds)
    newest = {e.path for e in entries[-keep:]}
    gone = [e for e in entries if e.path not in newest and not e.current]
    if not dry_run:
        for e in gone:
            tmp = e.path.parent / f".pruned-{e.path.name}-{os.getpid()}"
            os.rename(e.path, tmp)  # never listed or used again, even if the removal below is cut short
            shutil.rmtree(tmp)
    return gone
