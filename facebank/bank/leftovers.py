"""What a killed writer leaves behind, cleaned up by the next writer (which holds the lock).

A `kill -9` can leave: temporary top files or bank copies `.<bank>.*.tmp` beside the bank,
half-written pending batches `<bank>.pending/batch-*.h5.tmp`, and orphan fragments (removed by
`BankWriter._remove_orphans`). None of them is ever read, so the next lock holder deletes them.
A complete pending batch that cannot be read (damaged, or not a batch) is moved aside into
`<bank>.pending/corrupt/` with a one-line warning naming it, so the bank stays writable and
nothing is deleted that someone may want to look at.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import h5py

__all__ = ["quarantine_corrupt_batches", "remove_temp_files"]

BATCH_GROUPS = frozenset({"faces", "rejections", "embeddings", "attributes", "log"})


def remove_temp_files(bank: Path, pending_dir: Path) -> list[Path]:
    """Delete a killed writer's temporary files; only call with the bank's lock held."""
    parent = bank.parent if str(bank.parent) else Path(".")
    found = list(parent.glob(f".{bank.name}.*.tmp"))
    if pending_dir.is_dir():
        found += pending_dir.glob("batch-*.h5.tmp")
    for p in found:
        p.unlink(missing_ok=True)
    return found


def _readable_batch(path: Path) -> str | None:
    """None when `path` reads as a pending batch, else why not."""
    try:
        with h5py.File(path, "r") as f:
            unknown = set(f) - BATCH_GROUPS
            if unknown:
                return f"unexpected groups {sorted(unknown)}"
            if "faces" in f:
                f["faces/content_sha256"][:]
            for space in f.get("embeddings", {}).values():
                space["ids"][:]
                space.attrs["info"]
    except (OSError, KeyError, TypeError, ValueError) as exc:
        return " ".join(str(exc).split())[:160] or type(exc).__name__
    return None


def quarantine_corrupt_batches(pending_dir: Path) -> list[Path]:
    """Move unreadable `batch-*.h5` files to `pending_dir/corrupt/`, one warning line each."""
    moved = []
    if not pending_dir.is_dir():
        return moved
    for p in sorted(pending_dir.glob("batch-*.h5")):
        why = _readable_batch(p)
        if why is None:
            continue
        dst_dir = pending_dir / "corrupt"
        dst_dir.mkdir(exist_ok=True)
        dst = dst_dir / p.name
        os.replace(p, dst)
        sys.stderr.write(f"warning: pending batch {p} is not readable ({why}); moved to {dst}\n")
        moved.append(dst)
    return moved
