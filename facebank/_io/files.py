"""Atomic file writes: a temporary file in the same folder, fsync, then `os.replace`.

Every file facebank writes (manifests, caches, reports, plots) goes through here, so a reader
sees the old file or the new one, never half of one.
"""

from __future__ import annotations

import errno
import json
import os
import tempfile
from pathlib import Path

__all__ = ["as_path", "atomic_write_bytes", "disk_full", "ensure_space", "is_disk_full", "write_durable", "atomic_write_json", "atomic_write_text", "pid_alive"]


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


_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
# HDF5 reports a failed write inside its message, without an errno on the exception.
_FULL_TEXT = ("No space left on device", "errno = 28", "File too large", "errno = 27", "Disk quota exceeded")
_MARGIN = 1 << 20  # room kept for metadata an estimate does not count


def is_disk_full(exc: BaseException | None) -> bool:
    """True when `exc`, or an exception it was raised from or during, is a full disk or the file size limit."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in _FULL_ERRNOS:
            return True
        if any(t in str(exc) for t in _FULL_TEXT):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def disk_full(where: str | os.PathLike, exc: BaseException | None = None):
    """The DiskFull error for a failed write in `where` (one line: the file and the reason)."""
    from facebank.errors import DiskFull

    limit = exc is not None and ("File too large" in str(exc) or getattr(exc, "errno", None) == errno.EFBIG)
    why = "the file size limit was reached (file too large)" if limit else "no space left on device"
    return DiskFull(f"cannot write {where}: {why}; what was committed before is intact")


def ensure_space(directory: str | os.PathLike, nbytes: int, what: str) -> None:
    """DiskFull before a write of about `nbytes` into `directory` that the file system cannot hold:
    HDF5 left to fail mid-write leaves its library in a state that can crash the process."""
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_FSIZE)
    if soft != resource.RLIM_INFINITY and nbytes > soft:
        from facebank.errors import DiskFull

        raise DiskFull(f"cannot write {what} in {directory}: the file size limit ({soft} bytes) is below the "
                       f"about {nbytes} bytes needed (file too large); what was committed before is intact")
    try:
        st = os.statvfs(directory)
    except OSError:
        return  # cannot tell: the write itself will say
    free = st.f_bavail * st.f_frsize
    if free < nbytes + _MARGIN:
        from facebank.errors import DiskFull

        raise DiskFull(f"cannot write {what} in {directory}: no space left on device (needs about "
                       f"{(nbytes + _MARGIN) / 1e6:.1f} MB, {free / 1e6:.1f} MB free); what was committed before is intact")


def write_durable(tmp: str | os.PathLike, data) -> None:
    """Write `data` (bytes or a buffer) to the new file `tmp` and fsync it. HDF5 files facebank writes are
    built in memory and written by this: a full disk is then a plain OSError here, never a failed write
    inside HDF5 (which leaves its library in a state that can crash the process)."""
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


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
